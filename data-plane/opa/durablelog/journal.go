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

// maxSyncQueue bounds the written groups waiting for the syncer; a writer
// that gets this far ahead of the disk waits (backpressure).
const maxSyncQueue = 1024

// waitLevel is how far an append goes before its caller is answered.
type waitLevel uint8

const (
	// waitNone: the caller is answered at once; the event is written and
	// fsynced after. A killed OPA can lose the events not written yet.
	waitNone waitLevel = iota
	// waitWrite: answered once its group's write(2) returned: the bytes are
	// in the kernel's page cache, which outlives a killed OPA (not a host
	// crash before the next fsync).
	waitWrite
	// waitFsync: answered once an fsync begun after its write returned;
	// survives a host crash too.
	waitFsync
)

// waitLevelNames are the levels' names in the configuration, in decision
// results and in metric labels.
var waitLevelNames = [...]string{waitNone: "none", waitWrite: "write", waitFsync: "fsync"}

// waitLevels reads a name back.
var waitLevels = func() map[string]waitLevel {
	m := make(map[string]waitLevel, len(waitLevelNames))
	for level, name := range waitLevelNames {
		m[name] = waitLevel(level)
	}
	return m
}()

func (l waitLevel) String() string { return waitLevelNames[l] }

type appendReq struct {
	payload []byte
	level   waitLevel
	done    chan error
}

// syncReq is a written group's fsync waiters for the syncer, or (seal) a
// segment the writer is done with, to fsync and close.
type syncReq struct {
	file    segmentFile
	path    string
	waiters []chan error
	seal    bool
}

// journal appends records to the active segment with group commit, in two
// goroutines so that a write never queues behind an fsync in progress: the
// writer takes every append waiting, writes them in one write and answers
// those that wait only for the write; the syncer takes every written group
// waiting, fsyncs once and answers the rest. N concurrent events cost one
// write and at most one fsync, not N.
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

	syncs    chan syncReq
	syncDone chan struct{}
	// syncFailed: an fsync failed; the writer starts a new segment.
	syncFailed atomic.Bool

	// active is the seq of the segment being (or next to be) written; every
	// segment below it is sealed and may be shipped.
	active atomic.Uint64

	// Owned by run (the writer).
	file    segmentFile
	path    string
	size    int64
	created time.Time
	batch   bytes.Buffer
}

func newJournal(dir string, nextSeq uint64, open openFunc, cfg *Config, m *logMetrics, l logging.Logger) *journal {
	j := &journal{
		dir:      dir,
		open:     open,
		maxSize:  cfg.MaxSegmentBytes,
		maxAge:   cfg.maxSegmentAge,
		metrics:  m,
		logger:   l,
		now:      time.Now,
		sealed:   make(chan struct{}, 1),
		reqs:     make(chan appendReq, maxGroup),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		syncs:    make(chan syncReq, maxSyncQueue),
		syncDone: make(chan struct{}),
	}
	j.active.Store(nextSeq)
	return j
}

// run is the writer, until stop is closed; it then commits what is
// queued, seals the active segment and waits for the syncer to finish.
func (j *journal) run() {
	defer close(j.done)
	go j.syncLoop()
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
			close(j.syncs)
			<-j.syncDone
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

// commit writes one group, answers the appends that wait for no more, and
// hands the others to the syncer; a write error answers them all (the
// group's bytes are then cut off the segment, and the segment sealed, so a
// later group starts a fresh file).
func (j *journal) commit(group []appendReq) {
	err := j.write(group)
	// Counted before the callers hear: a scrape after an answer sees it.
	if err != nil {
		j.metrics.refused.WithLabelValues(refusedWrite).Add(float64(len(group)))
		j.logger.Error("%s: %d decision events not recorded, so refused: %v", PluginName, len(group), err)
		for _, r := range group {
			r.done <- err
		}
		return
	}
	j.metrics.buffered.Add(float64(len(group)))
	var waiters []chan error
	for _, r := range group {
		if r.level == waitFsync {
			waiters = append(waiters, r.done)
		} else {
			r.done <- nil
		}
	}
	j.syncs <- syncReq{file: j.file, path: j.path, waiters: waiters}
	if j.size >= j.maxSize {
		j.seal()
	}
}

func (j *journal) write(group []appendReq) error {
	if j.syncFailed.Swap(false) && j.file != nil {
		j.seal() // what follows a failed fsync goes to a fresh file
	}
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
	if _, err := j.file.Write(j.batch.Bytes()); err != nil {
		j.abandon()
		return fmt.Errorf("cannot append to decision-log segment %s: %w", j.path, err)
	}
	j.size += int64(j.batch.Len())
	return nil
}

// syncLoop is the syncer: each round takes every written group waiting,
// fsyncs each segment they were written to once, answers their waiters,
// and closes the segments sealed meanwhile.
func (j *journal) syncLoop() {
	defer close(j.syncDone)
	for r := range j.syncs {
		pending := []syncReq{r}
	drain:
		for {
			select {
			case more, ok := <-j.syncs:
				if !ok {
					break drain
				}
				pending = append(pending, more)
			default:
				break drain
			}
		}
		j.syncAll(pending)
	}
}

func (j *journal) syncAll(pending []syncReq) {
	for i := 0; i < len(pending); {
		f, path := pending[i].file, pending[i].path
		var waiters []chan error
		seal := false
		for ; i < len(pending) && pending[i].file == f; i++ {
			waiters = append(waiters, pending[i].waiters...)
			seal = seal || pending[i].seal
		}
		started := time.Now()
		err := f.Sync()
		j.metrics.fsync.Observe(time.Since(started).Seconds())
		if err != nil {
			err = fmt.Errorf("cannot fsync decision-log segment %s: %w", path, err)
			j.syncFailed.Store(true)
			j.metrics.refused.WithLabelValues(refusedWrite).Add(float64(len(waiters)))
			// Their bytes stay in the segment and will ship: a decision
			// logged but refused to its client, the safe direction.
			j.logger.Error("%s: %d decision events not confirmed durable, so refused: %v", PluginName, len(waiters), err)
		}
		for _, w := range waiters {
			w <- err
		}
		if seal {
			if err := f.Close(); err != nil {
				j.logger.Error("%s: closing %s: %v", PluginName, path, err)
			}
		}
	}
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
	if committed == 0 {
		_ = os.Remove(j.path)
	}
	j.seal()
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

// seal ends the active segment: the syncer fsyncs and closes it, and the
// shipper may read it at once (its bytes are all written).
func (j *journal) seal() {
	j.syncs <- syncReq{file: j.file, path: j.path, seal: true}
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
