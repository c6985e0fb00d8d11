package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/eddy-cluster/eddy/api"
	hk "github.com/eddy-cluster/eddy/housekeeping"
	"github.com/eddy-cluster/eddy/sched"
)

// The scheduler's periodic gc as the daemon wires it: with the scheduler's tasks, a job dir
// past its retention goes and a running task's stays; the status route answers the last run
// in api form; the metrics count it; stop ends the loop.
func TestPeriodicGCWiring(t *testing.T) {
	share := t.TempDir()
	old := time.Now().Add(-48 * time.Hour)
	for _, id := range []string{"t-gone", "t-running"} {
		p := filepath.Join(share, "jobs", id, "out")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("12345"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, old, old)
		os.Chtimes(filepath.Dir(p), old, old)
		os.Chtimes(filepath.Dir(filepath.Dir(p)), old, old)
	}
	st := sched.NewMemStore()
	if err := st.PutTask(&api.Task{ID: "t-running", State: api.StateRunning}); err != nil {
		t.Fatal(err)
	}
	s, err := sched.NewScheduler(sched.SchedulerConfig{Store: st, ShareRoot: share, LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	pol := hk.Policy{JobRetention: time.Hour, LogRetention: -1, KeepEnvs: -1}
	d := &Daemon{cfg: Config{Mount: share, NodeName: "n1", GCEvery: 20 * time.Millisecond, GCPolicy: &pol},
		log: slog.New(slog.DiscardHandler), meter: mp.Meter("test")}
	mux := http.NewServeMux()
	if err := d.startPeriodicGC(context.Background(), s, mux); err != nil {
		t.Fatal(err)
	}
	cl := asFakePeer(t, &api.Identity{Uid: 1000, Gid: 1000, Via: "socket"}, mux)
	var gs api.GCStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		if gs, err = cl.GCStatus(context.Background()); err != nil {
			t.Fatal(err)
		}
		if gs.Last != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no periodic run: %+v", gs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(share, "jobs", "t-gone")); err == nil {
		t.Error("the expired job dir is still there")
	}
	if _, err := os.Stat(filepath.Join(share, "jobs", "t-running")); err != nil {
		t.Errorf("the running task's job dir: %v", err)
	}
	l := gs.Last
	if !gs.Leading || gs.Scheduler != "n1" || gs.EverySec != 0.02 || gs.JobRetentionSec != 3600 || gs.LogRetentionSec != -1 ||
		l.Error != "" || l.RemovedCount != 1 || len(l.Removed) != 1 || l.Removed[0].Rel != "jobs/t-gone" || l.FreedBytes != 5 {
		t.Fatalf("status: %+v, last %+v", gs, l)
	}
	if err := d.gc.stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					sums[m.Name] += dp.Value
				}
			}
		}
	}
	if sums["eddy.gc.runs"] < 1 || sums["eddy.gc.removed"] != 1 || sums["eddy.gc.freed"] != 5 {
		t.Errorf("metrics %v", sums)
	}
}

// Without --gc-every the route still answers: off.
func TestPeriodicGCOff(t *testing.T) {
	s, err := sched.NewScheduler(sched.SchedulerConfig{Store: sched.NewMemStore(), ShareRoot: t.TempDir(), LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	d := &Daemon{cfg: Config{NodeName: "n1"}, log: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	if err := d.startPeriodicGC(context.Background(), s, mux); err != nil {
		t.Fatal(err)
	}
	if d.gc != nil {
		t.Error("a loop was started with --gc-every 0")
	}
	gs, err := asFakePeer(t, &api.Identity{Uid: 1000, Gid: 1000, Via: "socket"}, mux).GCStatus(context.Background())
	if err != nil || gs.EverySec != 0 || gs.Last != nil || gs.Scheduler != "n1" {
		t.Fatalf("status %+v, %v", gs, err)
	}
}
