package integration

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/housekeeping"
	"github.com/eddy-cluster/eddy/sched"
)

// submit submits a task as nobody and returns its id.
func (c *ctrCluster) submit(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.asUser(append([]string{"submit"}, args...)...)
	id := strings.TrimSpace(out)
	if code != 0 || id == "" || strings.Contains(id, "\n") {
		c.t.Fatalf("submit %v: %d %q %s", args, code, out, errOut)
	}
	return id
}

// `eddy gc` against a one-node cluster: a dry run removes nothing; --yes removes the job and
// log dirs of an ended task whose retention has passed, never a running task's, nor the job
// dir of a task that asked to keep it.
func TestTaskGCKeepsRunningRemovesExpired(t *testing.T) {
	c := newCtrCluster(t)
	c.n.start(c.args()...)
	c.waitNodeUp()
	done := c.submit("--", "sh", "-c", `echo result > "$EDDY_JOB_DIR/out"`)
	kept := c.submit("--keep-job-dir", "--", "sh", "-c", `echo result > "$EDDY_JOB_DIR/out"`)
	running := c.submit("--", "sh", "-c", `echo partial > "$EDDY_JOB_DIR/out"; echo started; sleep 120`)
	for _, id := range []string{done, kept} {
		c.waitTask(id, 60*time.Second, "completed", func(tk sched.Task) bool { return tk.State == sched.StateCompleted })
	}
	c.waitTask(running, 60*time.Second, "running with output", func(tk sched.Task) bool {
		b, _ := os.ReadFile(c.n.org("logs/" + running + "/stdout.log"))
		return tk.State == sched.StateRunning && string(b) == "started\n"
	})
	if tk := c.task(kept); !tk.KeepJobDir {
		t.Fatalf("--keep-job-dir not recorded: %+v", tk)
	}
	exists := func(rel string) bool { _, err := os.Stat(c.n.org(rel)); return err == nil }
	gc := func(args ...string) housekeeping.Report {
		t.Helper()
		out, err := c.n.eddy(append([]string{"gc", "--json", "--share", c.n.Mount, "--job-retention", "0s", "--log-retention", "0s"}, args...)...)
		if err != nil {
			t.Fatalf("gc %v: %v\n%s", args, err, out)
		}
		var rep housekeeping.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("gc --json: %v: %s", err, out)
		}
		return rep
	}
	removed := func(rep housekeeping.Report) map[string]bool {
		m := map[string]bool{}
		for _, it := range rep.Removed {
			m[it.Rel] = true
		}
		return m
	}
	wantGone := []string{"jobs/" + done, "logs/" + done, "logs/" + kept}
	wantKept := []string{"jobs/" + kept, "jobs/" + running, "logs/" + running}

	// The default retention (7 days) keeps everything.
	out, err := c.n.eddy("gc", "--share", c.n.Mount)
	if err != nil || !strings.Contains(out, "would remove 0 items") || !strings.Contains(out, "dry run") {
		t.Fatalf("gc with the default retention: %v\n%s", err, out)
	}
	// A dry run with no retention: says what would go, removes nothing.
	rep := gc()
	if !rep.DryRun || len(rep.Removed) != len(wantGone) {
		t.Fatalf("dry run: %+v", rep)
	}
	for _, rel := range wantGone {
		if !removed(rep)[rel] || !exists(rel) {
			t.Errorf("dry run: %s listed %v, exists %v (want listed, and still there)", rel, removed(rep)[rel], exists(rel))
		}
	}
	// --yes: the expired go, the running task's and the kept job dir stay.
	rep = gc("--yes")
	if rep.DryRun || len(rep.Errors) > 0 || rep.Freed <= 0 {
		t.Fatalf("gc --yes: %+v", rep)
	}
	for _, rel := range wantGone {
		if exists(rel) {
			t.Errorf("gc --yes left %s", rel)
		}
	}
	for _, rel := range wantKept {
		if !exists(rel) {
			t.Errorf("gc --yes removed %s", rel)
		}
	}
	if b, err := os.ReadFile(c.n.org("jobs/" + running + "/out")); err != nil || string(b) != "partial\n" {
		t.Errorf("running task's job dir: %q %v", b, err)
	}
	// The running task still runs, and ends normally once killed.
	if tk := c.task(running); tk.State != sched.StateRunning {
		t.Fatalf("running task after gc: %s", tk.State)
	}
	if _, err := c.n.eddy("tasks", "kill", running); err != nil {
		t.Fatal(err)
	}
	c.waitTask(running, 30*time.Second, "killed", func(tk sched.Task) bool { return tk.State.Terminal() })
}

// The scheduler's periodic gc (--gc-every): with a short interval and no retention, an ended
// task's job and log dirs go on their own, a running task's stay, and `eddy gc --status` says
// what the scheduler's gc is set to and how its last run went.
func TestPeriodicGCRemovesExpiredKeepsRunning(t *testing.T) {
	c := newCtrCluster(t)
	c.n.start(append(c.args(), "--gc-every", "1s", "--gc-job-retention", "0s", "--gc-log-retention", "0s")...)
	c.waitNodeUp()
	running := c.submit("--", "sh", "-c", `echo partial > "$EDDY_JOB_DIR/out"; echo started; sleep 120`)
	done := c.submit("--", "sh", "-c", `echo result > "$EDDY_JOB_DIR/out"`)
	c.waitTask(running, 30*time.Second, "running with output", func(tk sched.Task) bool {
		b, _ := os.ReadFile(c.n.org("logs/" + running + "/stdout.log"))
		return tk.State == sched.StateRunning && string(b) == "started\n"
	})
	c.waitTask(done, 30*time.Second, "completed", func(tk sched.Task) bool { return tk.State == sched.StateCompleted })
	exists := func(rel string) bool { _, err := os.Stat(c.n.org(rel)); return err == nil }
	waitUntil(t, "the periodic gc to remove the ended task's job and log dirs", 10*time.Second, func() bool {
		return !exists("jobs/"+done) && !exists("logs/"+done)
	}, func() string { return c.n.tail(40) })
	for _, rel := range []string{"jobs/" + running, "logs/" + running} {
		if !exists(rel) {
			t.Errorf("the periodic gc removed %s, a running task's", rel)
		}
	}
	if b, err := os.ReadFile(c.n.org("jobs/" + running + "/out")); err != nil || string(b) != "partial\n" {
		t.Errorf("running task's job dir: %q %v", b, err)
	}
	// The run's record is written when the run ends, after its removals.
	waitUntil(t, "the daemon's log to record the removal of jobs/"+done, 10*time.Second, func() bool {
		return strings.Contains(c.n.log(), "kind=job path=jobs/"+done)
	}, func() string { return c.n.tail(40) })

	out, err := c.n.eddy("gc", "--status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st api.GCStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("gc --status --json: %v: %s", err, out)
	}
	if !st.Leading || st.Scheduler != "ecd0" || st.EverySec != 1 || st.JobRetentionSec != 0 || st.Last == nil || st.Last.Error != "" {
		t.Fatalf("gc --status: %s", out)
	}
	if out, err := c.n.eddy("gc", "--status"); err != nil || !strings.Contains(out, "periodic gc every 1s on scheduler ecd0") ||
		!strings.Contains(out, "last run") {
		t.Fatalf("gc --status: %v\n%s", err, out)
	}
	if tk := c.task(running); tk.State != sched.StateRunning {
		t.Fatalf("running task after the periodic gc: %s", tk.State)
	}
	if _, err := c.n.eddy("tasks", "kill", running); err != nil {
		t.Fatal(err)
	}
	c.waitTask(running, 30*time.Second, "killed", func(tk sched.Task) bool { return tk.State.Terminal() })
}

// `eddy submit --wait` of a task that fails says how it ended and exits with its status; a
// task id printed by submit is one line.
func TestTaskSubmitWaitExitStatus(t *testing.T) {
	c := newCtrCluster(t)
	c.n.start(c.args()...)
	c.waitNodeUp()
	out, errOut, code := c.asUser("submit", "--wait", "--", "sh", "-c", "exit 7")
	id := strings.TrimSpace(strings.SplitN(errOut, "\n", 2)[0])
	if code != 7 || !strings.Contains(errOut, "eddy: task "+id+" exited with status 7\n") {
		t.Fatalf("submit --wait: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(errOut, "eddy: \n") {
		t.Errorf("a bare error line: %q", errOut)
	}
	out, _, code = c.asUser("submit", "--", "true")
	if code != 0 || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("submit printed %q", out)
	}
}
