package nfs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

func init() {
	origin.RegisterScheme("nfs", func(ctx context.Context, u *url.URL, opts origin.OpenOptions) (origin.FS, error) {
		cfg, err := configFromURL(u)
		if err != nil {
			return nil, err
		}
		return New(ctx, cfg, opts)
	})
}

const (
	// DefaultTimeout is how long an operation waits for a server that does
	// not answer (reconnecting, retrying) before failing as unavailable.
	DefaultTimeout = 30 * time.Second
	// rpcTimeout bounds one attempt of one RPC.
	rpcTimeout = 10 * time.Second
	// dirTTL is how long a directory's path->handle mapping is trusted.
	dirTTL = 2 * time.Second
	// maxIO caps READ and WRITE sizes (the server's rtmax/wtmax may lower it).
	maxIO = 1 << 20
	// eioRetries bounds retries of NFS3ERR_IO / SERVERFAULT answers.
	eioRetries = 2
)

// FS is an NFSv3 export as an origin.FS.
type FS struct {
	cfg     Config
	dial    Dialer
	log     *slog.Logger
	cred    cred
	timeout time.Duration

	rsize, wsize uint32

	mu        sync.Mutex
	root      []byte // guarded by mu; the export's root handle
	nfsPort   int    // guarded by mu
	mountPort int    // guarded by mu

	slots []*slot
	next  atomic.Uint32
	dirs  handleCache
	// recent holds the handles of files just looked up, so that the open
	// which usually follows a lookup (fusefs's close-to-open check, then
	// the read) needs no second LOOKUP.
	recent recentFiles

	closed atomic.Bool
	sent   [32]atomic.Int64 // calls sent, by procedure
}

// procNames names the NFSv3 procedures CallsSent reports.
var procNames = map[uint32]string{
	procGetattr: "GETATTR", procSetattr: "SETATTR", procLookup: "LOOKUP", procReadlink: "READLINK",
	procRead: "READ", procWrite: "WRITE", procCreate: "CREATE", procMkdir: "MKDIR",
	procSymlink: "SYMLINK", procMknod: "MKNOD", procRemove: "REMOVE", procRmdir: "RMDIR",
	procRename: "RENAME", procLink: "LINK", procReaddirplus: "READDIRPLUS", procFsstat: "FSSTAT",
	procFsinfo: "FSINFO", procPathconf: "PATHCONF",
}

// CallsSent returns the NFS calls sent so far, by procedure name (retries
// included): what an operation through the origin costs in round trips,
// for benchmarks and tests.
func (f *FS) CallsSent() map[string]int64 {
	out := map[string]int64{}
	for p := range f.sent {
		if n := f.sent[p].Load(); n > 0 {
			name, ok := procNames[uint32(p)]
			if !ok {
				name = fmt.Sprintf("proc%d", p)
			}
			out[name] = n
		}
	}
	return out
}

type slot struct {
	mu   sync.Mutex
	conn *rpcConn // guarded by mu
}

var _ origin.FS = (*FS)(nil)

// New connects to the export: it resolves the NFS and MOUNT ports, mounts
// the export (retrying while the server does not answer, up to the
// timeout) and reads its transfer sizes.
func New(ctx context.Context, cfg Config, opts origin.OpenOptions) (*FS, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 2
	}
	f := &FS{
		cfg:       cfg,
		dial:      opts.Dial,
		log:       opts.Logger,
		cred:      authSysCred(cfg.Uid, cfg.Gid),
		timeout:   cfg.Timeout,
		nfsPort:   cfg.Port,
		mountPort: cfg.MountPort,
		rsize:     maxIO,
		wsize:     maxIO,
		dirs:      handleCache{m: map[string]hent{}},
		recent:    recentFiles{m: map[string]rent{}},
	}
	if f.dial == nil {
		f.dial = defaultDial
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("origin", cfg.String())
	if f.timeout == 0 {
		f.timeout = opts.Timeout
	}
	if f.timeout == 0 {
		f.timeout = DefaultTimeout
	}
	for i := 0; i < cfg.Conns; i++ {
		f.slots = append(f.slots, &slot{})
	}
	err := f.retry(ctx, "mount "+cfg.Export, func(ctx context.Context) error {
		_, err := f.remount(ctx, nil)
		return err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nfs: open %s: %w", cfg, err)
	}
	if err := f.fsinfo(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("nfs: open %s: %w", cfg, err)
	}
	f.log.Info("nfs origin ready", "conns", cfg.Conns, "rsize", f.rsize, "wsize", f.wsize)
	return f, nil
}

// String names the origin.
func (f *FS) String() string { return f.cfg.String() }

// Close closes every connection. Calls in flight fail.
func (f *FS) Close() error {
	f.closed.Store(true)
	for _, s := range f.slots {
		s.mu.Lock()
		if s.conn != nil {
			s.conn.close(errConnClosed)
			s.conn = nil
		}
		s.mu.Unlock()
	}
	return nil
}

// remount asks the MOUNT service for the root handle again (the first time,
// or after the server called the old one stale). stale is the handle the
// caller found stale; if another caller already replaced it, nothing is done.
func (f *FS) remount(ctx context.Context, stale []byte) ([]byte, error) {
	f.mu.Lock()
	if f.root != nil && (stale == nil || string(stale) != string(f.root)) {
		root := f.root
		f.mu.Unlock()
		return root, nil
	}
	mport := f.mountPort
	f.mu.Unlock()
	if mport == 0 {
		p, err := getPort(ctx, f.dial, f.cfg.Host, mountProg, mountVers, f.timeout)
		if err != nil {
			return nil, err
		}
		mport = p
	}
	root, err := mountExport(ctx, f.dial, net.JoinHostPort(f.cfg.Host, strconv.Itoa(mport)), f.cfg.Export, f.cred, f.timeout)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.cfg.MountPort == 0 {
		f.mountPort = mport
	}
	f.root = root
	f.mu.Unlock()
	f.dirs.dropAll()
	if stale != nil {
		f.log.Warn("nfs: root handle was stale; remounted the export")
	}
	return root, nil
}

func (f *FS) rootFH() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.root
}

// conn returns a live connection, dialling one if its slot has none.
// Successive calls spread over the slots.
func (f *FS) conn(ctx context.Context) (*rpcConn, error) {
	if f.closed.Load() {
		return nil, errors.New("nfs: origin closed")
	}
	s := f.slots[int(f.next.Add(1))%len(f.slots)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.conn.alive() {
		return s.conn, nil
	}
	f.mu.Lock()
	port := f.nfsPort
	f.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if port == 0 {
		p, err := getPort(dctx, f.dial, f.cfg.Host, nfsProg, nfsVers, f.timeout)
		if err != nil {
			return nil, err
		}
		port = p
	}
	rc, err := dialRPC(dctx, f.dial, net.JoinHostPort(f.cfg.Host, strconv.Itoa(port)), f.timeout)
	if err != nil {
		if f.cfg.Port == 0 {
			f.mu.Lock()
			f.nfsPort = 0 // the server may have moved: ask the portmapper again
			f.mu.Unlock()
		}
		return nil, err
	}
	f.mu.Lock()
	f.nfsPort = port
	f.mu.Unlock()
	if s.conn != nil {
		f.log.Info("nfs: reconnected", "addr", rc.c.RemoteAddr().String())
	}
	s.conn = rc
	return rc, nil
}

// retry runs fn until it succeeds, fails with an answer from the server, or
// the time to wait for the server (f.timeout, and ctx) runs out. Transport
// trouble and NFS3ERR_JUKEBOX are retried with backoff, NFS3ERR_IO and
// SERVERFAULT a bounded number of times. Trouble comes back as an
// *origin.UnavailableError; answers come back as they are.
func (f *FS) retry(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(f.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	backoff := 50 * time.Millisecond
	eio := 0
	for attempt := 0; ; attempt++ {
		// One attempt may use rpcTimeout, but never past the deadline.
		adl := time.Now().Add(rpcTimeout)
		if deadline.Before(adl) {
			adl = deadline
		}
		actx, cancel := context.WithDeadline(ctx, adl)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		var rerr *rpcError
		trouble := isTransport(err) || errors.As(err, &rerr) || errorsIsStatus(err, nfs3ErrJukebox)
		if !trouble && (errorsIsStatus(err, nfs3ErrIO) || errorsIsStatus(err, nfs3ErrServFlt)) {
			eio++
			trouble = eio <= eioRetries
			if !trouble {
				return err
			}
		}
		if !trouble {
			return err
		}
		if ctx.Err() != nil {
			return &origin.UnavailableError{Op: "nfs " + op, Cause: errors.Join(ctx.Err(), err)}
		}
		if time.Now().Add(backoff).After(deadline) {
			return &origin.UnavailableError{Op: "nfs " + op, Cause: fmt.Errorf("gave up after %d attempts: %w", attempt+1, err)}
		}
		if attempt == 0 {
			f.log.Warn("nfs: trouble, retrying", "op", op, "err", err)
		}
		select {
		case <-ctx.Done():
			return &origin.UnavailableError{Op: "nfs " + op, Cause: errors.Join(ctx.Err(), err)}
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > time.Second {
			backoff = time.Second
		}
	}
}

// call makes one NFS call on some connection and checks its status. The
// returned decoder is positioned after the status; on a non-OK status the
// error is a *statusError.
//
// rec is the reply record to hand to putRecord after decoding.
func (f *FS) call(ctx context.Context, proc uint32, cr cred, args []byte) (d *dec, rec []byte, err error) {
	rc, err := f.conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if int(proc) < len(f.sent) {
		f.sent[proc].Add(1)
	}
	res, rec, err := rc.call(ctx, nfsProg, nfsVers, proc, cr, args)
	if err != nil {
		return nil, nil, err
	}
	d = &dec{b: res}
	st := d.u32()
	if d.err != nil {
		return nil, rec, d.err
	}
	if st != nfs3OK {
		return d, rec, statusErrno(st)
	}
	return d, rec, nil
}

// nfs makes one NFS call with retries (see retry). decode runs on the reply
// of the successful attempt. attempts reports how many attempts were sent,
// so non-idempotent callers can recognise the echo of their own success
// (EEXIST after a retried MKDIR).
func (f *FS) nfs(ctx context.Context, op string, proc uint32, cr cred, args []byte, decode func(d *dec) error) (attempts int, err error) {
	err = f.retry(ctx, op, func(ctx context.Context) error {
		attempts++
		d, rec, err := f.call(ctx, proc, cr, args)
		// Decoders copy what they keep, so the record can be recycled.
		defer putRecord(rec)
		if err != nil {
			return err
		}
		if decode != nil {
			if err := decode(d); err != nil {
				return err
			}
		}
		return d.err
	})
	return attempts, err
}

func (f *FS) fsinfo(ctx context.Context) error {
	var e enc
	e.opaque(f.rootFH())
	_, err := f.nfs(ctx, "fsinfo", procFsinfo, f.cred, e.b, func(d *dec) error {
		d.postOpAttr()
		rtmax, _, _ := d.u32(), d.u32(), d.u32()
		wtmax, _, _ := d.u32(), d.u32(), d.u32()
		if d.err == nil {
			if rtmax > 0 && rtmax < f.rsize {
				f.rsize = rtmax
			}
			if wtmax > 0 && wtmax < f.wsize {
				f.wsize = wtmax
			}
		}
		return nil
	})
	return err
}

// wrap adds the operation and name to an error, keeping its chain.
func wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var ue *origin.UnavailableError
	if errors.As(err, &ue) {
		return err
	}
	return fmt.Errorf("nfs %s %s: %w", op, name, err)
}

// --- handles ---------------------------------------------------------------

type hent struct {
	fh  []byte
	exp time.Time
}

// handleCache maps directory names to handles for dirTTL. Bounded: it is
// emptied when it grows past maxHandles.
type handleCache struct {
	mu sync.Mutex
	m  map[string]hent // guarded by mu
}

const maxHandles = 16384

func (c *handleCache) get(name string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || time.Now().After(e.exp) {
		return nil
	}
	return e.fh
}

func (c *handleCache) put(name string, fh []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxHandles {
		c.m = map[string]hent{}
	}
	c.m[name] = hent{fh: fh, exp: time.Now().Add(dirTTL)}
}

// drop forgets name and everything beneath it.
func (c *handleCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "." {
		c.m = map[string]hent{}
		return
	}
	delete(c.m, name)
	prefix := name + "/"
	for k := range c.m {
		if strings.HasPrefix(k, prefix) {
			delete(c.m, k)
		}
	}
}

func (c *handleCache) dropAll() {
	c.mu.Lock()
	c.m = map[string]hent{}
	c.mu.Unlock()
}

// recentFiles maps the names of files just looked up to their handles and
// attributes for recentTTL. A change to the namespace through this FS
// empties it, and a lookup that raced with one is not kept (generation).
type recentFiles struct {
	mu  sync.Mutex
	m   map[string]rent // guarded by mu
	gen uint64          // guarded by mu
}

type rent struct {
	fh  []byte
	a   origin.Attr
	exp time.Time
}

const (
	recentTTL = time.Second
	maxRecent = 4096
)

func (c *recentFiles) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *recentFiles) put(name string, fh []byte, a origin.Attr, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	now := time.Now()
	if len(c.m) >= maxRecent {
		for k, e := range c.m {
			if now.After(e.exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxRecent {
			c.m = map[string]rent{}
		}
	}
	c.m[name] = rent{fh: fh, a: a, exp: now.Add(recentTTL)}
}

func (c *recentFiles) get(name string) ([]byte, origin.Attr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || time.Now().After(e.exp) {
		return nil, origin.Attr{}, false
	}
	return e.fh, e.a, true
}

// changed forgets every name, and lookups still in flight.
func (c *recentFiles) changed() {
	c.mu.Lock()
	c.gen++
	if len(c.m) > 0 {
		c.m = map[string]rent{}
	}
	c.mu.Unlock()
}

func splitName(name string) (dir, base string) {
	dir, base = path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	return dir, base
}

// lookup looks base up in the directory dfh.
func (f *FS) lookup(ctx context.Context, dfh []byte, base string) ([]byte, origin.Attr, bool, error) {
	var e enc
	e.opaque(dfh)
	e.str(base)
	var fh []byte
	var a origin.Attr
	var ok bool
	_, err := f.nfs(ctx, "lookup", procLookup, f.cred, e.b, func(d *dec) error {
		fh = append([]byte(nil), d.opaque(maxFHSize)...)
		a, ok = d.postOpAttr()
		a.Gen = fhGen(fh)
		return nil
	})
	return fh, a, ok, err
}

// fhGen is the Gen of the file with handle fh: a server's handle carries
// what tells a file from a later one given the same inode number (the
// inode's generation), so distinct handles make distinct Gens.
func fhGen(fh []byte) uint64 {
	h := fnv.New64a()
	h.Write(fh)
	return h.Sum64() | 1
}

// dirHandle returns the handle of directory dir, from the cache or by
// looking it up component by component.
func (f *FS) dirHandle(ctx context.Context, dir string) ([]byte, error) {
	if dir == "." || dir == "" {
		return f.rootFH(), nil
	}
	if fh := f.dirs.get(dir); fh != nil {
		return fh, nil
	}
	parent, base := splitName(dir)
	pfh, err := f.dirHandle(ctx, parent)
	if err != nil {
		return nil, err
	}
	fh, a, ok, err := f.lookup(ctx, pfh, base)
	if err != nil {
		return nil, err
	}
	if ok && !a.IsDir() {
		return nil, &statusError{status: 20, errno: syscall.ENOTDIR}
	}
	f.dirs.put(dir, fh)
	return fh, nil
}

// inDir runs fn with the handle of name's parent directory and name's last
// element. A stale handle (the directory was replaced or the server lost
// it) drops the cached handles and fn runs once more on a fresh lookup.
func (f *FS) inDir(ctx context.Context, name string, fn func(dfh []byte, base string) error) error {
	dir, base := splitName(name)
	for attempt := 0; ; attempt++ {
		dfh, err := f.dirHandle(ctx, dir)
		if err == nil {
			err = fn(dfh, base)
		}
		if err == nil || !isStale(err) || attempt >= 2 {
			return err
		}
		f.staleDir(ctx, dir, dfh)
	}
}

// staleDir reacts to a stale directory handle: forget it (and the root, if
// the root itself went stale).
func (f *FS) staleDir(ctx context.Context, dir string, fh []byte) {
	f.dirs.drop(dir)
	if dir == "." || string(fh) == string(f.rootFH()) {
		_, _ = f.remount(ctx, fh)
	}
	f.log.Debug("nfs: stale handle, looking up again", "dir", dir)
}

// resolve looks name up afresh (its directory's handle may be cached, its
// own entry never is) and returns its handle and attributes.
func (f *FS) resolve(ctx context.Context, name string) ([]byte, origin.Attr, error) {
	if name == "." || name == "" {
		var fh []byte
		var a origin.Attr
		err := f.inDir(ctx, ".", func([]byte, string) error {
			fh = f.rootFH()
			var err error
			a, err = f.getattr(ctx, fh)
			if isStale(err) {
				return err
			}
			return err
		})
		return fh, a, err
	}
	var fh []byte
	var a origin.Attr
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		var ok bool
		var err error
		fh, a, ok, err = f.lookup(ctx, dfh, base)
		if err == nil && !ok {
			a, err = f.getattr(ctx, fh)
		}
		return err
	})
	return fh, a, err
}

func (f *FS) getattr(ctx context.Context, fh []byte) (origin.Attr, error) {
	var e enc
	e.opaque(fh)
	var a origin.Attr
	_, err := f.nfs(ctx, "getattr", procGetattr, f.cred, e.b, func(d *dec) error {
		a = d.fattr()
		a.Gen = fhGen(fh)
		return nil
	})
	return a, err
}

func (f *FS) setattr(ctx context.Context, fh []byte, s origin.SetAttr) (origin.Attr, bool, error) {
	var e enc
	e.opaque(fh)
	e.sattr(s)
	e.bool(false) // no guard
	var a origin.Attr
	var ok bool
	_, err := f.nfs(ctx, "setattr", procSetattr, f.cred, e.b, func(d *dec) error {
		a, ok = d.wcc()
		return nil
	})
	return a, ok, err
}

// --- origin.FS ---------------------------------------------------------------

// Lstat returns name's attributes (symlinks are not followed: NFS LOOKUP
// never follows them).
func (f *FS) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	gen := f.recent.generation()
	fh, a, err := f.resolve(ctx, name)
	if err == nil && a.IsRegular() {
		f.recent.put(name, fh, a, gen)
	}
	return a, wrap("lstat", name, err)
}

// ReadDir lists a directory with READDIRPLUS.
func (f *FS) ReadDir(ctx context.Context, name string) ([]origin.DirEntry, error) {
	var out []origin.DirEntry
	err := f.inDir(ctx, name+"/.", func([]byte, string) error {
		dfh, err := f.dirHandle(ctx, name)
		if err != nil {
			return err
		}
		out, err = f.readdir(ctx, name, dfh)
		if isStale(err) {
			f.dirs.drop(name)
		}
		return err
	})
	return out, wrap("readdir", name, err)
}

func (f *FS) readdir(ctx context.Context, dir string, dfh []byte) ([]origin.DirEntry, error) {
	var out []origin.DirEntry
	var cookie uint64
	verf := make([]byte, 8)
	for eof := false; !eof; {
		var e enc
		e.opaque(dfh)
		e.u64(cookie)
		e.fixed(verf)
		e.u32(32 << 10)  // dircount
		e.u32(256 << 10) // maxcount
		var batch []origin.DirEntry
		_, err := f.nfs(ctx, "readdirplus", procReaddirplus, f.cred, e.b, func(d *dec) error {
			batch = batch[:0]
			d.postOpAttr()
			copy(verf, d.fixed(8))
			for d.bool() && d.err == nil {
				ino := d.u64()
				nm := d.str(4096)
				cookie = d.u64()
				a, ok := d.postOpAttr()
				fh := d.postOpFH()
				if nm == "." || nm == ".." {
					continue
				}
				de := origin.DirEntry{Name: nm, Ino: ino}
				if ok && fh != nil {
					// Without the handle the entry's Gen is unknown: its
					// attributes are asked for below, with a lookup.
					a.Gen = fhGen(fh)
					de.Mode = a.Mode & syscall.S_IFMT
					de.Attr = &a
				}
				batch = append(batch, de)
			}
			eof = d.bool()
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, batch...)
		if len(batch) == 0 && !eof && cookie == 0 {
			return nil, &statusError{status: nfs3ErrBadCook, errno: syscall.EIO}
		}
	}
	for i := range out {
		if out[i].Mode == 0 {
			// No attributes in the listing: ask for them.
			if a, err := f.Lstat(ctx, path.Join(dir, out[i].Name)); err == nil {
				out[i].Mode = a.Mode & syscall.S_IFMT
				out[i].Attr = &a
			}
		}
	}
	return out, nil
}

// Open opens an existing file. O_TRUNC truncates it.
func (f *FS) Open(ctx context.Context, name string, flag int) (origin.File, error) {
	if flag&syscall.O_CREAT != 0 {
		return nil, wrap("open", name, syscall.EINVAL)
	}
	var (
		fh  []byte
		a   origin.Attr
		err error
		hit bool
	)
	if flag&(syscall.O_ACCMODE|syscall.O_TRUNC) == syscall.O_RDONLY {
		// The file just looked up at this name (usually by the caller's
		// close-to-open check): open that one. Its bytes are the version
		// the caller has just been told about.
		fh, a, hit = f.recent.get(name)
	}
	if !hit {
		fh, a, err = f.resolve(ctx, name)
		if err != nil {
			return nil, wrap("open", name, err)
		}
	}
	if flag&syscall.O_TRUNC != 0 && flag&syscall.O_ACCMODE != syscall.O_RDONLY && a.Size != 0 {
		zero := int64(0)
		if _, _, err := f.setattr(ctx, fh, origin.SetAttr{Size: &zero}); err != nil {
			return nil, wrap("open", name, err)
		}
	}
	fl := &file{fs: f, name: name, fh: fh, ino: a.Ino, flag: flag, ctime: a.Ctime}
	fl.seen(a, true)
	if flag&syscall.O_TRUNC != 0 && flag&syscall.O_ACCMODE != syscall.O_RDONLY && a.Size != 0 {
		if _, err := fl.Stat(ctx); err != nil {
			return nil, err
		}
	}
	return fl, nil
}

// Create creates a regular file owned by owner; without O_EXCL an existing
// file is opened instead (truncated with O_TRUNC).
func (f *FS) Create(ctx context.Context, name string, flag int, mode uint32, owner origin.Owner) (origin.File, error) {
	defer f.recent.changed()
	if name == "." {
		return nil, wrap("create", name, syscall.EEXIST)
	}
	if flag&syscall.O_EXCL == 0 {
		fl, err := f.Open(ctx, name, flag&^syscall.O_CREAT)
		if err == nil || !errors.Is(err, syscall.ENOENT) {
			return fl, err
		}
	}
	var fh []byte
	var a origin.Attr
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		var e enc
		e.opaque(dfh)
		e.str(base)
		e.u32(1) // GUARDED
		e.sattr(ownerSattr(mode, owner))
		var ok bool
		attempts, err := f.nfs(ctx, "create", procCreate, f.cred, e.b, func(d *dec) error {
			fh = d.postOpFH()
			a, ok = d.postOpAttr()
			return nil
		})
		if err != nil && attempts > 1 && errors.Is(err, syscall.EEXIST) && flag&syscall.O_EXCL != 0 {
			// Our own earlier attempt may have created it; EEXIST stands
			// unless the file is empty and ours.
			var la origin.Attr
			var lok bool
			fh, la, lok, err = f.lookup(ctx, dfh, base)
			if err == nil && (!lok || la.Size != 0 || la.Uid != owner.Uid) {
				err = &statusError{status: 17, errno: syscall.EEXIST}
			}
			a, ok = la, lok
		}
		if err != nil {
			return err
		}
		if fh == nil {
			fh, a, ok, err = f.lookup(ctx, dfh, base)
			if err != nil {
				return err
			}
		}
		if !ok {
			if a, err = f.getattr(ctx, fh); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap("create", name, err)
	}
	if err := f.fixOwner(ctx, fh, a, mode, owner); err != nil {
		return nil, wrap("create", name, err)
	}
	fl := &file{fs: f, name: name, fh: fh, ino: a.Ino, flag: flag, ctime: a.Ctime}
	if _, err := fl.Stat(ctx); err != nil { // ctime after fixOwner
		return nil, err
	}
	return fl, nil
}

// fixOwner sets owner and mode on a new object whose server ignored the
// create attributes.
func (f *FS) fixOwner(ctx context.Context, fh []byte, a origin.Attr, mode uint32, owner origin.Owner) error {
	if a.Uid == owner.Uid && a.Gid == owner.Gid && a.Mode&0o7777 == mode&0o7777 {
		return nil
	}
	if a.IsSymlink() {
		s := ownerSattr(mode, owner)
		s.Mode = nil
		_, _, err := f.setattr(ctx, fh, s)
		return err
	}
	_, _, err := f.setattr(ctx, fh, ownerSattr(mode, owner))
	return err
}

// mkobj runs a MKDIR/SYMLINK/MKNOD-style call whose reply is
// post_op_fh3, post_op_attr, wcc_data, then fixes the owner.
func (f *FS) mkobj(ctx context.Context, op, name string, proc uint32, args func(e *enc, dfh []byte, base string), mode uint32, owner origin.Owner, isDir bool) error {
	defer f.recent.changed()
	if name == "." {
		return wrap(op, name, syscall.EEXIST)
	}
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		var e enc
		args(&e, dfh, base)
		var fh []byte
		var a origin.Attr
		var ok bool
		attempts, err := f.nfs(ctx, op, proc, f.cred, e.b, func(d *dec) error {
			fh = d.postOpFH()
			a, ok = d.postOpAttr()
			return nil
		})
		if err != nil && attempts > 1 && errors.Is(err, syscall.EEXIST) {
			// The reply to our first attempt was lost: accept the object
			// if it is what we made.
			var lerr error
			fh, a, ok, lerr = f.lookup(ctx, dfh, base)
			if lerr == nil && ok && a.IsDir() == isDir && a.Uid == owner.Uid {
				err = nil
			}
		}
		if err != nil {
			return err
		}
		if fh == nil {
			if fh, a, ok, err = f.lookup(ctx, dfh, base); err != nil {
				return err
			}
		}
		if !ok {
			if a, err = f.getattr(ctx, fh); err != nil {
				return err
			}
		}
		return f.fixOwner(ctx, fh, a, mode, owner)
	})
	return wrap(op, name, err)
}

// Mkdir creates a directory owned by owner.
func (f *FS) Mkdir(ctx context.Context, name string, mode uint32, owner origin.Owner) error {
	return f.mkobj(ctx, "mkdir", name, procMkdir, func(e *enc, dfh []byte, base string) {
		e.opaque(dfh)
		e.str(base)
		e.sattr(ownerSattr(mode, owner))
	}, mode, owner, true)
}

// Mknod creates a device node, FIFO or socket (or a regular file).
func (f *FS) Mknod(ctx context.Context, name string, mode uint32, dev uint64, owner origin.Owner) error {
	var typ uint32
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		fl, err := f.Create(ctx, name, syscall.O_WRONLY|syscall.O_EXCL, mode, owner)
		if err != nil {
			return err
		}
		return fl.Close()
	case syscall.S_IFCHR:
		typ = nf3Chr
	case syscall.S_IFBLK:
		typ = nf3Blk
	case syscall.S_IFIFO:
		typ = nf3Fifo
	case syscall.S_IFSOCK:
		typ = nf3Sock
	default:
		return wrap("mknod", name, syscall.EINVAL)
	}
	return f.mkobj(ctx, "mknod", name, procMknod, func(e *enc, dfh []byte, base string) {
		e.opaque(dfh)
		e.str(base)
		e.u32(typ)
		e.sattr(ownerSattr(mode, owner))
		if typ == nf3Chr || typ == nf3Blk {
			e.u32(uint32((dev>>8)&0xfff | (dev>>32)&^0xfff))
			e.u32(uint32(dev&0xff | (dev>>12)&^0xff))
		}
	}, mode&0o7777, owner, false)
}

// Symlink creates a symbolic link name -> target owned by owner.
func (f *FS) Symlink(ctx context.Context, target, name string, owner origin.Owner) error {
	return f.mkobj(ctx, "symlink", name, procSymlink, func(e *enc, dfh []byte, base string) {
		e.opaque(dfh)
		e.str(base)
		s := ownerSattr(0o777, owner)
		s.Mode = nil
		e.sattr(s)
		e.str(target)
	}, 0o777, owner, false)
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ctx context.Context, name string) (string, error) {
	var target string
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		fh, _, _, err := f.lookup(ctx, dfh, base)
		if err != nil {
			return err
		}
		var e enc
		e.opaque(fh)
		_, err = f.nfs(ctx, "readlink", procReadlink, f.cred, e.b, func(d *dec) error {
			d.postOpAttr()
			target = d.str(4096)
			return nil
		})
		return err
	})
	return target, wrap("readlink", name, err)
}

// Link makes newname a hard link to oldname.
func (f *FS) Link(ctx context.Context, oldname, newname string) error {
	defer f.recent.changed()
	fh, _, err := f.resolve(ctx, oldname)
	if err != nil {
		return wrap("link", oldname, err)
	}
	err = f.inDir(ctx, newname, func(dfh []byte, base string) error {
		var e enc
		e.opaque(fh)
		e.opaque(dfh)
		e.str(base)
		attempts, err := f.nfs(ctx, "link", procLink, f.cred, e.b, nil)
		if err != nil && attempts > 1 && errors.Is(err, syscall.EEXIST) {
			if nfh, _, _, lerr := f.lookup(ctx, dfh, base); lerr == nil && string(nfh) == string(fh) {
				return nil
			}
		}
		return err
	})
	return wrap("link", newname, err)
}

func (f *FS) remove(ctx context.Context, op string, proc uint32, name string) error {
	defer f.recent.changed()
	if name == "." {
		return wrap(op, name, syscall.EBUSY)
	}
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		var e enc
		e.opaque(dfh)
		e.str(base)
		attempts, err := f.nfs(ctx, op, proc, f.cred, e.b, nil)
		if err != nil && attempts > 1 && errors.Is(err, syscall.ENOENT) {
			return nil // our first attempt removed it; its reply was lost
		}
		return err
	})
	f.dirs.drop(name)
	return wrap(op, name, err)
}

// Unlink removes a non-directory.
func (f *FS) Unlink(ctx context.Context, name string) error {
	return f.remove(ctx, "unlink", procRemove, name)
}

// Rmdir removes an empty directory.
func (f *FS) Rmdir(ctx context.Context, name string) error {
	return f.remove(ctx, "rmdir", procRmdir, name)
}

// Rename renames oldname to newname. RENAME_NOREPLACE is checked before the
// call (NFSv3 has no atomic form); RENAME_EXCHANGE is not supported.
func (f *FS) Rename(ctx context.Context, oldname, newname string, flags uint32) error {
	defer f.recent.changed()
	const renameNoreplace, renameExchange = 1, 2
	if flags&renameExchange != 0 || flags&^(renameNoreplace|renameExchange) != 0 {
		return wrap("rename", oldname, syscall.EINVAL)
	}
	if oldname == "." || newname == "." {
		return wrap("rename", oldname, syscall.EBUSY)
	}
	if flags&renameNoreplace != 0 {
		_, _, err := f.resolve(ctx, newname)
		if err == nil {
			return wrap("rename", newname, syscall.EEXIST)
		}
		if !errors.Is(err, syscall.ENOENT) {
			return wrap("rename", newname, err)
		}
	}
	odir, obase := splitName(oldname)
	var ndfh []byte
	err := f.inDir(ctx, newname, func(dfh []byte, nbase string) error {
		ndfh = dfh
		odfh, err := f.dirHandle(ctx, odir)
		if err != nil {
			return err
		}
		var e enc
		e.opaque(odfh)
		e.str(obase)
		e.opaque(ndfh)
		e.str(nbase)
		attempts, err := f.nfs(ctx, "rename", procRename, f.cred, e.b, nil)
		if isStale(err) {
			f.dirs.drop(odir)
		}
		if err != nil && attempts > 1 && errors.Is(err, syscall.ENOENT) {
			// Lost reply to a rename that happened: the new name exists.
			if _, _, _, lerr := f.lookup(ctx, ndfh, nbase); lerr == nil {
				return nil
			}
		}
		return err
	})
	f.dirs.drop(oldname)
	f.dirs.drop(newname)
	return wrap("rename", oldname, err)
}

// SetAttr changes attributes of name.
func (f *FS) SetAttr(ctx context.Context, name string, set origin.SetAttr) error {
	err := f.inDir(ctx, name, func(dfh []byte, base string) error {
		fh := dfh
		if name != "." {
			var err error
			if fh, _, _, err = f.lookup(ctx, dfh, base); err != nil {
				return err
			}
		}
		_, _, err := f.setattr(ctx, fh, set)
		return err
	})
	return wrap("setattr", name, err)
}

// Xattrs do not exist in NFSv3.
func (f *FS) Getxattr(ctx context.Context, name, attr string) ([]byte, error) {
	return nil, wrap("getxattr", name, syscall.ENOTSUP)
}

func (f *FS) Setxattr(ctx context.Context, name, attr string, data []byte, flags int) error {
	return wrap("setxattr", name, syscall.ENOTSUP)
}

func (f *FS) Listxattr(ctx context.Context, name string) ([]string, error) {
	return nil, wrap("listxattr", name, syscall.ENOTSUP)
}

func (f *FS) Removexattr(ctx context.Context, name, attr string) error {
	return wrap("removexattr", name, syscall.ENOTSUP)
}

// Statfs reports the export's file system (FSSTAT).
func (f *FS) Statfs(ctx context.Context) (origin.Statfs, error) {
	var st origin.Statfs
	err := f.inDir(ctx, ".", func([]byte, string) error {
		var e enc
		e.opaque(f.rootFH())
		_, err := f.nfs(ctx, "fsstat", procFsstat, f.cred, e.b, func(d *dec) error {
			d.postOpAttr()
			tb, fb, ab := d.u64(), d.u64(), d.u64()
			tf, ff, _ := d.u64(), d.u64(), d.u64()
			const bs = 4096
			st = origin.Statfs{Blocks: tb / bs, Bfree: fb / bs, Bavail: ab / bs, Files: tf, Ffree: ff,
				Bsize: bs, Frsize: bs, NameLen: 255}
			return nil
		})
		if isStale(err) {
			f.staleDir(ctx, ".", f.rootFH())
		}
		return err
	})
	return st, wrap("statfs", ".", err)
}

// --- files -------------------------------------------------------------------

type file struct {
	fs   *FS
	name string
	ino  uint64
	flag int

	mu    sync.Mutex
	fh    []byte    // guarded by mu
	ctime time.Time // guarded by mu; the file's ctime as last seen
	// The witness (origin.AttrWitness), guarded by mu: the attributes of
	// the lookup that opened the file, and whether every reply since carried
	// attributes with the same fingerprint.
	wAttr  origin.Attr
	wSet   bool
	wMixed bool
}

// seen records attributes the server returned for this file (ok false: a
// reply without them).
func (fl *file) seen(a origin.Attr, ok bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if ok {
		a.Gen = fhGen(fl.fh) // a reply's attributes are the handle's file's
	}
	switch {
	case !ok:
		fl.wMixed = true
		return
	case !fl.wSet:
		fl.wAttr, fl.wSet = a, true
	case a.Fingerprint() != fl.wAttr.Fingerprint():
		fl.wMixed = true
	}
	if a.Ctime.After(fl.ctime) {
		fl.ctime = a.Ctime
	}
}

// Witnessed implements origin.AttrWitness.
func (fl *file) Witnessed() (origin.Attr, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.wAttr, fl.wSet && !fl.wMixed
}

var (
	_ origin.File        = (*file)(nil)
	_ origin.AttrWitness = (*file)(nil)
)

func (fl *file) handle() []byte {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.fh
}

// withFH runs fn with the file's handle. If the handle went stale, the path
// is looked up again: the same file (same fileid) gets its new handle and fn
// runs again; a different file at that path (another fileid, or the same
// fileid reused by a new file, which shows as another ctime) keeps ESTALE,
// since its bytes are not the ones being read.
func (fl *file) withFH(ctx context.Context, fn func(fh []byte) error) error {
	for attempt := 0; ; attempt++ {
		fh := fl.handle()
		err := fn(fh)
		if err == nil || !isStale(err) {
			return err
		}
		// The handle may have come from the recent lookups: an open of
		// the name must look it up again.
		fl.fs.recent.changed()
		if attempt >= 2 {
			return err
		}
		nfh, a, lerr := fl.fs.resolve(ctx, fl.name)
		fl.mu.Lock()
		same := lerr == nil && a.Ino == fl.ino && a.Ctime.Equal(fl.ctime)
		if same {
			fl.fh = nfh
		}
		fl.mu.Unlock()
		if !same {
			return err
		}
		fl.fs.log.Info("nfs: stale file handle renewed", "name", fl.name)
	}
}

// ReadAt reads len(p) bytes at off, splitting the range into READs of the
// server's size issued in parallel across the connections.
func (fl *file) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, wrap("read", fl.name, syscall.EINVAL)
	}
	rs := int(fl.fs.rsize)
	if len(p) <= rs {
		n, eof, err := fl.readFull(ctx, p, off)
		if err == nil && eof && n < len(p) {
			err = io.EOF
		}
		return n, err
	}
	type piece struct {
		n   int
		eof bool
		err error
	}
	npieces := (len(p) + rs - 1) / rs
	res := make([]piece, npieces)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4*len(fl.fs.slots))
	for i := 0; i < npieces; i++ {
		lo, hi := i*rs, min((i+1)*rs, len(p))
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			n, eof, err := fl.readFull(ctx, p[lo:hi], off+int64(lo))
			res[i] = piece{n, eof, err}
		}(i)
	}
	wg.Wait()
	total := 0
	for i, r := range res {
		total += r.n
		if r.err != nil {
			return total, r.err
		}
		want := min((i+1)*rs, len(p)) - i*rs
		if r.n < want {
			return total, io.EOF
		}
	}
	return total, nil
}

// readFull fills p from off with as many READs as needed, stopping at EOF.
func (fl *file) readFull(ctx context.Context, p []byte, off int64) (n int, eof bool, err error) {
	for n < len(p) && !eof {
		var got int
		err = fl.withFH(ctx, func(fh []byte) error {
			var e enc
			e.opaque(fh)
			e.u64(uint64(off + int64(n)))
			e.u32(uint32(len(p) - n))
			_, err := fl.fs.nfs(ctx, "read", procRead, fl.fs.cred, e.b, func(d *dec) error {
				fl.seen(d.postOpAttr())
				cnt := d.u32()
				eof = d.bool()
				data := d.opaque(len(p) - n)
				if d.err == nil && int(cnt) != len(data) {
					return errShort
				}
				got = copy(p[n:], data)
				return nil
			})
			return err
		})
		if err != nil {
			return n, eof, wrap("read", fl.name, err)
		}
		n += got
		if got == 0 && !eof {
			// A server that returns nothing without EOF: treat as EOF
			// rather than loop.
			eof = true
		}
	}
	return n, eof, nil
}

// WriteAt writes p at off with FILE_SYNC WRITEs (durable on the server
// when it returns), split and issued in parallel like ReadAt. With O_APPEND
// the data goes at the current end of file.
func (fl *file) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if fl.flag&syscall.O_APPEND != 0 {
		a, err := fl.Stat(ctx)
		if err != nil {
			return 0, err
		}
		off = a.Size
	}
	if off < 0 {
		return 0, wrap("write", fl.name, syscall.EINVAL)
	}
	ws := int(fl.fs.wsize)
	npieces := (len(p) + ws - 1) / ws
	errs := make([]error, npieces)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4*len(fl.fs.slots))
	for i := 0; i < npieces; i++ {
		lo, hi := i*ws, min((i+1)*ws, len(p))
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fl.writeFull(ctx, p[lo:hi], off+int64(lo))
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return i * ws, err
		}
	}
	return len(p), nil
}

func (fl *file) writeFull(ctx context.Context, p []byte, off int64) error {
	for n := 0; n < len(p); {
		var wrote uint32
		err := fl.withFH(ctx, func(fh []byte) error {
			var e enc
			e.b = make([]byte, 0, 64+len(fh)+len(p)-n)
			e.opaque(fh)
			e.u64(uint64(off + int64(n)))
			e.u32(uint32(len(p) - n))
			e.u32(fileSync)
			e.opaque(p[n:])
			_, err := fl.fs.nfs(ctx, "write", procWrite, fl.fs.cred, e.b, func(d *dec) error {
				fl.seen(d.wcc())
				wrote = d.u32()
				return nil
			})
			return err
		})
		if err != nil {
			return wrap("write", fl.name, err)
		}
		if wrote == 0 || int(wrote) > len(p)-n {
			return wrap("write", fl.name, syscall.EIO)
		}
		n += int(wrote)
	}
	return nil
}

// Stat returns the open file's attributes (by handle, so they are this
// file's even if its name now points elsewhere).
func (fl *file) Stat(ctx context.Context) (origin.Attr, error) {
	var a origin.Attr
	err := fl.withFH(ctx, func(fh []byte) error {
		var err error
		a, err = fl.fs.getattr(ctx, fh)
		fl.seen(a, err == nil)
		return err
	})
	return a, wrap("fstat", fl.name, err)
}

// Truncate sets the file's size.
func (fl *file) Truncate(ctx context.Context, size int64) error {
	err := fl.withFH(ctx, func(fh []byte) error {
		a, ok, err := fl.fs.setattr(ctx, fh, origin.SetAttr{Size: &size})
		fl.seen(a, ok)
		return err
	})
	return wrap("truncate", fl.name, err)
}

// Sync is a no-op: every WRITE is FILE_SYNC.
func (fl *file) Sync(ctx context.Context) error { return nil }

// Close releases nothing on the server (NFSv3 has no open state).
func (fl *file) Close() error { return nil }
