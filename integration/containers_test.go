package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

// busyboxImage builds an OCI layout tarball (one layer: /bin/busybox and its applet links)
// whose index.json names the image, as `ctr images import` and the Go client expect.
func busyboxImage(t testing.TB, gz bool) []byte { return busyboxImageSized(t, gz, 0) }

// busyboxImageSized adds a file of extra random (incompressible) bytes to the layer.
func busyboxImageSized(t testing.TB, gz bool, extra int) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static not installed (scripts/deps.sh containers): %v", err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dir := func(name string, mode int64) {
		tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: time.Unix(0, 0)})
	}
	file := func(name string, mode int64, body []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body)), ModTime: time.Unix(0, 0)})
		tw.Write(body)
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "shared", "work"} {
		dir(d, 0o755)
	}
	file("bin/busybox", 0o755, bb)
	for _, a := range []string{"sh", "echo", "cat", "id", "sleep", "tail", "head", "env", "ls", "pwd", "seq", "true"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: time.Unix(0, 0)})
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	if extra > 0 {
		payload := make([]byte, extra)
		rand.NewChaCha8([32]byte{1}).Read(payload)
		file("payload.bin", 0o644, payload)
	}
	tw.Close()

	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		blobs[h] = b
		return "sha256:" + h, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": goruntime.GOARCH, "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, cfgSize := put(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	mDigest, mSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
			"platform":    map[string]string{"architecture": goruntime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": "ert.test/busybox:latest", "org.opencontainers.image.ref.name": "latest"},
		}},
	})
	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	add := func(name string, b []byte) {
		ow.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		ow.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for h, b := range blobs {
		add("blobs/sha256/"+h, b)
	}
	ow.Close()
	if !gz {
		return out.Bytes()
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(out.Bytes())
	zw.Close()
	return z.Bytes()
}

type ctrEnv struct {
	rt    *runtime.Runtime
	cfg   runtime.Config
	share string
	data  string
	dir   string // containerd's private dir
}

// ertContainerd starts a Runtime on a temp share with a shared_data dir, and with it a private
// containerd of daemon d (root, state and socket under a temp dir), stopped by the Runtime's
// Close and, should that fail, by its PID when t ends.
func ertContainerd(t testing.TB, d containerdDaemon) *ctrEnv {
	t.Helper()
	bins := useContainerd(t, d)
	dir, err := os.MkdirTemp("", "ert-ctd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	stopContainerdAtEnd(t, dir)
	share := ertDir(t)
	data := filepath.Join(share, "shared_data")
	if err := os.Mkdir(data, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(data, 0o777)
	e := &ctrEnv{share: share, data: data, dir: dir}
	e.cfg = runtime.Config{ShareRoot: share, ContainerdDir: dir,
		ContainerdNamespace: fmt.Sprintf("eddy-test-ert-%d-%s", os.Getpid(), d.name)}
	// runc keeps per-namespace state under /run/containerd/runc even with a private root.
	t.Cleanup(func() { os.Remove(filepath.Join("/run/containerd/runc", e.cfg.ContainerdNamespace)) })
	e.rt = ertRuntime(t, e.cfg)
	e.cfg = e.rt.Config() // with the cgroup parent ertRuntime picked
	assertContainerdBinary(t, dir, bins)
	// Runs before the Runtime's Close: what a failed test left running goes.
	t.Cleanup(func() {
		if t.Failed() {
			killContainerTasks(runtime.PrivateContainerdSocket(dir), e.cfg.ContainerdNamespace)
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("--- %s containerd.log (tail) ---\n%s", d.name, tailLines(string(b), 40))
		}
	})
	return e
}

// ctr runs the ctr CLI against the private containerd.
func (e *ctrEnv) ctr(t testing.TB, args ...string) string {
	t.Helper()
	return ctrAt(t, runtime.PrivateContainerdSocket(e.dir), e.cfg.ContainerdNamespace, args...)
}

// ctrAt runs the ctr CLI against the containerd at sock, in namespace ns.
func ctrAt(t testing.TB, sock, ns string, args ...string) string {
	t.Helper()
	full := append([]string{"--address", sock, "-n", ns}, args...)
	var stderr bytes.Buffer
	cmd := exec.Command("ctr", full...)
	cmd.Stderr = &stderr // warnings (ctr 2.x: cgroup v1 deprecation) are not output
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ctr %v: %v: %s%s", args, err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// assertClean checks that no eddy container and no active snapshot is left.
func (e *ctrEnv) assertClean(t *testing.T) {
	t.Helper()
	if out := e.ctr(t, "containers", "ls", "-q"); out != "" {
		t.Errorf("containers left: %q", out)
	}
	if out := e.ctr(t, "snapshots", "--snapshotter", "overlayfs", "ls"); strings.Contains(out, "eddy-") {
		t.Errorf("snapshots left:\n%s", out)
	}
	if out := e.ctr(t, "tasks", "ls", "-q"); out != "" {
		t.Errorf("tasks left: %q", out)
	}
}

func (e *ctrEnv) importEnv(t testing.TB, name string, gz bool, at time.Time) envs.Version {
	t.Helper()
	v, err := envs.ImportReader(context.Background(), e.share, name, bytes.NewReader(busyboxImage(t, gz)), at)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *ctrEnv) spec(id string, cmd ...string) runtime.Spec {
	return runtime.Spec{ID: id, Command: cmd, Uid: nobody, Gid: nobody, LogDir: filepath.Join(e.share, "logs", id),
		Container: &runtime.Container{Env: "busy", DataDir: e.data}}
}

func startWait(t *testing.T, rt *runtime.Runtime, spec runtime.Spec) (runtime.Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	run, err := rt.Start(ctx, spec)
	if err != nil {
		t.Fatalf("start %s: %v", spec.ID, err)
	}
	took := time.Since(t0)
	res, err := run.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %s: %v", spec.ID, err)
	}
	return res, took
}

func TestContainerEnvRunAndReuse(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		e := ertContainerd(t, d)
		e.importEnv(t, "busy", false, time.Now().Add(-time.Hour))

		spec := e.spec("ert-c1", "sh", "-c", `echo hello-from-container; echo to-err >&2
	echo "$EDDY_TASK_ID $EDDY_SHARED_DIR $FOO $CUDA_VISIBLE_DEVICES" > /shared/out.txt; id -u >> /shared/out.txt; id -G >> /shared/out.txt
	pwd >> /shared/out.txt; exit 42`)
		spec.Env = []string{"FOO=bar"}
		spec.GPUs = []string{"1"}
		spec.MemBytes = 64 << 20
		spec.Cores = 1
		spec.WorkDir = "/work"
		res, coldStart := startWait(t, e.rt, spec)
		if res.ExitCode != 42 || res.OOMKilled || res.Err != "" {
			t.Fatalf("result %+v", res)
		}
		if out := readLog(t, spec.LogDir, "stdout.log"); out != "hello-from-container\n" {
			t.Errorf("stdout %q", out)
		}
		if out := readLog(t, spec.LogDir, "stderr.log"); out != "to-err\n" {
			t.Errorf("stderr %q", out)
		}
		b, err := os.ReadFile(filepath.Join(e.data, "out.txt"))
		if err != nil {
			t.Fatalf("the container did not write into /shared: %v", err)
		}
		if want := "ert-c1 /shared bar 1\n65534\n65534\n/work\n"; string(b) != want {
			t.Errorf("out.txt %q, want %q", b, want)
		}
		st := e.rt.ContainerStats()
		if st.Imports != 1 || st.ImportSkips != 0 {
			t.Fatalf("after first task: %+v", st)
		}
		images := e.ctr(t, "images", "ls", "-q")

		// Second task, same version: no import; output of many lines arrives complete.
		spec2 := e.spec("ert-c2", "sh", "-c", `i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done`)
		res, warmStart := startWait(t, e.rt, spec2)
		if res.ExitCode != 0 {
			t.Fatalf("result %+v", res)
		}
		out, errOut := readLog(t, spec2.LogDir, "stdout.log"), readLog(t, spec2.LogDir, "stderr.log")
		if strings.Count(out, "\n") != 3000 || !strings.HasSuffix(out, "out2999\n") || strings.Count(errOut, "\n") != 3000 || !strings.HasSuffix(errOut, "err2999\n") {
			t.Errorf("lost output: %d stdout lines, %d stderr lines", strings.Count(out, "\n"), strings.Count(errOut, "\n"))
		}
		st = e.rt.ContainerStats()
		if st.Imports != 1 || st.ImportSkips != 1 {
			t.Fatalf("second task re-imported: %+v", st)
		}
		if got, err := e.rt.ImportedEnvs(context.Background()); err != nil || len(got) != 1 || !strings.HasPrefix(got[0], "containers/busy/busy_") {
			t.Errorf("ImportedEnvs %v %v", got, err)
		}
		if again := e.ctr(t, "images", "ls", "-q"); again != images {
			t.Errorf("images changed without a new version: %q -> %q", images, again)
		}
		t.Logf("start-to-container-start: needs import (local file, %d bytes) %v; already imported %v", st.ImportBytes, coldStart, warmStart)

		// A new version (gzipped this time) is imported once and replaces the old image.
		v2 := e.importEnv(t, "busy", true, time.Now())
		res, _ = startWait(t, e.rt, e.spec("ert-c3", "true"))
		if st = e.rt.ContainerStats(); res.ExitCode != 0 || st.Imports != 2 {
			t.Fatalf("new version: %+v %+v", res, st)
		}
		if imgs := e.ctr(t, "images", "ls", "-q"); !strings.Contains(imgs, fmt.Sprintf(":%d", v2.Timestamp)) {
			t.Errorf("images %q lack version %d", imgs, v2.Timestamp)
		}
		e.assertClean(t)
	})
}

func TestContainerKillOOMAndErrors(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		e := ertContainerd(t, d)
		e.importEnv(t, "busy", false, time.Now())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()

		// Kill: the task and everything in it stop, and nothing is left behind.
		spec := e.spec("ert-ck", "sh", "-c", "sleep 1000 & echo started; sleep 1001")
		run, err := e.rt.Start(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(spec.LogDir, "stdout.log"))
			return string(b) == "started\n"
		})
		if err := run.Kill(ctx); err != nil {
			t.Fatalf("kill: %v", err)
		}
		res, err := run.Wait(ctx)
		if err != nil || res.ExitCode != 137 || res.Signal != "SIGKILL" || res.OOMKilled {
			t.Fatalf("killed: %+v %v", res, err)
		}

		// Memory limit: OOM-killed and reported as such.
		spec = e.spec("ert-coom", "tail", "/dev/zero")
		spec.MemBytes = 32 << 20
		res, _ = startWait(t, e.rt, spec)
		if !res.OOMKilled || res.ExitCode != 137 {
			t.Fatalf("oom: %+v", res)
		}

		// Errors: unknown environment, registry image that cannot be pulled, root refused.
		_, err = e.rt.Start(ctx, runtime.Spec{ID: "ert-cx", Command: []string{"true"}, Uid: nobody, Gid: nobody,
			LogDir: filepath.Join(e.share, "logs", "x"), Container: &runtime.Container{Env: "nope", DataDir: e.data}})
		if !errors.Is(err, runtime.ErrEnvNotFound) {
			t.Errorf("missing env: %v", err)
		}
		_, err = e.rt.Start(ctx, runtime.Spec{ID: "ert-cy", Command: []string{"true"}, Uid: nobody, Gid: nobody,
			LogDir: filepath.Join(e.share, "logs", "y"), Container: &runtime.Container{Image: "127.0.0.1:1/ert/none:latest", DataDir: e.data}})
		if err == nil || !strings.Contains(err.Error(), "pull") {
			t.Errorf("unpullable image: %v", err)
		}
		root := e.spec("ert-cz", "true")
		root.Uid = 0
		if _, err := e.rt.Start(ctx, root); !errors.Is(err, runtime.ErrRootRefused) {
			t.Errorf("root: %v", err)
		}
		e.assertClean(t)
	})
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestContainerReadoptAfterRestart(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		e := ertContainerd(t, d)
		e.importEnv(t, "busy", false, time.Now())
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		long := e.spec("ert-clong", "sh", "-c", "echo before; sleep 1000")
		long.GPUs = []string{"1", "3"} // no such devices here: only the reservation is at stake
		if _, err := e.rt.Start(ctx, long); err != nil {
			t.Fatal(err)
		}
		// The short task prints, then ends while the daemon is away: its output
		// must be in the log before the daemon goes, its exit status recovered after.
		short := e.spec("ert-cshort", "sh", "-c", "echo done; sleep 0.3; exit 3")
		if _, err := e.rt.Start(ctx, short); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, func() bool {
			b, _ := os.ReadFile(filepath.Join(long.LogDir, "stdout.log"))
			c, _ := os.ReadFile(filepath.Join(short.LogDir, "stdout.log"))
			return string(b) == "before\n" && string(c) == "done\n"
		})
		// The daemon goes away (its private containerd too); the short task ends meanwhile.
		if err := e.rt.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
		cfg := e.cfg
		rt2, err := runtime.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		e.rt = rt2
		t.Cleanup(func() { rt2.Close() })
		adopted := rt2.Adopted()
		if len(adopted) != 2 || adopted["ert-clong"] == nil || adopted["ert-cshort"] == nil {
			t.Fatalf("adopted %v", adopted)
		}
		if _, ok := rt2.Running("ert-clong"); !ok {
			t.Error("adopted container not listed as running")
		}
		// The GPUs the container holds come back with it, so the agent reserves
		// them again instead of handing them to the next task.
		gpus := map[string][]string{}
		for _, a := range rt2.Adoptees() {
			gpus[a.ID] = a.GPUs
		}
		if got := gpus["ert-clong"]; !slices.Equal(got, []string{"1", "3"}) || len(gpus["ert-cshort"]) != 0 {
			t.Errorf("adoptees' GPUs %v, want ert-clong [1 3] and none for ert-cshort", gpus)
		}
		res, err := adopted["ert-cshort"].Wait(ctx)
		if d.keepsExitedTasks && (err != nil || res.ExitCode != 3) {
			t.Fatalf("finished while away: %+v %v", res, err)
		}
		if !d.keepsExitedTasks && (err != nil || !res.Unknown || res.ExitCode != -1) {
			// The daemon reaped the short task's shim, exit status and all, when it
			// started: the task is still accounted for, as ended with an unknown status.
			t.Fatalf("%s: a container that ended while containerd was down: %+v %v, want an unknown exit status", d.name, res, err)
		}
		if err := adopted["ert-clong"].Kill(ctx); err != nil {
			t.Fatal(err)
		}
		if res, err := adopted["ert-clong"].Wait(ctx); err != nil || res.ExitCode != 137 {
			t.Fatalf("adopted kill: %+v %v", res, err)
		}
		if out := readLog(t, short.LogDir, "stdout.log"); out != "done\n" {
			t.Errorf("short stdout %q", out)
		}
		e.assertClean(t)
	})
}

func TestContainerPruneKeepsInUse(t *testing.T) {
	forEachContainerd(t, func(t *testing.T, d containerdDaemon) {
		e := ertContainerd(t, d)
		old := time.Now().Add(-48 * time.Hour)
		v1 := e.importEnv(t, "busy", false, old)
		v2 := e.importEnv(t, "busy", false, old.Add(time.Hour))
		v3 := e.importEnv(t, "busy", false, old.Add(2*time.Hour))
		for _, v := range []envs.Version{v1, v2, v3} {
			mt := time.Unix(v.Timestamp, 0)
			os.Chtimes(v.Path, mt, mt)
		}
		// v1 is what a queued task was submitted with; v3 is the newest; v2 goes.
		queued := map[string]bool{v1.Path: true}
		rep, err := envs.Prune(context.Background(), e.share, envs.PruneOptions{Keep: 1, Grace: time.Hour,
			InUse: func(p string) bool { return queued[p] || e.rt.EnvInUse(p) }})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Removed) != 1 || rep.Removed[0].Path != v2.Path {
			t.Fatalf("removed %+v", rep.Removed)
		}
		for _, v := range []envs.Version{v1, v3} {
			if _, err := os.Stat(v.Path); err != nil {
				t.Errorf("%s removed", v.Rel)
			}
		}
		// The newest version still runs.
		res, _ := startWait(t, e.rt, e.spec("ert-cp", "sh", "-c", "exit 5"))
		if res.ExitCode != 5 {
			t.Fatalf("%+v", res)
		}
		e.assertClean(t)
	})
}

// BenchmarkContainerStart measures Start (image ready + container created + task started) for
// an environment already imported, and for one that needs importing from a local, page-cached
// tarball (the case of a tarball warm in eddy's cache). ERT_BENCH_MB sets the payload size.
func BenchmarkContainerStart(b *testing.B) {
	mb := 64
	if v, err := strconv.Atoi(os.Getenv("ERT_BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	for _, d := range containerdDaemons {
		b.Run(d.name, func(b *testing.B) {
			e := ertContainerd(b, d)
			img := busyboxImageSized(b, false, mb<<20)
			ctx := context.Background()
			run := func(b *testing.B, id string) {
				spec := e.spec(id, "true")
				b.StartTimer()
				r, err := e.rt.Start(ctx, spec)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if res, err := r.Wait(ctx); err != nil || res.ExitCode != 0 {
					b.Fatalf("%+v %v", res, err)
				}
			}
			n := 0
			b.Run(fmt.Sprintf("import-%dMiB", mb), func(b *testing.B) {
				b.StopTimer()
				for i := 0; i < b.N; i++ {
					if _, err := envs.ImportReader(ctx, e.share, "busy", bytes.NewReader(img), time.Now()); err != nil {
						b.Fatal(err)
					}
					n++
					run(b, fmt.Sprintf("ert-bi%d", n))
				}
			})
			b.Run("imported", func(b *testing.B) {
				b.StopTimer()
				for i := 0; i < b.N; i++ {
					n++
					run(b, fmt.Sprintf("ert-bw%d", n))
				}
			})
		})
	}
}
