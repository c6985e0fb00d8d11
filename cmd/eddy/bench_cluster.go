package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/bench"
	"github.com/eddy-cluster/eddy/units"
)

func init() { benchSubcommands = append(benchSubcommands, benchClusterCommand) }

func benchClusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "N nodes read one large file, or start a container from one tarball, at once from one NFS server: plain NFS, eddy, eddy with peer fetch (root)",
		Description: "Builds a Linux bridge in a namespace of its own with a server namespace (nfs-ganesha) and N node\n" +
			"namespaces plugged into it, every port shaped with tbf, and one eddy daemon per node (node 0 the\n" +
			"scheduler). For each backend and N, every node reads the whole file at once on empty caches and checks\n" +
			"its checksum (xxhash64); the wall time until the last node is done and the bytes the server sent are recorded.\n" +
			"The env workload then has every node start a container from one environment tarball at once (one task\n" +
			"pinned to each node, a private containerd per node, nothing imported): the wall time until the last\n" +
			"container started, the median submit-to-start and the bytes the server sent are recorded.\n" +
			"Writes DIR/results.json, results.md and SVG plots. Everything it starts is torn down on exit, Ctrl-C included.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "bench-results-cluster", Usage: "results `DIR`"},
			&cli.BoolFlag{Name: "quick", Usage: "small version: N = 1,4, a 1 GiB file, 2 runs"},
			&cli.StringFlag{Name: "nodes", Usage: "comma-separated cluster sizes (default 1,2,4,8; 1,4 with --quick)"},
			&cli.StringFlag{Name: "backends", Value: strings.Join(bench.ClusterBackends(), ","), Usage: "comma-separated backends"},
			&cli.StringFlag{Name: "workloads", Usage: "comma-separated workloads: file, env (default both; file only when containerd, runc or busybox is missing)"},
			&cli.StringFlag{Name: "size", Usage: "size of the file every node reads (default 4G, 1G with --quick)"},
			&cli.StringFlag{Name: "env-size", Usage: "random payload of the environment every node starts (default 512M, 256M with --quick)"},
			&cli.IntFlag{Name: "runs", Usage: "runs per backend and N, the figure is the median (default 3, 2 with --quick)"},
			&cli.StringFlag{Name: "link", Value: bench.Link1G, Usage: "the server's link: 1gbit, 10gbit, unshaped or a tbf rate"},
			&cli.StringFlag{Name: "node-link", Value: bench.Link1G, Usage: "every node's link: 1gbit, 10gbit, unshaped or a tbf rate"},
			&cli.StringFlag{Name: "work-dir", Value: "/var/tmp", Usage: "where the export, caches and mounts live (local disk)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "the daemons' --log-level"},
			&cli.BoolFlag{Name: "json", Usage: "print results.json on stdout when done"},
		},
		Action: runBenchCluster,
	}
}

func runBenchCluster(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench cluster: unexpected argument %q", c.Args().First())
	}
	cfg := bench.ClusterConfig{Out: c.String("out"), Quick: c.Bool("quick"), Backends: splitList(c.String("backends")),
		Workloads: splitList(c.String("workloads")),
		Runs:      c.Int("runs"), ServerLink: c.String("link"), NodeLink: c.String("node-link"), WorkDir: c.String("work-dir"),
		DaemonLogLevel: c.String("log-level"), EddyVersion: version}
	for _, s := range splitList(c.String("nodes")) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return fmt.Errorf("bench cluster: --nodes %q: want positive numbers", s)
		}
		cfg.Nodes = append(cfg.Nodes, n)
	}
	if s := c.String("size"); s != "" {
		n, err := units.ParseSize(s)
		if err != nil {
			return fmt.Errorf("bench cluster: --size: %w", err)
		}
		cfg.Size = n
	}
	if s := c.String("env-size"); s != "" {
		n, err := units.ParseSize(s)
		if err != nil {
			return fmt.Errorf("bench cluster: --env-size: %w", err)
		}
		cfg.EnvSize = n
	}
	ctx, stop := cancelOnSignal(c.Context, "bench cluster", "daemons, containerds, mounts, ganesha, namespaces")
	defer stop()
	rep, err := bench.RunCluster(ctx, cfg)
	if rep == nil {
		return err
	}
	if c.Bool("json") {
		if jerr := printJSON(os.Stdout, rep); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	// The env workload's rows have no read rate but a submit-to-start time, and the other way
	// round; its WALL is until the last container started.
	t := newTable(os.Stdout, "WORKLOAD", "BACKEND", "NODES", "WALL s", "PER NODE MB/s", "START s", "ORIGIN / FILE", "CPU BUSY", "BOUND")
	for _, r := range rep.Results {
		if r.Status != bench.StatusOK {
			t.row(r.Workload, r.Backend, strconv.Itoa(r.Nodes), "failed", "", "", "", "", "")
			continue
		}
		rate, start := fmt.Sprintf("%.1f", r.MBps), "-"
		if r.Workload == bench.WorkloadEnv {
			rate, start = "-", fmt.Sprintf("%.2f", r.SubmitToStartS)
		}
		t.row(r.Workload, r.Backend, strconv.Itoa(r.Nodes), fmt.Sprintf("%.2f", r.WallS), rate, start,
			fmt.Sprintf("%.3f", r.OriginRatio), fmt.Sprintf("%.0f%%", 100*r.CPUBusy), r.Bound)
	}
	if terr := t.flush(); terr != nil && err == nil {
		err = terr
	}
	files := slices.ContainsFunc(rep.Results, func(r bench.ClusterRow) bool { return r.Workload == bench.WorkloadFile })
	for _, tg := range rep.Targets {
		if !files { // the targets are the file workload's
			break
		}
		fmt.Printf("target %s: %s (%s)\n", tg.Status, tg.Target, tg.Measured)
	}
	return err
}
