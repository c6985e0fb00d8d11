package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/eddy-cluster/eddy/sched"
)

// ScaleResult is the decision latency of the real Placer at a synthetic scale.
type ScaleResult struct {
	Policy      string  `json:"policy"`
	Nodes       int     `json:"nodes"`
	Queued      int     `json:"queued"`
	Rounds      int     `json:"rounds"`
	DecisionP50 float64 `json:"decision_p50_ms"` // one scheduling pass for a freed node over the whole queue
	DecisionP99 float64 `json:"decision_p99_ms"`
	PlaceP99    float64 `json:"place_p99_ms"` // one Place call for one task
	Placed      int     `json:"placed"`
}

// Scale builds a synthetic cluster of nodes (8 GPUs, 64 cores, 512 GB each, about 30 of 2,000
// datasets cached per node, every GPU busy) with queued tasks waiting, then repeatedly frees
// one GPU slot on a random node and times the scheduling pass that offers it to the queue (the
// decision the live scheduler makes when a heartbeat reports free resources), and single Place
// calls.
func Scale(policy sched.Policy, nodes, queued, rounds int, seed uint64) ScaleResult {
	rng := rand.New(rand.NewPCG(seed, 99))
	c := sched.NewCluster()
	c.OriginBps = 5e9
	const datasets = 2000
	zipf := rand.NewZipf(rand.New(rand.NewPCG(seed, 3)), 1.1, 1, datasets-1)
	dsPath := func(i uint64) string { return fmt.Sprintf("shared_data/datasets/ds%04d", i) }
	dsSize := func(i uint64) int64 { return int64(10e9 + float64(i%97)*1e9) }
	var ns []*sched.Node
	for i := range nodes {
		res := sched.Resources{Cores: 64, MemBytes: 512e9, GPUs: 8}
		n := c.AddNode(sched.Node{Name: fmt.Sprintf("n%04d", i), Total: res, Free: res, Up: true, LinkBps: 3.1e9})
		for range 30 {
			d := zipf.Uint64()
			c.SetCached(n, dsPath(d), dsSize(d))
		}
		busy := 8
		c.Assign(n, sched.Resources{Cores: float64(busy) * 8, MemBytes: int64(busy) * 64e9, GPUs: busy})
		ns = append(ns, n)
	}
	pl := &sched.Placer{Policy: policy, LocalityWait: 5 * time.Second, Rand: rand.New(rand.NewPCG(seed, 5))}
	reqs := make([]*sched.Request, queued)
	for i := range reqs {
		g := []int{1, 1, 1, 2, 4, 8}[rng.IntN(6)]
		d := zipf.Uint64()
		reqs[i] = &sched.Request{Res: sched.Resources{Cores: float64(g) * 8, MemBytes: int64(g) * 64e9, GPUs: g},
			Inputs: []sched.Input{{Path: dsPath(d), Size: dsSize(d)}, {Path: fmt.Sprintf("containers/env%02d/env.tar", d%40), Size: 8e9}}}
	}
	now := time.Unix(1_700_000_000, 0)
	var passes, places []float64
	placed := 0
	// The queue is built once: its entries look at the node freed this round (n), so a round
	// allocates nothing per queued task (the garbage of 100,000 closures a round would be
	// collected during the timed passes).
	var n *sched.Node
	qs := make([]sched.Queued, len(reqs))
	for i, rq := range reqs {
		qs[i] = sched.Queued{Req: rq, Consider: func() bool { return c.Fits(n, rq) }}
	}
	for r := range rounds {
		now = now.Add(time.Second)
		n = ns[rng.IntN(len(ns))]
		one := sched.Resources{Cores: 8, MemBytes: 64e9, GPUs: 1}
		released := n.Free.GPUs < n.Total.GPUs
		if released {
			c.Release(n, one)
		}
		type took struct {
			i int
			n *sched.Node
		}
		var tooks []took
		t0 := time.Now()
		pl.Schedule(c, now, qs, []*sched.Node{n}, func(i int, d sched.Decision) { tooks = append(tooks, took{i, d.Node}) }, nil)
		passes = append(passes, float64(time.Since(t0).Nanoseconds())/1e6)
		// The placed tasks finish at once and new ones take their place in the queue, so the
		// load and the queue stay the same size.
		for _, t := range tooks {
			placed++
			c.Release(t.n, reqs[t.i].Res)
			reqs[t.i].FirstChance = time.Time{}
		}
		if released {
			c.Assign(n, one)
		}
		if r%10 == 0 {
			rq := reqs[rng.IntN(len(reqs))]
			t1 := time.Now()
			pl.Place(c, now, rq) // Place takes no resources: nothing to undo
			places = append(places, float64(time.Since(t1).Nanoseconds())/1e6)
		}
	}
	q := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return 0
		}
		s := slices.Clone(v)
		slices.Sort(s)
		return round4(s[int(math.Ceil(p*float64(len(s))))-1])
	}
	return ScaleResult{Policy: string(policy), Nodes: nodes, Queued: queued, Rounds: rounds,
		DecisionP50: q(passes, 0.5), DecisionP99: q(passes, 0.99), PlaceP99: q(places, 0.99), Placed: placed}
}
