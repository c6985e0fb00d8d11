package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

func init() {
	register(submitCommand)
	register(tasksCommand)
	register(nodesCommand)
	envInUse = tasksEnvInUse
}

// tasksEnvInUse asks the daemon (the scheduler, or a node that forwards to it) which
// environment versions queued, assigned or running tasks use, for `eddy env prune`. A daemon
// that is not in cluster mode has no tasks.
func tasksEnvInUse(c *cli.Context) (func(path string) bool, error) {
	cl, err := newClient(c)
	if err != nil {
		return nil, err
	}
	ts, err := cl.Tasks(c.Context, 0)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return func(string) bool { return false }, nil
		}
		return nil, err
	}
	share := c.String("share")
	used := map[string]bool{}
	for _, t := range ts {
		if t.EnvFile != "" && !t.State.Terminal() {
			used[filepath.Join(share, filepath.FromSlash(t.EnvFile))] = true
		}
	}
	return func(path string) bool { return used[filepath.Clean(path)] }, nil
}

func submitCommand() *cli.Command {
	return &cli.Command{
		Name:      "submit",
		Usage:     "queue a task on the cluster; it is placed where its inputs are cached",
		ArgsUsage: "[flags] -- CMD [ARGS...]",
		Flags: []cli.Flag{
			&cli.Float64Flag{Name: "cores", Value: 1, Usage: "CPU cores"},
			&cli.StringFlag{Name: "mem", Value: "1G", Usage: "memory limit (e.g. 512M, 8G)"},
			&cli.IntFlag{Name: "gpus", Usage: "GPUs"},
			&cli.StringSliceFlag{Name: "input", Usage: "input file or directory in the share (repeatable); placement prefers nodes that cache them"},
			&cli.StringSliceFlag{Name: "env", Usage: "environment variable `K=V` (repeatable)"},
			&cli.StringFlag{Name: "container", Usage: "run in the container environment `NAME` (a tarball on the share: eddy env ls)"},
			&cli.StringFlag{Name: "image", Usage: "run in a container from this registry image"},
			&cli.BoolFlag{Name: "keep-job-dir", Usage: "never let eddy gc remove the task's job dir (jobs/<task-id>) on the share"},
			&cli.StringFlag{Name: "node", Usage: "run only on this node"},
			&cli.StringSliceFlag{Name: "label", Usage: "run only on nodes with label k=v (repeatable)"},
			&cli.IntFlag{Name: "retries", Usage: "requeue this many times if its node is lost"},
			&cli.IntFlag{Name: "priority", Usage: "higher runs first"},
			&cli.StringFlag{Name: "name", Usage: "a name for the task"},
			&cli.StringFlag{Name: "workdir", Usage: "working directory in the share (default the share's root)"},
			&cli.DurationFlag{Name: "locality-wait", Usage: "how long the task may wait for a node with its inputs warm (default: the scheduler's)"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the task ends; exit with its exit code"},
			&cli.StringFlag{Name: "uid", Usage: "run the task as this user (`UID` or name; default: yourself). Through the local socket a task always runs as its submitter: only root may name another user"},
			&cli.StringFlag{Name: "gid", Usage: "with --uid: the task's group (`GID` or name; default: that user's primary group)"},
			jsonFlag(), socketFlag(),
		},
		Action: runSubmit,
	}
}

func runSubmit(c *cli.Context) error {
	args := c.Args().Slice()
	mem, err := units.ParseSize(c.String("mem"))
	if err != nil {
		return fmt.Errorf("submit: --mem %q: want a size such as 512M or 8G", c.String("mem"))
	}
	if c.Float64("cores") <= 0 {
		return errors.New("submit: --cores must be positive")
	}
	if c.Int("gpus") < 0 || c.Int("retries") < 0 {
		return errors.New("submit: --gpus and --retries must not be negative")
	}
	uid, gid, err := taskUser(c.String("uid"), c.String("gid"))
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	spec := api.TaskSpec{Name: c.String("name"), Command: args, Cores: c.Float64("cores"), MemBytes: mem, GPUs: c.Int("gpus"),
		Inputs: c.StringSlice("input"), Node: c.String("node"), Retries: c.Int("retries"), Priority: c.Int("priority"),
		Uid: uid, Gid: gid, WorkDir: c.String("workdir"), Image: c.String("image"),
		ContainerEnv: c.String("container"), KeepJobDir: c.Bool("keep-job-dir")}
	if wd, err := os.Getwd(); err == nil {
		spec.Cwd = wd
	}
	for _, e := range c.StringSlice("env") {
		switch {
		case strings.HasPrefix(e, "="):
			return fmt.Errorf("submit: --env %q: empty variable name", e)
		case strings.Contains(e, "="):
			spec.Env = append(spec.Env, e)
		case spec.ContainerEnv == "":
			// The old meaning of a bare NAME, kept for one release.
			fmt.Fprintf(c.App.ErrWriter, "eddy: warning: --env %s without '=' is deprecated: use --container %s "+
				"(--env is for variables, K=V)\n", e, e)
			spec.ContainerEnv = e
		case spec.ContainerEnv == e:
		default:
			return fmt.Errorf("submit: --env %q: not K=V, and the container environment is %q already (--container NAME names it)", e, spec.ContainerEnv)
		}
	}
	if len(args) == 0 && spec.Image == "" && spec.ContainerEnv == "" {
		return errors.New("submit: no command: put it after --, e.g. eddy submit --cores 2 -- python train.py")
	}
	for _, l := range c.StringSlice("label") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("submit: --label %q: want k=v", l)
		}
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		spec.Labels[k] = v
	}
	if d := c.Duration("locality-wait"); d > 0 {
		spec.LocalityWaitMs = d.Milliseconds()
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	t, err := cl.SubmitTask(c.Context, spec)
	if err != nil {
		if strings.HasPrefix(err.Error(), "submit: ") {
			return err // the scheduler's message says it already
		}
		return fmt.Errorf("submit: %w", err)
	}
	if !c.Bool("wait") {
		if wantJSON(c) {
			return printJSON(os.Stdout, t)
		}
		fmt.Println(t.ID)
		return nil
	}
	if !wantJSON(c) {
		fmt.Fprintln(os.Stderr, t.ID)
	}
	end, err := waitTask(c.Context, cl, t.ID)
	if err != nil {
		return err
	}
	if wantJSON(c) {
		if err := printJSON(os.Stdout, end); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(os.Stderr, "%s %s on %s\n", end.ID, end.State, end.NodeName)
	}
	return waitExit(end)
}

// waitExit is how `eddy submit --wait` ends for a task that ended: nil when it completed, else
// an error saying how it ended, with its exit status as the command's.
func waitExit(end *api.Task) error {
	switch {
	case end.ExitCode != nil && *end.ExitCode != 0:
		return cli.Exit(fmt.Sprintf("task %s exited with status %d", end.ID, *end.ExitCode), *end.ExitCode)
	case end.State != api.StateCompleted:
		msg := fmt.Sprintf("task %s %s", end.ID, end.State)
		switch {
		case end.Signal != "":
			msg += " by " + end.Signal
		case end.OOMKilled:
			msg += " (out of memory)"
		}
		if end.Error != "" {
			msg += ": " + end.Error
		}
		return cli.Exit(msg, 1)
	}
	return nil
}

// taskUser is who the task runs as: --uid/--gid, else the submitter (effective ids, which the
// daemon also sees on its socket). The daemon decides whether the caller may name them.
func taskUser(uidArg, gidArg string) (uid, gid uint32, err error) {
	if uidArg == "" {
		if gidArg != "" {
			return 0, 0, errors.New("--gid goes with --uid (a task runs with its user's primary group by default)")
		}
		return uint32(os.Geteuid()), uint32(os.Getegid()), nil
	}
	u, err := user.LookupId(uidArg)
	if err != nil {
		if _, nerr := strconv.ParseUint(uidArg, 10, 32); nerr == nil {
			u = nil // a uid with no passwd entry
		} else if u, err = user.Lookup(uidArg); err != nil {
			return 0, 0, fmt.Errorf("--uid %q: %w", uidArg, err)
		}
	}
	if u != nil {
		uidArg = u.Uid
	}
	n, err := strconv.ParseUint(uidArg, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("--uid %q: not a number or a user name", uidArg)
	}
	switch {
	case gidArg != "":
		if _, nerr := strconv.ParseUint(gidArg, 10, 32); nerr != nil {
			g, err := user.LookupGroup(gidArg)
			if err != nil {
				return 0, 0, fmt.Errorf("--gid %q: %w", gidArg, err)
			}
			gidArg = g.Gid
		}
	case u != nil:
		gidArg = u.Gid
	default:
		return 0, 0, fmt.Errorf("--uid %s has no passwd entry: give --gid too", uidArg)
	}
	g, err := strconv.ParseUint(gidArg, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("--gid %q: not a number or a group name", gidArg)
	}
	return uint32(n), uint32(g), nil
}

func waitTask(ctx context.Context, cl *api.Client, id string) (*api.Task, error) {
	for {
		t, err := cl.Task(ctx, id)
		if err != nil {
			return nil, err
		}
		if t.State.Terminal() {
			return &t, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func tasksCommand() *cli.Command {
	idArg := func(c *cli.Context) (string, error) {
		if c.NArg() != 1 {
			return "", fmt.Errorf("%s: want exactly one task ID", c.Command.FullName())
		}
		return c.Args().First(), nil
	}
	return &cli.Command{
		Name:  "tasks",
		Usage: "list, show, kill tasks and read their logs",
		Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list tasks, newest first", Flags: []cli.Flag{jsonFlag(), socketFlag(), &cli.IntFlag{Name: "limit", Value: 50, Usage: "at most this many (0: all)"}},
				Action: func(c *cli.Context) error {
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					ts, err := cl.Tasks(c.Context, c.Int("limit"))
					if err != nil {
						return fmt.Errorf("tasks ls: %w", err)
					}
					if wantJSON(c) {
						return printJSON(os.Stdout, ts)
					}
					t := newTable(os.Stdout, "ID", "NAME", "STATE", "NODE", "EXIT", "CORES", "GPUS", "SUBMITTED", "COMMAND")
					for _, x := range ts {
						exit := "-"
						if x.ExitCode != nil {
							exit = strconv.Itoa(*x.ExitCode)
						}
						if x.OOMKilled {
							exit += " (oom)"
						}
						t.row(x.ID, x.Name, x.State, x.NodeName, exit, x.Cores, x.GPUs, x.Submitted.Local().Format("01-02 15:04:05"), strings.Join(x.Command, " "))
					}
					return t.flush()
				}},
			{Name: "show", Usage: "show one task, with its placement explanation", ArgsUsage: "ID", Flags: []cli.Flag{jsonFlag(), socketFlag()},
				Action: func(c *cli.Context) error {
					id, err := idArg(c)
					if err != nil {
						return err
					}
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					t, err := cl.Task(c.Context, id)
					if err != nil {
						return fmt.Errorf("tasks show: %w", err)
					}
					if wantJSON(c) {
						return printJSON(os.Stdout, t)
					}
					return printTask(os.Stdout, &t)
				}},
			{Name: "kill", Usage: "kill a task", ArgsUsage: "ID", Flags: []cli.Flag{jsonFlag(), socketFlag()},
				Action: func(c *cli.Context) error {
					id, err := idArg(c)
					if err != nil {
						return err
					}
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					t, err := cl.KillTask(c.Context, id)
					if err != nil {
						return fmt.Errorf("tasks kill: %w", err)
					}
					if wantJSON(c) {
						return printJSON(os.Stdout, t)
					}
					fmt.Printf("%s %s\n", t.ID, t.State)
					return nil
				}},
			{Name: "logs", Usage: "print a task's stdout (or stderr); -f follows it", ArgsUsage: "ID",
				Flags: []cli.Flag{socketFlag(), &cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new output until the task ends"},
					&cli.BoolFlag{Name: "stderr", Usage: "stderr instead of stdout"}},
				Action: func(c *cli.Context) error {
					id, err := idArg(c)
					if err != nil {
						return err
					}
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					stream := "stdout"
					if c.Bool("stderr") {
						stream = "stderr"
					}
					return followLog(c.Context, cl, id, stream, c.Bool("follow"), os.Stdout)
				}},
		},
	}
}

// followLog prints a log from offset 0 and, with follow, asks only for what is new (by offset)
// until the task has ended and everything is printed.
func followLog(ctx context.Context, cl *api.Client, id, stream string, follow bool, w io.Writer) error {
	var off int64
	for {
		ch, err := cl.TaskLog(ctx, id, stream, off)
		if err != nil {
			return fmt.Errorf("tasks logs: %w", err)
		}
		if len(ch.Data) > 0 {
			if _, err := w.Write(ch.Data); err != nil {
				return err
			}
			off = ch.Offset
			if len(ch.Data) == api.MaxLogChunk {
				continue // more right away
			}
		}
		if !follow || (ch.State.Terminal() && len(ch.Data) == 0) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func printTask(w io.Writer, t *api.Task) error {
	tb := newTable(w, "FIELD", "VALUE")
	exit := "-"
	if t.ExitCode != nil {
		exit = strconv.Itoa(*t.ExitCode)
	}
	tb.row("id", t.ID)
	tb.row("name", t.Name)
	tb.row("state", t.State)
	tb.row("node", t.NodeName)
	tb.row("exit code", exit)
	if t.OOMKilled {
		tb.row("oom killed", "yes")
	}
	if t.Signal != "" {
		tb.row("signal", t.Signal)
	}
	if t.Error != "" {
		tb.row("error", t.Error)
	}
	tb.row("command", strings.Join(t.Command, " "))
	tb.row("resources", fmt.Sprintf("%.4g cores, %s, %d GPUs", t.Cores, units.FormatBytes(t.MemBytes), t.GPUs))
	tb.row("inputs", strings.Join(t.Inputs, ", "))
	if t.ContainerEnv != "" {
		env := t.ContainerEnv
		if t.EnvFile != "" {
			env += fmt.Sprintf(" (%s, %s)", t.EnvFile, units.FormatBytes(t.EnvSize))
		}
		tb.row("environment", env)
	}
	if t.Image != "" {
		tb.row("image", t.Image)
	}
	if es := t.EnvStart; es != nil {
		how := "already imported on the node"
		if es.Imported {
			how = fmt.Sprintf("imported on the node (%s read)", units.FormatBytes(es.ImportBytes))
		}
		tb.row("env start", fmt.Sprintf("%s; image ready in %.2f s, container started in %.2f s", how, es.ImageS, es.StartS))
	}
	tb.row("attempts", fmt.Sprintf("%d (retries %d)", t.Attempts, t.Retries))
	tb.row("submitted", t.Submitted.Local().Format(time.RFC3339))
	if !t.Started.IsZero() {
		tb.row("started", t.Started.Local().Format(time.RFC3339))
	}
	if !t.Finished.IsZero() {
		tb.row("finished", t.Finished.Local().Format(time.RFC3339))
	}
	tb.row("logs", t.LogDir)
	if p := t.Placement; p != nil {
		tb.row("placement", p.Reason)
		for _, cd := range p.Candidates {
			fit := "busy"
			if cd.Fits {
				fit = "fits"
			}
			env := ""
			switch {
			case cd.EnvImported:
				env = ", environment imported"
			case cd.EnvCached:
				env = ", environment cached"
			}
			tb.row("  "+cd.Node, fmt.Sprintf("%s warm, %s to fetch (~%.0f s)%s, %s", units.FormatBytes(cd.WarmBytes), units.FormatBytes(cd.MissingBytes), cd.FetchSeconds, env, fit))
		}
	}
	return tb.flush()
}

// shareCell is `eddy nodes`' view of how full the share is, as the node last reported it.
func shareCell(s *api.ShareSpace) string {
	switch {
	case s == nil:
		return "-"
	case s.TotalBytes == 0 && s.Error != "":
		return "unknown"
	case s.NearlyFull:
		return fmt.Sprintf("%.1f%% used, NEARLY FULL", s.UsedPercent)
	}
	return fmt.Sprintf("%.1f%% used", s.UsedPercent)
}

func nodesCommand() *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "list the cluster's nodes",
		Flags: []cli.Flag{jsonFlag(), socketFlag()},
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			ns, err := cl.Nodes(c.Context)
			if err != nil {
				return fmt.Errorf("nodes: %w", err)
			}
			if wantJSON(c) {
				return printJSON(os.Stdout, ns)
			}
			t := newTable(os.Stdout, "NAME", "ADDRESS", "UP", "CORES FREE", "MEM FREE", "GPUS FREE", "TASKS", "CACHED FILES", "SHARE", "LAST SEEN", "LABELS")
			for _, n := range ns {
				var labels []string
				for k, v := range n.Labels {
					labels = append(labels, k+"="+v)
				}
				t.row(n.Name, n.Address, n.Up, fmt.Sprintf("%.4g/%.4g", n.Free.Cores, n.Total.Cores),
					fmt.Sprintf("%s/%s", units.FormatBytes(n.Free.MemBytes), units.FormatBytes(n.Total.MemBytes)),
					fmt.Sprintf("%d/%d", n.Free.GPUs, n.Total.GPUs), n.Running, n.CachedFiles, shareCell(n.Share), humanAgo(n.LastSeen), strings.Join(labels, ","))
			}
			return t.flush()
		},
	}
}
