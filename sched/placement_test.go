package sched

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var gpu1 = Resources{Cores: 8, MemBytes: 64 << 30, GPUs: 1}

func testCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := NewCluster()
	for i := range n {
		res := Resources{Cores: 64, MemBytes: 512 << 30, GPUs: 8}
		c.AddNode(Node{Name: fmt.Sprintf("n%02d", i), Total: res, Free: res, Up: true, Labels: map[string]string{"rack": fmt.Sprint(i % 2)}})
	}
	return c
}

func fill(c *Cluster, n *Node) { c.Assign(n, n.Free) }

func TestPlaceWarmNodeWins(t *testing.T) {
	for _, pol := range []Policy{PolicyEddy, PolicyFloor} {
		t.Run(string(pol), func(t *testing.T) {
			c := testCluster(t, 8)
			warm := c.Node("n05")
			c.SetCached(warm, "data/ds1/part0", 60<<30)
			c.SetCached(warm, "data/ds1/part1", 40<<30)
			c.SetCached(c.Node("n02"), "data/ds1/part0", 10<<30)
			p := &Placer{Policy: pol, Explain: true}
			r := &Request{Res: gpu1, Inputs: []Input{{Path: "data/ds1", Size: 100 << 30}}}
			d := p.Place(c, time.Now(), r)
			if d.Node != warm {
				t.Fatalf("placed on %v (%s), want n05", d.Node, d.Reason)
			}
			if !d.Local || len(d.Candidates) == 0 || d.Candidates[0].Node != "n05" || d.Candidates[0].WarmBytes != 100<<30 {
				t.Fatalf("explanation %+v local=%v", d.Candidates, d.Local)
			}
		})
	}
}

func TestDelaySchedulingCountsFromFirstChance(t *testing.T) {
	c := testCluster(t, 4)
	warm := c.Node("n01")
	c.SetCached(warm, "data/big", 500<<30)
	fill(c, warm)
	p := &Placer{Policy: PolicyFloor, LocalityWait: 10 * time.Second}
	r := &Request{Res: gpu1, Inputs: []Input{{Path: "data/big", Size: 500 << 30}}}
	t0 := time.Unix(1000, 0)
	// Submitted long ago, but nothing fit until t0: the wait starts at t0.
	for _, n := range c.Nodes() {
		if n != warm {
			fill(c, n)
		}
	}
	if d := p.Place(c, t0.Add(-time.Hour), r); d.Node != nil || d.Wait {
		t.Fatalf("full cluster: %+v", d)
	}
	if !r.FirstChance.IsZero() {
		t.Fatal("first chance set while nothing fit")
	}
	other := c.Node("n02")
	c.Release(other, gpu1)
	d := p.Place(c, t0, r)
	if !d.Wait || d.Node != nil || !d.WaitUntil.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("want a wait until t0+10s, got %+v", d)
	}
	if d := p.Place(c, t0.Add(9*time.Second), r); !d.Wait {
		t.Fatalf("still within the wait: %+v", d)
	}
	c.Release(warm, gpu1)
	if d := p.Place(c, t0.Add(9*time.Second), r); d.Node != warm {
		t.Fatalf("warm node freed: %+v", d)
	}
	c.Assign(warm, gpu1)
	if d := p.Place(c, t0.Add(11*time.Second), r); d.Node != other {
		t.Fatalf("wait over: want the free cold node, got %+v", d)
	}
}

func TestEddyWaitBoundedByTheFetchSaved(t *testing.T) {
	c := testCluster(t, 3)
	c.DefaultLinkBps = 1 << 30 // 1 GiB/s
	warm := c.Node("n00")
	c.SetCached(warm, "small", 2<<30) // 2 s to fetch
	fill(c, warm)
	r := &Request{Res: gpu1, Inputs: []Input{{Path: "small", Size: 2 << 30}}}
	t0 := time.Unix(0, 0)
	eddy := &Placer{Policy: PolicyEddy, LocalityWait: time.Minute}
	want := time.Duration(FetchWaitFactor) * 2 * time.Second
	d := eddy.Place(c, t0, r)
	if !d.Wait || d.WaitUntil.Sub(t0) != want {
		t.Fatalf("eddy: want a %s wait, got %+v", want, d)
	}
	if d := eddy.Place(c, t0.Add(want+time.Second), r); d.Node == nil {
		t.Fatalf("eddy after %s: %+v", want+time.Second, d)
	}
	r2 := &Request{Res: gpu1, Inputs: []Input{{Path: "small", Size: 2 << 30}}}
	floor := &Placer{Policy: PolicyFloor, LocalityWait: time.Minute}
	if d := floor.Place(c, t0, r2); !d.Wait || d.WaitUntil.Sub(t0) != time.Minute {
		t.Fatalf("floor: want the fixed 1 min wait, got %+v", d)
	}
}

func TestColdPlacementIsStable(t *testing.T) {
	c := testCluster(t, 16)
	p := &Placer{Policy: PolicyEddy}
	seen := map[string]int{}
	for i := range 40 {
		in := fmt.Sprintf("data/ds%02d", i)
		a := p.Place(c, time.Now(), &Request{Res: gpu1, Inputs: []Input{{Path: in, Size: 1 << 30}}})
		b := p.Place(c, time.Now(), &Request{Res: gpu1, Inputs: []Input{{Path: in, Size: 1 << 30}}})
		if a.Node == nil || a.Node != b.Node {
			t.Fatalf("%s: %v then %v", in, a.Node, b.Node)
		}
		if !strings.Contains(a.Reason, "rendezvous") {
			t.Fatalf("reason %q", a.Reason)
		}
		seen[a.Node.Name]++
	}
	if len(seen) < 8 {
		t.Fatalf("40 datasets spread over only %d of 16 nodes: %v", len(seen), seen)
	}
	// The chosen node busy: the next in the dataset's order, again stable.
	first := p.Place(c, time.Now(), &Request{Res: gpu1, Inputs: []Input{{Path: "data/ds00"}}}).Node
	fill(c, first)
	a := p.Place(c, time.Now(), &Request{Res: gpu1, Inputs: []Input{{Path: "data/ds00"}}}).Node
	b := p.Place(c, time.Now(), &Request{Res: gpu1, Inputs: []Input{{Path: "data/ds00"}}}).Node
	if a == nil || a == first || a != b {
		t.Fatalf("fallback %v %v (first %v)", a, b, first)
	}
}

func TestConstraintsAndCanEverFit(t *testing.T) {
	c := testCluster(t, 4)
	cases := []struct {
		name string
		req  Request
		want string // substring of the reason, "" = fits
	}{
		{"fits", Request{Res: gpu1}, ""},
		{"too many gpus", Request{Res: Resources{GPUs: 9}}, "9 GPUs"},
		{"too much memory", Request{Res: Resources{MemBytes: 1 << 40}}, "memory"},
		{"unknown node", Request{Res: gpu1, Node: "nope"}, "not registered"},
		{"labels", Request{Res: gpu1, Labels: map[string]string{"rack": "7"}}, "labels"},
		{"target node", Request{Res: gpu1, Node: "n03"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := c.CanEverFit(&tc.req)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("CanEverFit = %q, want %q", got, tc.want)
			}
		})
	}
	p := &Placer{Policy: PolicyEddy}
	if d := p.Place(c, time.Now(), &Request{Res: gpu1, Node: "n03"}); d.Node != c.Node("n03") {
		t.Fatalf("target node: %+v", d)
	}
	if d := p.Place(c, time.Now(), &Request{Res: gpu1, Labels: map[string]string{"rack": "1"}}); d.Node == nil || d.Node.Labels["rack"] != "1" {
		t.Fatalf("labels: %+v", d)
	}
	c.SetUp(c.Node("n03"), false)
	if d := p.Place(c, time.Now(), &Request{Res: gpu1, Node: "n03"}); d.Node != nil {
		t.Fatalf("down node chosen: %+v", d)
	}
}

func TestDirectoryInputsAggregate(t *testing.T) {
	c := testCluster(t, 2)
	n := c.Node("n00")
	c.SetCached(n, "data/ds/a", 10)
	c.SetCached(n, "data/ds/sub/b", 20)
	if got := c.CachedBytes(n, "data/ds"); got != 30 {
		t.Fatalf("dir bytes %d", got)
	}
	if got := c.CachedBytes(n, "data"); got != 30 {
		t.Fatalf("parent bytes %d", got)
	}
	c.SetCached(n, "data/ds/a", 0)
	if got := c.CachedBytes(n, "data/ds"); got != 20 {
		t.Fatalf("after removal %d", got)
	}
	c.ClearCached(n)
	if got := c.CachedBytes(n, "data"); got != 0 || c.CachedFiles(n) != 0 {
		t.Fatalf("after clear %d", got)
	}
}

// A freed node goes to the queued task whose data is there, ahead of an older cold task whose
// wait is over; blind takes queue order.
func TestScheduleLocalFirst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pol    Policy
		waited time.Duration // the cold task's time since its first chance
		want   int
	}{
		{"eddy", PolicyEddy, 2 * time.Minute, 1},
		{"eddy starving", PolicyEddy, time.Hour, 0},
		{"blind", PolicyBlind, 2 * time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testCluster(t, 2)
			a, b := c.Node("n00"), c.Node("n01")
			c.SetCached(a, "data/x", 100<<30)
			c.SetCached(b, "data/y", 100<<30)
			fill(c, a)
			fill(c, b)
			c.Release(a, gpu1) // one slot on n00
			t0 := time.Unix(5000, 0)
			cold := &Request{Res: gpu1, Inputs: []Input{{Path: "data/y", Size: 100 << 30}}, FirstChance: t0.Add(-tc.waited)}
			local := &Request{Res: gpu1, Inputs: []Input{{Path: "data/x", Size: 100 << 30}}}
			p := &Placer{Policy: tc.pol, LocalityWait: time.Minute}
			var got []int
			p.Schedule(c, t0, []Queued{{Req: cold}, {Req: local}}, []*Node{a}, func(i int, d Decision) { got = append(got, i) }, nil)
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("placed %v, want [%d]", got, tc.want)
			}
			if a.Free.GPUs != 0 {
				t.Fatalf("Schedule did not take the resources: %+v", a.Free)
			}
		})
	}
}

func BenchmarkPlacement(b *testing.B) {
	c := NewCluster()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		res := Resources{Cores: 64, MemBytes: 512 << 30, GPUs: 8}
		n := c.AddNode(Node{Name: fmt.Sprintf("n%04d", i), Total: res, Free: res, Up: true})
		for range 30 {
			c.SetCached(n, fmt.Sprintf("data/ds%04d", rng.IntN(2000)), 50<<30)
		}
		c.Assign(n, Resources{Cores: 56, MemBytes: 448 << 30, GPUs: 7})
	}
	reqs := make([]*Request, 10000)
	for i := range reqs {
		reqs[i] = &Request{Res: gpu1, Inputs: []Input{{Path: fmt.Sprintf("data/ds%04d", rng.IntN(2000)), Size: 50 << 30}}}
	}
	p := &Placer{Policy: PolicyEddy, LocalityWait: 5 * time.Second}
	now := time.Unix(0, 0)
	b.ResetTimer()
	for i := range b.N {
		p.Place(c, now, reqs[i%len(reqs)])
	}
}

// A task placed cold promises its inputs to its node: the next task of the same dataset goes
// there (or waits for it) before any inventory reports a byte, instead of fetching a second copy
// elsewhere; the promise ends with the task.
func TestPromisedInputsCountAsWarm(t *testing.T) {
	c := testCluster(t, 16)
	p := &Placer{Policy: PolicyEddy, LocalityWait: time.Hour}
	in := []Input{{Path: "data/ds9", Size: 200 << 30}}
	now := time.Unix(5000, 0)
	big := Resources{Cores: 40, MemBytes: 64 << 30, GPUs: 5} // two do not fit one node
	first := p.Place(c, now, &Request{Res: big, Inputs: in})
	if first.Node == nil {
		t.Fatalf("first task not placed: %s", first.Reason)
	}
	c.Assign(first.Node, big)
	c.Promise(first.Node, in)

	small := &Request{Res: gpu1, Inputs: in}
	if d := p.Place(c, now, small); d.Node != first.Node || !d.Local {
		t.Fatalf("second task on %v (local %v, %s), want the promised node %s", d.Node, d.Local, d.Reason, first.Node.Name)
	}
	// The promised node full: the task waits for it rather than fetching 200 GiB elsewhere.
	fill(c, first.Node)
	second := &Request{Res: gpu1, Inputs: in}
	if d := p.Place(c, now, second); !d.Wait || !strings.Contains(d.Reason, first.Node.Name) {
		t.Fatalf("want a wait for %s, got node %v: %s", first.Node.Name, d.Node, d.Reason)
	}
	if c.Promised(first.Node, "data/ds9") != 1 {
		t.Fatalf("promised count %d, want 1", c.Promised(first.Node, "data/ds9"))
	}
	// The task ends: no promise is left and the input is cold everywhere again.
	c.Unpromise(first.Node, in)
	c.Release(first.Node, first.Node.Total.Sub(first.Node.Free))
	if c.Promised(first.Node, "data/ds9") != 0 || c.CachedBytes(first.Node, "data/ds9") != 0 {
		t.Fatalf("promise left after Unpromise")
	}
	if d := p.Place(c, now, &Request{Res: gpu1, Inputs: in}); d.Node == nil || d.Local {
		t.Fatalf("after the promise ended: node %v local %v (%s)", d.Node, d.Local, d.Reason)
	}
	// Real cached bytes and a promise on the same node count once, as the larger.
	c.SetCached(first.Node, "data/ds9", 50<<30)
	c.Promise(first.Node, in)
	if got := c.CachedBytes(first.Node, "data/ds9"); got != 200<<30 {
		t.Fatalf("cached+promised = %d, want %d", got, int64(200<<30))
	}
}

// A container environment ranks nodes: image imported, then tarball cached, then cold.
func TestPlaceEnvImportedAboveCachedAboveCold(t *testing.T) {
	const env = "containers/torch/torch_100.tar"
	c := testCluster(t, 8)
	imported, cached := c.Node("n03"), c.Node("n05")
	c.SetImported(imported, []string{env, "containers/other/other_1.tar"})
	c.SetCached(cached, env, 4<<30)
	c.SetCached(c.Node("n06"), env, 1<<30) // part of it
	p := &Placer{Policy: PolicyEddy, Explain: true, LocalityWait: -1}
	req := func() *Request { return &Request{Res: gpu1, Inputs: []Input{{Path: env, Size: 4 << 30, Env: true}}} }

	d := p.Place(c, time.Now(), req())
	if d.Node != imported || !strings.Contains(d.Reason, "already imported there") || !d.Local {
		t.Fatalf("want the node with the image imported: %v %q local=%v", d.Node, d.Reason, d.Local)
	}
	if cd := d.Candidates[0]; cd.Node != "n03" || !cd.EnvImported || cd.MissingBytes != 0 {
		t.Fatalf("explanation %+v", d.Candidates)
	}
	var sawCached bool
	for _, cd := range d.Candidates {
		sawCached = sawCached || (cd.Node == "n05" && cd.EnvCached && !cd.EnvImported)
	}
	if !sawCached {
		t.Fatalf("explanation lacks the node caching the tarball: %+v", d.Candidates)
	}
	fill(c, imported)
	if d := p.Place(c, time.Now(), req()); d.Node != cached || !strings.Contains(d.Reason, "cached there (to import)") {
		t.Fatalf("imported node busy: want the node caching the tarball, got %v %q", d.Node, d.Reason)
	}
	fill(c, cached)
	if d := p.Place(c, time.Now(), req()); d.Node != c.Node("n06") {
		t.Fatalf("want the node with part of the tarball, got %v %q", d.Node, d.Reason)
	}
	fill(c, c.Node("n06"))
	d = p.Place(c, time.Now(), req())
	if d.Node == nil || d.Node == imported || d.Node == cached || !strings.Contains(d.Reason, "to fetch and import") {
		t.Fatalf("cold: %v %q", d.Node, d.Reason)
	}
	if d2 := p.Place(c, time.Now(), req()); d2.Node != d.Node {
		t.Fatalf("cold placement of an environment is not stable: %v then %v", d.Node, d2.Node)
	}
	// The image going away (heartbeat without it) takes the node out of the index.
	c.SetImported(imported, nil)
	c.Release(imported, imported.Total)
	if d := p.Place(c, time.Now(), req()); d.Node == imported && strings.Contains(d.Reason, "imported") {
		t.Fatalf("stale import: %q", d.Reason)
	}
	if got := c.Imported(imported); len(got) != 0 {
		t.Fatalf("imported after removal: %v", got)
	}
}

// The data input stays first: the environment only decides among nodes equal on the data.
func TestPlaceEnvBreaksTiesOfData(t *testing.T) {
	const env = "containers/torch/torch_100.tar"
	c := testCluster(t, 6)
	c.SetCached(c.Node("n01"), "data/ds1", 10<<30)
	c.SetCached(c.Node("n02"), "data/ds1", 10<<30)
	c.SetImported(c.Node("n02"), []string{env})
	c.SetImported(c.Node("n04"), []string{env})
	p := &Placer{Policy: PolicyEddy, LocalityWait: -1}
	req := &Request{Res: gpu1, Inputs: []Input{{Path: "data/ds1", Size: 10 << 30}, {Path: env, Size: 1 << 30, Env: true}}}
	if d := p.Place(c, time.Now(), req); d.Node != c.Node("n02") {
		t.Fatalf("data warm on n01 and n02, image on n02: got %v (%s)", d.Node, d.Reason)
	}
	c.SetImported(c.Node("n02"), nil)
	c.SetCached(c.Node("n02"), env, 1<<30)
	if d := p.Place(c, time.Now(), req); d.Node != c.Node("n02") {
		t.Fatalf("data warm on n01 and n02, tarball on n02: got %v (%s)", d.Node, d.Reason)
	}
	c.SetCached(c.Node("n02"), "data/ds1", 0)
	if d := p.Place(c, time.Now(), req); d.Node != c.Node("n01") {
		t.Fatalf("data only on n01 (image on n04): got %v (%s)", d.Node, d.Reason)
	}
	// Data cold everywhere: the node with the image beats the data's rendezvous node.
	cold := &Request{Res: gpu1, Inputs: []Input{{Path: "data/new", Size: 10 << 30}, {Path: env, Size: 1 << 30, Env: true}}}
	if d := p.Place(c, time.Now(), cold); d.Node != c.Node("n04") {
		t.Fatalf("data cold, image on n04: got %v (%s)", d.Node, d.Reason)
	}
}

// Scheduling passes treat a node with the environment imported as local (first sweep).
func TestScheduleEnvImportedIsLocal(t *testing.T) {
	const env = "containers/torch/torch_100.tar"
	c := testCluster(t, 4)
	c.SetImported(c.Node("n02"), []string{env})
	p := &Placer{Policy: PolicyEddy, LocalityWait: time.Minute}
	q := []Queued{{Req: &Request{Res: gpu1, Inputs: []Input{{Path: env, Size: 1 << 30, Env: true}}}}}
	var got *Node
	p.Schedule(c, time.Now(), q, nil, func(i int, d Decision) { got = d.Node }, nil)
	if got != c.Node("n02") {
		t.Fatalf("placed on %v", got)
	}
}
