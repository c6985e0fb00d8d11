package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// BlockSize is the unit of the generated content: block b of a file is a
// pure function of (file seed, b), so any 4 KiB read can be checked without
// reading a reference copy.
const BlockSize = 4096

// fillBlock writes the content of block b of the file with the given seed
// into dst (len(dst) <= BlockSize; a short dst is a file's last block).
func fillBlock(dst []byte, seed uint64, b int64) {
	x := seed ^ (uint64(b)+1)*0x9E3779B97F4A7C15
	var tmp [8]byte
	for i := 0; i < len(dst); i += 8 {
		// splitmix64
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		if i+8 <= len(dst) {
			binary.LittleEndian.PutUint64(dst[i:], z)
		} else {
			binary.LittleEndian.PutUint64(tmp[:], z)
			copy(dst[i:], tmp[:])
		}
	}
}

// fillRange writes the content of [off, off+len(dst)) of the file with seed
// into dst; off must be block aligned.
func fillRange(dst []byte, seed uint64, off int64) {
	for i := 0; i < len(dst); i += BlockSize {
		end := min(i+BlockSize, len(dst))
		fillBlock(dst[i:end], seed, (off+int64(i))/BlockSize)
	}
}

// FileSpec is one generated file: where, how big, its seed and the xxhash64
// of its whole content.
type FileSpec struct {
	Name string // relative to the dataset root
	Size int64
	Seed uint64
	Sum  uint64
}

// Dataset is the generated tree every backend serves.
type Dataset struct {
	Root   string     // directory holding the tree (the export)
	Big    FileSpec   // sequential and random reads
	Shared FileSpec   // N parallel readers
	Small  []FileSpec // the epoch and metadata workloads
	Dirs   []string   // directories of the small files, relative to Root
}

// DatasetSpec sizes a dataset.
type DatasetSpec struct {
	BigSize    int64
	SharedSize int64
	SmallCount int
	SmallSize  int64
	PerDir     int // small files per directory
}

// Bytes is the dataset's total size.
func (s DatasetSpec) Bytes() int64 {
	return s.BigSize + s.SharedSize + int64(s.SmallCount)*s.SmallSize
}

// Generate writes the dataset under root, fsyncing every file, and reports
// progress in bytes to p (may be nil).
func Generate(ctx context.Context, root string, spec DatasetSpec, p *Progress) (*Dataset, error) {
	if spec.PerDir <= 0 {
		spec.PerDir = 100
	}
	ds := &Dataset{Root: root}
	ds.Big = FileSpec{Name: "big.bin", Size: spec.BigSize, Seed: 0xB16}
	ds.Shared = FileSpec{Name: "shared.bin", Size: spec.SharedSize, Seed: 0x5A4ED}
	for i := 0; i < spec.SmallCount; i++ {
		d := fmt.Sprintf("small/d%03d", i/spec.PerDir)
		if i%spec.PerDir == 0 {
			ds.Dirs = append(ds.Dirs, d)
		}
		ds.Small = append(ds.Small, FileSpec{
			Name: fmt.Sprintf("%s/f%05d.bin", d, i),
			Size: spec.SmallSize,
			Seed: 0x5EED0000 + uint64(i),
		})
	}
	for _, d := range append([]string{"."}, ds.Dirs...) {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("generate dataset: %w", err)
		}
	}
	for _, f := range []*FileSpec{&ds.Big, &ds.Shared} {
		sum, err := writeFile(ctx, filepath.Join(root, f.Name), *f, p)
		if err != nil {
			return nil, err
		}
		f.Sum = sum
	}
	// Small files: two writers (the machine has two cores).
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error // guarded by mu
	)
	work := make(chan int)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sum, err := writeFile(ctx, filepath.Join(root, ds.Small[i].Name), ds.Small[i], p)
				if err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
					}
					mu.Unlock()
					continue
				}
				ds.Small[i].Sum = sum
			}
		}()
	}
	for i := range ds.Small {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if ferr != nil {
		return nil, ferr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("generate dataset: %w", err)
	}
	return ds, nil
}

func writeFile(ctx context.Context, path string, f FileSpec, p *Progress) (uint64, error) {
	out, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("generate %s: %w", f.Name, err)
	}
	defer out.Close()
	h := xxhash.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < f.Size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("generate %s: %w", f.Name, err)
		}
		n := min(int64(len(buf)), f.Size-off)
		fillRange(buf[:n], f.Seed, off)
		_, _ = h.Write(buf[:n])
		if _, err := out.Write(buf[:n]); err != nil {
			return 0, fmt.Errorf("generate %s: %w", f.Name, err)
		}
		p.Add(n, 0)
	}
	if err := out.Sync(); err != nil {
		return 0, fmt.Errorf("generate %s: fsync: %w", f.Name, err)
	}
	if err := out.Close(); err != nil {
		return 0, fmt.Errorf("generate %s: %w", f.Name, err)
	}
	return h.Sum64(), nil
}
