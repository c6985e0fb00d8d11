package sched

// The peer tracker: which nodes hold which chunks of a file version, and who
// fetches a chunk nobody holds yet (a lease), so that a file read by many
// nodes at once is read from the origin about once. It is soft state on
// the leading scheduler: never replicated, rebuilt from the nodes' reports
// (a new leader starts empty and nodes fall back to the origin meanwhile).
//
// Holders come from the nodes' reports (PeerHavePath: bounded ranges of
// chunks, sent as they fill a file) and, as hints, from the cache inventory
// the heartbeats already carry (which names files, not versions or chunks:
// the holder's chunk route checks both, so a wrong hint costs one refused
// call). A lease is handed to the first node that asks for a chunk nobody
// holds or fetches; the others are told to fetch it from that node, whose
// chunk route waits for its fetch up to a bounded time. A lease ends when
// its holder reports the chunk (or gives it up), or after PeerLeaseTTL.

import (
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// Tracker bounds.
const (
	// PeerLeaseTTL bounds a lease: past it another node may fetch the chunk from the origin.
	PeerLeaseTTL = 20 * time.Second
	// peerMaxFiles bounds the file versions tracked (least recently used dropped first).
	peerMaxFiles = 4096
	// peerMaxHolders bounds the holders remembered per chunk (the most recent kept).
	peerMaxHolders = 16
	// peerMaxChunks bounds the chunk indexes one report may name.
	peerMaxChunks = 1 << 16
	// peerAnswerHolders bounds the holders one lookup returns.
	peerAnswerHolders = 4
	// peerIdle: a file version nobody reported or asked about this long is forgotten.
	peerIdle = 30 * time.Minute
)

type peerFileKey struct {
	path  string
	fp    api.Fingerprint
	csize int64
}

type peerChunk struct {
	holders    []string // node names, oldest first
	lease      string   // node fetching it from the origin; "" none
	leaseUntil time.Time
	// fetching: nodes sent to fetch the chunk from a peer, until when; sent: how many
	// askers each node was handed as the first source. A lookup offers the source with
	// the fewest first, so N copies leave N different links instead of one.
	fetching map[string]time.Time
	sent     map[string]int
}

type peerFile struct {
	chunks map[int]*peerChunk
	used   time.Time
}

// peerTracker is the scheduler's tracker. Lock order: Scheduler.mu is never taken while mu is
// held.
type peerTracker struct {
	s      *Scheduler
	mu     sync.Mutex
	files  map[peerFileKey]*peerFile // guarded by mu
	remote map[string]string         // guarded by mu; node -> IP its calls came from
}

// peerRoutes serves the tracker's routes (cluster token holders only).
func (s *Scheduler) peerRoutes(mux *http.ServeMux) {
	t := &peerTracker{s: s, files: map[peerFileKey]*peerFile{}, remote: map[string]string{}}
	mux.HandleFunc("POST "+api.PeerLookupPath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "peer lookup") {
			return
		}
		var req api.PeerLookupRequest
		if !api.DecodeBody(w, r, &req, malformed) {
			return
		}
		t.noteRemote(req.Node, r)
		resp, err := t.lookup(req)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST "+api.PeerHavePath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "peer report") {
			return
		}
		var req api.PeerHaveRequest
		if !api.DecodeBody(w, r, &req, malformed) {
			return
		}
		t.noteRemote(req.Node, r)
		reply(w, struct{}{}, t.have(req))
	})
}

// noteRemote remembers the IP a node's direct call came from: the address of a node that
// listens on an unspecified host (":7000", "0.0.0.0:7000") is completed with it.
func (t *peerTracker) noteRemote(node string, r *http.Request) {
	if node == "" || r.Header.Get(api.ForwardedHeader) != "" {
		return
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return
	}
	t.mu.Lock()
	t.remote[node] = host
	t.mu.Unlock()
}

// upNodes returns the addresses of the up nodes and, for path, the nodes whose inventory
// names it (hints).
func (t *peerTracker) upNodes(path string) (addrs map[string]string, hints []string, err error) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.leading {
		return nil, nil, ErrNotLeader
	}
	addrs = map[string]string{}
	for name, ns := range s.nodes {
		if ns.cn == nil || !ns.cn.Up || ns.expired || ns.rec.Address == "" {
			continue
		}
		addrs[name] = ns.rec.Address
		if path != "" && ns.cn.cached[path] > 0 {
			hints = append(hints, name)
		}
	}
	return addrs, hints, nil
}

// address is node's cluster API address, its host completed from its calls when unspecified.
// Called with mu held.
func (t *peerTracker) address(node, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if r := t.remote[node]; r != "" {
			return net.JoinHostPort(r, port)
		}
	}
	return addr
}

func (t *peerTracker) lookup(req api.PeerLookupRequest) (api.PeerLookupResponse, error) {
	if req.Node == "" || req.Path == "" || req.ChunkSize <= 0 || req.Index < 0 || req.Index >= peerMaxChunks*64 {
		return api.PeerLookupResponse{}, ErrBadRequest
	}
	addrs, hints, err := t.upNodes(req.Path)
	if err != nil {
		return api.PeerLookupResponse{}, err
	}
	now := t.s.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.file(peerFileKey{req.Path, req.Fingerprint, req.ChunkSize}, now)
	c := f.chunks[req.Index]
	if c == nil {
		c = &peerChunk{}
		f.chunks[req.Index] = c
	}
	var resp api.PeerLookupResponse
	seen := map[string]bool{req.Node: true}
	leased := c.lease != "" && now.Before(c.leaseUntil) && addrs[c.lease] != ""
	live := c.holders[:0]
	for _, h := range c.holders {
		if addrs[h] != "" {
			live = append(live, h)
		}
	}
	c.holders = live
	type src struct {
		node   string
		leased bool
	}
	var cand []src
	wasSource := c.lease == req.Node // a holder or the lease holder asking has dropped the chunk
	for _, h := range c.holders {
		if h == req.Node {
			wasSource = true
		}
		if !seen[h] {
			cand = append(cand, src{h, false})
			seen[h] = true
		}
	}
	for n, until := range c.fetching {
		if now.After(until) || addrs[n] == "" {
			delete(c.fetching, n)
			continue
		}
		// INVARIANT: a node fetching from a peer is offered only to askers that came after
		// its source (each was offered only sources already known when it asked), so no two
		// nodes wait on each other; a former source asking again may be what they fetch from.
		if !seen[n] && !wasSource {
			cand = append(cand, src{n, true})
			seen[n] = true
		}
	}
	if leased && !seen[c.lease] {
		cand = append(cand, src{c.lease, true})
		seen[c.lease] = true
	}
	rand.Shuffle(len(cand), func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
	sort.SliceStable(cand, func(i, j int) bool {
		if a, b := c.sent[cand[i].node], c.sent[cand[j].node]; a != b {
			return a < b
		}
		return !cand[i].leased && cand[j].leased
	})
	for _, h := range cand {
		if len(resp.Holders) >= peerAnswerHolders {
			break
		}
		resp.Holders = append(resp.Holders, api.PeerHolder{Node: h.node, Address: t.address(h.node, addrs[h.node]), Leased: h.leased})
	}
	if len(resp.Holders) > 0 {
		if c.sent == nil {
			c.sent = map[string]int{}
		}
		c.sent[resp.Holders[0].Node]++
		if c.fetching == nil {
			c.fetching = map[string]time.Time{}
		}
		if len(c.fetching) < peerMaxHolders {
			c.fetching[req.Node] = now.Add(PeerLeaseTTL)
		}
	}
	if len(resp.Holders) == 0 && (!leased || c.lease == req.Node) {
		c.lease, c.leaseUntil = req.Node, now.Add(PeerLeaseTTL)
		resp.Lease, resp.LeaseMs = true, PeerLeaseTTL.Milliseconds()
	}
	rand.Shuffle(len(hints), func(i, j int) { hints[i], hints[j] = hints[j], hints[i] })
	for _, h := range hints {
		if len(resp.Holders) >= peerAnswerHolders {
			break
		}
		if !seen[h] {
			resp.Holders = append(resp.Holders, api.PeerHolder{Node: h, Address: t.address(h, addrs[h])})
			seen[h] = true
		}
	}
	return resp, nil
}

func (t *peerTracker) have(req api.PeerHaveRequest) error {
	if req.Node == "" || len(req.Files) > api.MaxPeerHaveFiles {
		return ErrBadRequest
	}
	now := t.s.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	budget := peerMaxChunks
	for _, hf := range req.Files {
		if hf.Path == "" || hf.ChunkSize <= 0 || len(hf.Ranges)+len(hf.Released) > api.MaxPeerRanges {
			return ErrBadRequest
		}
		f := t.file(peerFileKey{hf.Path, hf.Fingerprint, hf.ChunkSize}, now)
		for _, r := range hf.Ranges {
			for i := max(r.From, 0); i < r.To && budget > 0; i++ {
				budget--
				c := f.chunks[i]
				if c == nil {
					c = &peerChunk{}
					f.chunks[i] = c
				}
				if c.lease == req.Node {
					c.lease = ""
				}
				delete(c.fetching, req.Node)
				c.addHolder(req.Node)
			}
		}
		for _, r := range hf.Released {
			for i := max(r.From, 0); i < r.To && budget > 0; i++ {
				budget--
				if c := f.chunks[i]; c != nil && c.lease == req.Node {
					c.lease = ""
				}
			}
		}
	}
	return nil
}

func (c *peerChunk) addHolder(node string) {
	for i, h := range c.holders {
		if h == node {
			c.holders = append(c.holders[:i], c.holders[i+1:]...)
			break
		}
	}
	if len(c.holders) >= peerMaxHolders {
		c.holders = c.holders[1:]
	}
	c.holders = append(c.holders, node)
}

// file returns the tracked file version k, adding it (and dropping idle or least recently used
// ones beyond the bound). Called with mu held.
func (t *peerTracker) file(k peerFileKey, now time.Time) *peerFile {
	f := t.files[k]
	if f == nil {
		if len(t.files) >= peerMaxFiles {
			var oldest peerFileKey
			var at time.Time
			for fk, pf := range t.files {
				if now.Sub(pf.used) > peerIdle {
					delete(t.files, fk)
					continue
				}
				if at.IsZero() || pf.used.Before(at) {
					oldest, at = fk, pf.used
				}
			}
			if len(t.files) >= peerMaxFiles {
				delete(t.files, oldest)
			}
		}
		f = &peerFile{chunks: map[int]*peerChunk{}}
		t.files[k] = f
	}
	f.used = now
	return f
}
