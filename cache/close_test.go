package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

// Close while reads (and their read-ahead and persist steps) are in flight:
// no WaitGroup reuse, no race (run with -race), no write after Close, and
// readers either finish or fail cleanly.
func TestCloseDuringReads(t *testing.T) {
	for round := range 5 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			o := newFakeOrigin()
			const files = 6
			for i := range files {
				o.put(fmt.Sprintf("f%d", i), pattern(16*testChunk, uint64(70+i)))
			}
			cfg := testConfig(t)
			cfg.ReadAhead = 4
			s := openStore(t, o, cfg)
			var handles []Handle
			for i := range files {
				h, _ := mustOpen(t, s, o, fmt.Sprintf("f%d", i))
				handles = append(handles, h)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, h := range handles {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					buf := make([]byte, 16<<10)
					for off := int64(0); ; off += int64(len(buf)) {
						_, err := h.ReadAt(context.Background(), buf, off)
						if errors.Is(err, io.EOF) {
							return
						}
						if err != nil {
							t.Errorf("f%d: read at %d: %v", i, off, err)
							return
						}
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_ = s.Warm(context.Background(), ".", nil)
			}()
			close(start)
			time.Sleep(time.Duration(round) * 2 * time.Millisecond)
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, _, err := s.OpenFile(context.Background(), "f0", o.attr("f0")); !errors.Is(err, ErrClosed) {
				t.Fatalf("OpenFile after Close: %v, want ErrClosed", err)
			}
			wg.Wait()
			for _, h := range handles {
				h.Close()
			}
		})
	}
}
