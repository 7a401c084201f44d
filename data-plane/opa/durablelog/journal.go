package durablelog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/logging"
)

// segmentFile is what the journal needs of an open segment; tests inject
// one that fails (a full disk) through openFunc.
type segmentFile interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// openFunc creates a new segment file for appending.
type openFunc func(path string) (segmentFile, error)

func openSegmentFile(path string) (segmentFile, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600) // #nosec G304 -- a new segment in the plugin's own directory
}

// errStopped answers an append after Stop.
var errStopped = errors.New("the durable decision log is stopped")

// maxGroup bounds one group commit; more waiting appends go in the next.
const maxGroup = 4096

type appendReq struct {
	payload []byte
	done    chan error
}

// journal appends records to the active segment with group commit: one
// goroutine takes every append waiting, writes them in one write, fsyncs
// once and only then answers them all. While it fsyncs, new appends queue
// for the next group, so N concurrent events cost one fsync, not N.
type journal struct {
	dir     string
	open    openFunc
	maxSize int64
	maxAge  time.Duration
	metrics *logMetrics
	logger  logging.Logger
	now     func() time.Time
	// sealed is signalled (without blocking) when a segment is sealed.
	sealed chan struct{}

	reqs chan appendReq
	stop chan struct{}
	done chan struct{}

	// active is the seq of the segment being (or next to be) written; every
	// segment below it is sealed and may be shipped.
	active atomic.Uint64

	// Owned by run.
	file    segmentFile
	path    string
	size    int64
	created time.Time
	batch   bytes.Buffer
}

func newJournal(dir string, nextSeq uint64, open openFunc, cfg *Config, m *logMetrics, l logging.Logger) *journal {
	j := &journal{
		dir:     dir,
		open:    open,
		maxSize: cfg.MaxSegmentBytes,
		maxAge:  cfg.maxSegmentAge,
		metrics: m,
		logger:  l,
		now:     time.Now,
		sealed:  make(chan struct{}, 1),
		reqs:    make(chan appendReq, maxGroup),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	j.active.Store(nextSeq)
	return j
}

// run is the journal's goroutine, until stop is closed; it then commits
// what is queued and seals the active segment.
func (j *journal) run() {
	defer close(j.done)
	tick := time.NewTicker(max(j.maxAge/2, time.Millisecond))
	defer tick.Stop()
	group := make([]appendReq, 0, maxGroup)
	for {
		select {
		case r := <-j.reqs:
			group = j.collect(append(group[:0], r))
			j.commit(group)
		case <-tick.C:
			if j.file != nil && j.now().Sub(j.created) >= j.maxAge {
				j.seal()
			}
		case <-j.stop:
			for {
				group = j.collect(group[:0])
				if len(group) == 0 {
					break
				}
				j.commit(group)
			}
			if j.file != nil {
				j.seal()
			}
			return
		}
	}
}

func (j *journal) collect(group []appendReq) []appendReq {
	for len(group) < maxGroup {
		select {
		case r := <-j.reqs:
			group = append(group, r)
		default:
			return group
		}
	}
	return group
}

// commit appends one group and answers each append: nil once fsynced, or
// the write's error (the group's bytes are then cut off the segment, and
// the segment sealed, so a later group starts a fresh file).
func (j *journal) commit(group []appendReq) {
	err := j.write(group)
	// Counted before the callers hear: a scrape after an answer sees it.
	if err != nil {
		j.metrics.refused.WithLabelValues(refusedWrite).Add(float64(len(group)))
		j.logger.Error("%s: %d decision events not recorded, so refused: %v", PluginName, len(group), err)
	} else {
		j.metrics.buffered.Add(float64(len(group)))
	}
	for _, r := range group {
		r.done <- err
	}
	if err == nil && j.size >= j.maxSize {
		j.seal()
	}
}

func (j *journal) write(group []appendReq) error {
	if j.file == nil {
		if err := j.openNext(); err != nil {
			return fmt.Errorf("cannot create a decision-log segment in %s: %w", j.dir, err)
		}
	}
	j.batch.Reset()
	for _, r := range group {
		if err := appendRecord(&j.batch, r.payload); err != nil {
			return err
		}
	}
	_, err := j.file.Write(j.batch.Bytes())
	if err == nil {
		started := time.Now()
		err = j.file.Sync()
		j.metrics.fsync.Observe(time.Since(started).Seconds())
	}
	if err != nil {
		j.abandon()
		return fmt.Errorf("cannot append to decision-log segment %s: %w", j.path, err)
	}
	j.size += int64(j.batch.Len())
	return nil
}

// abandon cuts a failed group off the active segment and seals what was
// committed before it; an empty segment is removed.
func (j *journal) abandon() {
	committed := j.size
	if err := j.file.Truncate(committed); err != nil {
		// The scan before shipping stops at a torn record; a whole one that
		// survives is a decision logged but refused to the client: the safe
		// direction.
		j.logger.Error("%s: cannot truncate %s after a failed write: %v", PluginName, j.path, err)
	}
	_ = j.file.Close()
	if committed == 0 {
		_ = os.Remove(j.path)
	}
	j.file = nil
	j.active.Add(1)
	j.signalSealed()
}

func (j *journal) openNext() error {
	now := j.now()
	path := filepath.Join(j.dir, segmentName(j.active.Load(), now))
	f, err := j.open(path)
	if err != nil {
		return err
	}
	if err := syncDir(j.dir); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	j.file, j.path, j.size, j.created = f, path, 0, now
	return nil
}

func (j *journal) seal() {
	if err := j.file.Close(); err != nil {
		j.logger.Error("%s: closing %s: %v", PluginName, j.path, err)
	}
	j.file = nil
	j.active.Add(1)
	j.signalSealed()
}

func (j *journal) signalSealed() {
	select {
	case j.sealed <- struct{}{}:
	default:
	}
}
