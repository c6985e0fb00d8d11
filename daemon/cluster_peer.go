package daemon

// Peer fetch, the node's side (docs/peer-fetch.md): the chunk route other nodes fetch this
// node's chunks from, and the cache's peer source, which asks the scheduler's tracker who holds
// a missing chunk (sched/peers.go), fetches it from them, and reports the chunks this node
// fills. The origin is always the fallback: every call is bounded, and a tracker that does not
// answer is left alone for a while.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
	"go.opentelemetry.io/otel/metric"
)

// Peer fetch's fixed bounds.
const (
	peerLookupTimeout = 2 * time.Second        // one call to the tracker
	peerTrackerPause  = 5 * time.Second        // no tracker calls this long after one failed
	peerReportEvery   = 50 * time.Millisecond  // reports are batched this long
	peerSlotWait      = 5 * time.Second        // a chunk request waits this long for an upload slot
	peerMaxWaiters    = 256                    // chunk requests waiting for a fetch under way here
	peerMaxPending    = api.MaxPeerHaveFiles   // file versions with unsent reports
	peerMaxHolderTry  = 4                      // holders tried per chunk
	peerMinTransfer   = 100 * time.Millisecond // below this left, a holder is not tried
)

// peerCorruptEnv names a test hook, read once when peer fetch starts: set to 1, this node
// flips one byte of every chunk it serves to other nodes while sending the true checksum, so
// that the integration tests can show a receiver catching a corrupt peer (the checksum rejects
// it, the chunk comes from another holder or the origin, peer_rejected counts it). It is not
// configuration: it is never in --help or the config file, and a daemon with it on says so in
// a warning at start, so that it is never on unnoticed.
const peerCorruptEnv = "EDDY_TEST_PEER_CORRUPT"

// peerCache is what peer fetch needs of the cache (*cache.Store).
type peerCache interface {
	SetPeerSource(cache.PeerSource)
	ServePeerChunk(ctx context.Context, key cache.PeerKey, dst []byte, wait time.Duration) (int, uint64, error)
	ServePeerChunkFile(ctx context.Context, key cache.PeerKey) (*os.File, int64, uint64, error)
}

// startPeerFetch serves the chunk route and plugs the peer source into the cache, with
// --peer-fetch on a node that has a cache, a cluster listener and a scheduler.
func (d *Daemon) startPeerFetch(m *clusterMember, schedAddr string) {
	c := m.cfg
	if !c.PeerFetch {
		return
	}
	pc, ok := d.cache.(peerCache)
	if !ok || d.cache == nil || c.Listen == "" || schedAddr == "" {
		m.log.Warn("--peer-fetch needs a cache, --listen and a scheduler (--scheduler or --join); peer fetch is off")
		return
	}
	srv := &peerServer{c: pc, slots: make(chan struct{}, c.PeerUploadSlots), waiters: make(chan struct{}, peerMaxWaiters),
		corrupt: os.Getenv(peerCorruptEnv) == "1", log: m.log.With("part", "peer")}
	if srv.corrupt {
		m.log.Warn("TEST HOOK: " + peerCorruptEnv + "=1, every chunk this node serves to other nodes is corrupted on purpose")
	}
	d.Handle("GET "+api.PeerChunkPath, srv)
	opts := append(append([]api.Option{}, m.callOpts...), api.WithTimeout(peerLookupTimeout))
	tr := &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second, TLSClientConfig: m.clientTLS}
	scheme := "http"
	if m.serveTLS || strings.Contains(c.Join, "https://") {
		scheme = "https"
	}
	src := &peerSource{node: m.name, token: m.token, scheme: scheme, tracker: api.NewTCP(schedAddr, opts...),
		hc: &http.Client{Transport: tr}, wait: min(c.PeerWait, c.PeerTimeout), timeout: c.PeerTimeout,
		leases: map[cache.PeerKey]bool{}, pending: map[peerFileKey]*api.PeerHaveFile{}, kick: make(chan struct{}, 1),
		rejected: &d.api.peerRejected, stop: make(chan struct{}), log: m.log.With("part", "peer")}
	reg, err := registerPeerMetrics(d.meter, src.rejected)
	if err != nil {
		m.log.Warn("peer fetch metrics not registered", "err", err)
		reg = nil
	}
	done := make(chan struct{})
	go func() { defer close(done); src.reportLoop() }()
	pc.SetPeerSource(src)
	d.OnShutdown(func(context.Context) error {
		pc.SetPeerSource(nil)
		close(src.stop)
		<-done
		tr.CloseIdleConnections()
		if reg != nil {
			return reg.Unregister()
		}
		return nil
	})
	m.log.Info("peer fetch on", "upload_slots", c.PeerUploadSlots, "wait", src.wait, "timeout", src.timeout)
}

// registerPeerMetrics exports the rejected-chunk count beside the cache's own instruments
// (cache/metrics.go): the cache never sees those chunks, as the peer source drops them before
// handing bytes over, so the count is the daemon's to export.
func registerPeerMetrics(m metric.Meter, rejected *atomic.Int64) (metric.Registration, error) {
	if m == nil {
		return nil, nil
	}
	c, err := m.Int64ObservableCounter("eddy.cache.peer.rejected",
		metric.WithDescription("Chunks from other nodes that failed their checksum (fetched elsewhere instead)"), metric.WithUnit("{chunk}"))
	if err != nil {
		return nil, fmt.Errorf("eddy.cache.peer.rejected: %w", err)
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(c, rejected.Load())
		return nil
	}, c)
}

// peerServer serves this node's chunks to other nodes.
type peerServer struct {
	c       peerCache
	slots   chan struct{} // upload slots (--peer-upload-slots)
	waiters chan struct{} // requests waiting for a fetch under way here
	corrupt bool          // the peerCorruptEnv test hook is on
	bufs    sync.Pool
	log     *slog.Logger
}

func (p *peerServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Node to node only: the cluster token itself, never a call made for a local user (the
	// socket, a forwarded call, the status page).
	if id, ok := api.IdentityFrom(r.Context()); !ok || id.Via != "token" {
		api.WriteError(w, http.StatusForbidden, errors.New("the chunk route is for the cluster's nodes only"))
		return
	}
	key, wait, err := peerKeyFrom(r.URL.Query())
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	ctx := r.Context()
	if wait > 0 {
		// Wait for a fetch under way here without holding a slot (bounded: wait, and the
		// number of waiters).
		select {
		case p.waiters <- struct{}{}:
			_, _, _ = p.c.ServePeerChunk(ctx, key, nil, wait)
			<-p.waiters
		default:
		}
	}
	t := time.NewTimer(peerSlotWait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
	case <-t.C:
		api.WriteError(w, http.StatusServiceUnavailable, errors.New("no upload slot free"))
		return
	case <-ctx.Done():
		return
	}
	defer func() { <-p.slots }()
	if !p.corrupt {
		f, n, sum, err := p.c.ServePeerChunkFile(ctx, key)
		switch {
		case err == nil:
			p.sendFile(w, f, n, sum)
			return
		case errors.Is(err, cache.ErrPeerNoChunk):
			api.WriteError(w, http.StatusNotFound, err)
			return
		}
		// In flight or not checked yet: ServePeerChunk waits for it and copies it.
	}
	bp, _ := p.bufs.Get().(*[]byte)
	if bp == nil || int64(cap(*bp)) < key.Len {
		b := make([]byte, key.ChunkSize)
		bp = &b
	}
	defer p.bufs.Put(bp)
	buf := (*bp)[:key.Len]
	n, sum, err := p.c.ServePeerChunk(ctx, key, buf, time.Second)
	if err != nil {
		status := http.StatusNotFound
		if !errors.Is(err, cache.ErrPeerNoChunk) {
			status = http.StatusServiceUnavailable
		}
		api.WriteError(w, status, err)
		return
	}
	if p.corrupt && n > 0 {
		buf[n/2] ^= 0xff // the test hook: our own copy, the cached chunk stays whole
	}
	w.Header().Set(api.PeerSumHeader, fmt.Sprintf("%016x", sum))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	_, _ = w.Write(buf[:n])
}

// sendFile answers with a chunk stored here, n bytes of f from its offset, sent by the kernel
// (sendfile over plain TCP: no copy through the daemon, which on a node serving several peers
// was a tenth of its CPU time), and closes f.
func (p *peerServer) sendFile(w http.ResponseWriter, f *os.File, n int64, sum uint64) {
	defer f.Close()
	w.Header().Set(api.PeerSumHeader, fmt.Sprintf("%016x", sum))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	// A short send leaves the receiver short of Content-Length: it drops the chunk.
	_, _ = io.Copy(w, io.LimitReader(f, n))
}

// peerKeyFrom parses the chunk route's query.
func peerKeyFrom(q url.Values) (cache.PeerKey, time.Duration, error) {
	fp, err := api.ParsePeerParam(q.Get("fp"))
	if err != nil {
		return cache.PeerKey{}, 0, err
	}
	csize, err1 := strconv.ParseInt(q.Get("csize"), 10, 64)
	idx, err2 := strconv.Atoi(q.Get("idx"))
	clen, err3 := strconv.ParseInt(q.Get("len"), 10, 64)
	waitMs, _ := strconv.ParseInt(q.Get("wait_ms"), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || q.Get("path") == "" || csize <= 0 || csize > 256<<20 ||
		idx < 0 || clen <= 0 || clen > csize {
		return cache.PeerKey{}, 0, fmt.Errorf("chunk request: want path, fp, csize, idx and len (%v)", err)
	}
	wait := min(time.Duration(max(waitMs, 0))*time.Millisecond, time.Minute)
	return cache.PeerKey{Path: q.Get("path"), Fingerprint: origin.Fingerprint(fp), ChunkSize: csize, Index: idx, Len: clen}, wait, nil
}

type peerFileKey struct {
	path  string
	fp    origin.Fingerprint
	csize int64
}

// peerSource is the cache's peer source (cache.PeerSource).
type peerSource struct {
	node, token, scheme string
	tracker             *api.Client
	hc                  *http.Client
	wait, timeout       time.Duration
	rejected            *atomic.Int64 // chunks a holder sent that failed their checksum
	log                 *slog.Logger

	mu        sync.Mutex
	pauseTill time.Time                         // guarded by mu: no tracker calls before
	leases    map[cache.PeerKey]bool            // guarded by mu: chunks this node holds a lease on
	pending   map[peerFileKey]*api.PeerHaveFile // guarded by mu: reports not sent yet
	kick      chan struct{}
	stop      chan struct{}
}

var errPeerNone = errors.New("no peer supplied the chunk")

// Fetch implements cache.PeerSource.
func (p *peerSource) Fetch(ctx context.Context, key cache.PeerKey, dst []byte) (uint64, error) {
	p.mu.Lock()
	paused := time.Now().Before(p.pauseTill)
	p.mu.Unlock()
	if paused {
		return 0, errPeerNone
	}
	deadline := time.Now().Add(p.timeout + peerLookupTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var resp api.PeerLookupResponse
	req := api.PeerLookupRequest{Node: p.node, Path: key.Path, Fingerprint: api.Fingerprint(key.Fingerprint), ChunkSize: key.ChunkSize, Index: key.Index}
	lctx, lcancel := context.WithTimeout(ctx, peerLookupTimeout)
	err := p.tracker.Do(lctx, http.MethodPost, api.PeerLookupPath, req, &resp)
	lcancel()
	if err != nil {
		if ctx.Err() == nil {
			p.mu.Lock()
			p.pauseTill = time.Now().Add(peerTrackerPause)
			p.mu.Unlock()
			p.log.Debug("tracker does not answer; reading the origin", "err", err)
		}
		return 0, errPeerNone
	}
	if resp.Lease {
		p.mu.Lock()
		p.leases[key] = true
		p.mu.Unlock()
	}
	for i, h := range resp.Holders {
		if i >= peerMaxHolderTry || h.Node == p.node || time.Until(deadline) < peerMinTransfer {
			break
		}
		sum, err := p.fetchFrom(ctx, h, key, dst)
		if err == nil {
			return sum, nil
		}
		p.log.Debug("peer chunk fetch failed", "peer", h.Node, "path", key.Path, "chunk", key.Index, "err", err)
	}
	return 0, errPeerNone
}

// fetchFrom fetches key from holder h into dst and checks it against the checksum h sent.
func (p *peerSource) fetchFrom(ctx context.Context, h api.PeerHolder, key cache.PeerKey, dst []byte) (uint64, error) {
	q := url.Values{}
	q.Set("path", key.Path)
	q.Set("fp", api.Fingerprint(key.Fingerprint).PeerParam())
	q.Set("csize", strconv.FormatInt(key.ChunkSize, 10))
	q.Set("idx", strconv.Itoa(key.Index))
	q.Set("len", strconv.FormatInt(key.Len, 10))
	if h.Leased {
		q.Set("wait_ms", strconv.FormatInt(p.wait.Milliseconds(), 10))
	}
	base := h.Address
	if !strings.Contains(base, "://") {
		base = p.scheme + "://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+api.PeerChunkPath+"?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("%s: %s", h.Node, resp.Status)
	}
	sum, err := strconv.ParseUint(resp.Header.Get(api.PeerSumHeader), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: no checksum: %w", h.Node, err)
	}
	if resp.ContentLength != key.Len || int64(len(dst)) != key.Len {
		return 0, fmt.Errorf("%s: %d bytes, want %d", h.Node, resp.ContentLength, key.Len)
	}
	if _, err := io.ReadFull(resp.Body, dst); err != nil {
		return 0, fmt.Errorf("%s: %w", h.Node, err)
	}
	if xxhash.Sum64(dst) != sum {
		// Counted, so that a peer with a bad disk or bad memory shows in the stats; the
		// first one is a warning, the rest would repeat it once per chunk.
		err := fmt.Errorf("%s: chunk %d of %s failed its checksum", h.Node, key.Index, key.Path)
		if p.rejected.Add(1) == 1 {
			p.log.Warn("chunk from a peer rejected; trying another holder or the origin", "err", err)
		}
		return 0, err
	}
	return sum, nil
}

// Done implements cache.PeerSource: the chunk is reported held (or the lease given up).
func (p *peerSource) Done(key cache.PeerKey, ok bool) {
	p.mu.Lock()
	leased := p.leases[key]
	delete(p.leases, key)
	if !ok && !leased {
		p.mu.Unlock()
		return
	}
	fk := peerFileKey{key.Path, key.Fingerprint, key.ChunkSize}
	hf := p.pending[fk]
	if hf == nil {
		if len(p.pending) >= peerMaxPending {
			p.mu.Unlock()
			return // the tracker is soft state: a lost report costs origin reads, nothing else
		}
		hf = &api.PeerHaveFile{Path: key.Path, Fingerprint: api.Fingerprint(key.Fingerprint), ChunkSize: key.ChunkSize}
		p.pending[fk] = hf
	}
	if ok {
		hf.Ranges = addRange(hf.Ranges, key.Index)
	} else {
		hf.Released = addRange(hf.Released, key.Index)
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// addRange adds idx to rs, extending the last range when idx follows it (bounded: past
// api.MaxPeerRanges ranges, idx is dropped).
func addRange(rs []api.PeerRange, idx int) []api.PeerRange {
	for i := range rs {
		if idx >= rs[i].From && idx < rs[i].To {
			return rs
		}
		if idx == rs[i].To {
			rs[i].To++
			return rs
		}
		if idx == rs[i].From-1 {
			rs[i].From--
			return rs
		}
	}
	if len(rs) >= api.MaxPeerRanges {
		return rs
	}
	return append(rs, api.PeerRange{From: idx, To: idx + 1})
}

// reportLoop sends the pending reports in batches until stop.
func (p *peerSource) reportLoop() {
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		select {
		case <-p.stop:
			return
		case <-time.After(peerReportEvery):
		}
		p.mu.Lock()
		req := api.PeerHaveRequest{Node: p.node}
		for k, hf := range p.pending {
			req.Files = append(req.Files, *hf)
			delete(p.pending, k)
		}
		p.mu.Unlock()
		if len(req.Files) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), peerLookupTimeout)
		if err := p.tracker.Do(ctx, http.MethodPost, api.PeerHavePath, req, nil); err != nil {
			p.log.Debug("peer report not sent", "err", err)
		}
		cancel()
	}
}
