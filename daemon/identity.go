package daemon

// Who calls the local socket, and what the kernel lets them read.
//
// The local socket is open to every local user (or to one group, --socket-group). A caller's
// identity comes from the kernel, never from the request: SO_PEERCRED (uid, gid, pid) and
// SO_PEERGROUPS (supplementary groups) of the connection, taken once when it is accepted.
//
// Read access for warm and ls is decided by the kernel too: the check runs on a locked OS thread
// whose filesystem identity (fsuid, fsgid, supplementary groups) is switched to the peer's, and
// asks the mount with openat2 and faccessat2(AT_EACCESS). The mount has default_permissions, so
// the answer is exactly the kernel's answer to the peer's own open (modes of every directory on
// the way, of the file, the peer's groups), with none of the pitfalls of re-implementing the
// check from permission bits in user space. The thread is never unlocked: it ends with its
// goroutine, so the switched credentials never serve anything else.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/api"
)

// peerIdentity reads the kernel's credentials of a unix socket connection's peer.
func peerIdentity(c net.Conn) (api.Identity, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return api.Identity{}, fmt.Errorf("peer credentials: %T is not a unix socket", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return api.Identity{}, fmt.Errorf("peer credentials: %w", err)
	}
	var id api.Identity
	var cerr error
	err = rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			cerr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		id = api.Identity{Uid: cred.Uid, Gid: cred.Gid, Pid: cred.Pid, Via: "socket"}
		// Without SO_PEERGROUPS (kernels before 4.13) the peer counts with its primary group only:
		// fewer rights, never more.
		id.Groups, _ = peerGroups(int(fd))
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return api.Identity{}, err
	}
	return id, nil
}

// peerGroups reads SO_PEERGROUPS: the supplementary groups of the peer when it connected.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for range 3 {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == unix.ERANGE && n/4 > uint32(len(buf)) && n/4 <= 1<<16:
			buf = make([]uint32, n/4)
			continue
		case e != 0:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		}
		return buf[:n/4], nil
	}
	return nil, errors.New("SO_PEERGROUPS: the group list keeps growing")
}

// errNoAccessCheck: a non-root caller asked for something that needs an access check the server
// cannot make.
var errNoAccessCheck = errors.New("cannot check your access here")

// Access decides what a non-root local caller may read in the share.
type Access interface {
	// MayWarm returns nil when id may read the share-relative file name or, for a directory,
	// list every directory and read every cacheable file under it; else an error that says
	// which path the caller may not read (wrapping os.ErrPermission) or why it cannot tell.
	MayWarm(ctx context.Context, id api.Identity, name string) error
	// Listable returns, of the share-relative directories dirs, those id may list and enter
	// (what `ls -l` there would show them).
	Listable(ctx context.Context, id api.Identity, dirs []string) (map[string]bool, error)
}

// kernelAccess asks the kernel, as the caller, about paths under root (the mountpoint).
type kernelAccess struct {
	root      string
	cacheable func(name string) bool // nil: every regular file
}

var _ Access = (*kernelAccess)(nil)

// asPeer runs fn on a fresh OS thread whose filesystem identity is id's (see the top of this file).
func asPeer(id api.Identity, fn func() error) error {
	euid := os.Geteuid()
	if euid != 0 {
		if uint32(euid) == id.Uid {
			return fn() // the daemon's own user: its own checks are the caller's
		}
		return fmt.Errorf("%w: the daemon does not run as root and cannot take uid %d's identity", errNoAccessCheck, id.Uid)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: this thread dies with the goroutine (see the top of this file).
		runtime.LockOSThread()
		errc <- func() error {
			groups := make([]int, len(id.Groups))
			for i, g := range id.Groups {
				groups[i] = int(g)
			}
			// x/sys/unix's setgroups, setfsgid and setfsuid act on this thread only (package
			// syscall's would change every thread of the process).
			if err := unix.Setgroups(groups); err != nil {
				return fmt.Errorf("%w: setgroups: %v", errNoAccessCheck, err)
			}
			unix.SetfsgidRetGid(int(id.Gid))
			unix.SetfsuidRetUid(int(id.Uid))
			// setfsuid/setfsgid report the previous value and never fail: read them back.
			if u, _ := unix.SetfsuidRetUid(-1); u != int(id.Uid) {
				return fmt.Errorf("%w: setfsuid(%d) did not take (fsuid %d)", errNoAccessCheck, id.Uid, u)
			}
			if g, _ := unix.SetfsgidRetGid(-1); g != int(id.Gid) {
				return fmt.Errorf("%w: setfsgid(%d) did not take (fsgid %d)", errNoAccessCheck, id.Gid, g)
			}
			return fn()
		}()
	}()
	return <-errc
}

// accessErr turns what the kernel said about name into the caller's error.
func accessErr(id api.Identity, name string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%s: uid %d may not read it: %w", name, id.Uid, os.ErrPermission)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s: the path goes through a symbolic link; name its target (%w)", name, os.ErrPermission)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s: %w", name, os.ErrNotExist)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%w: the kernel lacks openat2/faccessat2 (%v)", errNoAccessCheck, err)
	}
	return fmt.Errorf("%s: access check: %w", name, err)
}

const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openRoot opens the mountpoint as the peer: every directory on the way must let them pass.
func (k *kernelAccess) openRoot() (int, error) {
	return unix.Open(k.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// openBeneath opens the share-relative name under rootfd without following any symbolic link.
func openBeneath(rootfd int, name string, flags uint64) (int, error) {
	if name == "." || name == "" {
		name = "."
	}
	return unix.Openat2(rootfd, name, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: resolveBeneath})
}

func (k *kernelAccess) MayWarm(ctx context.Context, id api.Identity, name string) error {
	return asPeer(id, func() error {
		rootfd, err := k.openRoot()
		if err != nil {
			return accessErr(id, name, err)
		}
		defer unix.Close(rootfd)
		fd, err := openBeneath(rootfd, name, unix.O_PATH)
		if err != nil {
			return accessErr(id, name, err)
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP // O_PATH|O_NOFOLLOW opened the link itself
		}
		if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			err = unix.Faccessat2(fd, "", unix.R_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
		}
		unix.Close(fd)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return accessErr(id, name, err)
		}
		return k.walk(ctx, id, rootfd, name)
	})
}

// walk checks, as the peer, that every directory under dir (itself included) may be listed and
// entered and every cacheable regular file in them read. Symbolic links are skipped, as warm-up
// skips them.
func (k *kernelAccess) walk(ctx context.Context, id api.Identity, rootfd int, dir string) error {
	dirs := []string{dir}
	for len(dirs) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		fd, err := openBeneath(rootfd, d, unix.O_RDONLY|unix.O_DIRECTORY) // needs read permission
		if err != nil {
			return accessErr(id, d, err)
		}
		f := os.NewFile(uintptr(fd), d)
		err = unix.Faccessat2(fd, "", unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
		for err == nil {
			var ents []os.DirEntry
			ents, err = f.ReadDir(1024)
			for _, e := range ents {
				child := path.Join(d, e.Name())
				switch {
				case e.IsDir():
					dirs = append(dirs, child)
				case e.Type().IsRegular():
					if k.cacheable != nil && !k.cacheable(child) {
						continue
					}
					if aerr := unix.Faccessat2(fd, e.Name(), unix.R_OK, unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW); aerr != nil {
						f.Close()
						return accessErr(id, child, aerr)
					}
				}
			}
		}
		f.Close()
		if !errors.Is(err, io.EOF) {
			return accessErr(id, d, err)
		}
	}
	return nil
}

func (k *kernelAccess) Listable(ctx context.Context, id api.Identity, dirs []string) (map[string]bool, error) {
	out := make(map[string]bool, len(dirs))
	err := asPeer(id, func() error {
		rootfd, err := k.openRoot()
		if err != nil {
			return nil // the peer cannot reach the mount: nothing is listable
		}
		defer unix.Close(rootfd)
		for _, d := range dirs {
			if err := ctx.Err(); err != nil {
				return err
			}
			fd, err := openBeneath(rootfd, d, unix.O_PATH|unix.O_DIRECTORY)
			if err != nil {
				continue
			}
			out[d] = unix.Faccessat2(fd, "", unix.R_OK|unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS) == nil
			unix.Close(fd)
		}
		return nil
	})
	return out, err
}
