package fusefs

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Interrupts.
//
// The kernel sends FUSE_INTERRUPT for a request whose caller got any signal
// it does not ignore, and go-fuse closes the request's cancel channel. Go
// programs get such signals all the time (SIGURG drives goroutine
// preemption), as do programs with timers or SIGCHLD handlers. Honouring
// every interrupt turned those signals into EINTR from calls that never
// fail that way on a local disk or a hard NFS mount (utimensat, mkdir,
// rename), and worse, into EINTR from a call whose change had already
// reached the origin: a retried mkdir then fails with EEXIST.
//
// So a request is cancelled only when its caller is dying, like the kernel
// NFS client's killable waits: the interrupt is honoured once the calling
// thread has SIGKILL pending (the kernel queues it on every thread of a
// process a fatal signal ends) or no longer exists. A caller that gets a
// harmless signal first and a fatal one later is noticed by polling, as
// the kernel sends one interrupt per request. Blocking lock waits (SETLKW)
// keep the plain behaviour: fcntl(F_SETLKW) is interrupted by any signal on
// every file system. Calls into the origin stay bounded by
// Options.OriginTimeout either way.

// fatalPoll is how often an interrupted request whose caller is not dying
// checks again.
const fatalPoll = 50 * time.Millisecond

// killable wraps the node file system so that the cancel channel each
// operation sees closes only for a dying caller.
type killable struct {
	fuse.RawFileSystem
}

// watchDelay is how long a request runs before a goroutine watches its
// cancel channel. Most requests are answered well within it (an open
// under a consistency TTL, a lookup answered from the stash): a goroutine
// started and parked for each of them cost about a tenth of the daemon's
// CPU time on a warm small-file epoch. An interrupt that comes earlier is
// seen when the watch starts, since the channel stays closed.
const watchDelay = time.Millisecond

// watch returns the cancel channel for a request from pid and a function
// to call when the request is answered.
func watch(cancel <-chan struct{}, pid uint32) (<-chan struct{}, func()) {
	if cancel == nil {
		return nil, func() {}
	}
	out := make(chan struct{})
	stop := make(chan struct{})
	t := time.AfterFunc(watchDelay, func() {
		select {
		case <-stop:
			return
		case <-cancel:
		}
		t := time.NewTicker(fatalPoll)
		defer t.Stop()
		for {
			if callerDying(pid) {
				close(out)
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	return out, func() {
		t.Stop()
		close(stop)
	}
}

// callerDying reports whether thread pid has SIGKILL pending or is gone.
// Pid 0 (a caller outside the daemon's pid namespace) cannot be checked
// and counts as not dying.
func callerDying(pid uint32) bool {
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return os.IsNotExist(err)
	}
	return statusDying(b)
}

// statusDying reports whether a /proc/<pid>/status text shows a dead
// thread or SIGKILL pending for the thread or its process.
func statusDying(status []byte) bool {
	const sigkill = 1 << (9 - 1)
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch string(k) {
		case "State":
			if len(v) > 0 && (v[0] == 'Z' || v[0] == 'X') {
				return true
			}
		case "SigPnd", "ShdPnd":
			if m, err := strconv.ParseUint(string(v), 16, 64); err == nil && m&sigkill != 0 {
				return true
			}
		}
	}
	return false
}

func (k *killable) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.Lookup(c, h, name, out)
}

func (k *killable) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.GetAttr(c, in, out)
}

func (k *killable) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.SetAttr(c, in, out)
}

func (k *killable) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Mknod(c, in, name, out)
}

func (k *killable) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Mkdir(c, in, name, out)
}

func (k *killable) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.Unlink(c, h, name)
}

func (k *killable) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.Rmdir(c, h, name)
}

func (k *killable) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Rename(c, in, oldName, newName)
}

func (k *killable) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Link(c, in, name, out)
}

func (k *killable) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.Symlink(c, h, target, name, out)
}

func (k *killable) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.Readlink(c, h)
}

func (k *killable) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Access(c, in)
}

func (k *killable) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (k *killable) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.ListXAttr(c, h, dest)
}

func (k *killable) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.SetXAttr(c, in, attr, data)
}

func (k *killable) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.RemoveXAttr(c, h, attr)
}

func (k *killable) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Create(c, in, name, out)
}

func (k *killable) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Tmpfile(c, in, out)
}

func (k *killable) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Open(c, in, out)
}

func (k *killable) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Read(c, in, buf)
}

func (k *killable) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Lseek(c, in, out)
}

func (k *killable) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.GetLk(c, in, out)
}

func (k *killable) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.SetLk(c, in)
}

func (k *killable) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Write(c, in, data)
}

func (k *killable) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Writev(c, in, data)
}

func (k *killable) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.CopyFileRange(c, in)
}

func (k *killable) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Flush(c, in)
}

func (k *killable) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Fsync(c, in)
}

func (k *killable) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Fallocate(c, in)
}

func (k *killable) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.OpenDir(c, in, out)
}

func (k *killable) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.ReadDir(c, in, out)
}

func (k *killable) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.ReadDirPlus(c, in, out)
}

func (k *killable) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.FsyncDir(c, in)
}

func (k *killable) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	c, done := watch(cancel, h.Caller.Pid)
	defer done()
	return k.RawFileSystem.StatFs(c, h, out)
}

func (k *killable) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	c, done := watch(cancel, in.Caller.Pid)
	defer done()
	return k.RawFileSystem.Statx(c, in, out)
}
