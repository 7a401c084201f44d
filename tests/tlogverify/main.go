// tlogverify checks a tiled transparency log (C2SP tlog-tiles) and Merkle proofs
// with golang.org/x/mod/sumdb/tlog and golang.org/x/mod/sumdb/note, so what the
// audit log serves is judged by an implementation that is not ours.
//
//	tlogverify tiles -url PREFIX -key VKEY [-token T] [-sample N] [-bundles N]
//	tlogverify proofs -key VKEY < proofs.json
//
// "tiles" fetches the checkpoint, verifies its signature, reads tiles through
// tlog.TileHashReader (which checks every tile against the signed root), and
// proves N random leaves from their entry bundles. "proofs" checks inclusion
// and consistency proofs made by the log against signed checkpoints. Both print
// one JSON line and exit 1 on the first failure.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const tileHeight = 8

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: tlogverify tiles|proofs [flags]"))
	}
	var err error
	switch os.Args[1] {
	case "tiles":
		err = tilesCommand(os.Args[2:])
	case "proofs":
		err = proofsCommand(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlogverify:", err)
	os.Exit(1)
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

// openCheckpoint verifies a signed note with the log key and parses its body.
func openCheckpoint(msg []byte, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, errors.New("checkpoint body has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return checkpoint{}, fmt.Errorf("checkpoint size %q", lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return checkpoint{}, fmt.Errorf("checkpoint root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], raw)
	if lines[0] != verifier.Name() {
		return checkpoint{}, fmt.Errorf("checkpoint origin %q is not the key's name %q", lines[0], verifier.Name())
	}
	return checkpoint{lines[0], size, root}, nil
}

type client struct {
	prefix string
	token  string
	http   *http.Client
	gets   int
}

func (c *client) get(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, strings.TrimRight(c.prefix, "/")+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.gets++
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// c2spPath is the tlog-tiles path of a tile: sumdb's path without the height.
func c2spPath(t tlog.Tile) string {
	return strings.Replace(t.Path(), fmt.Sprintf("tile/%d/", tileHeight), "tile/", 1)
}

type tileReader struct{ c *client }

func (r tileReader) Height() int { return tileHeight }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := r.c.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func entryBundle(c *client, index int64, size int64) ([][]byte, error) {
	n := index / 256
	width := min(size-n*256, 256)
	path := "tile/entries/" + tileIndexPath(n)
	if width < 256 {
		path += fmt.Sprintf(".p/%d", width)
	}
	data, err := c.get(path)
	if err != nil {
		return nil, err
	}
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("entry bundle ends inside a length")
		}
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if len(data) < n {
			return nil, errors.New("entry bundle ends inside an entry")
		}
		entries = append(entries, data[:n])
		data = data[n:]
	}
	if int64(len(entries)) != width {
		return nil, fmt.Errorf("entry bundle %s holds %d entries, want %d", path, len(entries), width)
	}
	return entries, nil
}

// tileIndexPath encodes N as C2SP does: x001/x234/067.
func tileIndexPath(n int64) string {
	t := tlog.Tile{H: tileHeight, L: 0, N: n, W: 256}
	return strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/0/", tileHeight))
}

func tilesCommand(args []string) error {
	flags := flag.NewFlagSet("tiles", flag.ContinueOnError)
	prefix := flags.String("url", "", "the tiled log's prefix URL")
	vkey := flags.String("key", "", "the log's verifier key")
	token := flags.String("token", "", "bearer token, if the log wants one")
	sample := flags.Int("sample", 1000, "random leaves to prove from the tiles")
	seed := flags.Uint64("seed", 1, "random seed")
	if err := flags.Parse(args); err != nil {
		return err
	}
	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	c := &client{prefix: *prefix, token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	msg, err := c.get("checkpoint")
	if err != nil {
		return err
	}
	cp, err := openCheckpoint(msg, verifier)
	if err != nil {
		return err
	}
	reader := tlog.TileHashReader(tlog.Tree{N: cp.size, Hash: cp.root}, tileReader{c})
	started := time.Now()
	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	bundles := map[int64][][]byte{}
	checked := 0
	for i := 0; i < *sample && cp.size > 0; i++ {
		index := rng.Int64N(cp.size)
		key := index / 256
		entries, ok := bundles[key]
		if !ok {
			entries, err = entryBundle(c, index, cp.size)
			if err != nil {
				return err
			}
			bundles[key] = entries
		}
		leaf := tlog.RecordHash(entries[index%256])
		stored, err := reader.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
		if err != nil {
			return fmt.Errorf("leaf %d: %w", index, err)
		}
		if stored[0] != leaf {
			return fmt.Errorf("leaf %d: its entry does not hash to the level-0 tile's hash", index)
		}
		proof, err := tlog.ProveRecord(cp.size, index, reader)
		if err != nil {
			return fmt.Errorf("leaf %d: %w", index, err)
		}
		if err := tlog.CheckRecord(proof, cp.size, cp.root, index, leaf); err != nil {
			return fmt.Errorf("leaf %d: %w", index, err)
		}
		checked++
	}
	return report(map[string]any{
		"origin": cp.origin, "size": cp.size, "inclusion_checked": checked,
		"requests": c.gets, "seconds": time.Since(started).Seconds(),
	})
}

type proofsInput struct {
	Inclusion []struct {
		Checkpoint string   `json:"checkpoint"`
		Index      int64    `json:"index"`
		Entry      string   `json:"entry"`
		Proof      []string `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		Old   string   `json:"old"`
		New   string   `json:"new"`
		Proof []string `json:"proof"`
	} `json:"consistency"`
}

func hashes(encoded []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(encoded))
	for i, e := range encoded {
		raw, err := base64.StdEncoding.DecodeString(e)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("proof hash %d is not base64 of 32 bytes", i)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

func proofsCommand(args []string) error {
	flags := flag.NewFlagSet("proofs", flag.ContinueOnError)
	vkey := flags.String("key", "", "the log's verifier key")
	if err := flags.Parse(args); err != nil {
		return err
	}
	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	var input proofsInput
	if err := json.NewDecoder(bufio.NewReader(os.Stdin)).Decode(&input); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	started := time.Now()
	opened := map[string]checkpoint{}
	open := func(msg string) (checkpoint, error) {
		if cp, ok := opened[msg]; ok {
			return cp, nil
		}
		cp, err := openCheckpoint([]byte(msg), verifier)
		if err == nil {
			opened[msg] = cp
		}
		return cp, err
	}
	for i, item := range input.Inclusion {
		cp, err := open(item.Checkpoint)
		if err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
		proof, err := hashes(item.Proof)
		if err != nil {
			return fmt.Errorf("inclusion %d: %w", i, err)
		}
		entry, err := base64.StdEncoding.DecodeString(item.Entry)
		if err != nil {
			return fmt.Errorf("inclusion %d: entry: %w", i, err)
		}
		if err := tlog.CheckRecord(proof, cp.size, cp.root, item.Index, tlog.RecordHash(entry)); err != nil {
			return fmt.Errorf("inclusion %d (leaf %d in %d): %w", i, item.Index, cp.size, err)
		}
	}
	for i, item := range input.Consistency {
		old, err := open(item.Old)
		if err != nil {
			return fmt.Errorf("consistency %d: old: %w", i, err)
		}
		cp, err := open(item.New)
		if err != nil {
			return fmt.Errorf("consistency %d: new: %w", i, err)
		}
		proof, err := hashes(item.Proof)
		if err != nil {
			return fmt.Errorf("consistency %d: %w", i, err)
		}
		if err := tlog.CheckTree(proof, cp.size, cp.root, old.size, old.root); err != nil {
			return fmt.Errorf("consistency %d (%d to %d): %w", i, old.size, cp.size, err)
		}
	}
	return report(map[string]any{
		"inclusion_checked": len(input.Inclusion), "consistency_checked": len(input.Consistency),
		"seconds": time.Since(started).Seconds(),
	})
}

func report(fields map[string]any) error {
	var out bytes.Buffer
	if err := json.NewEncoder(&out).Encode(fields); err != nil {
		return err
	}
	_, err := os.Stdout.Write(out.Bytes())
	return err
}
