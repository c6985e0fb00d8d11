package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/eddy-cluster/eddy/sched"
)

// smallTrace is a data-bound trace: 8 nodes, a slow origin, 12 datasets of skewed popularity.
func smallTrace() *Trace {
	rng := rand.New(rand.NewPCG(3, 4))
	tr := &Trace{Name: "small", OriginGbps: 10}
	for i := range 8 {
		tr.Nodes = append(tr.Nodes, TraceNode{Name: fmt.Sprintf("n%d", i), Cores: 64, MemGB: 512, GPUs: 8, CacheGB: 400, LinkGbps: 10, LocalReadGbps: 24})
	}
	for i := range 12 {
		tr.Files = append(tr.Files, TraceFile{Path: fmt.Sprintf("d/ds%02d", i), SizeGB: 100, Kind: "dataset"})
	}
	tr.Files = append(tr.Files, TraceFile{Path: "c/env.tar", SizeGB: 5, Kind: "env"})
	z := rand.NewZipf(rng, 1.3, 1, 11)
	for i := range 400 {
		tr.Tasks = append(tr.Tasks, TraceTask{ID: fmt.Sprintf("t%03d", i), SubmitS: float64(i) * 30, GPUs: 2, Cores: 16, MemGB: 128,
			Inputs: []string{fmt.Sprintf("d/ds%02d", z.Uint64()), "c/env.tar"}, ReadPasses: 2, ComputeS: 600})
	}
	return tr
}

func TestPoliciesOnASmallTrace(t *testing.T) {
	tr := smallTrace()
	res := map[sched.Policy]Result{}
	for _, p := range []sched.Policy{sched.PolicyEddy, sched.PolicyFloor, sched.PolicyBlind, sched.PolicyRandom} {
		r, err := Run(tr, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Tasks != len(tr.Tasks) {
			t.Fatalf("%s: %d of %d tasks finished", p, r.Tasks, len(tr.Tasks))
		}
		if r.MeanJCT < 600 || r.LocalFraction <= 0 || r.LocalFraction > 1 {
			t.Fatalf("%s: implausible %+v", p, r)
		}
		res[p] = r
		t.Logf("%s: local %.3f origin %.1f TB mean JCT %.0f s p95 %.0f s", p, r.LocalFraction, r.OriginBytes/1e12, r.MeanJCT, r.P95JCT)
	}
	if e, b := res[sched.PolicyEddy], res[sched.PolicyBlind]; e.LocalFraction <= b.LocalFraction || e.OriginBytes >= b.OriginBytes || e.MeanJCT >= b.MeanJCT {
		t.Fatalf("eddy does not beat blind: %+v vs %+v", e, b)
	}
}

// One task alone: its run time is the fetch at the link rate plus compute plus local reads.
func TestSingleTaskTiming(t *testing.T) {
	tr := &Trace{OriginGbps: 40,
		Nodes: []TraceNode{{Name: "a", Cores: 8, MemGB: 64, GPUs: 1, CacheGB: 100, LinkGbps: 8, LocalReadGbps: 16}},
		Files: []TraceFile{{Path: "ds", SizeGB: 10, Kind: "dataset"}},
		Tasks: []TraceTask{
			{ID: "t0", SubmitS: 0, GPUs: 1, Cores: 8, MemGB: 64, Inputs: []string{"ds"}, ReadPasses: 2, ComputeS: 100},
			{ID: "t1", SubmitS: 1, GPUs: 1, Cores: 8, MemGB: 64, Inputs: []string{"ds"}, ReadPasses: 1, ComputeS: 100},
		}}
	r, err := Run(tr, sched.PolicyEddy, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// t0: fetch 10 GB at 1 GB/s = 10 s (its first pass), compute 100 s, the second pass of
	// 10 GB locally at 2 GB/s = 5 s. t1 queues behind it (one GPU) until 115 s, then reads 10 GB
	// locally (5 s) and computes.
	want0, want1 := 115.0, 115+105-1.0
	if math.Abs(r.MeanJCT-math.Round((want0+want1)/2)) > 1 || math.Abs(r.Makespan-220) > 1 {
		t.Fatalf("mean JCT %.0f makespan %.0f, want %.0f and 220", r.MeanJCT, r.Makespan, (want0+want1)/2)
	}
	if want := 1 - 10.0/30; math.Abs(r.LocalFraction-want) > 1e-3 {
		t.Fatalf("local fraction %.4f, want %.4f", r.LocalFraction, want)
	}
}

func TestScaleDecisions(t *testing.T) {
	r := Scale(sched.PolicyEddy, 200, 2000, 50, 1)
	if r.Rounds != 50 || r.DecisionP99 <= 0 {
		t.Fatalf("%+v", r)
	}
}

// The scale test at the size `eddy bench sched --nodes 10000 --queued 100000` runs (for
// profiling: go test -run XXX -bench Scale -cpuprofile FILE).
func BenchmarkScale(b *testing.B) {
	for range b.N {
		r := Scale(sched.PolicyEddy, 10000, 100000, 200, 1)
		b.ReportMetric(r.DecisionP99, "pass-p99-ms")
		b.ReportMetric(r.DecisionP50, "pass-p50-ms")
	}
}
