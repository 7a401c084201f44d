package durablelog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A segment is an append-only file of records, each
//
//	length  uint32, big endian: the payload's bytes
//	crc     uint32, big endian: CRC-32C of the payload
//	payload one decision event's JSON
//
// A crash can tear only the tail (the journal appends, then fsyncs): a scan
// stops at the first record whose header or payload is short or whose
// checksum disagrees, and the file is truncated there, so a torn record is
// never shipped. Segments are named <seq>-<created unix ms>.seg; seq grows,
// so shipping in name order ships in append order.

const (
	recordHeaderBytes = 8
	segmentSuffix     = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord writes one record for payload to w.
func appendRecord(w io.Writer, payload []byte) error {
	if len(payload) > math.MaxUint32 {
		return fmt.Errorf("a decision event of %d bytes does not fit a record", len(payload))
	}
	var header [recordHeaderBytes]byte
	binary.BigEndian.PutUint32(header[0:4], uint32(len(payload))) // #nosec G115 -- checked just above
	binary.BigEndian.PutUint32(header[4:8], crc32.Checksum(payload, castagnoli))
	if _, err := w.Write(header[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// scanResult is what a segment holds up to its first bad record.
type scanResult struct {
	records [][]byte
	// good is the offset just past the last whole record.
	good int64
	// torn is true when bytes follow good (a torn or corrupt tail).
	torn bool
}

// scanSegment reads the whole records of the segment at path.
func scanSegment(path string) (scanResult, error) {
	f, err := os.Open(path) // #nosec G304 -- a segment the plugin listed in its own directory
	if err != nil {
		return scanResult{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return scanResult{}, err
	}
	var res scanResult
	r := bufio.NewReaderSize(f, 256*1024)
	var header [recordHeaderBytes]byte
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return scanResult{}, err
		}
		n := binary.BigEndian.Uint32(header[0:4])
		if n > maxRecordBytes {
			break
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			return scanResult{}, err
		}
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(header[4:8]) {
			break
		}
		res.records = append(res.records, payload)
		res.good += recordHeaderBytes + int64(n)
	}
	res.torn = res.good < info.Size()
	return res, nil
}

// repairSegment truncates a torn tail away (and fsyncs the truncation).
func repairSegment(path string, good int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0) // #nosec G304 -- a segment the plugin listed in its own directory
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(good); err != nil {
		return err
	}
	return f.Sync()
}

// segmentName is the file name of segment seq, created at t.
func segmentName(seq uint64, t time.Time) string {
	return fmt.Sprintf("%020d-%d%s", seq, t.UnixMilli(), segmentSuffix)
}

// segmentRef names a segment on disk.
type segmentRef struct {
	seq     uint64
	created time.Time
	path    string
}

func parseSegmentName(dir, name string) (segmentRef, bool) {
	base, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok {
		return segmentRef{}, false
	}
	seqText, msText, ok := strings.Cut(base, "-")
	if !ok {
		return segmentRef{}, false
	}
	seq, err1 := strconv.ParseUint(seqText, 10, 64)
	ms, err2 := strconv.ParseInt(msText, 10, 64)
	if err1 != nil || err2 != nil {
		return segmentRef{}, false
	}
	return segmentRef{seq: seq, created: time.UnixMilli(ms), path: filepath.Join(dir, name)}, true
}

// listSegments returns the segments in dir, oldest first.
func listSegments(dir string) ([]segmentRef, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []segmentRef
	for _, e := range entries {
		if ref, ok := parseSegmentName(dir, e.Name()); ok && e.Type().IsRegular() {
			out = append(out, ref)
		}
	}
	slices.SortFunc(out, func(a, b segmentRef) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return out, nil
}

// syncDir makes a directory's entries (a created or removed file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir) // #nosec G304 -- the plugin's configured segment directory
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
