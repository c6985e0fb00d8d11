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
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "only print what would be removed (the default)"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "remove it"},
			&cli.BoolFlag{Name: "status", Usage: "show the scheduler's periodic gc (eddy daemon --gc-every) and what its last run removed; removes nothing"},
			jsonFlag(), shareFlag(), socketFlag(),
			&cli.StringFlag{Name: "jobs-dir", Value: runtime.JobsDir, EnvVars: []string{"EDDY_JOBS_DIR"},
				Usage: "the share's directory of job dirs (as the daemons' --jobs-dir)"},
		}, policyFlags("")...),
		Action: runGC,
	}
}

// policyFlags are the flags of what gc keeps: `eddy gc`'s (prefix "") and the daemon's
// periodic gc's (prefix "gc-"), with the same defaults. The daemon's also read the variables
// `eddy gc` reads, after their own, so that one setting serves both.
func policyFlags(prefix string) []cli.Flag {
	env := func(name string, shared ...string) []string {
		if prefix == "" {
			return shared
		}
		return append(envName(prefix+name), shared...)
	}
	usage := func(u string) string {
		if prefix == "" {
			return u
		}
		return "scheduler, with --gc-every: " + u
	}
	def := housekeeping.DefaultPolicy()
	return []cli.Flag{
		&cli.StringFlag{Name: prefix + "job-retention", Value: formatRetention(def.JobRetention), EnvVars: env("job-retention", "EDDY_JOB_RETENTION"),
			Usage: usage("keep a job dir this long after its task ended (e.g. 7d, 36h; never: keep them all)")},
		&cli.StringFlag{Name: prefix + "log-retention", Value: formatRetention(def.LogRetention), EnvVars: env("log-retention", "EDDY_LOG_RETENTION"),
			Usage: usage("keep a task's log dir this long after it ended (never: keep them all)")},
		&cli.IntFlag{Name: prefix + "keep", Value: def.KeepEnvs, EnvVars: env("keep"),
			Usage: usage("newest versions to keep per environment (at least 1; -1: prune none)")},
		&cli.DurationFlag{Name: prefix + "env-grace", Value: def.EnvGrace, EnvVars: env("env-grace"),
			Usage: usage("keep environment versions written or superseded less than this ago")},
	}
}

// policyFromFlags reads the flags of policyFlags(prefix).
func policyFromFlags(c *cli.Context, prefix string) (housekeeping.Policy, error) {
	var p housekeeping.Policy
	var err error
	if p.JobRetention, err = parseRetention(prefix+"job-retention", c.String(prefix+"job-retention")); err != nil {
		return p, err
	}
	if p.LogRetention, err = parseRetention(prefix+"log-retention", c.String(prefix+"log-retention")); err != nil {
		return p, err
	}
	p.KeepEnvs, p.EnvGrace = c.Int(prefix+"keep"), c.Duration(prefix+"env-grace")
	return p, nil
}

// formatRetention is the form parseRetention reads: whole days in days.
func formatRetention(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d < 0:
		return "never"
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
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
	if c.Bool("status") {
		if c.Bool("yes") || c.Bool("dry-run") {
			return errors.New("gc: --status only shows the periodic gc; it excludes --yes and --dry-run")
		}
		return gcStatus(c)
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
	if opt.Policy, err = policyFromFlags(c, ""); err != nil {
		return err
	}
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

// gcStatus prints the scheduler's periodic gc and its last run.
func gcStatus(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	st, err := cl.GCStatus(c.Context)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return errors.New("gc --status: this daemon is no scheduler and joins none (periodic gc runs on the scheduler)")
	}
	if err != nil {
		return fmt.Errorf("gc --status: %w", err)
	}
	if wantJSON(c) {
		return printJSON(c.App.Writer, st)
	}
	printGCStatus(c.App.Writer, st, time.Now())
	return nil
}

func printGCStatus(w io.Writer, st api.GCStatus, now time.Time) {
	if st.EverySec <= 0 {
		fmt.Fprintf(w, "periodic gc is off on scheduler %s (turn it on with eddy daemon --gc-every DURATION)\n", st.Scheduler)
		return
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	role := "the group's leader, which runs it"
	if !st.Leading {
		role = "not the group's leader: the leader runs it"
	}
	fmt.Fprintf(w, "periodic gc every %s on scheduler %s (%s)\n", sec(st.EverySec), st.Scheduler, role)
	fmt.Fprintf(w, "keeps job dirs %s, log dirs %s after their task ended; %d newest versions per environment\n",
		formatRetention(sec(st.JobRetentionSec)), formatRetention(sec(st.LogRetentionSec)), st.KeepEnvs)
	switch {
	case st.Running:
		fmt.Fprintln(w, "a run is under way")
	case !st.Next.IsZero():
		fmt.Fprintf(w, "next run in %s\n", st.Next.Sub(now).Round(time.Second))
	}
	l := st.Last
	if l == nil {
		fmt.Fprintln(w, "no run yet on this scheduler since it started")
		return
	}
	fmt.Fprintf(w, "last run %s (took %s): removed %d items, freeing %s; kept %d\n", l.Started.Local().Format(time.DateTime),
		l.Finished.Sub(l.Started).Round(time.Millisecond), l.RemovedCount, units.FormatBytes(l.FreedBytes), l.KeptCount)
	for _, it := range l.Removed {
		fmt.Fprintf(w, "removed %s (%s): %s\n", it.Rel, units.FormatBytes(it.Bytes), it.Reason)
	}
	if more := l.RemovedCount - len(l.Removed); more > 0 {
		fmt.Fprintf(w, "... and %d more (see the scheduler's log)\n", more)
	}
	for _, e := range l.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	if l.Error != "" {
		fmt.Fprintf(w, "the run failed: %s\n", l.Error)
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
