package usage

import (
	"context"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/eddy-cluster/eddy/origin"
)

// Scoped are the top-level directories of the share whose children are scopes of their own
// (users/alice, jobs/1234); every other top-level directory is one scope (shared_data, logs,
// containers).
var Scoped = map[string]bool{"users": true, "jobs": true}

// ScopeOf is the scope a share-relative name belongs to: "users/alice" for
// "users/alice/x/y", "shared_data" for "shared_data/ds/1", "." for files at the share's root.
func ScopeOf(name string) string {
	first, rest, _ := strings.Cut(name, "/")
	if rest == "" {
		if name == "." || name == "" {
			return "."
		}
		return name // the scope's own directory (or a file at the root)
	}
	if Scoped[first] {
		second, _, _ := strings.Cut(rest, "/")
		return first + "/" + second
	}
	return first
}

// By is what usage is grouped by.
type By string

const (
	ByScope By = "scope"
	ByUser  By = "user"
	ByDir   By = "dir" // the direct children of the walked directory
)

// Sum is the usage of one group.
type Sum struct {
	Key   string `json:"key"`
	Files int64  `json:"files"` // entries that are not directories
	Dirs  int64  `json:"dirs"`
	Bytes int64  `json:"bytes"` // apparent sizes (what quotas count)
	Disk  int64  `json:"disk"`  // allocated bytes (st_blocks*512, as du reports)
}

func (s *Sum) add(a origin.Attr) {
	if a.IsDir() {
		s.Dirs++
	} else {
		s.Files++
		s.Bytes += a.Size
	}
	s.Disk += a.Blocks * 512
}

func (s *Sum) merge(o Sum) {
	s.Files += o.Files
	s.Dirs += o.Dirs
	s.Bytes += o.Bytes
	s.Disk += o.Disk
}

// Report is the result of Count.
type Report struct {
	Path   string       `json:"path"`
	By     By           `json:"by"`
	Groups []Sum        `json:"groups"` // largest first
	Total  Sum          `json:"total"`
	Walk   WalkProgress `json:"walk"`
}

// linkKey identifies a file with several names, counted once.
type linkKey struct{ dev, ino uint64 }

// Count walks root (a clean origin name) and sums usage grouped by by. keyUser names a uid
// (default: the number). Files with several hard links are counted once.
func Count(ctx context.Context, fsys origin.FS, root string, by By, opt WalkOptions, w *Walker, keyUser func(uint32) string) (Report, error) {
	if w == nil {
		w = &Walker{}
	}
	workers := opt.Workers
	if workers <= 0 {
		workers = DefaultWorkers()
		opt.Workers = workers
	}
	if keyUser == nil {
		keyUser = func(u uint32) string { return strconv.FormatUint(uint64(u), 10) }
	}
	perWorker := make([]map[string]*Sum, workers)
	for i := range perWorker {
		perWorker[i] = map[string]*Sum{}
	}
	var linksMu sync.Mutex
	links := map[linkKey]bool{}
	uidKeys := sync.Map{} // uint32 -> string
	prefix := ""
	if root != "." {
		prefix = root + "/"
	}
	keyOf := func(name string, a origin.Attr) string {
		switch by {
		case ByUser:
			if k, ok := uidKeys.Load(a.Uid); ok {
				return k.(string)
			}
			k := keyUser(a.Uid)
			uidKeys.Store(a.Uid, k)
			return k
		case ByDir:
			rel := strings.TrimPrefix(name, prefix)
			first, _, _ := strings.Cut(rel, "/")
			return path.Join(root, first)
		}
		return ScopeOf(name)
	}
	err := w.Walk(ctx, fsys, root, opt, func(worker int, name string, a origin.Attr) {
		if !a.IsDir() && a.Nlink > 1 {
			k := linkKey{a.Dev, a.Ino}
			linksMu.Lock()
			seen := links[k]
			links[k] = true
			linksMu.Unlock()
			if seen {
				return
			}
		}
		key := keyOf(name, a)
		m := perWorker[worker]
		s := m[key]
		if s == nil {
			s = &Sum{Key: key}
			m[key] = s
		}
		s.add(a)
	})
	rep := Report{Path: root, By: by, Walk: w.Progress()}
	all := map[string]*Sum{}
	for _, m := range perWorker {
		for k, s := range m {
			t := all[k]
			if t == nil {
				t = &Sum{Key: k}
				all[k] = t
			}
			t.merge(*s)
			rep.Total.merge(*s)
		}
	}
	for _, s := range all {
		rep.Groups = append(rep.Groups, *s)
	}
	sort.Slice(rep.Groups, func(i, j int) bool {
		if rep.Groups[i].Bytes != rep.Groups[j].Bytes {
			return rep.Groups[i].Bytes > rep.Groups[j].Bytes
		}
		return rep.Groups[i].Key < rep.Groups[j].Key
	})
	rep.Total.Key = "total"
	return rep, err
}
