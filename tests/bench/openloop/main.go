// Command loadgen sends HTTP/1.1 requests at a constant rate, open loop, and logs
// when each request was due, when it left and when its answer ended.
//
// Every request is fired on its own goroutine at its scheduled time, over a
// keep-alive connection pool that opens another connection rather than wait
// for a busy one, so a slow answer never delays the requests behind it (no
// coordinated omission). Latency measured from the due time includes any
// lateness of the generator itself; the log keeps the send time too, so the
// analysis can tell the two apart.
//
// Output, one line per request, tab-separated, times in microseconds since
// the start of the run: due, sent, ended, status (-1: transport error).
//
// Built and run by tests/bench/loadgen.py; standard library only.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

type record struct {
	due, sent, ended time.Duration
	status           int
}

func main() {
	url := flag.String("url", "", "request URL (http://127.0.0.1:PORT/...)")
	method := flag.String("method", "POST", "request method")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long to send")
	bodyFile := flag.String("body", "", "file whose content is the request body")
	out := flag.String("out", "", "log file")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	maxConns := flag.Int("max-conns", 512, "most connections open at once")
	var headers headerList
	flag.Var(&headers, "header", "NAME: VALUE (repeatable)")
	flag.Parse()
	if *url == "" || *out == "" || *rate <= 0 {
		fmt.Fprintln(os.Stderr, "loadgen: -url, -out and a positive -rate are required")
		os.Exit(2)
	}
	if !strings.HasPrefix(*url, "http://127.0.0.1:") {
		fmt.Fprintln(os.Stderr, "loadgen: only http://127.0.0.1 targets are allowed")
		os.Exit(2)
	}
	var body []byte
	if *bodyFile != "" {
		var err error
		if body, err = os.ReadFile(*bodyFile); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
	}
	parsed := http.Header{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintln(os.Stderr, "loadgen: bad header", h)
			os.Exit(2)
		}
		parsed.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}

	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConns:        *maxConns,
		MaxIdleConnsPerHost: *maxConns,
		MaxConnsPerHost:     *maxConns,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}

	interval := time.Duration(float64(time.Second) / *rate)
	total := int(duration.Seconds() * *rate)
	records := make([]record, total)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < total; i++ {
		due := time.Duration(i) * interval
		if wait := due - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func(i int, due time.Duration) {
			defer wg.Done()
			req, err := http.NewRequest(*method, *url, bytes.NewReader(body))
			if err != nil {
				records[i] = record{due, time.Since(start), time.Since(start), -1}
				return
			}
			req.Header = parsed.Clone()
			req.ContentLength = int64(len(body))
			sent := time.Since(start)
			resp, err := client.Do(req)
			status := -1
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			records[i] = record{due, sent, time.Since(start), status}
		}(i, due)
	}
	wg.Wait()

	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(f)
	for _, r := range records {
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\n", r.due.Microseconds(), r.sent.Microseconds(),
			r.ended.Microseconds(), r.status)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	f.Close()
}
