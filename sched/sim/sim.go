package sim

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/eddy-cluster/eddy/sched"
)

const gb = 1e9 // trace sizes are decimal GB; bandwidths decimal Gbit/s

// Trace is the trace format of bench/traces/README.md.
type Trace struct {
	Name       string         `json:"name"`
	Params     map[string]any `json:"params"`
	OriginGbps float64        `json:"origin_gbps"`
	Nodes      []TraceNode    `json:"nodes"`
	Files      []TraceFile    `json:"files"`
	Tasks      []TraceTask    `json:"tasks"`
}

// TraceNode is one node of a trace.
type TraceNode struct {
	Name          string  `json:"name"`
	Cores         float64 `json:"cores"`
	MemGB         float64 `json:"mem_gb"`
	GPUs          int     `json:"gpus"`
	CacheGB       float64 `json:"cache_gb"`
	LinkGbps      float64 `json:"link_gbps"`
	LocalReadGbps float64 `json:"local_read_gbps"`
}

// TraceFile is one input file of a trace.
type TraceFile struct {
	Path   string  `json:"path"`
	SizeGB float64 `json:"size_gb"`
	Kind   string  `json:"kind"`
}

// TraceTask is one task of a trace.
type TraceTask struct {
	ID         string   `json:"id"`
	SubmitS    float64  `json:"submit_s"`
	GPUs       int      `json:"gpus"`
	Cores      float64  `json:"cores"`
	MemGB      float64  `json:"mem_gb"`
	Inputs     []string `json:"inputs"`
	ReadPasses int      `json:"read_passes"`
	ComputeS   float64  `json:"compute_s"`
}

// Load reads a trace file.
func Load(name string) (*Trace, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("load trace: %w", err)
	}
	var t Trace
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("load trace %s: %w", name, err)
	}
	if len(t.Nodes) == 0 || len(t.Tasks) == 0 {
		return nil, fmt.Errorf("load trace %s: no nodes or no tasks", name)
	}
	return &t, nil
}

// Options tune a run.
type Options struct {
	// LocalityWait bounds delay scheduling for eddy and floor (simulated time).
	LocalityWait time.Duration
	Seed         uint64
}

// DefaultLocalityWait for the simulator: tasks here run for tens of minutes and fetches take
// minutes, so the bound is scaled accordingly (the live default is sched.DefaultLocalityWait;
// under PolicyEddy cheap fetches wait far less, see sched.FetchWaitFactor).
const DefaultLocalityWait = 40 * time.Minute

// Result is one policy's figures.
type Result struct {
	Policy          string  `json:"policy"`
	Tasks           int     `json:"tasks"`
	LocalFraction   float64 `json:"local_fraction"`     // input bytes read from the local cache / all input bytes read
	FirstReadLocal  float64 `json:"first_read_local"`   // same, counting each input once per task (first pass only)
	OriginBytes     float64 `json:"origin_bytes"`       // bytes fetched from the origin
	MeanJCT         float64 `json:"mean_jct_s"`         // submit to finish
	P95JCT          float64 `json:"p95_jct_s"`          // 95th percentile
	MeanQueue       float64 `json:"mean_queue_s"`       // submit to start
	MeanFetchStall  float64 `json:"mean_fetch_stall_s"` // start to compute (waiting for misses)
	Makespan        float64 `json:"makespan_s"`         // first submit to last finish
	DecisionP99     float64 `json:"decision_p99_ms"`    // wall time of one Place call, p99
	PassP99         float64 `json:"pass_p99_ms"`        // wall time of one scheduling pass over the queue, p99
	Decisions       int     `json:"decisions"`
	Evictions       int     `json:"evictions"`
	UncachedReads   int     `json:"uncached_reads"` // inputs read straight from the origin (no cache room)
	SimWallSeconds  float64 `json:"sim_wall_s"`
	LocalityWaitSec float64 `json:"locality_wait_s"`
}

type entry struct {
	file     int
	bytes    float64
	lastUse  float64
	pins     int
	complete bool
	fetch    *fetch
}

type simNode struct {
	cn        *sched.Node
	capacity  float64
	used      float64
	linkBps   float64
	localBps  float64
	entries   map[int]*entry
	nfetch    int
	evictions int
}

type fetch struct {
	node      *simNode
	entry     *entry // nil: streamed read, not stored
	remaining float64
	rate      float64
	waiters   []*task
}

type task struct {
	tt        *TraceTask
	req       sched.Request
	res       sched.Resources
	files     []int
	node      *simNode
	pending   int
	submit    float64
	start     float64
	compute   float64 // compute start
	end       float64
	readB     float64
	originB   float64
	firstB    float64 // first-read bytes
	firstLoc  float64
	waitUntil float64 // simulated time its locality wait ends, 0 = not waiting
	isNew     bool
	q         sched.Queued
}

// consider: see sched.Queued.Consider.
func (s *simulator) consider(t *task) bool {
	consider := t.isNew || (s.curWoke && t.waitUntil > 0 && t.waitUntil <= s.now+1e-3)
	for _, n := range s.curFreed {
		if consider {
			break
		}
		consider = s.cl.Fits(n.cn, &t.req)
	}
	if consider {
		t.waitUntil = 0
		s.considered++
	}
	return consider
}

type event struct {
	t    float64
	kind int // 0 arrival, 1 compute done, 2 wake
	task *task
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].kind > h[j].kind // completions before arrivals at the same instant
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type simulator struct {
	tr         *Trace
	opt        Options
	cl         *sched.Cluster
	pl         *sched.Placer
	nodes      []*simNode
	byCN       map[*sched.Node]*simNode
	fileSize   []float64
	fileKind   []string
	filePath   []string
	fetches    []*fetch
	originBps  float64
	events     eventHeap
	queue      []*task
	wakeAt     map[float64]bool
	now        float64
	decisions  sample
	considered int
	curFreed   []*simNode
	curWoke    bool
	curNew     bool
	qs         []sched.Queued
	passes     []float64
	done       []*task
	uncached   int
}

var epoch = time.Unix(0, 0)

func at(s float64) time.Time { return epoch.Add(time.Duration(s * float64(time.Second))) }

// Run simulates the trace under one policy.
func Run(tr *Trace, policy sched.Policy, opt Options) (Result, error) {
	wall := time.Now()
	if opt.LocalityWait == 0 {
		opt.LocalityWait = DefaultLocalityWait
	}
	s := &simulator{tr: tr, opt: opt, cl: sched.NewCluster(), byCN: map[*sched.Node]*simNode{}, wakeAt: map[float64]bool{}}
	s.originBps = tr.OriginGbps * gb / 8
	s.cl.OriginBps = s.originBps
	s.pl = &sched.Placer{Policy: policy, LocalityWait: opt.LocalityWait, Rand: rand.New(rand.NewPCG(opt.Seed, 7))}
	for _, tn := range tr.Nodes {
		res := sched.Resources{Cores: tn.Cores, MemBytes: int64(tn.MemGB * gb), GPUs: tn.GPUs}
		link := tn.LinkGbps * gb / 8
		cn := s.cl.AddNode(sched.Node{Name: tn.Name, Total: res, Free: res, Up: true, LinkBps: link})
		lr := tn.LocalReadGbps
		if lr <= 0 {
			lr = 24
		}
		sn := &simNode{cn: cn, capacity: tn.CacheGB * gb, linkBps: link, localBps: lr * gb / 8, entries: map[int]*entry{}}
		s.nodes = append(s.nodes, sn)
		s.byCN[cn] = sn
	}
	idx := map[string]int{}
	for i, f := range tr.Files {
		idx[f.Path] = i
		s.fileSize = append(s.fileSize, f.SizeGB*gb)
		s.fileKind = append(s.fileKind, f.Kind)
		s.filePath = append(s.filePath, f.Path)
	}
	for i := range tr.Tasks {
		tt := &tr.Tasks[i]
		t := &task{tt: tt, submit: tt.SubmitS, res: sched.Resources{Cores: tt.Cores, MemBytes: int64(tt.MemGB * gb), GPUs: tt.GPUs}}
		t.req.Res = t.res
		for _, in := range tt.Inputs {
			fi, ok := idx[in]
			if !ok {
				return Result{}, fmt.Errorf("task %s: input %q not in the trace's files", tt.ID, in)
			}
			t.files = append(t.files, fi)
			t.req.Inputs = append(t.req.Inputs, sched.Input{Path: in, Size: int64(s.fileSize[fi])})
		}
		if r := s.cl.CanEverFit(&t.req); r != "" {
			return Result{}, fmt.Errorf("task %s can never fit: %s", tt.ID, r)
		}
		t.q = sched.Queued{Req: &t.req, Consider: func() bool { return s.consider(t) }}
		heap.Push(&s.events, event{t: tt.SubmitS, kind: 0, task: t})
	}
	s.loop()
	return s.result(policy, time.Since(wall)), nil
}

func (s *simulator) loop() {
	for {
		next := math.Inf(1)
		if len(s.events) > 0 {
			next = s.events[0].t
		}
		var firstDone *fetch
		for _, f := range s.fetches {
			if f.rate > 0 {
				if t := s.now + f.remaining/f.rate; t < next {
					next, firstDone = t, f
				}
			}
		}
		if math.IsInf(next, 1) {
			return
		}
		dt := next - s.now
		for _, f := range s.fetches {
			f.remaining -= f.rate * dt
		}
		s.now = next
		changed := false
		// Fetch completions.
		if firstDone != nil || len(s.fetches) > 0 {
			kept := s.fetches[:0]
			for _, f := range s.fetches {
				if f == firstDone || f.remaining <= 1 {
					s.fetchDone(f)
					changed = true
					continue
				}
				kept = append(kept, f)
			}
			clear(s.fetches[len(kept):])
			s.fetches = kept
		}
		var freed []*simNode
		woke := false
		var arrivals []*task
		for len(s.events) > 0 && s.events[0].t <= s.now {
			e := heap.Pop(&s.events).(event)
			switch e.kind {
			case 0:
				s.queue = append(s.queue, e.task)
				arrivals = append(arrivals, e.task)
			case 1:
				s.finish(e.task)
				freed = append(freed, e.task.node)
			case 2:
				delete(s.wakeAt, e.t)
				woke = true
			}
		}
		// Only what changed can change a decision: a node that freed resources (offered to the
		// whole queue in order), tasks whose locality wait ran out, new arrivals.
		if len(freed) > 0 || woke || len(arrivals) > 0 {
			s.pass(freed, woke, arrivals)
			changed = true
		}
		if changed {
			s.rates()
		}
	}
}

// pass offers the cluster to queued tasks in queue order: a task is considered when it fits one
// of the freed nodes, its locality wait ran out, or it just arrived. A task not considered
// would get the same answer as at its last consideration, since nothing it could use changed.
func (s *simulator) pass(freed []*simNode, woke bool, arrivals []*task) {
	t0 := time.Now()
	now := at(s.now)
	s.cl.OriginReaders = len(s.fetches)
	s.curFreed, s.curWoke, s.curNew = freed, woke, len(arrivals) > 0
	for _, t := range arrivals {
		t.isNew = true
	}
	s.qs = s.qs[:0]
	for _, t := range s.queue {
		s.qs = append(s.qs, t.q)
	}
	qs := s.qs
	placed := map[*task]bool{}
	d0 := time.Now()
	pl := &timedPlacer{s: s}
	wake := pl.schedule(now, qs, func(i int, d sched.Decision) {
		placed[s.queue[i]] = true
		s.cl.OriginReaders = len(s.fetches)
	}, func(i int, d sched.Decision) {
		s.queue[i].waitUntil = d.WaitUntil.Sub(epoch).Seconds()
	})
	_ = d0
	for _, t := range arrivals {
		t.isNew = false
	}
	if len(placed) > 0 {
		s.queue = slices.DeleteFunc(s.queue, func(t *task) bool { return placed[t] })
	}
	if !wake.IsZero() {
		w := math.Max(wake.Sub(epoch).Seconds(), s.now+1e-3) // never re-wake at the same instant
		if !s.wakeAt[w] {
			s.wakeAt[w] = true
			heap.Push(&s.events, event{t: w, kind: 2})
		}
	}
	s.passes = append(s.passes, float64(time.Since(t0).Nanoseconds())/1e6)
}

// timedPlacer runs Schedule and records the wall time of each decision: the time from one
// placement (or the start of the pass) to the next, divided by the tasks examined in between.
type timedPlacer struct{ s *simulator }

func (tp *timedPlacer) schedule(now time.Time, qs []sched.Queued, assign, wait func(int, sched.Decision)) time.Time {
	s := tp.s
	s.considered = 0
	t0 := time.Now()
	var offer []*sched.Node
	if !s.curWoke && len(s.curFreed) > 0 && !s.curNew {
		for _, n := range s.curFreed {
			offer = append(offer, n.cn)
		}
	}
	wake := s.pl.Schedule(s.cl, now, qs, offer, func(i int, d sched.Decision) {
		s.assign(s.queue[i], s.byCN[d.Node])
		assign(i, d)
	}, wait)
	if n := s.considered; n > 0 {
		per := float64(time.Since(t0).Nanoseconds()) / 1e6 / float64(n)
		s.decisions.add(per, n)
	}
	return wake
}

func (s *simulator) assign(t *task, n *simNode) {
	t.node, t.start = n, s.now // Schedule took the resources
	if s.pl.Policy == sched.PolicyEddy {
		// Promised inputs are part of eddy's policy (the live scheduler makes them); floor
		// stays the published baseline, which sees only what caches report.
		s.cl.Promise(n.cn, t.req.Inputs)
	}
	for i, fi := range t.files {
		size := s.fileSize[fi]
		passes := 1.0
		if s.fileKind[fi] == "dataset" && t.tt.ReadPasses > 1 {
			passes = float64(t.tt.ReadPasses)
		}
		t.readB += passes * size
		t.firstB += size
		_ = i
		e := n.entries[fi]
		switch {
		case e != nil && e.complete:
			e.pins++
			e.lastUse = s.now
			t.firstLoc += size
		case e != nil: // being fetched by another task: wait for it
			e.pins++
			e.lastUse = s.now
			e.fetch.waiters = append(e.fetch.waiters, t)
			t.pending++
			t.firstLoc += size
		default:
			if s.admit(n, size) {
				e = &entry{file: fi, bytes: size, lastUse: s.now, pins: 1}
				n.entries[fi] = e
				n.used += size
				f := &fetch{node: n, entry: e, remaining: size, waiters: []*task{t}}
				e.fetch = f
				s.fetches = append(s.fetches, f)
				n.nfetch++
				t.pending++
				t.originB += size
			} else {
				s.uncached++
				f := &fetch{node: n, remaining: size * passes, waiters: []*task{t}}
				s.fetches = append(s.fetches, f)
				n.nfetch++
				t.pending++
				t.originB += size * passes
			}
		}
	}
	if t.pending == 0 {
		s.startCompute(t)
	}
}

// admit makes room for size bytes on n by evicting least recently used unpinned entries
// (LRU by bytes, pins respected, as the node cache does). It reports false when pinned data
// leaves no room.
func (s *simulator) admit(n *simNode, size float64) bool {
	if size > n.capacity {
		return false
	}
	if n.used+size <= n.capacity {
		return true
	}
	var unpinned float64
	var victims []*entry
	for _, e := range n.entries {
		if e.pins == 0 && e.complete {
			unpinned += e.bytes
			victims = append(victims, e)
		}
	}
	if n.used-unpinned+size > n.capacity {
		return false
	}
	sort.Slice(victims, func(i, j int) bool { return victims[i].lastUse < victims[j].lastUse })
	for _, e := range victims {
		if n.used+size <= n.capacity {
			break
		}
		delete(n.entries, e.file)
		n.used -= e.bytes
		n.evictions++
		s.cl.SetCached(n.cn, s.filePath[e.file], 0)
	}
	return true
}

func (s *simulator) fetchDone(f *fetch) {
	f.node.nfetch--
	if f.entry != nil {
		f.entry.complete = true
		f.entry.fetch = nil
		s.cl.SetCached(f.node.cn, s.filePath[f.entry.file], int64(f.entry.bytes))
	}
	for _, t := range f.waiters {
		t.pending--
		if t.pending == 0 {
			s.startCompute(t)
		}
	}
}

func (s *simulator) startCompute(t *task) {
	t.compute = s.now
	local := t.readB - t.originB
	d := t.tt.ComputeS + local/t.node.localBps
	heap.Push(&s.events, event{t: s.now + d, kind: 1, task: t})
}

func (s *simulator) finish(t *task) {
	t.end = s.now
	n := t.node
	s.cl.Release(n.cn, t.res)
	if s.pl.Policy == sched.PolicyEddy {
		s.cl.Unpromise(n.cn, t.req.Inputs)
	}
	for _, fi := range t.files {
		if e := n.entries[fi]; e != nil && e.pins > 0 {
			e.pins--
			e.lastUse = s.now
		}
	}
	s.done = append(s.done, t)
}

// rates shares bandwidth max-min fairly: each fetch is capped by its node's link shared among
// that node's fetches, and all fetches share the origin.
func (s *simulator) rates() {
	if len(s.fetches) == 0 {
		return
	}
	for _, f := range s.fetches {
		f.rate = f.node.linkBps / float64(f.node.nfetch)
	}
	if s.originBps <= 0 {
		return
	}
	sort.Slice(s.fetches, func(i, j int) bool { return s.fetches[i].rate < s.fetches[j].rate })
	left, m := s.originBps, len(s.fetches)
	for _, f := range s.fetches {
		share := left / float64(m)
		f.rate = math.Min(f.rate, share)
		left -= f.rate
		m--
	}
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (s *simulator) result(p sched.Policy, wall time.Duration) Result {
	r := Result{Policy: string(p), Tasks: len(s.done), SimWallSeconds: math.Round(wall.Seconds()*100) / 100,
		LocalityWaitSec: s.opt.LocalityWait.Seconds(), UncachedReads: s.uncached}
	var read, org, first, firstLoc, jsum, qsum, fsum float64
	var jcts []float64
	minSub, maxEnd := math.Inf(1), 0.0
	for _, t := range s.done {
		read += t.readB
		org += t.originB
		first += t.firstB
		firstLoc += t.firstLoc
		j := t.end - t.submit
		jcts = append(jcts, j)
		jsum += j
		qsum += t.start - t.submit
		fsum += t.compute - t.start
		minSub = math.Min(minSub, t.submit)
		maxEnd = math.Max(maxEnd, t.end)
	}
	n := float64(len(s.done))
	if n > 0 {
		r.LocalFraction = round4(1 - org/read)
		r.FirstReadLocal = round4(firstLoc / first)
		r.MeanJCT = math.Round(jsum / n)
		r.MeanQueue = math.Round(qsum / n)
		r.MeanFetchStall = math.Round(fsum / n)
		r.P95JCT = math.Round(pct(jcts, 0.95))
		r.Makespan = math.Round(maxEnd - minSub)
	}
	r.OriginBytes = org
	r.DecisionP99 = round4(s.decisions.pct(0.99))
	r.PassP99 = round4(pct(s.passes, 0.99))
	r.Decisions = s.decisions.n
	for _, sn := range s.nodes {
		r.Evictions += sn.evictions
	}
	return r
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

// sample is a weighted histogram of millisecond values with logarithmic buckets (2% wide), so
// percentiles over millions of decisions cost constant memory.
type sample struct {
	buckets map[int]int
	n       int
}

func (h *sample) add(v float64, count int) {
	if h.buckets == nil {
		h.buckets = map[int]int{}
	}
	b := int(math.Floor(math.Log(math.Max(v, 1e-6)) / math.Log(1.02)))
	h.buckets[b] += count
	h.n += count
}

func (h *sample) pct(p float64) float64 {
	if h.n == 0 {
		return 0
	}
	keys := make([]int, 0, len(h.buckets))
	for k := range h.buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := int(math.Ceil(p * float64(h.n)))
	acc := 0
	for _, k := range keys {
		acc += h.buckets[k]
		if acc >= want {
			return math.Pow(1.02, float64(k+1))
		}
	}
	return math.Pow(1.02, float64(keys[len(keys)-1]+1))
}
