package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/bench"
	"github.com/eddy-cluster/eddy/units"
)

func init() { benchSubcommands = append(benchSubcommands, benchWarmCommand) }

func benchWarmCommand() *cli.Command {
	return &cli.Command{
		Name:  "warm",
		Usage: "files/s of eddy cache warm of a directory of many small files, beside cp -r of it from the origin (root)",
		Description: "Puts a dataset of small files on an nfs-ganesha export in one network namespace; in another,\n" +
			"joined by a veth link shaped with tbf, times alternately cp -r of the dataset from the origin (eddy's\n" +
			"nfs:// origin with --no-cache, the NFS baseline of eddy bench) to local disk and eddy cache warm of it\n" +
			"through a daemon with an empty cache, page caches dropped before each. Everything it starts is torn\n" +
			"down on exit.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "files", Value: 100000, Usage: "files in the dataset directory"},
			&cli.StringFlag{Name: "file-size", Value: "16K", Usage: "bytes per file"},
			&cli.IntFlag{Name: "per-dir", Value: 1000, Usage: "files per subdirectory"},
			&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs per method (the figures are medians)"},
			&cli.StringFlag{Name: "link", Value: bench.Link1G, Usage: "link between the origin and the node: 1gbit, 10gbit, unshaped or a tbf rate"},
			&cli.StringFlag{Name: "work-dir", Value: "/var/tmp", Usage: "where the export, cache, mount and copy live (local disk)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		},
		Action: runBenchWarm,
	}
}

func runBenchWarm(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench warm: unexpected argument %q", c.Args().First())
	}
	size, err := units.ParseSize(c.String("file-size"))
	if err != nil {
		return fmt.Errorf("bench warm: --file-size: %w", err)
	}
	cfg := bench.WarmConfig{Files: c.Int("files"), FileSize: size, PerDir: c.Int("per-dir"), Runs: c.Int("runs"),
		Link: c.String("link"), EddyVersion: version, WorkDir: c.String("work-dir")}
	ctx, stop := cancelOnSignal(c.Context, "bench warm", "daemons, ganesha, namespaces")
	defer stop()
	rep, err := bench.RunWarm(ctx, cfg)
	if rep == nil || len(rep.Results) == 0 {
		return err
	}
	if c.Bool("json") {
		if jerr := printJSON(os.Stdout, rep); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	fmt.Printf("%d files of %s, link %s, %d runs per method, medians:\n", rep.Files, units.FormatBytes(rep.FileSize), rep.Link, rep.Runs)
	t := newTable(os.Stdout, "METHOD", "FILES/S", "MB/S", "SECONDS", "RUNS (files/s)")
	for _, r := range rep.Results {
		runs := ""
		for i, x := range r.Runs {
			if i > 0 {
				runs += " "
			}
			runs += strconv.FormatFloat(x.FilesPerSec, 'f', 0, 64)
		}
		t.row(r.Method, fmt.Sprintf("%.0f", r.FilesPerSec), fmt.Sprintf("%.1f", r.MBps), fmt.Sprintf("%.1f", r.Seconds), runs)
	}
	if terr := t.flush(); terr != nil && err == nil {
		err = terr
	}
	fmt.Printf("cache-warm / cp-r: %.2fx\n", rep.Speedup)
	return err
}
