package cache

// System-call helpers for the cache's own data files on local disk.

import (
	"os"

	"golang.org/x/sys/unix"
)

// openLocal opens a file of the cache's own (a data file on local disk):
// open(2) and one fcntl, where os.OpenFile also tries to register the file
// with the network poller (three more system calls, refused for a regular
// file), a cost every open of a cached file paid.
func openLocal(p string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(p, flag|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
}

func punchHole(f *os.File, off, n int64) {
	if f == nil || n <= 0 {
		return
	}
	_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}
