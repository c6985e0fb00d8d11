package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// UnavailableError is trouble reaching the origin (connection refused or
// dropped, timeout, server restarting): errors.Is(err, ErrUnavailable) holds,
// Errno(err) is EIO, and the cause stays in the message. It never means the
// object is absent.
type UnavailableError struct {
	Op    string // "read data/x", "lstat a/b", ...
	Cause error
}

func (e *UnavailableError) Error() string {
	if e.Cause == nil {
		return e.Op + ": " + ErrUnavailable.Error()
	}
	return e.Op + ": " + ErrUnavailable.Error() + ": " + e.Cause.Error()
}

// Unwrap yields ErrUnavailable and EIO first (so Errno finds EIO, not
// whatever errno the cause carries), then the cause.
func (e *UnavailableError) Unwrap() []error {
	return []error{ErrUnavailable, syscall.EIO, e.Cause}
}

// GuardOptions configure Guard.
type GuardOptions struct {
	// Timeout bounds every operation, retries included (--origin-timeout);
	// no call returns later than this. Default 30 s.
	Timeout time.Duration
	// Retries is how many times an idempotent operation is tried again after
	// trouble (EIO, ESTALE, timeouts, unreachable); answers such as ENOENT,
	// EACCES or EEXIST are never retried. Default 2; negative = none.
	Retries int
	// Backoff is the wait before the first retry, doubled for each next one.
	// Default 100 ms.
	Backoff time.Duration
	// Logger receives health changes; nil = slog.Default().
	Logger *slog.Logger
}

// OriginHealth is what the daemon shows about its origin in `eddy cache
// stats`.
type OriginHealth struct {
	Up          bool      `json:"up"`
	Since       time.Time `json:"since"`
	LastError   string    `json:"last_error"`
	LastErrorAt time.Time `json:"last_error_at"`
}

// Guarded wraps an origin with per-operation timeouts, bounded retries and
// health tracking. It is itself an FS. Trouble is reported as trouble
// (ErrUnavailable, EIO), never turned into absence.
type Guarded struct {
	fs   FS
	opts GuardOptions
	log  *slog.Logger

	mu     sync.Mutex
	health OriginHealth // guarded by mu
}

var _ FS = (*Guarded)(nil)

// Guard wraps fs. The origin starts out as up.
func Guard(fs FS, opts GuardOptions) *Guarded {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Retries == 0 {
		opts.Retries = 2
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Guarded{fs: fs, opts: opts, log: log.With("origin", fs.String()),
		health: OriginHealth{Up: true, Since: time.Now()}}
}

// Unwrap returns the guarded origin.
func (g *Guarded) Unwrap() FS { return g.fs }

// Health reports whether the origin answered its last operation, since when,
// and its last trouble.
func (g *Guarded) Health() OriginHealth {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.health
}

// note records an operation's outcome in the health state.
func (g *Guarded) note(op string, err error) {
	trouble := IsTrouble(err)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	switch {
	case trouble:
		g.health.LastError = err.Error()
		g.health.LastErrorAt = now
		if g.health.Up {
			g.health.Up = false
			g.health.Since = now
			g.log.Warn("origin down", "op", op, "err", err)
		}
	case !g.health.Up:
		g.health.Up = true
		g.health.Since = now
		g.log.Info("origin back up", "op", op, "down_since", g.health.LastErrorAt)
	}
}

// run calls fn under the timeout, retrying trouble when idempotent. fn runs
// in its own goroutine, so an origin that ignores its context (a syscall
// stuck on a dead kernel mount) still cannot hold the caller past the
// timeout; such a call is abandoned and finishes on its own.
func (g *Guarded) run(ctx context.Context, op, name string, idempotent bool, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, g.opts.Timeout)
	defer cancel()
	backoff := g.opts.Backoff
	var err error
	for attempt := 0; ; attempt++ {
		done := make(chan error, 1)
		go func() { done <- fn(ctx) }()
		select {
		case err = <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err == nil || !IsTrouble(err) || !idempotent || attempt >= g.opts.Retries || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		backoff *= 2
	}
	if err != nil && ctx.Err() != nil && IsTrouble(err) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = &UnavailableError{Op: op + " " + name,
				Cause: fmt.Errorf("no answer within %v: %w (%w)", g.opts.Timeout, syscall.ETIMEDOUT, err)}
		}
	}
	if err != nil && IsTrouble(err) && !errors.Is(err, ErrUnavailable) {
		err = &UnavailableError{Op: op + " " + name, Cause: err}
	}
	g.note(op, err)
	return err
}

// guardedCall runs fn under g.run and returns its value. The value is
// handed over under a lock: a call abandoned at the timeout may still
// finish later, and must not race with the caller.
func guardedCall[T any](g *Guarded, ctx context.Context, op, name string, idempotent bool, fn func(ctx context.Context) (T, error)) (T, error) {
	var mu sync.Mutex
	var v T
	done := false
	err := g.run(ctx, op, name, idempotent, func(ctx context.Context) error {
		r, err := fn(ctx)
		mu.Lock()
		if !done {
			v = r
		}
		mu.Unlock()
		return err
	})
	mu.Lock()
	defer mu.Unlock()
	done = true
	if err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

func (g *Guarded) Lstat(ctx context.Context, name string) (Attr, error) {
	return guardedCall(g, ctx, "lstat", name, true, func(ctx context.Context) (Attr, error) {
		return g.fs.Lstat(ctx, name)
	})
}

func (g *Guarded) ReadDir(ctx context.Context, name string) ([]DirEntry, error) {
	return guardedCall(g, ctx, "readdir", name, true, func(ctx context.Context) ([]DirEntry, error) {
		return g.fs.ReadDir(ctx, name)
	})
}

// An abandoned Open or Create closes the file it opened when it finishes.
func (g *Guarded) Open(ctx context.Context, name string, flag int) (File, error) {
	return g.open(ctx, "open", name, true, func(ctx context.Context) (File, error) {
		return g.fs.Open(ctx, name, flag)
	}, flag)
}

func (g *Guarded) Create(ctx context.Context, name string, flag int, mode uint32, owner Owner) (File, error) {
	return g.open(ctx, "create", name, flag&syscall.O_EXCL == 0, func(ctx context.Context) (File, error) {
		return g.fs.Create(ctx, name, flag, mode, owner)
	}, flag)
}

func (g *Guarded) open(ctx context.Context, op, name string, idempotent bool, fn func(ctx context.Context) (File, error), flag int) (File, error) {
	type result struct {
		f   File
		err error
	}
	var mu sync.Mutex
	var got *result
	abandoned := false
	err := g.run(ctx, op, name, idempotent, func(ctx context.Context) error {
		f, err := fn(ctx)
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if f != nil {
				f.Close()
			}
			return err
		}
		if got != nil && got.f != nil {
			got.f.Close() // a retry superseded an attempt that also opened
		}
		got = &result{f, err}
		return err
	})
	mu.Lock()
	defer mu.Unlock()
	abandoned = true
	if err != nil {
		if got != nil && got.f != nil {
			got.f.Close()
		}
		return nil, err
	}
	return g.wrapFile(got.f, name, flag), nil
}

func (g *Guarded) Mkdir(ctx context.Context, name string, mode uint32, owner Owner) error {
	return g.run(ctx, "mkdir", name, false, func(ctx context.Context) error {
		return g.fs.Mkdir(ctx, name, mode, owner)
	})
}

func (g *Guarded) Mknod(ctx context.Context, name string, mode uint32, dev uint64, owner Owner) error {
	return g.run(ctx, "mknod", name, false, func(ctx context.Context) error {
		return g.fs.Mknod(ctx, name, mode, dev, owner)
	})
}

func (g *Guarded) Symlink(ctx context.Context, target, name string, owner Owner) error {
	return g.run(ctx, "symlink", name, false, func(ctx context.Context) error {
		return g.fs.Symlink(ctx, target, name, owner)
	})
}

func (g *Guarded) Readlink(ctx context.Context, name string) (string, error) {
	return guardedCall(g, ctx, "readlink", name, true, func(ctx context.Context) (string, error) {
		return g.fs.Readlink(ctx, name)
	})
}

func (g *Guarded) Link(ctx context.Context, oldname, newname string) error {
	return g.run(ctx, "link", newname, false, func(ctx context.Context) error {
		return g.fs.Link(ctx, oldname, newname)
	})
}

func (g *Guarded) Unlink(ctx context.Context, name string) error {
	return g.run(ctx, "unlink", name, false, func(ctx context.Context) error {
		return g.fs.Unlink(ctx, name)
	})
}

func (g *Guarded) Rmdir(ctx context.Context, name string) error {
	return g.run(ctx, "rmdir", name, false, func(ctx context.Context) error {
		return g.fs.Rmdir(ctx, name)
	})
}

func (g *Guarded) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	return g.run(ctx, "rename", oldname, false, func(ctx context.Context) error {
		return g.fs.Rename(ctx, oldname, newname, flags)
	})
}

func (g *Guarded) SetAttr(ctx context.Context, name string, set SetAttr) error {
	return g.run(ctx, "setattr", name, true, func(ctx context.Context) error {
		return g.fs.SetAttr(ctx, name, set)
	})
}

func (g *Guarded) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	return guardedCall(g, ctx, "getxattr", name, true, func(ctx context.Context) ([]byte, error) {
		return g.fs.Getxattr(ctx, name, attr)
	})
}

func (g *Guarded) Setxattr(ctx context.Context, name, attr string, data []byte, flags int) error {
	data = append([]byte(nil), data...) // the call may outlive ours
	return g.run(ctx, "setxattr", name, true, func(ctx context.Context) error {
		return g.fs.Setxattr(ctx, name, attr, data, flags)
	})
}

func (g *Guarded) Listxattr(ctx context.Context, name string) ([]string, error) {
	return guardedCall(g, ctx, "listxattr", name, true, func(ctx context.Context) ([]string, error) {
		return g.fs.Listxattr(ctx, name)
	})
}

func (g *Guarded) Removexattr(ctx context.Context, name, attr string) error {
	return g.run(ctx, "removexattr", name, false, func(ctx context.Context) error {
		return g.fs.Removexattr(ctx, name, attr)
	})
}

func (g *Guarded) Statfs(ctx context.Context) (Statfs, error) {
	return guardedCall(g, ctx, "statfs", ".", true, func(ctx context.Context) (Statfs, error) {
		return g.fs.Statfs(ctx)
	})
}

func (g *Guarded) String() string { return g.fs.String() }

// KeepsUnlinkedOpenFiles is the wrapped origin's.
func (g *Guarded) KeepsUnlinkedOpenFiles() bool {
	k, ok := g.fs.(UnlinkedOpenKeeper)
	return ok && k.KeepsUnlinkedOpenFiles()
}
func (g *Guarded) Close() error { return g.fs.Close() }

// guardedFile applies the guard to an open file's calls.
type guardedFile struct {
	g    *Guarded
	f    File
	name string
	flag int
}

// guardedFdFile is a guardedFile whose origin file has a local fd.
type guardedFdFile struct {
	*guardedFile
	fd Fder
}

func (f guardedFdFile) Fd() int { return f.fd.Fd() }

// Witnessed passes on the origin file's witness, if it has one.
func (f *guardedFile) Witnessed() (Attr, bool) {
	if w, ok := f.f.(AttrWitness); ok {
		return w.Witnessed()
	}
	return Attr{}, false
}

func (g *Guarded) wrapFile(f File, name string, flag int) File {
	gf := &guardedFile{g: g, f: f, name: name, flag: flag}
	if fd, ok := f.(Fder); ok {
		return guardedFdFile{gf, fd}
	}
	return gf
}

var bufPool = sync.Pool{New: func() any { return new([]byte) }}

func getBuf(n int) *[]byte {
	b := bufPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, n)
	}
	*b = (*b)[:n]
	return b
}

// ReadAt reads into a private buffer and copies on success, so a call
// abandoned at the timeout can never scribble on the caller's buffer later.
func (f *guardedFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	var mu sync.Mutex
	n := 0
	abandoned := false
	err := f.g.run(ctx, "read", f.name, true, func(ctx context.Context) error {
		b := getBuf(len(p))
		m, err := f.f.ReadAt(ctx, *b, off)
		mu.Lock()
		if !abandoned {
			n = copy(p, (*b)[:m])
		}
		mu.Unlock()
		bufPool.Put(b)
		return err
	})
	mu.Lock()
	abandoned = true
	mu.Unlock()
	if errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	return n, err
}

// WriteAt hands the origin a private copy: an abandoned call must not read
// a buffer the caller has reused.
func (f *guardedFile) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	b := append([]byte(nil), p...)
	var n atomic.Int64
	err := f.g.run(ctx, "write", f.name, f.flag&syscall.O_APPEND == 0, func(ctx context.Context) error {
		m, err := f.f.WriteAt(ctx, b, off)
		n.Store(int64(m))
		return err
	})
	return int(n.Load()), err
}

func (f *guardedFile) Stat(ctx context.Context) (Attr, error) {
	return guardedCall(f.g, ctx, "fstat", f.name, true, func(ctx context.Context) (Attr, error) {
		return f.f.Stat(ctx)
	})
}

func (f *guardedFile) Truncate(ctx context.Context, size int64) error {
	return f.g.run(ctx, "truncate", f.name, true, func(ctx context.Context) error {
		return f.f.Truncate(ctx, size)
	})
}

func (f *guardedFile) Sync(ctx context.Context) error {
	return f.g.run(ctx, "fsync", f.name, true, func(ctx context.Context) error {
		return f.f.Sync(ctx)
	})
}

func (f *guardedFile) Close() error {
	return f.g.run(context.Background(), "close", f.name, false, func(context.Context) error {
		return f.f.Close()
	})
}

// Unwrap returns the origin's own file.
func (f *guardedFile) Unwrap() File { return f.f }
