package sched

import (
	"cmp"
	"container/heap"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/origin"
)

// The cluster-wide view of the nodes' caches (api.CacheWherePath), answered from the
// inventories the nodes' heartbeats keep up to date here: per node, each cached file's cached
// bytes (and, from the same reports, its size). Soft state, the leader's only: a follower's
// LeaderRouter forwards the call.

// whereRoutes registers GET api.CacheWherePath.
func (s *Scheduler) whereRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.CacheWherePath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("top") {
			// A list of file names: root's only, as the share's names are not everyone's to see.
			if !rootOnly(w, r, "cache where --top") {
				return
			}
			n, err := strconv.Atoi(q.Get("top"))
			if err != nil || n < 1 || n > api.MaxCacheTop {
				api.WriteError(w, http.StatusBadRequest, fmt.Errorf("top must be an integer from 1 to %d", api.MaxCacheTop))
				return
			}
			out, err := s.CacheTop(n)
			reply(w, out, err)
			return
		}
		// Counts and bytes of a path the caller names, no file names: anyone's.
		if _, ok := caller(w, r); !ok {
			return
		}
		out, err := s.CacheWhere(q.Get("path"))
		reply(w, out, err)
	})
}

// underPath: file f is p or below it ("." holds everything).
func underPath(f, p string) bool {
	return p == "." || f == p || (strings.HasPrefix(f, p) && len(f) > len(p) && f[len(p)] == '/')
}

// fileSizeLocked is the size of cached file f as the inventories last reported it, at least the b
// bytes cached of it.
func (s *Scheduler) fileSizeLocked(f string, b int64) int64 { return max(s.sizes[f], b) }

// CacheWhere is which nodes cache p (a file, or the files under a directory), and how much.
func (s *Scheduler) CacheWhere(p string) (api.CacheWhere, error) {
	p = strings.TrimSpace(p)
	clean, err := origin.Clean(p)
	if err != nil {
		return api.CacheWhere{}, fmt.Errorf("cache where: %w: %v", ErrBadRequest, err)
	}
	out := api.CacheWhere{Path: clean, Nodes: []api.WhereNode{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return api.CacheWhere{}, fmt.Errorf("cache where: %w", ErrNotLeader)
	}
	files := map[string]int64{} // every node's files under p -> size
	for name, ns := range s.nodes {
		wn := api.WhereNode{Node: name, Up: ns.cn.Up}
		add := func(f string, b int64) {
			size := s.fileSizeLocked(f, b)
			wn.Files++
			wn.CachedBytes += b
			wn.SizeBytes += size
			if b >= size {
				wn.WholeFiles++
			}
			files[f] = size
			if f != clean {
				out.Dir = true
			}
		}
		if b, ok := ns.cn.cached[clean]; ok && clean != "." {
			add(clean, b) // a file: one look-up
		} else if s.cl.warm[clean][ns.cn] > 0 || clean == "." {
			for f, b := range ns.cn.cached {
				if underPath(f, clean) {
					add(f, b)
				}
			}
		}
		out.Nodes = append(out.Nodes, wn)
	}
	out.Files = len(files)
	for _, size := range files {
		out.SizeBytes += size
	}
	slices.SortFunc(out.Nodes, func(a, b api.WhereNode) int {
		if c := cmp.Compare(b.CachedBytes, a.CachedBytes); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	return out, nil
}

// CacheTop is the n largest files cached on any node, largest first (then by path), with the
// nodes that cache them.
func (s *Scheduler) CacheTop(n int) (api.CacheTop, error) {
	out := api.CacheTop{Files: []api.TopFile{}}
	if n <= 0 {
		return out, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return api.CacheTop{}, fmt.Errorf("cache where: %w", ErrNotLeader)
	}
	// A min-heap of the n largest seen so far; a file cached on several nodes enters it once.
	h := &topHeap{}
	in := map[string]bool{}
	for _, ns := range s.nodes {
		for f, b := range ns.cn.cached {
			if in[f] {
				continue
			}
			e := topEntry{path: f, size: s.fileSizeLocked(f, b)}
			switch {
			case h.Len() < n:
				heap.Push(h, e)
			case h.less(h.es[0], e):
				delete(in, h.es[0].path)
				h.es[0] = e
				heap.Fix(h, 0)
			default:
				continue
			}
			in[f] = true
		}
	}
	es := h.es
	slices.SortFunc(es, func(a, b topEntry) int {
		if c := cmp.Compare(b.size, a.size); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	for _, e := range es {
		tf := api.TopFile{Path: e.path, SizeBytes: e.size, Nodes: []api.FileHolder{}}
		for name, ns := range s.nodes {
			if b := ns.cn.cached[e.path]; b > 0 {
				tf.Nodes = append(tf.Nodes, api.FileHolder{Node: name, Up: ns.cn.Up, CachedBytes: b})
			}
		}
		slices.SortFunc(tf.Nodes, func(a, b api.FileHolder) int {
			if c := cmp.Compare(b.CachedBytes, a.CachedBytes); c != 0 {
				return c
			}
			return strings.Compare(a.Node, b.Node)
		})
		out.Files = append(out.Files, tf)
	}
	return out, nil
}

type topEntry struct {
	path string
	size int64
}

// topHeap is a min-heap by rank: smaller size first, and of equal sizes the later path.
type topHeap struct{ es []topEntry }

func (h *topHeap) less(a, b topEntry) bool {
	return a.size < b.size || (a.size == b.size && a.path > b.path)
}
func (h *topHeap) Len() int           { return len(h.es) }
func (h *topHeap) Less(i, j int) bool { return h.less(h.es[i], h.es[j]) }
func (h *topHeap) Swap(i, j int)      { h.es[i], h.es[j] = h.es[j], h.es[i] }
func (h *topHeap) Push(x any)         { h.es = append(h.es, x.(topEntry)) }
func (h *topHeap) Pop() any {
	e := h.es[len(h.es)-1]
	h.es = h.es[:len(h.es)-1]
	return e
}
