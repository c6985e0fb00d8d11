package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Workload names (results.json "workload").
const (
	WSeq   = "seq-read"
	WEpoch = "small-files-epoch"
	WRand  = "random-4k"
	WMeta  = "metadata"
	// Parallel readers: "parallel-1", "parallel-4", "parallel-8".
	wParPrefix = "parallel-"
)

// Measure is one run's raw figures.
type Measure struct {
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	Ops     int64   `json:"ops"`
	// Partial: the run stopped at its time limit before its planned work.
	Partial bool `json:"partial,omitempty"`
}

// MBps is decimal megabytes per second.
func (m Measure) MBps() float64 {
	if m.Seconds <= 0 {
		return 0
	}
	return float64(m.Bytes) / 1e6 / m.Seconds
}

// OpsPerSec is operations per second.
func (m Measure) OpsPerSec() float64 {
	if m.Seconds <= 0 {
		return 0
	}
	return float64(m.Ops) / m.Seconds
}

// Workload is one measured access pattern over a dataset reachable at a
// directory (a mount point or the local copy).
type Workload struct {
	Name string
	// Params are the exact parameters, recorded in results.json.
	Params map[string]any
	// HasMBps / HasOps say which figures mean something for this workload.
	HasMBps, HasOps bool
	// Run performs one run over the dataset at root. run numbers the runs;
	// run < 0 is an unmeasured priming run (no time limit). Random orders
	// use fixed seeds, so every run touches the same data.
	Run func(ctx context.Context, root string, run int, p *Progress) (Measure, error)
}

// WorkloadSettings sizes the workloads beyond the dataset itself.
type WorkloadSettings struct {
	EpochReaders int
	RandOps      int
	RandMaxTime  time.Duration
	Parallel     []int
	ReadBuf      int // sequential read size per read(2)
}

// Workloads builds every workload over ds.
func Workloads(ds *Dataset, ws WorkloadSettings) []Workload {
	var out []Workload
	out = append(out, Workload{
		Name: WSeq, HasMBps: true,
		Params: map[string]any{"file": ds.Big.Name, "size_bytes": ds.Big.Size, "read_size": ws.ReadBuf,
			"readers": 1, "reader": "Go read(2) loop, one fd, xxhash64 of every byte in a second goroutine"},
		Run: func(ctx context.Context, root string, _ int, p *Progress) (Measure, error) {
			return timed(func() (int64, int64, error) {
				n, err := readVerified(ctx, filepath.Join(root, ds.Big.Name), ds.Big, ws.ReadBuf, p)
				return n, 1, err
			})
		},
	})
	out = append(out, Workload{
		Name: WEpoch, HasMBps: true, HasOps: true,
		Params: map[string]any{"files": len(ds.Small), "file_size_bytes": smallSize(ds), "readers": ws.EpochReaders,
			"order": "random permutation, fixed seed (same in every run)", "dirs": len(ds.Dirs),
			"reader": "Go: open, read whole file, close; xxhash64 per file", "ops": "files read"},
		Run: func(ctx context.Context, root string, _ int, p *Progress) (Measure, error) {
			return timed(func() (int64, int64, error) { return epoch(ctx, root, ds, ws.EpochReaders, p) })
		},
	})
	out = append(out, Workload{
		Name: WRand, HasMBps: true, HasOps: true,
		Params: map[string]any{"file": ds.Big.Name, "size_bytes": ds.Big.Size, "io_size": BlockSize,
			"ops": ws.RandOps, "max_seconds": ws.RandMaxTime.Seconds(), "queue_depth": 1, "readers": 1,
			"offsets": "uniform random, 4 KiB aligned, fixed seed (same in every run)",
			"reader":  "Go pread(2), every block compared with the generated content"},
		Run: func(ctx context.Context, root string, run int, p *Progress) (Measure, error) {
			limit := ws.RandMaxTime
			if run < 0 {
				limit = 0
			}
			m, err := timed(func() (int64, int64, error) {
				return random4k(ctx, filepath.Join(root, ds.Big.Name), ds.Big, ws.RandOps, limit, p)
			})
			m.Partial = m.Ops < int64(ws.RandOps)
			return m, err
		},
	})
	out = append(out, Workload{
		Name: WMeta, HasOps: true,
		Params: map[string]any{"tree": "small/", "dirs": len(ds.Dirs) + 1, "entries": len(ds.Small),
			"ops": "one readdir per directory plus one lstat per entry", "reader": "Go os.ReadDir + os.Lstat, 1 thread"},
		Run: func(ctx context.Context, root string, _ int, p *Progress) (Measure, error) {
			return timed(func() (int64, int64, error) { return metadata(ctx, root, ds, p) })
		},
	})
	for _, n := range ws.Parallel {
		out = append(out, Workload{
			Name: fmt.Sprintf("%s%d", wParPrefix, n), HasMBps: true,
			Params: map[string]any{"file": ds.Shared.Name, "size_bytes": ds.Shared.Size, "readers": n,
				"read_size": ws.ReadBuf, "reader": "N Go readers, each its own fd reading the whole file, xxhash64 each",
				"mb_per_s": "aggregate: N x file size / wall time until the last reader finishes"},
			Run: func(ctx context.Context, root string, _ int, p *Progress) (Measure, error) {
				return timed(func() (int64, int64, error) { return parallel(ctx, root, ds.Shared, n, ws.ReadBuf, p) })
			},
		})
	}
	return out
}

func smallSize(ds *Dataset) int64 {
	if len(ds.Small) == 0 {
		return 0
	}
	return ds.Small[0].Size
}

func timed(fn func() (int64, int64, error)) (Measure, error) {
	start := time.Now()
	b, ops, err := fn()
	return Measure{Seconds: time.Since(start).Seconds(), Bytes: b, Ops: ops}, err
}

// ErrMismatch marks data that differs from what was generated.
var ErrMismatch = errors.New("checksum mismatch")

// readVerified reads path sequentially with reads of bufSize and checks the
// xxhash64 of the stream against f.Sum; hashing runs in a second goroutine
// so it overlaps the reads.
func readVerified(ctx context.Context, path string, f FileSpec, bufSize int, p *Progress) (int64, error) {
	fd, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", f.Name, err)
	}
	defer fd.Close()
	return verifyStream(ctx, fd, f, bufSize, p)
}

// verifyStream reads r to its end and checks size and xxhash64 against f.
func verifyStream(ctx context.Context, fd io.Reader, f FileSpec, bufSize int, p *Progress) (int64, error) {
	const nbuf = 4
	free := make(chan []byte, nbuf)
	full := make(chan []byte, nbuf)
	for i := 0; i < nbuf; i++ {
		free <- make([]byte, bufSize)
	}
	sumc := make(chan uint64, 1)
	go func() {
		h := xxhash.New()
		for b := range full {
			_, _ = h.Write(b)
			free <- b[:cap(b)]
		}
		sumc <- h.Sum64()
	}()
	var n int64
	var rerr error
	for {
		if err := ctx.Err(); err != nil {
			rerr = err
			break
		}
		b := <-free
		k, err := fd.Read(b)
		if k > 0 {
			n += int64(k)
			p.Add(int64(k), 0)
			full <- b[:k]
		} else {
			free <- b
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(full)
	sum := <-sumc
	if rerr != nil {
		return n, fmt.Errorf("read %s: %w", f.Name, rerr)
	}
	if n != f.Size {
		return n, fmt.Errorf("read %s: %d bytes, want %d: %w", f.Name, n, f.Size, ErrMismatch)
	}
	if sum != f.Sum {
		return n, fmt.Errorf("read %s: xxhash64 %016x, want %016x: %w", f.Name, sum, f.Sum, ErrMismatch)
	}
	return n, nil
}

func epoch(ctx context.Context, root string, ds *Dataset, readers int, p *Progress) (int64, int64, error) {
	order := rand.New(rand.NewPCG(1, 0xE90C)).Perm(len(ds.Small))
	work := make(chan int)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64 // guarded by mu
		files int64 // guarded by mu
		ferr  error // guarded by mu
	)
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, smallSize(ds)+1)
			for i := range work {
				f := ds.Small[i]
				n, err := readSmall(filepath.Join(root, f.Name), f, buf)
				p.Add(n, 1)
				mu.Lock()
				total += n
				files++
				if err != nil && ferr == nil {
					ferr = err
				}
				mu.Unlock()
			}
		}()
	}
	for _, i := range order {
		mu.Lock()
		failed := ferr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if ferr == nil && ctx.Err() != nil {
		ferr = ctx.Err()
	}
	return total, files, ferr
}

func readSmall(path string, f FileSpec, buf []byte) (int64, error) {
	fd, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", f.Name, err)
	}
	defer fd.Close()
	if int64(len(buf)) < f.Size+1 {
		buf = make([]byte, f.Size+1)
	}
	n, err := io.ReadFull(fd, buf[:f.Size+1])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return int64(n), fmt.Errorf("read %s: %w", f.Name, err)
	}
	if int64(n) != f.Size {
		return int64(n), fmt.Errorf("read %s: %d bytes, want %d: %w", f.Name, n, f.Size, ErrMismatch)
	}
	if s := xxhash.Sum64(buf[:n]); s != f.Sum {
		return int64(n), fmt.Errorf("read %s: xxhash64 %016x, want %016x: %w", f.Name, s, f.Sum, ErrMismatch)
	}
	return int64(n), nil
}

func random4k(ctx context.Context, path string, f FileSpec, ops int, maxTime time.Duration, p *Progress) (int64, int64, error) {
	fd, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("random read %s: %w", f.Name, err)
	}
	defer fd.Close()
	blocks := f.Size / BlockSize
	if blocks == 0 {
		return 0, 0, fmt.Errorf("random read %s: file smaller than one block", f.Name)
	}
	rng := rand.New(rand.NewPCG(1, 0x4B))
	buf := make([]byte, BlockSize)
	want := make([]byte, BlockSize)
	deadline := time.Now().Add(maxTime)
	var n, done int64
	for i := 0; i < ops; i++ {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return n, done, err
			}
			if maxTime > 0 && time.Now().After(deadline) {
				break
			}
		}
		b := rng.Int64N(blocks)
		k, err := fd.ReadAt(buf, b*BlockSize)
		if err != nil && !(err == io.EOF && k == BlockSize) {
			return n, done, fmt.Errorf("random read %s at %d: %w", f.Name, b*BlockSize, err)
		}
		fillBlock(want, f.Seed, b)
		if !bytes.Equal(buf, want) {
			return n, done, fmt.Errorf("random read %s: block %d differs from the generated content: %w", f.Name, b, ErrMismatch)
		}
		n += int64(k)
		done++
		p.Add(int64(k), 1)
	}
	return n, done, nil
}

func metadata(ctx context.Context, root string, ds *Dataset, p *Progress) (int64, int64, error) {
	var ops int64
	top, err := os.ReadDir(filepath.Join(root, "small"))
	if err != nil {
		return 0, ops, fmt.Errorf("readdir small: %w", err)
	}
	ops++
	if len(top) != len(ds.Dirs) {
		return 0, ops, fmt.Errorf("readdir small: %d entries, want %d: %w", len(top), len(ds.Dirs), ErrMismatch)
	}
	files := 0
	want := smallSize(ds)
	for _, d := range ds.Dirs {
		if err := ctx.Err(); err != nil {
			return 0, ops, err
		}
		dir := filepath.Join(root, d)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, ops, fmt.Errorf("readdir %s: %w", d, err)
		}
		ops++
		p.Add(0, 1)
		for _, e := range ents {
			st, err := os.Lstat(filepath.Join(dir, e.Name()))
			if err != nil {
				return 0, ops, fmt.Errorf("lstat %s/%s: %w", d, e.Name(), err)
			}
			ops++
			if st.Size() != want {
				return 0, ops, fmt.Errorf("lstat %s/%s: size %d, want %d: %w", d, e.Name(), st.Size(), want, ErrMismatch)
			}
			files++
		}
		p.Add(0, int64(len(ents)))
	}
	if files != len(ds.Small) {
		return 0, ops, fmt.Errorf("metadata walk: %d files, want %d: %w", files, len(ds.Small), ErrMismatch)
	}
	return 0, ops, nil
}

func parallel(ctx context.Context, root string, f FileSpec, n, bufSize int, p *Progress) (int64, int64, error) {
	var wg sync.WaitGroup
	sizes := make([]int64, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sizes[i], errs[i] = readVerified(ctx, filepath.Join(root, f.Name), f, bufSize, p)
		}()
	}
	wg.Wait()
	var total int64
	for _, s := range sizes {
		total += s
	}
	return total, int64(n), errors.Join(errs...)
}
