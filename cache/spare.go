package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Spare data files. A file new to the cache gets its data file at its first
// open, on the reader's path, and creating an inode was the largest single
// cost of a cold open of a small file: ext4 searches its bitmaps for a free
// inode and skips those freed moments ago, which a cache that evicts (or a
// new cache beside a deleted one) has many of (measured: about a sixth of the
// daemon's CPU time on a cold small-file epoch). So spareLoop keeps a few
// unnamed data files ready (O_TMPFILE in the data directory) and an open
// links one to its name (linkat), which only adds a directory entry. An
// unnamed file that is never linked leaves nothing behind: it goes with its
// last descriptor, so a crash or Close loses nothing but the spares.
//
// spareFiles is small: each spare holds a descriptor that idle files could
// use (idle.go), and the loop makes a new one in tens of microseconds, far
// faster than a cold epoch opens new files.
const spareFiles = 8

// spareRetry is how long spareLoop waits after running out of descriptors.
const spareRetry = time.Second

// spareLoop keeps s.spare full until the store closes, or stops at once if
// the file system cannot create unnamed files (opens then create their
// data files as they always could).
func (s *Store) spareLoop() {
	defer s.wg.Done()
	for {
		fd, err := unix.Open(s.dataDir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if outOfFiles(err) {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(spareRetry):
				continue
			}
		}
		if err != nil {
			s.log.Debug("cache: no spare data files; new files are created at their first open", "err", err)
			return
		}
		select {
		case s.spare <- fd:
		case <-s.ctx.Done():
			_ = unix.Close(fd)
			return
		}
	}
}

// closeSpares closes the spare files left when the store closes.
func (s *Store) closeSpares() {
	for {
		select {
		case fd := <-s.spare:
			_ = unix.Close(fd)
		default:
			return
		}
	}
}

// createData creates the data file p (which must not exist): a spare file
// linked to p if one is ready, else a new one.
// createDataIn is createData, making p's directory (one of the data dir's
// 256) the first time this store needs it.
func (s *Store) createDataIn(p string) (*os.File, error) {
	dir := filepath.Dir(p)
	if _, made := s.dataDirs.Load(dir); !made {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		s.dataDirs.Store(dir, true)
	}
	f, err := s.createData(p)
	if errors.Is(err, os.ErrNotExist) {
		// Removed behind the store's back: make it again.
		s.dataDirs.Delete(dir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		f, err = s.createData(p)
	}
	return f, err
}

func (s *Store) createData(p string) (*os.File, error) {
	select {
	case fd := <-s.spare:
		err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, p, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return os.NewFile(uintptr(fd), p), nil
		}
		// Whatever failed (p exists, no /proc), the plain create says so
		// as it always did.
		_ = unix.Close(fd)
	default:
	}
	return s.openData(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}
