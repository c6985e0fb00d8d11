// Package fusefs maps FUSE operations (go-fuse v2) onto the origin and the cache. It is a thin
// adapter: metadata and writes go to the origin (write-through), reads of cacheable files go
// through the cache, and a fully cached, validated file opened read-only gets a kernel
// passthrough fd. It knows nothing about eviction or scheduling.
package fusefs
