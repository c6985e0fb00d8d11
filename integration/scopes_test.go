package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/sched"
)

// scopesScript prints "<uid> <octal mode> <dir>" for each of the four scopes and writes a file
// into each; dirs are the four directories as the task sees them.
func scopesScript(dirs ...string) string {
	s := "set -e\n"
	for _, d := range dirs {
		s += `stat -c '%u %a %n' ` + d + "\n" + `echo written-by-$EDDY_TASK_ID > ` + d + "/$EDDY_TASK_ID.txt\n"
	}
	return s + `echo "env $EDDY_SHARED_DIR $EDDY_USER_DIR $EDDY_JOB_DIR $EDDY_SCRATCH"` + "\n"
}

// A process task and a container task, through a one-node cluster, each see the share's shared
// data dir, their user's dir and their job dir, and a node-local scratch dir, with the right
// owners and modes, and write into each; the scratch dir is gone once the task ended, the job
// dir stays (owned by the task's user), and the user dir is the same across both tasks.
func TestTaskScopesProcessAndContainer(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		c := newCtrCluster(t)
		c.addEnv("busy", time.Now().Add(-time.Hour))
		c.n.start(c.args()...)
		c.waitNodeUp()
		user := runtime.UserName(nobody)
		scratchRoot := c.n.CacheDir + "-scratch"

		check := func(id, want string, lines []string) {
			t.Helper()
			tk := c.waitTask(id, 90*time.Second, "to end", func(tk sched.Task) bool { return tk.State.Terminal() })
			out := c.logOf(id, "stdout")
			if tk.State != sched.StateCompleted {
				t.Fatalf("task %s %s (%s): stdout %q stderr %q\n%s", id, tk.State, tk.Error, out, c.logOf(id, "stderr"), c.n.tail(40))
			}
			got := strings.Split(strings.TrimSpace(out), "\n")
			if len(got) != len(lines)+1 {
				t.Fatalf("task %s: stdout %q", id, out)
			}
			for i, l := range lines {
				if got[i] != l {
					t.Errorf("task %s: line %d %q, want %q", id, i, got[i], l)
				}
			}
			if got[len(lines)] != want {
				t.Errorf("task %s: env line %q, want %q", id, got[len(lines)], want)
			}
			// The files written: shared data and user dir are everyone's and the user's, the
			// job dir stays after the task, owned by its user; the scratch dir is gone.
			for _, rel := range []string{"shared_data/" + id + ".txt", "users/" + user + "/" + id + ".txt", "jobs/" + id + "/" + id + ".txt"} {
				b, err := os.ReadFile(c.n.org(rel))
				if err != nil || string(b) != "written-by-"+id+"\n" {
					t.Errorf("%s in the share: %q %v", rel, b, err)
				}
			}
			fi, err := os.Stat(c.n.org("jobs/" + id))
			if err != nil {
				t.Fatalf("job dir gone after the task: %v", err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody || fi.Mode().Perm() != 0o700 {
				t.Errorf("job dir after the task: uid %d mode %v", st.Uid, fi.Mode())
			}
			waitFor(t, 15*time.Second, func() bool {
				_, err := os.Stat(filepath.Join(scratchRoot, id))
				return os.IsNotExist(err)
			})
		}

		// A process task: EDDY_SHARED_DIR is the share (its shared data dir under it).
		mnt := c.n.Mount
		out, errOut, code := c.asUser("submit", "--", "sh", "-c",
			scopesScript(`"$EDDY_SHARED_DIR/shared_data"`, `"$EDDY_USER_DIR"`, `"$EDDY_JOB_DIR"`, `"$EDDY_SCRATCH"`))
		pid := strings.TrimSpace(out)
		if code != 0 || pid == "" {
			t.Fatalf("submit: %d %s", code, errOut)
		}
		check(pid, "env "+mnt+" "+filepath.Join(mnt, "users", user)+" "+filepath.Join(mnt, "jobs", pid)+" "+filepath.Join(scratchRoot, pid),
			[]string{
				"0 777 " + filepath.Join(mnt, "shared_data"),
				"65534 700 " + filepath.Join(mnt, "users", user),
				"65534 700 " + filepath.Join(mnt, "jobs", pid),
				"65534 700 " + filepath.Join(scratchRoot, pid),
			})

		// A container task: the same scopes at /shared, /user, /job and /scratch.
		out, errOut, code = c.asUser("submit", "--container", "busy", "--", "sh", "-c",
			scopesScript("/shared", "/user", "/job", "/scratch"))
		cid := strings.TrimSpace(out)
		if code != 0 || cid == "" {
			t.Fatalf("submit: %d %s", code, errOut)
		}
		check(cid, "env /shared /user /job /scratch", []string{
			"0 777 /shared", "65534 700 /user", "65534 700 /job", "65534 700 /scratch",
		})
		// Both tasks' files are in the one user dir.
		ents, _ := os.ReadDir(c.n.org("users/" + user))
		if len(ents) != 2 {
			t.Errorf("user dir holds %v, want both tasks' files", ents)
		}
		if fi, err := os.Stat(c.n.org("logs")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("logs/ %v %v, want mode 0755", fi.Mode(), err)
		}
	})
}
