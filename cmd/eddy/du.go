package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(duCommand) }

func duCommand() *cli.Command {
	return &cli.Command{
		Name:  "du",
		Usage: "bytes and files of the share per scope, per user or per directory (a parallel walk of the origin by the daemon)",
		Description: "Scopes are the share's top-level directories (shared_data, logs, containers, ...), with users/<name>\n" +
			"and jobs/<id> one scope each. The daemon walks its origin directly, not through the mount.\n" +
			"BYTES are apparent sizes (what quotas count), DISK the allocated space (as du reports it).",
		ArgsUsage: "[PATH]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "by", Value: "scope", Usage: "group by `scope`, user or dir (the direct children of PATH)"},
			&cli.IntFlag{Name: "workers", Usage: "parallel walkers (0: the daemon's --usage-workers)"},
			jsonFlag(), socketFlag(),
		},
		Action: duAction,
	}
}

func duAction(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("du takes at most one PATH (got %d)", c.NArg())
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	p := c.Args().First()
	if p == "" {
		p = "."
	}
	req := api.DuRequest{Path: p, Cwd: cwd(), By: c.String("by"), Workers: c.Int("workers")}
	tty := isTerminal(os.Stderr)
	var mu sync.Mutex
	var lastLine time.Time
	shown := false
	rep, err := cl.Du(c.Context, req, func(ev api.DuEvent) {
		if ev.Progress == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		line := fmt.Sprintf("du: %d files, %d dirs, %s walked (%s)", ev.Progress.Files, ev.Progress.Dirs,
			units.FormatBytes(ev.Progress.Bytes), humanDuration(time.Duration(ev.Elapsed*float64(time.Second))))
		switch {
		case tty:
			fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
			shown = true
		case time.Since(lastLine) >= 5*time.Second:
			fmt.Fprintln(os.Stderr, line)
			lastLine = time.Now()
		}
	})
	if shown {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if err != nil {
		return err
	}
	if wantJSON(c) {
		return printJSON(os.Stdout, rep)
	}
	return printDu(os.Stdout, rep)
}

func printDu(w io.Writer, rep api.DuReport) error {
	t := newTable(w, strings.ToUpper(rep.By), "BYTES", "DISK", "FILES", "DIRS")
	for _, g := range rep.Groups {
		t.row(g.Key, units.FormatBytes(g.Bytes), units.FormatBytes(g.Disk), g.Files, g.Dirs)
	}
	t.row("total", units.FormatBytes(rep.Total.Bytes), units.FormatBytes(rep.Total.Disk), rep.Total.Files, rep.Total.Dirs)
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "walked %s: %d files, %d dirs in %.2fs with %d workers", rep.Path, rep.Walk.Files, rep.Walk.Dirs, rep.Elapsed, rep.Workers)
	if rep.Walk.Errors > 0 {
		fmt.Fprintf(w, " (%d entries unreadable, not counted)", rep.Walk.Errors)
	}
	fmt.Fprintln(w)
	return nil
}

// shareRow adds the share-space line to `eddy cache stats`.
func shareRow(t *table, s *api.ShareSpace) {
	if s == nil {
		return
	}
	if s.TotalBytes == 0 && s.Error != "" {
		t.row("share space", "unknown ("+s.Error+")")
		return
	}
	line := fmt.Sprintf("%.1f%% used, %s free of %s", s.UsedPercent, units.FormatBytes(s.AvailBytes), units.FormatBytes(s.TotalBytes))
	if s.NearlyFull {
		line += fmt.Sprintf(" -- NEARLY FULL (at or above %g%%): free space on the share", s.Threshold)
	}
	t.row("share space", line)
}
