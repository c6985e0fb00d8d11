package fusefs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/eddy-cluster/eddy/cache"
)

// storedResult answers a READ with a range of the cache's data file: go-fuse
// splices it from the file into the reply (the kernel copies it once, from
// the data file's pages), or, where splicing is not possible, reads it with
// pread into the reply buffer. Done releases the range, after the reply.
type storedResult struct {
	r cache.StoredRange
}

var _ fuse.ReadResult = (*storedResult)(nil)

// Seekable makes go-fuse splice the range (its seekable read results).
func (s *storedResult) Seekable() (fd uintptr, off int64, sz int) {
	return s.r.File.Fd(), s.r.Off, s.r.Len
}

func (s *storedResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	sz := min(len(buf), s.r.Len)
	n, err := s.r.File.ReadAt(buf[:sz], s.r.Off)
	if n == sz {
		return buf[:n], fuse.OK
	}
	if err == nil {
		err = syscall.EIO
	}
	return nil, fuse.ToStatus(err)
}

func (s *storedResult) Size() int { return s.r.Len }

func (s *storedResult) Done() { s.r.Release() }
