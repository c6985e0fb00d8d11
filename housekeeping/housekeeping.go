package housekeeping

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

// Defaults of Options (and of `eddy gc`'s flags).
const (
	DefaultJobRetention = 7 * 24 * time.Hour
	DefaultLogRetention = 30 * 24 * time.Hour
	DefaultKeepEnvs     = 1
	DefaultEnvGrace     = 30 * time.Minute
)

// Kinds of Item.
const (
	KindJob = "job"
	KindLog = "log"
	KindEnv = "env"
)

// Options says what Run may remove.
type Options struct {
	// Share is the share's root (a node's mount of it, or the origin itself).
	Share string
	// Layout names the share's directories (only Jobs is used); zero fields: the defaults.
	Layout runtime.Layout
	// Policy: how long directories are kept, how many environment versions.
	Policy
	// Tasks are the scheduler's tasks (all of them, ended or not).
	Tasks []api.Task
	// DryRun: report only, remove nothing.
	DryRun bool
	// Now: zero means time.Now().
	Now time.Time
	// Progress, when set, is told how the walk goes (often, from the calling goroutine).
	Progress func(Progress)
}

// Policy is what Run keeps. It is one type so that `eddy gc`'s flags and the scheduler's
// periodic gc (Periodic) are given the same settings with the same defaults.
type Policy struct {
	// JobRetention and LogRetention: how long after its task ended a job or log directory is
	// kept (0: removed as soon as the task has ended; negative: never removed).
	JobRetention, LogRetention time.Duration
	// KeepEnvs newest versions of each environment are kept (at least 1); older ones go as
	// envs.Prune decides, with EnvGrace as its grace period. KeepEnvs < 0: no environment is
	// pruned.
	KeepEnvs int
	EnvGrace time.Duration
}

// DefaultPolicy is the policy of `eddy gc` without flags.
func DefaultPolicy() Policy {
	return Policy{JobRetention: DefaultJobRetention, LogRetention: DefaultLogRetention,
		KeepEnvs: DefaultKeepEnvs, EnvGrace: DefaultEnvGrace}
}

// DefaultOptions are the options of `eddy gc` without flags (a dry run).
func DefaultOptions(share string) Options {
	return Options{Share: share, Policy: DefaultPolicy(), DryRun: true}
}

// Progress is the state of a walk: Phase is "jobs", "logs" or "envs"; Done of Total entries
// of that phase are decided, Bytes is what they hold so far (removable or not).
type Progress struct {
	Phase string `json:"phase"`
	Done  int    `json:"done"`
	Total int    `json:"total"`
	Bytes int64  `json:"bytes"`
}

// Item is one directory or file Run removed (or, in a dry run, would remove), or kept.
type Item struct {
	Kind  string `json:"kind"`
	Rel   string `json:"rel"` // relative to the share
	Task  string `json:"task,omitempty"`
	Bytes int64  `json:"bytes"`
	// Since is when its retention started: its task's end, or (task unknown) its newest change.
	Since time.Time `json:"since,omitzero"`
	// Reason says why it goes, or why it stays.
	Reason string `json:"reason"`
}

// Report is what Run did (or, with DryRun, would do).
type Report struct {
	DryRun  bool     `json:"dry_run"`
	Removed []Item   `json:"removed"`
	Kept    []Item   `json:"kept"`
	Freed   int64    `json:"freed_bytes"`
	Errors  []string `json:"errors,omitempty"`
}

// Run walks the share's job directories, log directories and environments and removes what
// has expired (see the package documentation). It stops at ctx's end. Errors removing one
// item are listed in the report and do not stop the rest.
func Run(ctx context.Context, opt Options) (Report, error) {
	rep := Report{DryRun: opt.DryRun, Removed: []Item{}, Kept: []Item{}}
	if opt.Share == "" {
		return rep, errors.New("housekeeping: no share")
	}
	if fi, err := os.Stat(opt.Share); err != nil || !fi.IsDir() {
		return rep, fmt.Errorf("housekeeping: share %s: not a directory (%v)", opt.Share, err)
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	lay := opt.Layout.WithDefaults()
	g := &gc{opt: opt, rep: &rep, tasks: map[string]*api.Task{}}
	for i := range opt.Tasks {
		g.tasks[opt.Tasks[i].ID] = &opt.Tasks[i]
	}
	if err := g.dirs(ctx, "jobs", KindJob, lay.Jobs, opt.JobRetention); err != nil {
		return rep, err
	}
	if err := g.dirs(ctx, "logs", KindLog, runtime.LogsDir, opt.LogRetention); err != nil {
		return rep, err
	}
	if err := g.envs(ctx); err != nil {
		return rep, err
	}
	return rep, nil
}

type gc struct {
	opt   Options
	rep   *Report
	tasks map[string]*api.Task // by ID
}

func cleanRel(p string) string {
	p = path.Clean(filepath.ToSlash(p))
	if p == "." || p == "/" || strings.HasPrefix(p, "../") || p == ".." {
		return ""
	}
	return strings.TrimPrefix(p, "/")
}

// usedBy names the queued or running task that uses rel (a path in it, or a directory above
// it), "" when none does.
func (g *gc) usedBy(rel string) string {
	for _, t := range g.opt.Tasks {
		if t.State.Terminal() {
			continue
		}
		for _, p := range append(append([]string{}, t.Inputs...), t.WorkDir) {
			p = cleanRel(p)
			if p != "" && (p == rel || strings.HasPrefix(p, rel+"/") || strings.HasPrefix(rel, p+"/")) {
				return t.ID
			}
		}
	}
	return ""
}

func (g *gc) progress(p Progress) {
	if g.opt.Progress != nil {
		g.opt.Progress(p)
	}
}

// dirs decides the per-task directories under the share's dir: <dir>/<task-id>.
func (g *gc) dirs(ctx context.Context, phase, kind, dir string, retention time.Duration) error {
	ents, err := os.ReadDir(filepath.Join(g.opt.Share, dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("housekeeping: %s: %w", dir, err)
	}
	p := Progress{Phase: phase, Total: len(ents)}
	g.progress(p)
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.Done++
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue // not a task's directory (a symlink is never followed)
		}
		id := e.Name()
		it := Item{Kind: kind, Rel: path.Join(dir, id), Task: id}
		abs := filepath.Join(g.opt.Share, dir, id)
		size, newest, err := walk(ctx, abs)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			g.rep.Errors = append(g.rep.Errors, fmt.Sprintf("%s: %v", it.Rel, err))
			continue
		}
		it.Bytes = size
		p.Bytes += size
		g.progress(p)
		t := g.tasks[id]
		switch {
		case t != nil && !t.State.Terminal():
			it.Reason = fmt.Sprintf("task %s is %s", id, t.State)
		case kind == KindJob && t != nil && t.KeepJobDir:
			it.Reason = fmt.Sprintf("task %s asked to keep it (keep_job_dir)", id)
		case g.usedBy(it.Rel) != "":
			it.Reason = fmt.Sprintf("used by task %s, which is not done", g.usedBy(it.Rel))
		case retention < 0:
			it.Reason = "kept: no retention limit"
		}
		if it.Reason != "" {
			g.rep.Kept = append(g.rep.Kept, it)
			continue
		}
		what := ""
		if t != nil && !t.Finished.IsZero() {
			it.Since, what = t.Finished, fmt.Sprintf("task %s ended", id)
		} else {
			it.Since, what = newest, "last changed"
			if t == nil {
				what = "unknown to the scheduler, last changed"
			}
		}
		age := g.opt.Now.Sub(it.Since)
		if age < retention {
			it.Reason = fmt.Sprintf("within retention: %s %s ago (retention %s)", what, roundAge(age), roundAge(retention))
			g.rep.Kept = append(g.rep.Kept, it)
			continue
		}
		it.Reason = fmt.Sprintf("%s %s ago (retention %s)", what, roundAge(age), roundAge(retention))
		g.remove(it, abs)
	}
	return nil
}

func (g *gc) remove(it Item, abs string) {
	if !g.opt.DryRun {
		if err := os.RemoveAll(abs); err != nil {
			g.rep.Errors = append(g.rep.Errors, fmt.Sprintf("remove %s: %v", it.Rel, err))
			return
		}
	}
	g.rep.Removed = append(g.rep.Removed, it)
	g.rep.Freed += it.Bytes
}

// envs prunes environment versions as `eddy env prune` does, protecting the versions queued
// and running tasks run.
func (g *gc) envs(ctx context.Context) error {
	if g.opt.KeepEnvs < 0 {
		return nil
	}
	inUse := map[string]string{}
	for _, t := range g.opt.Tasks {
		if t.EnvFile != "" && !t.State.Terminal() {
			inUse[filepath.Join(g.opt.Share, filepath.FromSlash(t.EnvFile))] = t.ID
		}
	}
	g.progress(Progress{Phase: "envs"})
	pr, err := envs.Prune(ctx, g.opt.Share, envs.PruneOptions{Keep: max(g.opt.KeepEnvs, 1), Grace: g.opt.EnvGrace,
		InUse: func(p string) bool { _, ok := inUse[filepath.Clean(p)]; return ok }, DryRun: g.opt.DryRun, Now: g.opt.Now})
	for _, v := range pr.Removed {
		g.rep.Removed = append(g.rep.Removed, Item{Kind: KindEnv, Rel: v.Rel, Bytes: v.Size, Since: v.ModTime,
			Reason: fmt.Sprintf("older than the newest %d of %s", max(g.opt.KeepEnvs, 1), v.Env)})
		g.rep.Freed += v.Size
	}
	for _, k := range pr.Kept {
		reason := k.Reason
		if id := inUse[filepath.Clean(k.Path)]; id != "" {
			reason = fmt.Sprintf("in use by task %s", id)
		}
		g.rep.Kept = append(g.rep.Kept, Item{Kind: KindEnv, Rel: k.Rel, Bytes: k.Size, Since: k.ModTime, Reason: reason})
	}
	g.progress(Progress{Phase: "envs", Done: len(pr.Removed) + len(pr.Kept), Total: len(pr.Removed) + len(pr.Kept), Bytes: pr.Freed})
	if err != nil {
		return fmt.Errorf("housekeeping: %w", err)
	}
	return nil
}

// walk sums the sizes of the files under dir (symbolic links are not followed) and finds the
// newest modification time in it.
func walk(ctx context.Context, dir string) (size int64, newest time.Time, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if fi.Mode().IsRegular() {
			size += fi.Size()
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	return size, newest, err
}

// roundAge renders a duration in days, hours or minutes.
func roundAge(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	default:
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
}

// Summary counts the items kept only because their retention has not passed, by kind, for a
// short text report (the others are worth listing one by one).
func (r Report) Summary() []string {
	counts := map[string]int{}
	for _, k := range r.Kept {
		if strings.HasPrefix(k.Reason, "within retention") {
			counts[k.Kind+" dirs within retention"]++
		}
	}
	var out []string
	for c, n := range counts {
		out = append(out, fmt.Sprintf("%d %s", n, c))
	}
	sort.Strings(out)
	return out
}
