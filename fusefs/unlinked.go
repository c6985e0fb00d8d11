package fusefs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

// Unlinked open files.
//
// POSIX keeps an unlinked file readable and writable through the
// descriptors open on it until the last one closes. A local directory does
// that itself; an NFSv3 server does not (its file handles go stale once the
// file is removed). For such origins, the last name of a file open on this
// node is renamed aside (".eddy-unlinked-..." in the same directory) instead
// of removed, and removed at the file's last close here, as NFS clients do
// with their ".nfs..." names. Another node sees the aside name until then;
// a daemon killed meanwhile leaves it behind, as a crashed NFS client does.

// asidePrefix starts the names unlinked open files are renamed to.
const asidePrefix = ".eddy-unlinked-"

// unlinkAside renames the file full (child name of n) aside instead of
// unlinking it, if it is open here, has no other link, and the origin would
// lose it. It reports whether it did.
func (n *node) unlinkAside(ctx context.Context, name, full string) bool {
	if n.st.keepsUnlinked {
		return false
	}
	ch := n.GetChild(name)
	if ch == nil {
		return false
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		return false
	}
	cn.mu.Lock()
	open := cn.io.open() && cn.last.Nlink <= 1 && cn.aside == ""
	cn.mu.Unlock()
	if !open {
		return false
	}
	var r [8]byte
	rand.Read(r[:])
	aside := origin.Join(n.name(), asidePrefix+hex.EncodeToString(r[:]))
	if err := n.st.org.Rename(ctx, full, aside, unix.RENAME_NOREPLACE); err != nil {
		n.st.log.Debug("fusefs: cannot rename an unlinked open file aside; unlinking it", "name", full, "err", err)
		return false
	}
	cn.mu.Lock()
	cn.aside = aside
	cn.mu.Unlock()
	if n.st.cache != nil {
		n.st.cache.Invalidate(full)
	}
	return true
}

// originName is the origin name to open for a handle opened as name: the
// aside name once the file was unlinked while open.
func (n *node) originName(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.aside != "" {
		return n.aside
	}
	return name
}

// removeAside removes the aside name of an unlinked file once no handle of
// it is open here.
func (n *node) removeAside() {
	n.mu.Lock()
	aside := n.aside
	if aside == "" || n.io.open() {
		n.mu.Unlock()
		return
	}
	n.aside = ""
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.st.org.Unlink(ctx, aside); err != nil && !origin.IsNotExist(err) {
		n.st.log.Warn("fusefs: cannot remove an unlinked file's aside name", "name", aside, "err", err)
	}
}
