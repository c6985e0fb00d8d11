// Package cache is the node's chunk cache: sparse files on local disk filled in fixed-size
// chunks, a badger index of fingerprints, chunk checksums, pins and last access, fetching from
// the origin (parallel, read-ahead, one fetch per chunk however many readers), revalidation,
// eviction under a byte quota and a free-space floor, integrity checks, warm-up, stats and the
// inventory the scheduler reads. It has no FUSE dependency and must not import fusefs, sched or
// runtime.
package cache
