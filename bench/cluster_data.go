package bench

// The cluster benchmark's file: generated content (as the main suite's, a pure function of
// seed and offset, incompressible) whose checksum is known from writing it, and the reader
// every node runs, which checks every byte against it. The checksum is xxhash64, not sha256:
// the readers run on the same 2 cores as the daemons they measure, and sha256 of every
// node's bytes took a tenth of those cores at N = 8; a 64-bit hash of generated content is
// as sure to catch a wrong byte (nobody forges it).

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cespare/xxhash/v2"
)

// clusterSeed is the content seed of the cluster benchmark's file.
const clusterSeed = 0xC1057E4

// clusterFile is the file every node reads.
type clusterFile struct {
	Name string
	Size int64
	Sum  string // xxhash64, hex
}

// writeClusterFile writes size bytes of generated content to path (fsynced) and returns its
// checksum.
func writeClusterFile(ctx context.Context, path string, size int64, p *Progress) (clusterFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return clusterFile{}, fmt.Errorf("write %s: %w", path, err)
	}
	out, err := os.Create(path)
	if err != nil {
		return clusterFile{}, fmt.Errorf("write %s: %w", path, err)
	}
	defer out.Close()
	h := xxhash.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return clusterFile{}, fmt.Errorf("write %s: %w", path, err)
		}
		n := min(int64(len(buf)), size-off)
		fillRange(buf[:n], clusterSeed, off)
		h.Write(buf[:n])
		if _, err := out.Write(buf[:n]); err != nil {
			return clusterFile{}, fmt.Errorf("write %s: %w", path, err)
		}
		p.Add(n, 0)
	}
	if err := out.Sync(); err != nil {
		return clusterFile{}, fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return clusterFile{}, fmt.Errorf("write %s: %w", path, err)
	}
	return clusterFile{Name: filepath.Base(path), Size: size, Sum: hex.EncodeToString(h.Sum(nil))}, nil
}

// readVerify reads path to its end with 1 MiB reads, counting bytes into p, and checks the
// size and checksum against f. It returns how long the read took.
func readVerify(ctx context.Context, path string, f clusterFile, p *Progress) (time.Duration, error) {
	t0 := time.Now()
	in, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	h := xxhash.New()
	n, err := copyCounted(ctx, h, in, p)
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("read %s: %w (after %d bytes)", path, err, n)
	}
	if n != f.Size {
		return d, fmt.Errorf("read %s: %d bytes, want %d", path, n, f.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.Sum {
		return d, fmt.Errorf("read %s: checksum %s, want %s", path, got, f.Sum)
	}
	return d, nil
}

// copyCounted hashes r into h, stopping at ctx's end.
func copyCounted(ctx context.Context, h hash.Hash, r io.Reader, p *Progress) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			p.Add(int64(k), 0)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
