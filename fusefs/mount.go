package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/consistency"
	"github.com/eddy-cluster/eddy/origin"
)

// Cache is what fusefs needs from the node's chunk cache (*cache.Store).
type Cache interface {
	// Cacheable reports whether name's content may be served from the cache.
	Cacheable(name string) bool
	// OpenFile opens a read-only cached view of name, revalidating the cached
	// content against attr (fresh from the origin).
	OpenFile(ctx context.Context, name string, attr origin.Attr) (cache.Handle, cache.OpenResult, error)
	// Invalidate drops name's cached content (written through the mount).
	Invalidate(name string)
	// Rename follows a rename made through the mount.
	Rename(oldname, newname string)
	// NotePassthroughOpen counts an open served by kernel passthrough, of a
	// file of size bytes.
	NotePassthroughOpen(size int64)
}

// OfflineCache is implemented by caches that can serve disconnected reads
// (*cache.Store does). fusefs uses it only when Options.OfflineGrace
// > 0 and the origin reports trouble (origin.IsTrouble), never when it
// reports ENOENT.
type OfflineCache interface {
	// LastKnown returns the attributes name had when its cached content was
	// last validated against the origin, when that was, and whether the file
	// is fully cached.
	LastKnown(name string) (attr origin.Attr, validatedAt time.Time, complete bool, ok bool)
	// OpenOffline opens the cached content of name without asking the
	// origin; it fails (cache.ErrNotCached) unless the file is fully cached
	// and was validated within grace.
	OpenOffline(ctx context.Context, name string, grace time.Duration) (cache.Handle, origin.Attr, error)
}

// Options configure a mount. Zero values take the defaults noted.
type Options struct {
	// EntryTimeout and AttrTimeout: how long the kernel may cache names and
	// attributes. 0 means the default (1 s); a negative value means 0.
	EntryTimeout time.Duration
	AttrTimeout  time.Duration
	// AttrTimeoutMax, when larger than AttrTimeout, lets the kernel cache the
	// name and attributes of an entry unchanged for a while longer: a tenth of
	// the time since its last change (the later of mtime and ctime), between
	// AttrTimeout and AttrTimeoutMax, as the NFS client's acregmin/acregmax
	// do. Contents are revalidated at every open regardless (close-to-open).
	// 0: AttrTimeout for every entry.
	AttrTimeoutMax time.Duration
	// NegativeTimeout: how long the kernel may cache "no such file"; 0: not cached.
	NegativeTimeout time.Duration
	// OfflineGrace: while the origin is in trouble, files whose cached
	// content was validated within this window are served read-only from
	// the cache. 0 disables disconnected reads.
	OfflineGrace time.Duration
	// OriginTimeout bounds each origin call through its context (origins that
	// honour contexts stop waiting then). 0: no bound.
	OriginTimeout time.Duration
	// MaxWrite is the largest READ/WRITE request; default 1016 KiB: at 1 MiB
	// a request plus its header no longer fits a pipe (pipe-max-size is
	// 1 MiB), which breaks splice.
	MaxWrite int
	// MaxBackground: outstanding background requests (async reads); default 64.
	MaxBackground int
	// ReadAheadKB is written to the mount's bdi read_ahead_kb after mounting;
	// default 1024; negative leaves the kernel's default.
	ReadAheadKB int
	// NoPassthrough turns kernel passthrough off.
	NoPassthrough bool
	// PassthroughSettle: a file is opened with passthrough only once it has
	// been unchanged (mtime and ctime) for this long; a file still being
	// written is read through the daemon, which follows it read by read.
	// 0: DefaultPassthroughSettle; negative: no wait.
	PassthroughSettle time.Duration
	// NoAllowOther mounts without allow_other (only the mounting user may enter).
	NoAllowOther bool
	// Debug logs every FUSE request (go-fuse's debug output).
	Debug bool
	// Logger: default slog.Default().
	Logger *slog.Logger
	// Quota, when set, is consulted before writes make files grow (quota.go).
	Quota Quota
	// Consistency: per-glob open consistency (consistency.go). Under a
	// rule with a TTL, an open trusts the last check of the file against
	// the origin for the TTL, and the kernel keeps those names and
	// attributes as long; names no rule matches keep close-to-open.
	Consistency consistency.Rules
}

// Defaults.
const (
	DefaultTimeout       = time.Second
	DefaultMaxWrite      = 1016 << 10
	DefaultMaxBackground = 64
	DefaultReadAheadKB   = 1024
	// DefaultPassthroughSettle: as an NFS client's shortest attribute
	// cache time for regular files (acregmin).
	DefaultPassthroughSettle = 3 * time.Second
	defaultUnmountWait       = 10 * time.Second
)

// attrTimeout is the kernel cache timeout for an entry with attributes a
// (Options.AttrTimeoutMax), or 0 for the mount's fixed default.
func (s *state) attrTimeout(a origin.Attr) time.Duration {
	lo := timeoutOrDefault(s.opts.AttrTimeout)
	hi := s.opts.AttrTimeoutMax
	if hi <= lo {
		return 0
	}
	changed := a.Mtime
	if a.Ctime.After(changed) {
		changed = a.Ctime
	}
	return min(max(time.Since(changed)/10, lo), hi)
}

func timeoutOrDefault(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultTimeout
	case d < 0:
		return 0
	}
	return d
}

// View is a mounted FUSE view of an origin.
type View struct {
	mountpoint string
	server     *fuse.Server
	st         *state
	dev        uint64 // device number of the mount (FUSE connection id)
	done       chan struct{}
	unmountMu  sync.Mutex // serializes Unmount
}

// state is shared by every node and handle of one mount.
type state struct {
	org     origin.FS
	cache   Cache        // nil: no cache
	offline OfflineCache // nil unless cache implements it
	opts    Options
	log     *slog.Logger
	rootDev uint64
	server  *fuse.Server // set after mounting

	stash *attrStash // nil: entries are not cached by the mount (timeouts off)
	// entryTimeout is the kernel's entry timeout for names whose reply sets
	// none of its own (go-fuse's default is off: a zero timeout must stay 0).
	entryTimeout time.Duration
	vouch        vouches // lookups that stand for the next open's origin check

	flushes   atomic.Int64 // FLUSH requests served
	backingMu sync.Mutex
	backing   map[*node]struct{} // nodes with a kept backing file (guarded by backingMu; backing.go)

	// keepsUnlinked: the origin's open files outlive their names (unlinked.go).
	keepsUnlinked bool

	backingSyncs  atomic.Int64 // passthrough backing files brought up to an origin change (backing.go)
	backingPushes atomic.Int64 // local passthrough writes pushed to the origin (backing.go)

	ptAvailable atomic.Bool // kernel offers passthrough and a backing fd registered
	ptFailed    atomic.Bool // a passthrough handle saw reads: passthrough not in effect
	ptLogOnce   sync.Once
}

// Mount mounts org at mountpoint. c may be nil (no cache: plain
// origin-over-FUSE). It mounts with the mount syscall (root required),
// allow_other and default_permissions (the kernel checks permissions
// against the origin's modes).
func Mount(ctx context.Context, mountpoint string, org origin.FS, c Cache, opts Options) (*View, error) {
	if org == nil {
		return nil, errors.New("fusefs mount: no origin")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxWrite == 0 {
		opts.MaxWrite = DefaultMaxWrite
	}
	if opts.MaxBackground == 0 {
		opts.MaxBackground = DefaultMaxBackground
	}
	if opts.ReadAheadKB == 0 {
		opts.ReadAheadKB = DefaultReadAheadKB
	}
	rootAttr, err := org.Lstat(ctx, ".")
	if err != nil {
		return nil, fmt.Errorf("fusefs mount: origin %s: %w", org, err)
	}
	if !rootAttr.IsDir() {
		return nil, fmt.Errorf("fusefs mount: origin %s: %w", org, unix.ENOTDIR)
	}
	st := &state{org: org, opts: opts, log: opts.Logger, rootDev: rootAttr.Dev}
	if c != nil && !isNilCache(c) {
		st.cache = c
		if oc, ok := c.(OfflineCache); ok {
			st.offline = oc
		}
	}
	if timeoutOrDefault(opts.EntryTimeout) > 0 && timeoutOrDefault(opts.AttrTimeout) > 0 {
		st.stash = newAttrStash()
	}
	if k, ok := org.(origin.UnlinkedOpenKeeper); ok {
		st.keepsUnlinked = k.KeepsUnlinkedOpenFiles()
	}
	root := &node{st: st}
	root.setLast(rootAttr)
	entry := timeoutOrDefault(opts.EntryTimeout)
	st.entryTimeout = entry
	st.vouch.m = map[uint64]vouch{}
	attr := timeoutOrDefault(opts.AttrTimeout)
	neg := opts.NegativeTimeout
	if neg < 0 {
		neg = 0
	}
	fsopts := &fs.Options{
		// EntryTimeout stays nil: newChild sets every entry's timeout,
		// including 0 (go-fuse would replace a 0 by its default).
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		// The origin's mode as it is: go-fuse would show 0000 as 0644 (0755
		// for a directory), and default_permissions makes the kernel check
		// access against what we report.
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: st.ino(rootAttr)},
		MountOptions: fuse.MountOptions{
			AllowOther:        !opts.NoAllowOther,
			DirectMountStrict: true,
			FsName:            "eddy",
			Name:              "eddy",
			Options:           []string{"default_permissions"},
			MaxWrite:          opts.MaxWrite,
			MaxBackground:     opts.MaxBackground,
			EnableLocks:       true,
			Debug:             opts.Debug,
			Logger:            log.New(slogWriter{opts.Logger}, "", 0),
		},
	}
	server, err := fuse.NewServer(&killable{fs.NewNodeFS(root, fsopts)}, mountpoint, &fsopts.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("fusefs mount %s: %w", mountpoint, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, fmt.Errorf("fusefs mount %s: %w", mountpoint, err)
	}
	st.server = server
	m := &View{mountpoint: mountpoint, server: server, st: st, done: make(chan struct{})}
	go func() {
		server.Wait()
		close(m.done)
	}()
	go st.watchBackings(m.done)
	var mst unix.Stat_t
	if err := unix.Stat(mountpoint, &mst); err == nil {
		m.dev = mst.Dev
		if opts.ReadAheadKB > 0 {
			p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(mst.Dev), unix.Minor(mst.Dev))
			if err := os.WriteFile(p, []byte(strconv.Itoa(opts.ReadAheadKB)), 0); err != nil {
				st.log.Warn("fusefs: cannot set read-ahead", "path", p, "err", err)
			}
		}
	} else {
		st.log.Warn("fusefs: stat of the new mount failed", "mountpoint", mountpoint, "err", err)
	}
	if st.cache != nil && !opts.NoPassthrough {
		st.probePassthrough()
	}
	st.log.Info("fusefs: mounted", "mountpoint", mountpoint, "origin", org.String(),
		"cache", st.cache != nil, "passthrough", st.ptAvailable.Load())
	return m, nil
}

// isNilCache reports a typed nil (e.g. (*cache.Store)(nil)), which counts as
// no cache.
func isNilCache(c Cache) bool {
	v := reflect.ValueOf(c)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// probePassthrough registers a backing fd once to learn whether the kernel
// lets this process use passthrough (root, CONFIG_FUSE_PASSTHROUGH). go-fuse
// turns passthrough off for the whole mount after one failed registration,
// so handles offering a passthrough fd are only handed out when this works.
func (st *state) probePassthrough() {
	if st.server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		st.log.Warn("fusefs: kernel does not offer FUSE passthrough; cached reads go through the daemon")
		return
	}
	f, err := os.CreateTemp("", "eddy-passthrough-probe-")
	if err != nil {
		st.log.Warn("fusefs: passthrough probe", "err", err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	id, errno := st.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		st.log.Warn("fusefs: kernel refused a passthrough backing file; cached reads go through the daemon", "err", errno)
		return
	}
	st.server.UnregisterBackingFd(id)
	st.ptAvailable.Store(true)
}

// passthroughOK reports whether handles may offer a passthrough fd.
func (st *state) passthroughOK() bool {
	return st.ptAvailable.Load() && !st.ptFailed.Load() && !st.opts.NoPassthrough
}

// notePassthroughFailed records that a passthrough handle's reads or writes
// reached the daemon (go-fuse turned passthrough off after a failed
// registration).
func (st *state) notePassthroughFailed() {
	st.ptFailed.Store(true)
	st.ptLogOnce.Do(func() {
		st.log.Warn("fusefs: kernel passthrough is not in effect (backing file refused); cached reads go through the daemon")
	})
}

// Mountpoint is where the view is mounted.
func (m *View) Mountpoint() string { return m.mountpoint }

// Server is the go-fuse server (for notifications and tests).
func (m *View) Server() *fuse.Server { return m.server }

// Passthrough reports whether kernel passthrough is active: the kernel
// offers it, a backing file could be registered, and no passthrough open
// has fallen back to daemon reads since.
func (m *View) Passthrough() bool { return m.st.passthroughOK() }

// Wait blocks until the file system is unmounted and its server stopped.
func (m *View) Wait() { <-m.done }

// Done is closed when the server has stopped.
func (m *View) Done() <-chan struct{} { return m.done }

// Unmount unmounts the view. If the normal unmount fails (mount busy) or
// does not finish before ctx's deadline (default 10 s), it detaches the mount
// (lazy unmount) and aborts the FUSE connection, so it never hangs (a copy of
// the mount in another mount namespace keeps a normal unmount from ending).
func (m *View) Unmount(ctx context.Context) error {
	m.unmountMu.Lock()
	defer m.unmountMu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultUnmountWait)
		defer cancel()
	}
	errc := make(chan error, 1)
	go func() { errc <- m.server.Unmount() }()
	var uerr error
	select {
	case uerr = <-errc:
		if uerr == nil {
			<-m.done
			return nil
		}
	case <-ctx.Done():
		uerr = ctx.Err()
	}
	m.st.log.Warn("fusefs: unmount did not finish; detaching and aborting the connection",
		"mountpoint", m.mountpoint, "err", uerr)
	derr := unix.Unmount(m.mountpoint, unix.MNT_DETACH)
	if derr != nil && derr != unix.EINVAL && derr != unix.ENOENT {
		m.st.log.Warn("fusefs: lazy unmount", "mountpoint", m.mountpoint, "err", derr)
	}
	m.abort()
	select {
	case <-m.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("fusefs unmount %s: server did not stop: %w", m.mountpoint, uerr)
	}
}

// abort aborts the FUSE connection through fusectl, which ends every
// pending request with ENOTCONN and stops the server's read loops.
func (m *View) abort() {
	if m.dev == 0 {
		return
	}
	p := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(m.dev))
	err := os.WriteFile(p, []byte("1"), 0)
	if os.IsNotExist(err) {
		// fusectl is not mounted (no systemd here): mount it, as systemd would.
		if merr := unix.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, ""); merr != nil && merr != unix.EBUSY {
			m.st.log.Warn("fusefs: mount fusectl", "err", merr)
		}
		err = os.WriteFile(p, []byte("1"), 0)
	}
	if err != nil {
		m.st.log.Warn("fusefs: abort connection", "path", p, "err", err)
	}
}

// slogWriter routes go-fuse's log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	w.l.Debug("go-fuse: " + msg)
	return len(p), nil
}
