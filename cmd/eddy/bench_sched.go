package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/sched"
	"github.com/eddy-cluster/eddy/sched/sim"
)

func init() { benchSubcommands = append(benchSubcommands, benchSchedCommand) }

func benchSchedCommand() *cli.Command {
	return &cli.Command{
		Name:  "sched",
		Usage: "simulate placement policies on a trace (no FUSE, no daemon): locality, origin bytes, job completion time",
		Description: "Runs the trace (bench/traces format) through a discrete-event simulation that uses the live\n" +
			"scheduler's placement code, a finite LRU cache with pins per node, per-node links and a shared\n" +
			"origin. With --nodes and --queued it instead times placement decisions at that scale.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "trace", Usage: "trace `FILE` (JSON)"},
			&cli.StringFlag{Name: "policies", Value: "eddy,floor,blind,random", Usage: "comma-separated policies: eddy, floor (delay scheduling + rendezvous hashing), blind (most free cores), random"},
			&cli.DurationFlag{Name: "locality-wait", Value: sim.DefaultLocalityWait, Usage: "delay-scheduling bound in simulated time (eddy, floor)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for the random policy and the synthetic scale test"},
			&cli.IntFlag{Name: "nodes", Usage: "synthetic scale test: number of nodes (with --queued; no --trace)"},
			&cli.IntFlag{Name: "queued", Usage: "synthetic scale test: number of queued tasks"},
			&cli.IntFlag{Name: "rounds", Value: 2000, Usage: "synthetic scale test: scheduling passes to time"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: runBenchSched,
	}
}

type benchSchedOut struct {
	Trace        string            `json:"trace,omitempty"`
	Name         string            `json:"name,omitempty"`
	Params       map[string]any    `json:"params,omitempty"`
	Nodes        int               `json:"nodes"`
	Tasks        int               `json:"tasks,omitempty"`
	LocalityWait float64           `json:"locality_wait_s,omitempty"`
	Results      []sim.Result      `json:"results,omitempty"`
	Scale        []sim.ScaleResult `json:"scale,omitempty"`
}

func runBenchSched(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench sched: unexpected argument %q", c.Args().First())
	}
	var pols []sched.Policy
	for _, p := range splitList(c.String("policies")) {
		pol, err := sched.ParsePolicy(p)
		if err != nil {
			return fmt.Errorf("bench sched: %w", err)
		}
		pols = append(pols, pol)
	}
	if len(pols) == 0 {
		return fmt.Errorf("bench sched: --policies is empty")
	}
	asJSON := c.Bool("json")
	if n, q := c.Int("nodes"), c.Int("queued"); n > 0 || q > 0 {
		if n <= 0 || q <= 0 {
			return fmt.Errorf("bench sched: the scale test needs both --nodes and --queued")
		}
		out := benchSchedOut{Nodes: n}
		for _, p := range pols {
			out.Scale = append(out.Scale, sim.Scale(p, n, q, c.Int("rounds"), c.Uint64("seed")))
		}
		if asJSON {
			return printJSON(os.Stdout, out)
		}
		t := newTable(os.Stdout, "POLICY", "NODES", "QUEUED", "PASS P50 ms", "PASS P99 ms", "PLACE P99 ms")
		for _, r := range out.Scale {
			t.row(r.Policy, r.Nodes, r.Queued, r.DecisionP50, r.DecisionP99, r.PlaceP99)
		}
		return t.flush()
	}
	if c.String("trace") == "" {
		return fmt.Errorf("bench sched: --trace FILE is required (or --nodes N --queued M for the scale test)")
	}
	tr, err := sim.Load(c.String("trace"))
	if err != nil {
		return fmt.Errorf("bench sched: %w", err)
	}
	out := benchSchedOut{Trace: c.String("trace"), Name: tr.Name, Params: tr.Params, Nodes: len(tr.Nodes), Tasks: len(tr.Tasks),
		LocalityWait: c.Duration("locality-wait").Seconds()}
	for _, p := range pols {
		r, err := sim.Run(tr, p, sim.Options{LocalityWait: c.Duration("locality-wait"), Seed: c.Uint64("seed")})
		if err != nil {
			return fmt.Errorf("bench sched: %s: %w", p, err)
		}
		out.Results = append(out.Results, r)
		if !asJSON {
			fmt.Fprintf(os.Stderr, "bench sched: %s done in %s\n", p, time.Duration(r.SimWallSeconds*float64(time.Second)).Round(time.Millisecond))
		}
	}
	if asJSON {
		return printJSON(os.Stdout, out)
	}
	fmt.Printf("trace %s (%s): %d nodes, %d tasks, locality wait %s\n", out.Trace, out.Name, out.Nodes, out.Tasks, c.Duration("locality-wait"))
	t := newTable(os.Stdout, "POLICY", "LOCAL", "ORIGIN TB", "MEAN JCT s", "P95 JCT s", "MAKESPAN s", "MEAN QUEUE s", "DECISION P99 ms")
	for _, r := range out.Results {
		t.row(r.Policy, fmt.Sprintf("%.1f%%", r.LocalFraction*100), fmt.Sprintf("%.1f", r.OriginBytes/1e12), r.MeanJCT, r.P95JCT, r.Makespan, r.MeanQueue, r.DecisionP99)
	}
	return t.flush()
}
