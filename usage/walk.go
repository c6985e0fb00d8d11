// Package usage counts what the share holds (bytes and files per scope, per user, per
// directory) with a parallel walk of the origin, and keeps the quota table and the usage it
// is checked against (Tracker).
package usage

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/eddy-cluster/eddy/origin"
)

// batch is how many entries of one directory a worker stats before the rest of the directory
// is handed to other workers: a directory of a million files is shared by all of them.
const batch = 512

// DefaultWorkers is the walk's parallelism when WalkOptions.Workers is 0.
func DefaultWorkers() int { return max(8, 4*runtime.NumCPU()) }

// WalkProgress counts what a walk has seen so far.
type WalkProgress struct {
	Files  int64 `json:"files"` // every entry that is not a directory
	Dirs   int64 `json:"dirs"`
	Bytes  int64 `json:"bytes"` // apparent sizes of the files
	Errors int64 `json:"errors"`
}

// WalkOptions tune Walk.
type WalkOptions struct {
	Workers int // 0: DefaultWorkers
	// Skip, when set, leaves out a directory (and all below it) when it returns true.
	Skip func(name string) bool
	// OnError is told about entries that could not be read (default: counted only).
	OnError func(name string, err error)
}

// Visit is called for every entry below the walk's root (not the root itself), from worker
// number worker (0 <= worker < Workers), so the caller can keep one accumulator per worker and
// merge them afterwards without locking.
type Visit func(worker int, name string, a origin.Attr)

// item is one piece of work: a directory to list, or entries of a listed directory to stat.
type item struct {
	dir   string
	names []origin.DirEntry // nil: list dir
}

// Walker is one walk in progress; Progress may be read while it runs.
type Walker struct {
	files, dirs, bytes, errs atomic.Int64
}

// Progress is what the walk has counted so far.
func (w *Walker) Progress() WalkProgress {
	return WalkProgress{Files: w.files.Load(), Dirs: w.dirs.Load(), Bytes: w.bytes.Load(), Errors: w.errs.Load()}
}

// Walk visits every entry below root (a clean origin name, "." for the share) with N workers:
// directories are listed in parallel and the entries of large ones are statted in parallel
// too. Entries the origin's listing already returned attributes for (READDIRPLUS) are not
// statted again. Unreadable entries are counted in Errors and skipped; only ctx's end stops
// the walk early (its error is returned).
func (w *Walker) Walk(ctx context.Context, fsys origin.FS, root string, opt WalkOptions, visit Visit) error {
	workers := opt.Workers
	if workers <= 0 {
		workers = DefaultWorkers()
	}
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   = []item{{dir: root}}
		pending = 1 // items queued or being worked on
	)
	push := func(its []item) {
		mu.Lock()
		queue = append(queue, its...)
		pending += len(its)
		mu.Unlock()
		if len(its) == 1 {
			cond.Signal()
		} else if len(its) > 1 {
			cond.Broadcast()
		}
	}
	doneOne := func() {
		mu.Lock()
		pending--
		if pending == 0 {
			cond.Broadcast()
		}
		mu.Unlock()
	}
	fail := func(name string, err error) {
		w.errs.Add(1)
		if opt.OnError != nil {
			opt.OnError(name, err)
		}
	}
	stat := func(worker int, dir string, ents []origin.DirEntry) {
		var subdirs []item
		for _, e := range ents {
			if ctx.Err() != nil {
				return
			}
			name := origin.Join(dir, e.Name)
			var a origin.Attr
			if e.Attr != nil {
				a = *e.Attr
			} else {
				var err error
				if a, err = fsys.Lstat(ctx, name); err != nil {
					if !origin.IsNotExist(err) { // gone since the listing: not an error
						fail(name, err)
					}
					continue
				}
			}
			if a.IsDir() {
				w.dirs.Add(1)
				visit(worker, name, a)
				if opt.Skip == nil || !opt.Skip(name) {
					subdirs = append(subdirs, item{dir: name})
				}
				continue
			}
			w.files.Add(1)
			w.bytes.Add(a.Size)
			visit(worker, name, a)
		}
		push(subdirs)
	}
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(worker int) {
			defer wg.Done()
			for {
				mu.Lock()
				for len(queue) == 0 && pending > 0 && ctx.Err() == nil {
					cond.Wait()
				}
				if len(queue) == 0 || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				it := queue[len(queue)-1]
				queue = queue[:len(queue)-1]
				mu.Unlock()

				if it.names != nil {
					stat(worker, it.dir, it.names)
					doneOne()
					continue
				}
				ents, err := fsys.ReadDir(ctx, it.dir)
				if err != nil && !origin.IsNotExist(err) && ctx.Err() == nil {
					fail(it.dir, err)
				}
				// Hand all but the first batch to the other workers.
				var rest []item
				for len(ents) > batch {
					cut := len(ents) - batch
					rest = append(rest, item{dir: it.dir, names: ents[cut:]})
					ents = ents[:cut]
				}
				push(rest)
				stat(worker, it.dir, ents)
				doneOne()
			}
		}(i)
	}
	stop := context.AfterFunc(ctx, func() { mu.Lock(); cond.Broadcast(); mu.Unlock() })
	wg.Wait()
	stop()
	return ctx.Err()
}

// ErrQuota is the error a write that would pass a hard quota gets ("disk quota exceeded").
const ErrQuota = syscall.EDQUOT
