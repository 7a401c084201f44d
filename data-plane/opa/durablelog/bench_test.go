package durablelog

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkLog is the time one decision spends in Log, with concurrent
// callers as under gateway load: waiting for the group commit's fsync
// (the default), for the write only, and not waiting, in one run, so they
// compare as ratios on the same disk. Reports p50 and p99 per event.
//
//	go test -run '^$' -bench BenchmarkLog ./durablelog
func BenchmarkLog(b *testing.B) {
	for _, wait := range []string{"fsync", "write", "none"} {
		b.Run("wait_for="+wait, func(b *testing.B) {
			in := &intake{answer: func(int) (int, http.Header) { return http.StatusOK, nil }}
			tl := newTestLog(b, in, b.TempDir()+"/log", fmt.Sprintf(`"wait_for": %q`, wait))
			if err := tl.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer tl.Stop(context.Background())
			ev := event("bench")
			var mu sync.Mutex
			latencies := make([]time.Duration, 0, b.N)
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				local := make([]time.Duration, 0, 1024)
				for pb.Next() {
					started := time.Now()
					if err := tl.Log(context.Background(), ev); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(started))
				}
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			})
			b.StopTimer()
			slices.Sort(latencies)
			if len(latencies) > 0 {
				b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
