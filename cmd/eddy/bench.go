package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/bench"
	"github.com/eddy-cluster/eddy/units"
)

// benchSubcommands holds the builders of `eddy bench` subcommands added by
// other files of this package from their init() (e.g. `eddy bench sched`).
// benchCommand runs after every init, so it sees them all.
var benchSubcommands []func() *cli.Command

func init() { register(benchCommand) }

func benchCommand() *cli.Command {
	cmd := &cli.Command{
		Name:  "bench",
		Usage: "benchmark eddy beside NFS, SSHFS and local disk on this machine (root)",
		Description: "Builds two network namespaces joined by a shaped veth link, starts nfs-ganesha and sshd on the\n" +
			"server side, mounts sshfs and eddy daemons on the client side, and measures sequential, small-file,\n" +
			"random, metadata and parallel-reader workloads, cold and warm. Writes DIR/results.json, results.md\n" +
			"and SVG plots. Everything it starts is torn down on exit, Ctrl-C included.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "bench-results", Usage: "results `DIR`"},
			&cli.BoolFlag{Name: "quick", Usage: "small version: 1 GiB file, 1,000 small files, 64 MiB shared file; a few minutes"},
			&cli.StringFlag{Name: "links", Value: bench.Link1G, Usage: "comma-separated links to measure over: 1gbit, 10gbit, unshaped (or any tbf rate, e.g. 500mbit)"},
			&cli.StringFlag{Name: "latency", Value: "0ms", Usage: "comma-separated one-way delays, e.g. 0ms,2ms,10ms: each non-zero one measures the network backends again through a TCP latency proxy (round trip +2x); 0ms = direct"},
			&cli.StringFlag{Name: "backends", Value: strings.Join(bench.AllBackends(), ","), Usage: "comma-separated backends; also eddy-local (eddy over the local copy, no network: its own cost per operation) and " + bench.S3Backends + " (a versitygw bucket in the server namespace)"},
			&cli.StringFlag{Name: "versitygw", Usage: "versitygw `BINARY` of the S3 backends (default: on PATH, else .tools/versitygw/bin/versitygw as scripts/versitygw.sh builds it)"},
			&cli.StringFlag{Name: "workloads", Usage: "comma-separated workloads (default all): seq-read, small-files-epoch, random-4k, metadata, parallel (or parallel-N)"},
			&cli.StringFlag{Name: "states", Value: "cold,warm", Usage: "comma-separated states: cold, warm, warm-dropped (eddy's disk cache warm, page cache dropped)"},
			&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs per backend, workload and state (the figure is the median)"},
			&cli.StringFlag{Name: "size", Usage: "size of the large file (default 4G, 1G with --quick)"},
			&cli.StringFlag{Name: "parallel", Value: "1,4,8", Usage: "comma-separated numbers of parallel readers of one file"},
			&cli.StringFlag{Name: "small-files", Usage: "number of small files (default 10000, 1000 with --quick)"},
			&cli.StringFlag{Name: "work-dir", Value: "/var/tmp", Usage: "where the dataset, caches and mounts live (local disk)"},
			&cli.BoolFlag{Name: "json", Usage: "print results.json on stdout when done"},
		},
		Action: runBench,
	}
	for _, b := range benchSubcommands {
		cmd.Subcommands = append(cmd.Subcommands, b())
	}
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func runBench(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", c.Args().First())
	}
	cfg := bench.Config{
		Out:         c.String("out"),
		Quick:       c.Bool("quick"),
		Links:       splitList(c.String("links")),
		Backends:    splitList(c.String("backends")),
		Workloads:   splitList(c.String("workloads")),
		States:      splitList(c.String("states")),
		Runs:        c.Int("runs"),
		EddyVersion: version,
		WorkDir:     c.String("work-dir"),
		VersityGW:   c.String("versitygw"),
	}
	lat, err := bench.ParseLatencies(c.String("latency"))
	if err != nil {
		return fmt.Errorf("bench: --latency: %w", err)
	}
	cfg.Latencies = lat
	if s := c.String("size"); s != "" {
		n, err := units.ParseSize(s)
		if err != nil {
			return fmt.Errorf("bench: --size: %w", err)
		}
		cfg.Size = n
	}
	if s := c.String("small-files"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return fmt.Errorf("bench: --small-files %q: want a positive number", s)
		}
		cfg.SmallCount = n
	}
	for _, p := range splitList(c.String("parallel")) {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return fmt.Errorf("bench: --parallel %q: want positive numbers", p)
		}
		cfg.Parallel = append(cfg.Parallel, n)
	}

	ctx, stop := cancelOnSignal(c.Context, "bench", "mounts, daemons, servers, namespaces")
	defer stop()

	rep, err := bench.Run(ctx, cfg)
	if c.Bool("json") && rep != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}
