package durablelog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// intake is an in-process stand-in for our own audit intake's upload
// route: it records each upload's decision ids and answers what answer
// says (200 when nil).
type intake struct {
	mu      sync.Mutex
	uploads [][]string
	answer  func(n int) (status int, header http.Header)
	calls   int
	// refuses, when set, refuses an upload holding an event with this decision id
	// (400, as the intake does an event that fails validation).
	refuses string
}

func (in *intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/logs" || r.Header.Get("Content-Encoding") != "gzip" {
		http.Error(w, "not an OPA upload", http.StatusBadRequest)
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var events []logs.EventV1
	if err := json.Unmarshal(raw, &events); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	in.mu.Lock()
	in.calls++
	status, header := http.StatusOK, http.Header(nil)
	if in.answer != nil {
		status, header = in.answer(in.calls)
	}
	for _, e := range events {
		if in.refuses != "" && e.DecisionID == in.refuses {
			status = http.StatusBadRequest
		}
	}
	if status/100 == 2 {
		ids := make([]string, len(events))
		for i, e := range events {
			ids[i] = e.DecisionID
		}
		in.uploads = append(in.uploads, ids)
	}
	in.mu.Unlock()
	for k, v := range header {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"inflated": %d}`, len(raw))
}

func (in *intake) ids() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []string
	for _, u := range in.uploads {
		out = append(out, u...)
	}
	return out
}

type testLog struct {
	*Plugin
	dir    string
	intake *intake
	waits  chan time.Duration
}

// newTestLog is the plugin inside a real OPA plugin manager, shipping to an
// in-process intake; cfg is extra configuration (JSON object members).
func newTestLog(t testing.TB, in *intake, dir, cfg string) *testLog {
	t.Helper()
	srv := httptest.NewServer(in)
	t.Cleanup(srv.Close)
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "decision-log")
	}
	m, err := plugins.New([]byte(fmt.Sprintf(`{"services": {"audit": {"url": %q}}}`, srv.URL)), "test", inmem.New(),
		plugins.Logger(logging.NewNoOpLogger()))
	if err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf(`{"dir": %q, "service": "audit", "max_segment_age_ms": 20`, dir)
	if cfg != "" {
		raw += ", " + cfg
	}
	parsed, err := Factory{}.Validate(m, []byte(raw+"}"))
	if err != nil {
		t.Fatal(err)
	}
	p := Factory{}.New(m, parsed).(*Plugin)
	tl := &testLog{Plugin: p, dir: dir, intake: in, waits: make(chan time.Duration, 100)}
	// Backoff is recorded, not waited for (a full channel drops the record).
	p.sleep = func(ctx context.Context, d time.Duration) error {
		select {
		case tl.waits <- d:
		default:
		}
		return sleepCtx(ctx, time.Millisecond)
	}
	return tl
}

func (tl *testLog) start(t testing.TB) {
	t.Helper()
	if err := tl.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Stop(context.Background()) })
}

func event(id string) logs.EventV1 {
	return logs.EventV1{DecisionID: id, Path: "nexus/gateway/decision", Timestamp: time.Now().UTC()}
}

func (tl *testLog) logAll(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := tl.Log(context.Background(), event(id)); err != nil {
			t.Fatalf("Log(%s): %v", id, err)
		}
	}
}

// eventually polls cond (the shipper runs in its own goroutine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func segmentFiles(t *testing.T, dir string) []segmentRef {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func TestATornTailAfterACrashIsTruncatedAndNotShipped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "decision-log")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var seg bytes.Buffer
	for _, id := range []string{"d1", "d2", "d3"} {
		payload, _ := json.Marshal(event(id))
		if err := appendRecord(&seg, payload); err != nil {
			t.Fatal(err)
		}
	}
	whole := seg.Len()
	// A crash mid-write: a fourth record's header and half its payload, then
	// a fifth whose checksum is wrong.
	payload, _ := json.Marshal(event("d4"))
	var torn bytes.Buffer
	_ = appendRecord(&torn, payload)
	seg.Write(torn.Bytes()[:torn.Len()/2])
	path := filepath.Join(dir, segmentName(7, time.Now()))
	if err := os.WriteFile(path, seg.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	scan, err := scanSegment(path)
	if err != nil || !scan.torn || scan.good != int64(whole) || len(scan.records) != 3 {
		t.Fatalf("scan: %+v records=%d err=%v", scan.good, len(scan.records), err)
	}

	in := &intake{}
	tl := newTestLog(t, in, dir, "")
	tl.start(t)
	tl.logAll(t, "d5")
	eventually(t, "the segments are shipped and deleted", func() bool {
		return len(in.ids()) == 4 && len(segmentFiles(t, dir)) == 0
	})
	if got := strings.Join(in.ids(), ","); got != "d1,d2,d3,d5" {
		t.Errorf("shipped %s", got)
	}
}

func TestARecordWithABadChecksumEndsTheSegment(t *testing.T) {
	var seg bytes.Buffer
	for _, id := range []string{"a", "b"} {
		payload, _ := json.Marshal(event(id))
		_ = appendRecord(&seg, payload)
	}
	raw := seg.Bytes()
	raw[len(raw)-2] ^= 0x20 // flip a bit in b's payload
	path := filepath.Join(t.TempDir(), segmentName(1, time.Now()))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	scan, err := scanSegment(path)
	if err != nil || !scan.torn || len(scan.records) != 1 {
		t.Fatalf("scan kept %d records (torn %v, err %v)", len(scan.records), scan.torn, err)
	}
}

// countingFile is a real segment file that counts fsyncs and makes each
// one slow, as a disk does.
type countingFile struct {
	*os.File
	syncs *atomic.Int64
}

func (f countingFile) Sync() error {
	f.syncs.Add(1)
	time.Sleep(5 * time.Millisecond)
	return f.File.Sync()
}

func TestConcurrentDecisionsShareOneFsync(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", "")
	var syncs atomic.Int64
	tl.open = func(path string) (segmentFile, error) {
		f, err := openSegmentFile(path)
		if err != nil {
			return nil, err
		}
		return countingFile{f.(*os.File), &syncs}, nil
	}
	tl.start(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, id := range ids("c", n) {
		wg.Go(func() { errs <- tl.Log(context.Background(), event(id)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every Log returned after its fsync; 200 of them took far fewer.
	if got := syncs.Load(); got < 1 || got > n/4 {
		t.Errorf("%d fsyncs for %d concurrent decisions", got, n)
	}
	eventually(t, "all shipped and counted", func() bool {
		return len(in.ids()) == n && testutil.ToFloat64(tl.metrics.shipped) == n
	})
}

func TestASegmentIsDeletedOnlyAfterTheIntakeAcknowledgesIt(t *testing.T) {
	in := &intake{}
	var down atomic.Bool
	down.Store(true)
	in.answer = func(int) (int, http.Header) {
		if down.Load() {
			return http.StatusServiceUnavailable, nil
		}
		return http.StatusOK, nil
	}
	tl := newTestLog(t, in, "", "")
	tl.start(t)
	tl.logAll(t, ids("ack", 5)...)
	// Several refusals, backing off each time, and the segment stays.
	var waits []time.Duration
	for len(waits) < 4 {
		waits = append(waits, <-tl.waits)
	}
	if waits[1] <= waits[0] || waits[3] <= waits[2] {
		t.Errorf("no backoff: %v", waits)
	}
	if len(segmentFiles(t, tl.dir)) == 0 {
		t.Fatal("a segment was deleted that the intake never acknowledged")
	}
	if got := testutil.ToFloat64(tl.metrics.buffered); got != 5 {
		t.Errorf("buffered %v, want 5", got)
	}
	down.Store(false)
	eventually(t, "shipped, deleted and no longer counted as buffered", func() bool {
		return len(in.ids()) == 5 && len(segmentFiles(t, tl.dir)) == 0 &&
			testutil.ToFloat64(tl.metrics.buffered) == 0
	})
}

func TestA429IsRetriedAfterItsRetryAfter(t *testing.T) {
	in := &intake{}
	in.answer = func(n int) (int, http.Header) {
		if n == 1 {
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}}
		}
		return http.StatusOK, nil
	}
	tl := newTestLog(t, in, "", "")
	tl.start(t)
	tl.logAll(t, "busy-1")
	if got := <-tl.waits; got != 3*time.Second {
		t.Errorf("waited %s after Retry-After: 3", got)
	}
	eventually(t, "shipped", func() bool { return len(in.ids()) == 1 })
}

func TestNoUploadIsLargerThanTheIntakeLimits(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", `"upload_limit_events": 7, "upload_limit_bytes": 2000`)
	tl.start(t)
	// Many events in one segment: sealed by age only after all are in.
	tl.logAll(t, ids("big", 60)...)
	eventually(t, "all shipped", func() bool { return len(in.ids()) == 60 })
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, u := range in.uploads {
		if len(u) > 7 {
			t.Errorf("an upload of %d events", len(u))
		}
	}
}

func TestAnUploadTheIntakeFindsTooLargeIsSplit(t *testing.T) {
	in := &intake{}
	in.answer = func(n int) (int, http.Header) {
		if n == 1 {
			return http.StatusRequestEntityTooLarge, nil
		}
		return http.StatusOK, nil
	}
	tl := newTestLog(t, in, "", "")
	tl.start(t)
	tl.logAll(t, ids("split", 4)...)
	eventually(t, "shipped in halves", func() bool { return len(in.ids()) == 4 })
}

func TestARefusedChunkIsSetAsideAndShippingGoesOn(t *testing.T) {
	in := &intake{}
	in.answer = func(n int) (int, http.Header) {
		if n == 1 {
			return http.StatusBadRequest, nil
		}
		return http.StatusOK, nil
	}
	tl := newTestLog(t, in, "", "")
	tl.start(t)
	tl.logAll(t, "poison")
	eventually(t, "set aside", func() bool { return testutil.ToFloat64(tl.metrics.refused.WithLabelValues(refusedIntake)) == 1 })
	tl.logAll(t, "after")
	eventually(t, "the next one shipped", func() bool { return len(in.ids()) == 1 })
	kept, err := os.ReadFile(mustGlob(t, filepath.Join(tl.dir, refusedDir, "*.json")))
	if err != nil || !strings.Contains(string(kept), `"poison"`) {
		t.Errorf("refused chunk not kept: %q %v", kept, err)
	}
}

func TestOnePoisonEventIsSetAsideAloneAndTheRestOfItsChunkShipped(t *testing.T) {
	in := &intake{refuses: "mixed-005"}
	tl := newTestLog(t, in, "", "")
	tl.start(t)
	tl.logAll(t, ids("mixed", 12)...)
	eventually(t, "the poison set aside", func() bool {
		return testutil.ToFloat64(tl.metrics.refused.WithLabelValues(refusedIntake)) == 1
	})
	eventually(t, "every other event shipped", func() bool { return len(in.ids()) == 11 })
	for _, id := range in.ids() {
		if id == "mixed-005" {
			t.Fatalf("the refused event was recorded: %v", in.ids())
		}
	}
	kept, err := os.ReadFile(mustGlob(t, filepath.Join(tl.dir, refusedDir, "*.json")))
	if err != nil || !strings.Contains(string(kept), `"mixed-005"`) || strings.Contains(string(kept), `"mixed-004"`) {
		t.Errorf("not the poison alone kept: %q %v", kept, err)
	}
}

func mustGlob(t *testing.T, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) != 1 {
		t.Fatalf("glob %s: %v %v", pattern, m, err)
	}
	return m[0]
}

// fullDisk is a segment file on a full disk (an injected ENOSPC).
type fullDisk struct{ *os.File }

func (fullDisk) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

func TestAFullDiskRefusesTheDecisionAndRecovers(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", "")
	var full atomic.Bool
	full.Store(true)
	tl.open = func(path string) (segmentFile, error) {
		f, err := openSegmentFile(path)
		if err != nil || !full.Load() {
			return f, err
		}
		return fullDisk{f.(*os.File)}, nil
	}
	tl.start(t)
	err := tl.Log(context.Background(), event("on-a-full-disk"))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("Log on a full disk: %v", err)
	}
	if got := testutil.ToFloat64(tl.metrics.refused.WithLabelValues(refusedWrite)); got != 1 {
		t.Errorf("refused{write} %v", got)
	}
	full.Store(false)
	tl.logAll(t, "after-space-freed")
	eventually(t, "shipped", func() bool { return len(in.ids()) == 1 })
	if got := in.ids()[0]; got != "after-space-freed" {
		t.Errorf("shipped %s: a refused decision reached the log", got)
	}
}

func TestWithoutWaitForCommitLogDoesNotWaitForTheFsync(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", `"wait_for_commit": false`)
	release := make(chan struct{})
	tl.open = func(path string) (segmentFile, error) {
		<-release // the disk is stalled
		return openSegmentFile(path)
	}
	tl.start(t)
	tl.logAll(t, "fast")
	close(release)
	eventually(t, "shipped", func() bool { return len(in.ids()) == 1 })
}

// A tenant's signed choice travels in the decision's result and wins over
// the enforcer's default, either way.
func TestATenantsChoiceInTheDecisionDecidesHowFarItsAnswerWaits(t *testing.T) {
	choosing := func(id, level string) logs.EventV1 {
		e := event(id)
		var result any = map[string]any{"allowed": true, decisionLogKey: map[string]any{waitForKey: level}}
		e.Result = &result
		return e
	}
	for _, tc := range []struct {
		name   string
		config string
		ev     logs.EventV1
		want   waitLevel
	}{
		{"no choice: the default waits for the fsync", "", event("default"), waitFsync},
		{"a tenant that opted out", "", choosing("opted-out", "none"), waitNone},
		{"a tenant content with the page cache", "", choosing("write", "write"), waitWrite},
		{"a tenant that insists, on an enforcer that does not wait", `"wait_for": "none"`, choosing("insists", "fsync"), waitFsync},
		{"an unknown word: the default", `"wait_for": "write"`, choosing("unknown", "later"), waitWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &intake{}
			tl := newTestLog(t, in, "", tc.config)
			stalled := make(chan struct{})
			var writes atomic.Int32
			tl.open = func(path string) (segmentFile, error) {
				f, err := openSegmentFile(path)
				return stalledDisk{f.(*os.File), stalled, &writes}, err
			}
			tl.start(t)
			answered := make(chan error, 1)
			go func() { answered <- tl.Log(context.Background(), tc.ev) }()
			switch tc.want {
			case waitNone, waitWrite:
				// Answered with the fsync stalled (were it to wait, it never would).
				if err := <-answered; err != nil {
					t.Fatal(err)
				}
				if tc.want == waitWrite && writes.Load() != 1 {
					t.Fatalf("%d writes when answered, want the event's", writes.Load())
				}
				close(stalled)
			default:
				select {
				case err := <-answered:
					t.Fatalf("answered (%v) before the fsync", err)
				case <-time.After(200 * time.Millisecond):
				}
				close(stalled)
				if err := <-answered; err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "shipped", func() bool { return len(in.ids()) == 1 })
			if got := testutil.ToFloat64(tl.metrics.appended.WithLabelValues(tc.want.String())); got != 1 {
				t.Errorf("appended{wait_for=%s} = %v, want 1", tc.want, got)
			}
		})
	}
}

// stalledDisk writes at once and holds every fsync until stalled closes.
type stalledDisk struct {
	*os.File
	stalled <-chan struct{}
	writes  *atomic.Int32
}

func (d stalledDisk) Write(b []byte) (int, error) {
	d.writes.Add(1)
	return d.File.Write(b)
}

func (d stalledDisk) Sync() error {
	<-d.stalled
	return d.File.Sync()
}

// A write-level answer never queues behind an fsync in progress.
func TestAWriteLevelAnswerDoesNotWaitBehindAnFsyncInProgress(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", `"wait_for": "write"`)
	stalled := make(chan struct{})
	var writes atomic.Int32
	tl.open = func(path string) (segmentFile, error) {
		f, err := openSegmentFile(path)
		return stalledDisk{f.(*os.File), stalled, &writes}, err
	}
	tl.start(t)
	tl.logAll(t, "first", "second", "third") // each answered while the first fsync hangs
	if got := writes.Load(); got != 3 {
		t.Fatalf("%d writes, want one per answered event", got)
	}
	close(stalled)
	eventually(t, "shipped", func() bool { return len(in.ids()) == 3 })
}

func TestStopCommitsWhatIsQueuedAndRestartShipsIt(t *testing.T) {
	in := &intake{}
	in.answer = func(int) (int, http.Header) { return http.StatusBadGateway, nil }
	dir := filepath.Join(t.TempDir(), "decision-log")
	first := newTestLog(t, in, dir, "")
	first.start(t)
	first.logAll(t, ids("r", 3)...)
	first.Stop(context.Background())
	info, err := os.Stat(dir)
	if err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("segment dir mode %v %v", info.Mode(), err)
	}
	in.answer = nil
	second := newTestLog(t, in, dir, "")
	second.start(t)
	if got := testutil.ToFloat64(second.metrics.buffered); got != 3 {
		t.Errorf("buffered after restart %v", got)
	}
	eventually(t, "shipped after restart", func() bool { return len(in.ids()) == 3 })
}

func TestTheConfigurationIsValidated(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{`{"service": "audit"}`, "dir must name"},
		{`{"dir": "rel", "service": "audit"}`, "absolute"},
		{`{"dir": "/x"}`, "service must name"},
		{`{"dir": "/x", "service": "nope"}`, "not under services"},
		{`{"dir": "/x", "service": "audit", "upload_limit_bytes": -1}`, "positive"},
		{`{"dir": "/x", "service": "audit", "wait_for": "later"}`, "must be fsync, write or none"},
		{`{"dir": "/x", "service": "audit", "wait_for": "write", "wait_for_commit": true}`, "not both"},
	} {
		m, err := plugins.New([]byte(`{"services": {"audit": {"url": "http://127.0.0.1:1"}}}`), "t", inmem.New())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (Factory{}).Validate(m, []byte(tc.raw)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.raw, err, tc.want)
		}
	}
}

// failingSync's fsync fails (an I/O error on the device); writes succeed.
type failingSync struct{ *os.File }

func (failingSync) Sync() error { return syscall.EIO }

// A failed fsync refuses the decisions that waited for it, and what comes
// after goes to a fresh segment; the refused decision's bytes still ship
// (a decision logged but refused to its client: the safe direction).
func TestAFailedFsyncRefusesItsWaitersAndTheNextGroupStartsAFreshSegment(t *testing.T) {
	in := &intake{}
	tl := newTestLog(t, in, "", "")
	var opened atomic.Int32
	tl.open = func(path string) (segmentFile, error) {
		f, err := openSegmentFile(path)
		if err != nil || opened.Add(1) > 1 {
			return f, err
		}
		return failingSync{f.(*os.File)}, nil
	}
	tl.start(t)
	if err := tl.Log(context.Background(), event("unsynced")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Log with a failing fsync: %v", err)
	}
	if got := testutil.ToFloat64(tl.metrics.refused.WithLabelValues(refusedWrite)); got != 1 {
		t.Errorf("refused{write} %v", got)
	}
	tl.logAll(t, "after")
	if got := opened.Load(); got != 2 {
		t.Fatalf("%d segments opened, want a fresh one after the failed fsync", got)
	}
	eventually(t, "both shipped", func() bool { return len(in.ids()) == 2 })
}
