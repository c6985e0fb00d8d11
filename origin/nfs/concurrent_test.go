package nfs

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Many small files read in random order by parallel readers (a training
// epoch): every lookup, open and read must succeed with the right bytes.
func TestNFSOriginParallelSmallFiles(t *testing.T) {
	s := startServer(t)
	const dirs, perDir, size = 10, 60, 128 << 10
	want := make(map[string][]byte)
	for d := range dirs {
		dir := filepath.Join(s.export, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range perDir {
			name := fmt.Sprintf("d%02d/f%04d", d, i)
			b := bytes.Repeat([]byte{byte(d), byte(i)}, size/2)
			if err := os.WriteFile(filepath.Join(s.export, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			want[name] = b
		}
	}
	fs := s.open(t, "", 30*time.Second)
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, len(names))
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := rand.New(rand.NewPCG(uint64(r), 1)).Perm(len(names))
			buf := make([]byte, size)
			for _, i := range order {
				name := names[i]
				if _, err := fs.Lstat(ctx, name); err != nil {
					errs <- fmt.Errorf("lstat %s: %w", name, err)
					return
				}
				f, err := fs.Open(ctx, name, os.O_RDONLY)
				if err != nil {
					errs <- fmt.Errorf("open %s: %w", name, err)
					return
				}
				n, err := f.ReadAt(ctx, buf, 0)
				f.Close()
				if n != size || !bytes.Equal(buf[:n], want[name]) {
					errs <- fmt.Errorf("read %s: %d bytes, %v", name, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
