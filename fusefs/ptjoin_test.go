package fusefs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

// ptJoinNode is a node with one registered passthrough handle and its kept
// backing file (content data), without a mount.
func ptJoinNode(t *testing.T, data string) (*node, *os.File) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	n := &node{st: &state{log: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	fp := origin.Fingerprint{Size: int64(len(data))}
	now := time.Now()
	if step := n.io.try(openRequest{readOnly: true, fp: fp, complete: true}, false, now, now); step != admitRegister {
		t.Fatalf("first open: step %v, want register", step)
	}
	n.adoptBacking(f, fp)
	t.Cleanup(func() {
		n.backMu.Lock()
		if n.back != nil {
			n.back.f.Close()
		}
		n.backMu.Unlock()
	})
	return n, f
}

// An open that joins passthrough offers the kept backing file, so that it
// keeps passthrough when the handles it joined release (and go-fuse drops
// their backing ID) before its reply goes out.
func TestPassthroughJoinOffersKeptBacking(t *testing.T) {
	n, f := ptJoinNode(t, "warm content")
	now := time.Now()
	if step := n.io.try(openRequest{}, true, now, now); step != admitJoin {
		t.Fatalf("writer: step %v, want join", step)
	}
	h := n.newPtHandle(&handle{n: n, writable: true, pt: true}, joinPassthrough, nil)
	fd, ok := h.PassthroughFd()
	if !ok {
		t.Fatal("a joining handle offers no backing file")
	}
	var got, want unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		t.Fatal(err)
	}
	unix.Fstat(int(f.Fd()), &want)
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Fatal("the joining handle offers another file than the kept backing file")
	}
	if !h.ownsF {
		t.Fatal("the offered duplicate is not closed with the handle")
	}
	h.f.Close()
}

// A write of a passthrough writer that reached the daemon lands in the
// backing file, which the flush pushes: not in the origin file, where the
// push would undo it.
func TestPassthroughWriteReachingDaemon(t *testing.T) {
	n, f := ptJoinNode(t, "")
	now := time.Now()
	if step := n.io.try(openRequest{}, true, now, now); step != admitJoin {
		t.Fatalf("writer: step %v, want join", step)
	}
	h := n.newPtHandle(&handle{n: n, writable: true, pt: true}, joinPassthrough, nil)
	defer h.f.Close()
	if k, e := h.Write(context.Background(), []byte("new content"), 0); e != 0 || k != 11 {
		t.Fatalf("write: %d %v", k, e)
	}
	buf := make([]byte, 32)
	k, _ := f.ReadAt(buf, 0)
	if string(buf[:k]) != "new content" {
		t.Fatalf("backing file has %q", buf[:k])
	}
	n.backMu.Lock()
	dirty := n.backDirtyLocked()
	n.backMu.Unlock()
	if !dirty {
		t.Fatal("the write is not pushed at the next flush")
	}
}
