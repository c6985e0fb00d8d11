package origin

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeFS answers Lstat, Mkdir and Open with scripted behaviour. Methods it
// does not override panic through the nil embedded FS.
type fakeFS struct {
	FS
	calls   atomic.Int32
	errs    []error       // Lstat/Mkdir result per call; nil = success
	hang    chan struct{} // if set, calls block (ignoring ctx) until closed
	readDly time.Duration
}

func (f *fakeFS) next() error {
	i := int(f.calls.Add(1)) - 1
	if f.hang != nil {
		<-f.hang
	}
	if i < len(f.errs) {
		return f.errs[i]
	}
	return nil
}

func (f *fakeFS) Lstat(ctx context.Context, name string) (Attr, error) {
	if err := f.next(); err != nil {
		return Attr{}, err
	}
	return Attr{Size: 42}, nil
}

func (f *fakeFS) Mkdir(ctx context.Context, name string, mode uint32, owner Owner) error {
	return f.next()
}

func (f *fakeFS) Open(ctx context.Context, name string, flag int) (File, error) {
	return &fakeFile{delay: f.readDly}, nil
}

func (f *fakeFS) String() string { return "fake" }

type fakeFile struct {
	File
	delay time.Duration
}

func (f *fakeFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	time.Sleep(f.delay) // ignores ctx, like a syscall on a dead mount
	for i := range p {
		p[i] = 'X'
	}
	return len(p), nil
}

func (f *fakeFile) Close() error { return nil }

func eio() error { return &syscallErr{syscall.EIO} }

type syscallErr struct{ errno syscall.Errno }

func (e *syscallErr) Error() string { return "fake: " + e.errno.Error() }
func (e *syscallErr) Unwrap() error { return e.errno }

func TestGuardRetriesOnlyTrouble(t *testing.T) {
	cases := []struct {
		name      string
		errs      []error
		op        string // "lstat" (idempotent) or "mkdir" (not)
		wantCalls int32
		wantErr   error
		wantUp    bool
	}{
		{"EIO then success", []error{eio(), eio()}, "lstat", 3, nil, true},
		{"ESTALE then success", []error{syscall.ESTALE}, "lstat", 2, nil, true},
		{"EIO forever", []error{eio(), eio(), eio(), eio()}, "lstat", 3, syscall.EIO, false},
		{"ENOENT is an answer", []error{syscall.ENOENT}, "lstat", 1, syscall.ENOENT, true},
		{"EACCES is an answer", []error{syscall.EACCES}, "lstat", 1, syscall.EACCES, true},
		{"EEXIST is an answer", []error{syscall.EEXIST}, "mkdir", 1, syscall.EEXIST, true},
		{"mkdir not retried", []error{eio()}, "mkdir", 1, syscall.EIO, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeFS{errs: c.errs}
			g := Guard(f, GuardOptions{Timeout: 5 * time.Second, Backoff: time.Millisecond})
			var err error
			if c.op == "lstat" {
				var a Attr
				a, err = g.Lstat(context.Background(), "x")
				if err == nil && a.Size != 42 {
					t.Errorf("Lstat size %d", a.Size)
				}
			} else {
				err = g.Mkdir(context.Background(), "x", 0o755, Owner{})
			}
			if got := f.calls.Load(); got != c.wantCalls {
				t.Errorf("calls = %d, want %d", got, c.wantCalls)
			}
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("err = %v, want %v", err, c.wantErr)
			}
			if errors.Is(c.wantErr, syscall.EIO) && (!errors.Is(err, ErrUnavailable) || IsNotExist(err)) {
				t.Errorf("trouble %v not reported as unavailable (or turned into absence)", err)
			}
			if h := g.Health(); h.Up != c.wantUp {
				t.Errorf("health %+v, want up=%v", h, c.wantUp)
			}
		})
	}
}

func TestGuardTimeoutNeverHangs(t *testing.T) {
	f := &fakeFS{hang: make(chan struct{})}
	defer close(f.hang)
	g := Guard(f, GuardOptions{Timeout: 200 * time.Millisecond, Backoff: time.Millisecond})
	start := time.Now()
	_, err := g.Lstat(context.Background(), "stuck")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Lstat returned after %v with a 200ms timeout", d)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ETIMEDOUT) || Errno(err) != syscall.EIO || IsNotExist(err) || !IsTrouble(err) {
		t.Fatalf("err = %v (errno %v); want unavailable, ETIMEDOUT in the chain, errno EIO", err, Errno(err))
	}
	if !strings.Contains(err.Error(), "lstat stuck") || !strings.Contains(err.Error(), "200ms") {
		t.Errorf("error %q does not say what timed out and after how long", err)
	}
	h := g.Health()
	if h.Up || h.LastError == "" || h.LastErrorAt.IsZero() {
		t.Fatalf("health after timeout = %+v", h)
	}
}

func TestGuardHealthRecovers(t *testing.T) {
	f := &fakeFS{errs: []error{eio(), eio(), eio()}}
	g := Guard(f, GuardOptions{Timeout: time.Second, Retries: -1})
	before := g.Health()
	if !before.Up {
		t.Fatal("a new guard should start up")
	}
	if _, err := g.Lstat(context.Background(), "a"); err == nil {
		t.Fatal("want an error")
	}
	down := g.Health()
	if down.Up || !down.Since.After(before.Since) && !down.Since.Equal(before.Since) {
		t.Fatalf("health after trouble = %+v", down)
	}
	// Still down, Since unchanged.
	g.Lstat(context.Background(), "a")
	if h := g.Health(); h.Up || !h.Since.Equal(down.Since) {
		t.Fatalf("health after more trouble = %+v, want down since %v", h, down.Since)
	}
	g.Lstat(context.Background(), "a")
	if _, err := g.Lstat(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	up := g.Health()
	if !up.Up || up.Since.Before(down.Since) || up.LastError == "" {
		t.Fatalf("health after recovery = %+v", up)
	}
	b, _ := json.Marshal(up)
	for _, key := range []string{`"up":true`, `"since":`, `"last_error":`, `"last_error_at":`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("health JSON %s lacks %s", b, key)
		}
	}
}

// A read abandoned at the timeout finishes later; it must not write into
// the caller's buffer after ReadAt returned.
func TestGuardAbandonedReadKeepsBufferIntact(t *testing.T) {
	f := &fakeFS{readDly: 300 * time.Millisecond}
	g := Guard(f, GuardOptions{Timeout: 100 * time.Millisecond, Retries: -1})
	fl, err := g.Open(context.Background(), "f", syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := fl.ReadAt(context.Background(), buf, 0)
	if err == nil || n != 0 {
		t.Fatalf("ReadAt = %d, %v; want a timeout", n, err)
	}
	time.Sleep(400 * time.Millisecond)
	for _, b := range buf {
		if b != 0 {
			t.Fatal("abandoned read wrote into the caller's buffer")
		}
	}
	// With enough time the same read succeeds and fills the buffer.
	g2 := Guard(f, GuardOptions{Timeout: 2 * time.Second})
	fl2, _ := g2.Open(context.Background(), "f", syscall.O_RDONLY)
	if n, err := fl2.ReadAt(context.Background(), buf, 0); n != 64 || err != nil || buf[0] != 'X' {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
}

func TestGuardConcurrentUse(t *testing.T) {
	f := &fakeFS{}
	g := Guard(f, GuardOptions{Timeout: time.Second})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if _, err := g.Lstat(context.Background(), "x"); err != nil {
					t.Error(err)
					return
				}
				g.Health()
			}
		}()
	}
	wg.Wait()
}
