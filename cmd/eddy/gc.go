package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/housekeeping"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(gcCommand) }

func gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "remove expired job dirs, log dirs and old environment versions from the share (a dry run unless --yes)",
		Description: "Job directories (jobs/<task-id>) go once --job-retention has passed since their task ended, unless the\n" +
			"task asked to keep it (submit --keep-job-dir); log directories (logs/<task-id>) after --log-retention;\n" +
			"environment versions beyond the newest --keep, as `eddy env prune` decides. Nothing a queued or running\n" +
			"task uses is removed: the daemon (the scheduler, or a node that forwards to it) is asked for the tasks.\n" +
			"Without --yes nothing is removed: gc prints what it would remove and how much that frees.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "only print what would be removed (the default)"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "remove it"},
			jsonFlag(), shareFlag(), socketFlag(),
			&cli.StringFlag{Name: "job-retention", Value: "7d", EnvVars: []string{"EDDY_JOB_RETENTION"},
				Usage: "keep a job dir this long after its task ended (e.g. 7d, 36h; never: keep them all)"},
			&cli.StringFlag{Name: "log-retention", Value: "30d", EnvVars: []string{"EDDY_LOG_RETENTION"},
				Usage: "keep a task's log dir this long after it ended (never: keep them all)"},
			&cli.IntFlag{Name: "keep", Value: housekeeping.DefaultKeepEnvs, Usage: "newest versions to keep per environment (at least 1; -1: prune none)"},
			&cli.DurationFlag{Name: "env-grace", Value: housekeeping.DefaultEnvGrace, Usage: "keep environment versions written or superseded less than this ago"},
			&cli.StringFlag{Name: "jobs-dir", Value: runtime.JobsDir, EnvVars: []string{"EDDY_JOBS_DIR"},
				Usage: "the share's directory of job dirs (as the daemons' --jobs-dir)"},
		},
		Action: runGC,
	}
}

// parseRetention reads a duration that may be given in days ("7d", "1.5d") or as Go
// durations ("36h"); "never" means no limit (negative).
func parseRetention(flag, s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "never" || s == "off" {
		return -1, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.ParseFloat(d, 64); err == nil && n >= 0 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return d, nil
	}
	return 0, fmt.Errorf("--%s %q: want a duration such as 7d or 36h, or never", flag, s)
}

func runGC(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("gc takes no arguments (got %q)", c.Args().Slice())
	}
	if c.Bool("yes") && c.Bool("dry-run") {
		return errors.New("gc: --yes and --dry-run exclude each other")
	}
	share, err := shareDir(c)
	if err != nil {
		return err
	}
	if err := checkScopeName(c.String("jobs-dir")); err != nil {
		return fmt.Errorf("gc: --jobs-dir %q: %w", c.String("jobs-dir"), err)
	}
	opt := housekeeping.DefaultOptions(share)
	opt.DryRun = !c.Bool("yes")
	opt.Layout = runtime.Layout{Jobs: c.String("jobs-dir")}
	if opt.JobRetention, err = parseRetention("job-retention", c.String("job-retention")); err != nil {
		return err
	}
	if opt.LogRetention, err = parseRetention("log-retention", c.String("log-retention")); err != nil {
		return err
	}
	opt.KeepEnvs, opt.EnvGrace = c.Int("keep"), c.Duration("env-grace")
	if opt.Tasks, err = gcTasks(c); err != nil {
		return fmt.Errorf("gc: ask the daemon which tasks are queued and running: %w "+
			"(gc never removes what a task uses; run it where a daemon runs, or give --addr)", err)
	}
	prog := newGCProgress(os.Stderr, !wantJSON(c))
	opt.Progress = prog.update
	rep, err := housekeeping.Run(c.Context, opt)
	prog.done()
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if wantJSON(c) {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else {
		printGC(c.App.Writer, rep)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("gc: %d items could not be removed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}

// gcTasks lists every task the scheduler knows. A daemon not in cluster mode has none.
func gcTasks(c *cli.Context) ([]api.Task, error) {
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	ts, err := cl.Tasks(c.Context, 0)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, nil
	}
	return ts, err
}

func printGC(w io.Writer, rep housekeeping.Report) {
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, it := range rep.Removed {
		fmt.Fprintf(w, "%s %s (%s): %s\n", verb, it.Rel, units.FormatBytes(it.Bytes), it.Reason)
	}
	for _, it := range rep.Kept {
		if !strings.HasPrefix(it.Reason, "within retention") {
			fmt.Fprintf(w, "kept %s: %s\n", it.Rel, it.Reason)
		}
	}
	for _, s := range rep.Summary() {
		fmt.Fprintf(w, "kept %s\n", s)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	fmt.Fprintf(w, "%s %d items, freeing %s\n", verb, len(rep.Removed), units.FormatBytes(rep.Freed))
	if rep.DryRun {
		fmt.Fprintln(w, "dry run: nothing was removed; run `eddy gc --yes` to remove them")
	}
}

// gcProgress reports a long walk on stderr: in place on a terminal, a line every few seconds
// otherwise; nothing when quiet.
type gcProgress struct {
	w      io.Writer
	on     bool
	tty    bool
	last   time.Time
	start  time.Time
	shown  bool
	period time.Duration
}

func newGCProgress(f *os.File, on bool) *gcProgress {
	tty := isTerminal(f)
	p := &gcProgress{w: f, on: on, tty: tty, start: time.Now(), period: 5 * time.Second}
	if tty {
		p.period = 200 * time.Millisecond
	}
	return p
}

func (p *gcProgress) update(pr housekeeping.Progress) {
	if !p.on || time.Since(p.start) < time.Second || time.Since(p.last) < p.period {
		return
	}
	p.last = time.Now()
	line := fmt.Sprintf("gc: scanning %s: %d/%d entries, %s", pr.Phase, pr.Done, pr.Total, units.FormatBytes(pr.Bytes))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.shown = true
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *gcProgress) done() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
