package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/runtime/envs"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(envCommand) }

// defaultShareDir is where the share is mounted when neither --share nor EDDY_SHARED_DIR says.
const defaultShareDir = "/mnt/cluster-share"

// envInUse, when set (by the file that wires the daemon API), reports the tarballs running or
// queued tasks use, so prune leaves them. Without it prune still respects leases written by
// nodes that are importing a tarball, and the grace period.
var envInUse func(c *cli.Context) (func(path string) bool, error)

func shareFlag() cli.Flag {
	return &cli.StringFlag{Name: "share", Value: defaultShareDir, EnvVars: []string{"EDDY_SHARED_DIR"},
		Usage: "the shared directory (its mount on this node, or the origin itself)"}
}

func envCommand() *cli.Command {
	return &cli.Command{
		Name:  "env",
		Usage: "container environment tarballs on the share (containers/<env>/<env>_<unix-ts>.tar[.gz], and kohakuriver-containers/)",
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Usage:     "environments with their versions, sizes and timestamps (newest first)",
				ArgsUsage: "[NAME]",
				Flags:     []cli.Flag{jsonFlag(), shareFlag()},
				Action:    envLs,
			},
			{
				Name:      "import",
				Usage:     "copy an image tarball (docker-archive or OCI layout, optionally gzipped) into the share as the newest version of NAME, atomically",
				ArgsUsage: "NAME FILE",
				Flags:     []cli.Flag{jsonFlag(), shareFlag()},
				Action:    envImport,
			},
			{
				Name: "prune",
				Usage: "remove older versions; never one in use by a task, being loaded by a node, " +
					"or written (or superseded) within the grace period",
				ArgsUsage: "[NAME]",
				Flags: []cli.Flag{jsonFlag(), shareFlag(),
					&cli.IntFlag{Name: "keep", Value: 1, Usage: "newest versions to keep per environment (at least 1)"},
					&cli.DurationFlag{Name: "grace", Value: 30 * time.Minute, Usage: "keep versions written or superseded less than this ago"},
					&cli.BoolFlag{Name: "dry-run", Usage: "only print what would be removed"},
					&cli.BoolFlag{Name: "ignore-tasks", Usage: "do not ask the daemon which versions queued and running tasks use " +
						"(without a daemon; leases and the grace period still protect versions being loaded)"},
					socketFlag(),
				},
				Action: envPrune,
			},
		},
	}
}

func shareDir(c *cli.Context) (string, error) {
	dir := c.String("share")
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("share %s: %w (set --share or EDDY_SHARED_DIR)", dir, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("share %s: not a directory", dir)
	}
	return dir, nil
}

func envLs(c *cli.Context) error {
	share, err := shareDir(c)
	if err != nil {
		return err
	}
	list, err := envs.List(share)
	if err != nil {
		return err
	}
	if name := c.Args().First(); name != "" {
		var only []envs.Env
		for _, e := range list {
			if e.Name == name {
				only = append(only, e)
			}
		}
		if len(only) == 0 {
			return fmt.Errorf("environment %q not found under %s", name, share)
		}
		list = only
	}
	if wantJSON(c) {
		if list == nil {
			list = []envs.Env{}
		}
		return printJSON(c.App.Writer, list)
	}
	t := newTable(c.App.Writer, "ENV", "VERSION", "CREATED", "SIZE", "SOURCE", "FILE")
	for _, e := range list {
		for i, v := range e.Versions {
			name := e.Name
			if i > 0 {
				name = ""
			}
			t.row(name, strconv.FormatInt(v.Timestamp, 10), humanAgo(v.ModTime), units.FormatBytes(v.Size), v.Source, v.Rel)
		}
	}
	return t.flush()
}

func envImport(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("usage: eddy env import NAME FILE")
	}
	share, err := shareDir(c)
	if err != nil {
		return err
	}
	name, file := c.Args().Get(0), c.Args().Get(1)
	start := time.Now()
	v, err := envs.Import(c.Context, share, name, file, start)
	if err != nil {
		return err
	}
	if wantJSON(c) {
		return printJSON(c.App.Writer, v)
	}
	took := time.Since(start)
	fmt.Fprintf(c.App.Writer, "imported %s as %s (%s in %s)\n", filepath.Base(file), v.Rel, units.FormatBytes(v.Size), humanDuration(took))
	return nil
}

func envPrune(c *cli.Context) error {
	share, err := shareDir(c)
	if err != nil {
		return err
	}
	opt := envs.PruneOptions{Keep: c.Int("keep"), Grace: c.Duration("grace"), Only: c.Args().First(), DryRun: c.Bool("dry-run")}
	if envInUse != nil && !c.Bool("ignore-tasks") {
		if opt.InUse, err = envInUse(c); err != nil {
			return fmt.Errorf("prune: ask the daemon which versions queued and running tasks use: %w "+
				"(run it where a daemon runs, or pass --ignore-tasks)", err)
		}
	}
	rep, err := envs.Prune(c.Context, share, opt)
	if err != nil {
		return err
	}
	if wantJSON(c) {
		if rep.Removed == nil {
			rep.Removed = []envs.Version{}
		}
		if rep.Kept == nil {
			rep.Kept = []envs.Kept{}
		}
		return printJSON(c.App.Writer, rep)
	}
	verb := "removed"
	if opt.DryRun {
		verb = "would remove"
	}
	for _, v := range rep.Removed {
		fmt.Fprintf(c.App.Writer, "%s %s (%s)\n", verb, v.Rel, units.FormatBytes(v.Size))
	}
	for _, k := range rep.Kept {
		fmt.Fprintf(c.App.Writer, "kept %s: %s\n", k.Rel, k.Reason)
	}
	fmt.Fprintf(c.App.Writer, "%s %d versions, %s\n", verb, len(rep.Removed), units.FormatBytes(rep.Freed))
	return nil
}
