package durablelog

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// uploadPath is where OPA's own uploader posts, under the service's URL.
const uploadPath = "/logs"

// refusedDir holds chunks the intake refused for their content (4xx other
// than 401, 403, 408, 429): kept, not shipped again, not deleted.
const refusedDir = "refused"

// The most of an intake's refusal kept for the error log.
const maxReasonBytes = 2048

// shipper uploads sealed segments, oldest first, in chunks within the
// intake's limits, and deletes a segment only once every chunk of it was
// acknowledged with a 2xx. Delivery is at least once: a crash between the
// ack and the delete ships the segment again, which the intake takes as
// identical re-uploads (it skips a decision id it holds with the same
// content), so the log ends with each decision exactly once.
type shipper struct {
	dir     string
	client  func() rest.Client
	active  *atomic.Uint64
	wake    <-chan struct{}
	cfg     *Config
	metrics *logMetrics
	logger  logging.Logger
	// sleep waits d or until ctx is done; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// run ships until ctx is done.
func (s *shipper) run(ctx context.Context) {
	for {
		if err := s.shipSealed(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("%s: shipping: %v", PluginName, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-time.After(s.cfg.maxSegmentAge):
		}
	}
}

// shipSealed ships every sealed segment, oldest first.
func (s *shipper) shipSealed(ctx context.Context) error {
	segments, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for _, seg := range segments {
		if seg.seq >= s.active.Load() {
			return nil
		}
		if err := s.shipSegment(ctx, seg); err != nil {
			return err
		}
	}
	return nil
}

func (s *shipper) shipSegment(ctx context.Context, seg segmentRef) error {
	scan, err := scanSegment(seg.path)
	if err != nil {
		return err
	}
	if scan.torn {
		s.logger.Warn("%s: %s has a torn tail after %d bytes; it is not shipped", PluginName, seg.path, scan.good)
	}
	for i, chunk := range chunks(scan.records, s.cfg.UploadLimitBytes, s.cfg.UploadLimitEvents) {
		if err := s.upload(ctx, chunk, fmt.Sprintf("%d-%d", seg.seq, i)); err != nil {
			return err
		}
	}
	if err := os.Remove(seg.path); err != nil {
		return err
	}
	s.metrics.buffered.Sub(float64(len(scan.records)))
	return syncDir(s.dir)
}

// chunks splits records into uploads of at most limitEvents events and
// limitBytes of JSON array text (one event alone may exceed it: the
// intake is then the judge of its size).
func chunks(records [][]byte, limitBytes, limitEvents int) [][][]byte {
	var out [][][]byte
	var cur [][]byte
	size := 2
	for _, r := range records {
		if len(cur) > 0 && (len(cur) >= limitEvents || size+len(r)+1 > limitBytes) {
			out = append(out, cur)
			cur, size = nil, 2
		}
		cur = append(cur, r)
		size += len(r) + 1
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// upload sends one chunk until the intake acknowledges it (or refuses its
// content, when it is set aside); it returns an error only when ctx ends.
func (s *shipper) upload(ctx context.Context, events [][]byte, name string) error {
	delay := s.cfg.minRetryDelay
	for {
		status, retryAfter, reason, err := s.post(ctx, events)
		switch {
		case err == nil && status/100 == 2:
			s.metrics.shipped.Add(float64(len(events)))
			return nil
		case err == nil && len(events) > 1 &&
			(status == http.StatusRequestEntityTooLarge || refusedForContent(status)):
			// Too large, or one event in it refused (an OPA REST query logged beside
			// the gateway's decisions, a malformed event): halves until the poison
			// is alone, so it costs log2(n) uploads and no other decision.
			half := len(events) / 2
			if err := s.upload(ctx, events[:half], name+"a"); err != nil {
				return err
			}
			return s.upload(ctx, events[half:], name+"b")
		case err == nil && refusedForContent(status):
			return s.setAside(events, name, status, reason)
		}
		if err != nil {
			s.logger.Warn("%s: upload of %d events failed, retrying in %s: %v", PluginName, len(events), delay, err)
		} else {
			s.logger.Warn("%s: the intake answered %d to %d events, retrying: %s", PluginName, status, len(events), reason)
		}
		s.metrics.retries.Inc()
		wait := delay
		if retryAfter > 0 {
			wait = retryAfter
		}
		delay = min(2*delay, s.cfg.maxRetryDelay)
		if err := s.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// refusedForContent: the intake will refuse the same bytes again.
func refusedForContent(status int) bool {
	if status/100 != 4 {
		return false
	}
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return true
}

func (s *shipper) post(ctx context.Context, events [][]byte) (status int, retryAfter time.Duration, reason string, err error) {
	body, err := gzipArray(events)
	if err != nil {
		return 0, 0, "", err
	}
	resp, err := s.client().
		WithHeader("Content-Type", "application/json").
		WithHeader("Content-Encoding", "gzip").
		WithBytes(body).
		Do(ctx, http.MethodPost, uploadPath)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBytes))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	return resp.StatusCode, retryAfter, string(text), nil
}

func gzipArray(events [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte{'['}); err != nil {
		return nil, err
	}
	for i, e := range events {
		if i > 0 {
			if _, err := zw.Write([]byte{','}); err != nil {
				return nil, err
			}
		}
		if _, err := zw.Write(e); err != nil {
			return nil, err
		}
	}
	if _, err := zw.Write([]byte{']'}); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// setAside keeps a chunk the intake refused for its content in refused/
// (0600, as the segments), counts it, and lets shipping go on: one poison
// event must not stop the trail.
func (s *shipper) setAside(events [][]byte, name string, status int, reason string) error {
	dir := filepath.Join(s.dir, refusedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, e := range events {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(e)
	}
	buf.WriteByte(']')
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return err
	}
	s.metrics.refused.WithLabelValues(refusedIntake).Add(float64(len(events)))
	s.logger.Error("%s: the intake refused %d events with %d (%s); kept in %s", PluginName, len(events), status, reason, path)
	return syncDir(dir)
}
