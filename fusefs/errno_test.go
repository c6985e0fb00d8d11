package fusefs

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/eddy-cluster/eddy/origin"
)

// An interrupted request (context canceled by the kernel's FUSE_INTERRUPT
// for a dying caller) ends as EINTR, never as EIO; absence and trouble keep
// their own errnos.
func TestErrnoMapping(t *testing.T) {
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{fmt.Errorf("cache: read f: %w", context.Canceled), syscall.EINTR},
		{&origin.UnavailableError{Op: "open f", Cause: context.Canceled}, syscall.EINTR},
		{fmt.Errorf("lstat f: %w", syscall.ENOENT), syscall.ENOENT},
		{fmt.Errorf("read f: %w", syscall.EIO), syscall.EIO},
		{fmt.Errorf("%q: %w", "../x", origin.ErrEscape), syscall.EACCES},
		{fmt.Errorf("something without an errno"), syscall.EIO},
	} {
		if got := errno(c.err); got != c.want {
			t.Errorf("errno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
