// Package fusefs maps FUSE operations (go-fuse v2) onto the origin and the cache. It is a thin
// adapter: metadata and writes go to the origin (write-through), reads of cacheable files go
// through the cache, and a fully cached, validated file opened read-only gets a kernel
// passthrough fd. It knows nothing about eviction or scheduling.
//
// What an open does is decided apart from FUSE, in plain Go that imports nothing of go-fuse
// and is tested without a mount:
//
//   - openplan.go: the open plan. From the facts of one open (its flags, whether its lookup
//     vouched for fresh attributes, the versions the node's last open and the kernel saw,
//     whether the origin is offline, what the cache offers) it decides where the handle reads
//     (cache, origin, or the cache alone while offline), whether the kernel keeps its page
//     cache or drops the attributes it holds, whether the open may use passthrough, and the
//     reply's open flags.
//   - iomode.go: the I/O mode admission. It counts each inode's handles by I/O mode and
//     admits a new one to passthrough or cached I/O so the kernel's one-mode, one-backing-file
//     per inode rule holds, waiting for closing handles where that rule needs it.
//
// The FUSE side gathers the facts, asks, and acts: open.go (node.Open), with file.go (the
// handles), node.go (the other node operations), backing.go (the passthrough backing file
// kept in step with the origin), vouch.go (lookups that stand for an open's origin check),
// stash.go (attributes remembered between requests), unlinked.go (unlinked open files) and
// interrupt.go (which interrupts cancel a request).
package fusefs
