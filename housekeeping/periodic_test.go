package housekeeping

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// fakeLoop is a Periodic on a fake clock: every wait ends when the test sends on tick, and
// the loop says on waiting each time it starts to wait (it is done with the previous tick).
type fakeLoop struct {
	p       *Periodic
	tick    chan time.Time
	waiting chan struct{}
	leading atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	waits   []time.Duration // guarded by mu
}

func newFakeLoop(t *testing.T, cfg PeriodicConfig) *fakeLoop {
	t.Helper()
	f := &fakeLoop{tick: make(chan time.Time), waiting: make(chan struct{}, 100), done: make(chan struct{})}
	f.leading.Store(true)
	if cfg.Every == 0 {
		cfg.Every = time.Hour
	}
	if cfg.Tasks == nil {
		cfg.Tasks = func(context.Context) ([]api.Task, error) { return nil, nil }
	}
	cfg.Leading = f.leading.Load
	cfg.after = func(d time.Duration) <-chan time.Time {
		f.mu.Lock()
		f.waits = append(f.waits, d)
		f.mu.Unlock()
		f.waiting <- struct{}{}
		return f.tick
	}
	cfg.now = func() time.Time { return now }
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.leaderPoll = 5 * time.Millisecond
	p, err := NewPeriodic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { defer close(f.done); p.Loop(ctx) }()
	t.Cleanup(f.stop)
	f.await(t, f.waiting, "the loop's first wait")
	return f
}

func (f *fakeLoop) stop() {
	f.cancel()
	<-f.done
}

func (f *fakeLoop) await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// fire ends the loop's current wait; false when the loop did not take the tick within d (a
// run is under way).
func (f *fakeLoop) fire(d time.Duration) bool {
	select {
	case f.tick <- now:
		return true
	case <-time.After(d):
		return false
	}
}

// step ends the current wait and returns once the loop is done with it (it waits again).
func (f *fakeLoop) step(t *testing.T) {
	t.Helper()
	if !f.fire(5 * time.Second) {
		t.Fatal("the loop did not take the tick")
	}
	f.await(t, f.waiting, "the loop to wait again")
}

func TestPeriodicRunsOnlyWhileLeading(t *testing.T) {
	var runs atomic.Int32
	var got Options
	f := newFakeLoop(t, PeriodicConfig{
		Every:   time.Minute,
		Options: Options{Share: "/share", Policy: Policy{JobRetention: time.Minute, KeepEnvs: 3}, DryRun: true},
		Tasks: func(context.Context) ([]api.Task, error) {
			return []api.Task{{ID: "t1", State: api.StateRunning}}, nil
		},
		run: func(_ context.Context, opt Options) (Report, error) {
			runs.Add(1)
			got = opt
			return Report{Removed: []Item{{Kind: KindJob, Rel: "jobs/t0", Bytes: 5}}, Freed: 5}, nil
		},
	})
	f.leading.Store(false)
	f.step(t) // a follower's ticks: skipped
	f.step(t)
	if n := runs.Load(); n != 0 {
		t.Fatalf("a follower ran gc %d times", n)
	}
	if st := f.p.Status(); st.Last != nil || st.Next.IsZero() {
		t.Fatalf("follower's status: %+v", st)
	}
	f.leading.Store(true) // a failover made this member the leader
	f.step(t)
	if n := runs.Load(); n != 1 {
		t.Fatalf("the leader ran gc %d times, want 1", n)
	}
	if got.DryRun || got.Share != "/share" || got.JobRetention != time.Minute || got.KeepEnvs != 3 ||
		len(got.Tasks) != 1 || got.Tasks[0].ID != "t1" || !got.Now.Equal(now) {
		t.Errorf("a periodic run's options: %+v", got)
	}
	st := f.p.Status()
	if st.Last == nil || st.Last.Err != nil || st.Last.RemovedCount != 1 || st.Last.Freed != 5 || st.Running {
		t.Fatalf("status after a run: %+v", st)
	}
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waits) < 4 || f.waits[0] != time.Minute || f.waits[3] != time.Minute {
		t.Errorf("waits %v: want the interval (it is below FirstRunDelay)", f.waits)
	}
}

func TestPeriodicFirstRunDelay(t *testing.T) {
	f := newFakeLoop(t, PeriodicConfig{Every: 24 * time.Hour,
		run: func(context.Context, Options) (Report, error) { return Report{}, nil }})
	f.step(t)
	f.stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.waits) < 2 || f.waits[0] != FirstRunDelay || f.waits[1] != 24*time.Hour {
		t.Errorf("waits %v: want FirstRunDelay, then the interval", f.waits)
	}
}

func TestPeriodicNeverOverlaps(t *testing.T) {
	var cur, most, runs atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	f := newFakeLoop(t, PeriodicConfig{run: func(ctx context.Context, _ Options) (Report, error) {
		if n := cur.Add(1); n > most.Load() {
			most.Store(n)
		}
		defer cur.Add(-1)
		runs.Add(1)
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Report{}, nil
	}})
	f.fire(5 * time.Second)
	f.await(t, started, "the first run")
	if !f.p.Status().Running {
		t.Error("status does not say a run is under way")
	}
	for range 3 {
		if f.fire(20 * time.Millisecond) {
			t.Fatal("the loop took a tick while its run was under way")
		}
	}
	release <- struct{}{}
	f.await(t, f.waiting, "the loop to wait again")
	f.fire(5 * time.Second) // the next run
	f.await(t, started, "the second run")
	release <- struct{}{}
	f.await(t, f.waiting, "the loop to wait again")
	if most.Load() != 1 || runs.Load() != 2 {
		t.Errorf("%d runs, at most %d at once: want 2, one at a time", runs.Load(), most.Load())
	}
}

func TestPeriodicErrorsDoNotStopLater(t *testing.T) {
	var calls atomic.Int32
	var observed []LastRun
	var mu sync.Mutex
	f := newFakeLoop(t, PeriodicConfig{
		Tasks: func(context.Context) ([]api.Task, error) {
			if calls.Add(1) == 1 {
				return nil, errors.New("scheduler unreachable")
			}
			return nil, nil
		},
		run: func(context.Context, Options) (Report, error) {
			switch calls.Load() {
			case 2:
				return Report{}, errors.New("share gone")
			case 3:
				panic("a bug")
			case 4:
				return Report{Errors: []string{"remove jobs/t9: permission denied"}}, nil
			}
			return Report{Removed: []Item{{Rel: "jobs/t1"}}}, nil
		},
		Observe: func(r LastRun) { mu.Lock(); observed = append(observed, r); mu.Unlock() },
	})
	for range 5 {
		f.step(t)
	}
	f.stop()
	mu.Lock()
	defer mu.Unlock()
	if len(observed) != 5 {
		t.Fatalf("%d runs observed, want 5", len(observed))
	}
	for i, want := range []string{"scheduler unreachable", "share gone", "panicked: a bug", "", ""} {
		got := ""
		if observed[i].Err != nil {
			got = observed[i].Err.Error()
		}
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("run %d: error %q, want %q", i+1, got, want)
		}
	}
	if observed[3].ErrorCount != 1 || len(observed[3].Errors) != 1 {
		t.Errorf("run 4: %+v, want its item error", observed[3])
	}
	if observed[4].RemovedCount != 1 {
		t.Errorf("run 5: %+v, want one removed", observed[4])
	}
}

// A run under way is cancelled when this scheduler stops leading (a new leader will collect),
// and when the daemon shuts down (Loop returns once the run has stopped).
func TestPeriodicCancelled(t *testing.T) {
	for _, tc := range []struct {
		name  string
		end   func(*fakeLoop)
		cause error
	}{
		{"lost leadership", func(f *fakeLoop) { f.leading.Store(false) }, ErrNotLeading},
		{"shutdown", func(f *fakeLoop) { f.cancel() }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started, ended := make(chan struct{}), make(chan struct{})
			var seen []LastRun
			var mu sync.Mutex
			f := newFakeLoop(t, PeriodicConfig{
				run: func(ctx context.Context, _ Options) (Report, error) {
					close(started)
					defer close(ended)
					<-ctx.Done()
					return Report{Removed: []Item{{Rel: "jobs/t1", Bytes: 3}}, Freed: 3}, ctx.Err()
				},
				Observe: func(r LastRun) { mu.Lock(); seen = append(seen, r); mu.Unlock() },
			})
			f.fire(5 * time.Second)
			f.await(t, started, "the run")
			tc.end(f)
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("the run was not cancelled")
			}
			if tc.cause == context.Canceled {
				select {
				case <-f.done:
				case <-time.After(5 * time.Second):
					t.Fatal("Loop did not return at shutdown")
				}
			} else {
				f.await(t, f.waiting, "the loop to wait again")
				f.step(t) // it goes on, as a follower
			}
			f.stop()
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 || !errors.Is(seen[0].Err, tc.cause) || seen[0].RemovedCount != 1 || seen[0].Freed != 3 {
				t.Fatalf("runs %+v: want one, cancelled by %v, with what it removed before", seen, tc.cause)
			}
		})
	}
}

// The periodic run is Run itself with the caller's policy: expired directories go, a running
// task's stay.
func TestPeriodicRemovesExpired(t *testing.T) {
	share, tasks := tempShare(t)
	f := newFakeLoop(t, PeriodicConfig{
		Options: Options{Share: share, Policy: DefaultPolicy()},
		Tasks:   func(context.Context) ([]api.Task, error) { return tasks, nil },
	})
	f.step(t)
	st := f.p.Status()
	if st.Last == nil || st.Last.Err != nil || st.Last.RemovedCount != 2 || st.Last.Freed != 2000 {
		t.Fatalf("last run: %+v", st.Last)
	}
	for rel, want := range map[string]bool{"jobs/t-done-old": false, "jobs/t-unknown-old": false,
		"jobs/t-running": true, "jobs/t-keep": true, "jobs/t-done-new": true, "logs/t-done-old": true} {
		if got := exists(filepath.Join(share, rel)); got != want {
			t.Errorf("%s exists %v, want %v", rel, got, want)
		}
	}
}

func TestPeriodicBoundsItsRecord(t *testing.T) {
	many := make([]Item, 3*maxListed)
	f := newFakeLoop(t, PeriodicConfig{run: func(context.Context, Options) (Report, error) {
		return Report{Removed: many}, nil
	}})
	f.step(t)
	l := f.p.Status().Last
	if l == nil || l.RemovedCount != len(many) || len(l.Removed) != maxListed {
		t.Fatalf("last run: %d listed of %d", len(l.Removed), l.RemovedCount)
	}
}

func TestNewPeriodicRefuses(t *testing.T) {
	tasks := func(context.Context) ([]api.Task, error) { return nil, nil }
	if _, err := NewPeriodic(PeriodicConfig{Every: 0, Tasks: tasks}); err == nil {
		t.Error("interval 0 accepted")
	}
	if _, err := NewPeriodic(PeriodicConfig{Every: time.Hour}); err == nil {
		t.Error("no task source accepted")
	}
}
