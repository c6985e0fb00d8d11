package housekeeping

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// FirstRunDelay caps the wait for a Periodic's first run: with a long interval (a day, say), a
// scheduler restarted more often than that would otherwise never run gc at all.
const FirstRunDelay = 5 * time.Minute

// maxListed bounds the removed items and errors a LastRun keeps (its counts stay complete), so
// that the memory a run's result holds does not grow with the share.
const maxListed = 100

// ErrNotLeading ends a periodic run whose scheduler is not (or no longer) the leader of its
// group: only the leader knows every task, and two members must never collect at once.
var ErrNotLeading = errors.New("this scheduler is not the group's leader")

// PeriodicConfig says what a Periodic runs and when.
type PeriodicConfig struct {
	// Every is the interval between the end of one run and the start of the next (> 0).
	Every time.Duration
	// Options are each run's: Share, Layout and Policy. DryRun is always false (a periodic
	// run removes, as `eddy gc --yes` does); Tasks, Now and Progress are set by each run.
	Options Options
	// Tasks lists every task the scheduler knows (ended or not), asked afresh at each run.
	Tasks func(context.Context) ([]api.Task, error)
	// Leading reports whether this scheduler leads its group now (nil: always). A run starts
	// only while it does, and is cancelled when it stops.
	Leading func() bool
	// Observe, when set, is told every run's result (for metrics).
	Observe func(LastRun)
	Logger  *slog.Logger

	// Test seams; zero: the real clock, Run, and a leadership check every second.
	after      func(time.Duration) <-chan time.Time
	now        func() time.Time
	run        func(context.Context, Options) (Report, error)
	leaderPoll time.Duration
}

// LastRun is what one periodic run did: at most maxListed of its removed items and errors are
// listed, the counts are complete.
type LastRun struct {
	Started, Finished time.Time
	Removed           []Item
	RemovedCount      int
	RemovedByKind     map[string]int // KindJob, KindLog, KindEnv: complete counts
	KeptCount         int
	Freed             int64
	Errors            []string // items that could not be removed
	ErrorCount        int
	// Err: the run as a whole failed (the tasks could not be listed, the share could not be
	// read) or was cancelled (shutdown, lost leadership); what it removed before is counted.
	Err error
}

// PeriodicStatus is a Periodic's state.
type PeriodicStatus struct {
	Every   time.Duration
	Policy  Policy
	Running bool
	Next    time.Time // when the next run is due (zero while one runs)
	Last    *LastRun  // nil before the first run
}

// Periodic runs Run every so often, as `eddy gc --yes` would, on the leader of a scheduler
// group only. One run at a time: the next is due Every after the previous one ended.
type Periodic struct {
	cfg PeriodicConfig
	log *slog.Logger

	mu      sync.Mutex
	running bool      // guarded by mu
	next    time.Time // guarded by mu
	last    *LastRun  // guarded by mu
}

// NewPeriodic checks cfg and returns its Periodic; Loop runs it.
func NewPeriodic(cfg PeriodicConfig) (*Periodic, error) {
	if cfg.Every <= 0 {
		return nil, fmt.Errorf("housekeeping: periodic gc every %s: want a positive interval", cfg.Every)
	}
	if cfg.Tasks == nil {
		return nil, errors.New("housekeeping: periodic gc needs the scheduler's tasks")
	}
	if cfg.after == nil {
		cfg.after = time.After
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.run == nil {
		cfg.run = Run
	}
	if cfg.leaderPoll <= 0 {
		cfg.leaderPoll = time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Periodic{cfg: cfg, log: log}, nil
}

// Status is the Periodic's state now.
func (p *Periodic) Status() PeriodicStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PeriodicStatus{Every: p.cfg.Every, Policy: p.cfg.Options.Policy, Running: p.running, Next: p.next}
	if p.last != nil {
		l := *p.last
		l.Removed, l.Errors = append([]Item(nil), l.Removed...), append([]string(nil), l.Errors...)
		l.RemovedByKind = maps.Clone(l.RemovedByKind)
		st.Last = &l
	}
	return st
}

func (p *Periodic) leading() bool { return p.cfg.Leading == nil || p.cfg.Leading() }

// Loop runs until ctx ends: the first run min(Every, FirstRunDelay) after the start, then
// Every after each run's end. A member that does not lead at a run's time skips it, so after
// a failover the new leader collects at its next one. A run's failure is logged and recorded;
// the loop goes on. ctx's end cancels a run under way, and Loop returns once it has stopped.
func (p *Periodic) Loop(ctx context.Context) {
	wait := min(p.cfg.Every, FirstRunDelay)
	for {
		p.mu.Lock()
		p.next = p.cfg.now().Add(wait)
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-p.cfg.after(wait):
		}
		wait = p.cfg.Every
		if !p.leading() {
			p.log.Debug("gc: not the scheduler group's leader: the periodic run is the leader's")
			continue
		}
		p.once(ctx)
		if ctx.Err() != nil {
			return
		}
	}
}

// once does one run, cancelled when ctx ends or this scheduler stops leading.
func (p *Periodic) once(ctx context.Context) {
	p.mu.Lock()
	p.running, p.next = true, time.Time{}
	p.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(p.cfg.leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if !p.leading() {
					cancel(ErrNotLeading)
					return
				}
			}
		}
	}()
	res := LastRun{Started: p.cfg.now()}
	rep, err := p.collect(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("cancelled: %w", context.Cause(ctx)) // say why: shutdown, or lost leadership
	}
	res.Finished = p.cfg.now()
	res.Err = err
	res.RemovedCount, res.KeptCount, res.Freed, res.ErrorCount = len(rep.Removed), len(rep.Kept), rep.Freed, len(rep.Errors)
	res.Removed = append([]Item(nil), rep.Removed[:min(len(rep.Removed), maxListed)]...)
	res.RemovedByKind = map[string]int{}
	for _, it := range rep.Removed {
		res.RemovedByKind[it.Kind]++
	}
	res.Errors = append([]string(nil), rep.Errors[:min(len(rep.Errors), maxListed)]...)
	p.logRun(rep, res)
	p.mu.Lock()
	p.running, p.last = false, &res
	p.mu.Unlock()
	if p.cfg.Observe != nil {
		p.cfg.Observe(res)
	}
}

// collect lists the tasks and runs gc with them. A panic is turned into the run's error: one
// bad run must not end the loop, nor the daemon.
func (p *Periodic) collect(ctx context.Context) (rep Report, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("housekeeping: periodic gc panicked: %v", r)
		}
	}()
	tasks, err := p.cfg.Tasks(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("list the scheduler's tasks: %w", err)
	}
	opt := p.cfg.Options
	opt.Tasks, opt.DryRun, opt.Now, opt.Progress = tasks, false, p.cfg.now(), nil
	return p.cfg.run(ctx, opt)
}

// logRun writes what a run removed, one line each (the record of what gc deleted), and how it
// ended.
func (p *Periodic) logRun(rep Report, res LastRun) {
	for _, it := range rep.Removed {
		p.log.Info("gc: removed", "kind", it.Kind, "path", it.Rel, "bytes", it.Bytes, "reason", it.Reason)
	}
	for _, e := range rep.Errors {
		p.log.Warn("gc: could not remove", "err", e)
	}
	attrs := []any{"removed", res.RemovedCount, "freed_bytes", res.Freed, "kept", res.KeptCount,
		"errors", res.ErrorCount, "took", res.Finished.Sub(res.Started).Round(time.Millisecond)}
	switch {
	case res.Err != nil:
		p.log.Warn("gc: periodic run failed", append(attrs, "err", res.Err)...)
	case res.ErrorCount > 0:
		p.log.Warn("gc: periodic run done, some items could not be removed", attrs...)
	default:
		p.log.Info("gc: periodic run done", attrs...)
	}
}
