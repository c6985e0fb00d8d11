package fusefs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/origin"
)

func TestStatusDying(t *testing.T) {
	for _, c := range []struct {
		status string
		dying  bool
	}{
		{"Name:\tstat\nState:\tS (sleeping)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n", false},
		{"Name:\tstat\nState:\tS (sleeping)\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n", true},
		{"Name:\tstat\nState:\tS (sleeping)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000004100\n", true},
		{"Name:\tstat\nState:\tT (stopped)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000080000\n", false},
		{"Name:\tstat\nState:\tS (sleeping)\nSigPnd:\t0000000000008000\n", false}, // SIGTERM caught
		{"Name:\tx\nState:\tZ (zombie)\n", true},
		{"", false},
	} {
		if got := statusDying([]byte(c.status)); got != c.dying {
			t.Errorf("statusDying(%q) = %v, want %v", c.status, got, c.dying)
		}
	}
}

func TestCallerDying(t *testing.T) {
	if callerDying(uint32(os.Getpid())) || callerDying(uint32(unix.Gettid())) {
		t.Error("this live process counts as dying")
	}
	if callerDying(0) {
		t.Error("an unknown caller counts as dying")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !callerDying(uint32(cmd.Process.Pid)) {
		t.Error("a reaped process does not count as dying")
	}
}

// slowOrigin makes SetAttr and Mkdir take a while, and Lstat of "hang"
// block until its context ends.
type slowOrigin struct {
	origin.FS
	delay    time.Duration
	hanging  chan struct{} // receives when an Lstat of "hang" starts
	hangErr  atomic.Value  // error the last hang ended with
	hangDone chan struct{}
}

func (o *slowOrigin) SetAttr(ctx context.Context, name string, set origin.SetAttr) error {
	time.Sleep(o.delay)
	return o.FS.SetAttr(ctx, name, set)
}

func (o *slowOrigin) Mkdir(ctx context.Context, name string, mode uint32, owner origin.Owner) error {
	time.Sleep(o.delay)
	return o.FS.Mkdir(ctx, name, mode, owner)
}

func (o *slowOrigin) Lstat(ctx context.Context, name string) (origin.Attr, error) {
	if name != "hang" {
		return o.FS.Lstat(ctx, name)
	}
	o.hanging <- struct{}{}
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(30 * time.Second):
		err = errors.New("not cancelled")
	}
	o.hangErr.Store(err)
	o.hangDone <- struct{}{}
	return origin.Attr{}, err
}

func mountSlow(t *testing.T) (*slowOrigin, string) {
	requireFUSE(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	p, err := origin.NewPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	org := &slowOrigin{FS: p, delay: 300 * time.Millisecond,
		hanging: make(chan struct{}, 1), hangDone: make(chan struct{}, 1)}
	_, mp := mountOrigin(t, org, p, nil, Options{EntryTimeout: -1, AttrTimeout: -1})
	return org, mp
}

// A caller's harmless signals (here the SIGURG Go uses for preemption,
// sent every millisecond) do not turn a slow call into EINTR, nor abandon
// a change that reaches the origin anyway.
func TestSignalsDoNotInterrupt(t *testing.T) {
	_, mp := mountSlow(t)
	errs := make(chan error, 2)
	tids := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(42_000000007)}
		errs <- unix.UtimesNanoAt(unix.AT_FDCWD, mp+"/f", ts, 0)
		errs <- unix.Mkdir(mp+"/d", 0o755)
	}()
	tid := <-tids
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
			}
		}
	}()
	for _, op := range []string{"utimensat", "mkdir"} {
		if err := <-errs; err != nil {
			t.Errorf("%s under signals: %v", op, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(mp+"/f", &st); err != nil || st.Mtim.Sec != 42 {
		t.Errorf("mtime after utimensat: %v %v", st.Mtim, err)
	}
	if fi, err := os.Stat(mp + "/d"); err != nil || !fi.IsDir() {
		t.Errorf("directory after mkdir: %v", err)
	}
}

// A caller that is killed while its call hangs on the origin is let go:
// the origin call's context ends and the process exits. A stopped caller
// (SIGSTOP interrupts the request too) is not: its call goes on.
func TestFatalSignalEndsHungCall(t *testing.T) {
	org, mp := mountSlow(t)
	cmd := exec.Command("stat", mp+"/hang")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(35 * time.Second):
		}
	})
	select {
	case <-org.hanging:
	case <-time.After(10 * time.Second):
		t.Fatal("stat never reached the origin")
	}
	cmd.Process.Signal(syscall.SIGSTOP)
	select {
	case <-org.hangDone:
		t.Fatalf("a stopped caller's call ended: %v", org.hangErr.Load())
	case <-time.After(300 * time.Millisecond):
	}
	cmd.Process.Kill()
	select {
	case <-org.hangDone:
		if err := org.hangErr.Load().(error); !errors.Is(err, context.Canceled) {
			t.Errorf("hung call ended with %v, want its context cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("killing the caller did not end the hung origin call")
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed caller did not exit")
	}
}

// BenchmarkWatch measures what the interrupt filter adds to each request.
func BenchmarkWatch(b *testing.B) {
	cancel := make(chan struct{})
	for b.Loop() {
		_, done := watch(cancel, 1)
		done()
	}
}
