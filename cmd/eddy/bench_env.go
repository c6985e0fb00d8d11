package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/bench"
	"github.com/eddy-cluster/eddy/units"
)

func init() { benchSubcommands = append(benchSubcommands, benchEnvCommand) }

func benchEnvCommand() *cli.Command {
	return &cli.Command{
		Name:  "env",
		Usage: "time from submit to container start with the environment tarball cold, warm in eddy's cache, and already imported (root)",
		Description: "Exports a share with nfs-ganesha from one network namespace and runs an eddy daemon in cluster mode\n" +
			"(scheduler and worker, private containerd) with an nfs:// origin in another, joined by a veth link\n" +
			"shaped with tbf. An environment of busybox plus a random payload layer is put on the share; container\n" +
			"tasks are submitted and timed with the tarball cold (read over the link), warm in eddy's cache (page\n" +
			"cache dropped, not imported) and already imported. Everything it starts is torn down on exit.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "size", Value: "512M", Usage: "random payload in the environment image (the tarball is this plus ~1 MiB)"},
			&cli.IntFlag{Name: "runs", Value: 3, Usage: "runs per state (the figures are medians)"},
			&cli.StringFlag{Name: "link", Value: bench.Link1G, Usage: "link between the origin and the node: 1gbit, 10gbit, unshaped or a tbf rate"},
			&cli.StringFlag{Name: "states", Value: "cold,imported,warm", Usage: "comma-separated states, measured in this order in each run"},
			&cli.StringFlag{Name: "work-dir", Value: "/var/tmp", Usage: "where the export, cache, mount and containerd live (local disk)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		},
		Action: runBenchEnv,
	}
}

func runBenchEnv(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench env: unexpected argument %q", c.Args().First())
	}
	size, err := units.ParseSize(c.String("size"))
	if err != nil {
		return fmt.Errorf("bench env: --size: %w", err)
	}
	cfg := bench.EnvConfig{Size: size, Runs: c.Int("runs"), Link: c.String("link"), States: splitList(c.String("states")),
		EddyVersion: version, WorkDir: c.String("work-dir")}
	ctx, stop := cancelOnSignal(c.Context, "bench env", "daemon, containerd, ganesha, namespaces")
	defer stop()
	rep, err := bench.RunEnv(ctx, cfg)
	if rep != nil && len(rep.Results) > 0 {
		if c.Bool("json") {
			if jerr := printJSON(os.Stdout, rep); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			fmt.Printf("environment tarball %s (payload %s), link %s, %d runs per state, medians:\n",
				units.FormatBytes(rep.TarballBytes), units.FormatBytes(rep.PayloadBytes), rep.Link, rep.Runs)
			t := newTable(os.Stdout, "STATE", "SUBMIT TO START s", "NODE START s", "IMAGE READY s", "RUNS (submit to start s)")
			for _, r := range rep.Results {
				runs := ""
				for i, x := range r.Runs {
					if i > 0 {
						runs += " "
					}
					runs += fmt.Sprintf("%.2f", x.SubmitToStartS)
				}
				t.row(r.State, fmt.Sprintf("%.2f", r.SubmitToStartS), fmt.Sprintf("%.2f", r.NodeStartS), fmt.Sprintf("%.2f", r.ImageS), runs)
			}
			if terr := t.flush(); terr != nil && err == nil {
				err = terr
			}
		}
	}
	return err
}
