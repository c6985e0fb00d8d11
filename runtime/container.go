package runtime

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sync/singleflight"

	"github.com/eddy-cluster/eddy/runtime/envs"
)

// Labels eddy puts on containerd objects.
const (
	labelTaskID  = "eddy.task-id"
	labelLogDir  = "eddy.log-dir"
	labelCgroup  = "eddy.cgroup"
	labelUID     = "eddy.uid"
	labelGID     = "eddy.gid"
	labelGPUs    = "eddy.gpus" // comma-separated GPU IDs the task was given (absent: none)
	labelEnv     = "eddy.env"
	labelEnvFile = "eddy.env.file" // tarball path relative to the share
	labelEnvSize = "eddy.env.size"
	labelEnvTime = "eddy.env.mtime"
)

// ContainerStats counts what the container runtime did since New.
type ContainerStats struct {
	Imports     int64 `json:"imports"`      // tarballs imported into containerd
	ImportBytes int64 `json:"import_bytes"` // tarball bytes read for imports
	ImportSkips int64 `json:"import_skips"` // starts that found their version already imported
	Pulls       int64 `json:"pulls"`
	Adopted     int64 `json:"adopted"` // running containers re-adopted at New
	CleanedUp   int64 `json:"cleaned_up"`
}

// containerRuntime runs container tasks through containerd.
type containerRuntime struct {
	r      *Runtime
	client *containerd.Client
	priv   *privateContainerd // nil when using the node's containerd
	ns     string
	bg     context.Context // namespaced; cancelled by close
	cancel context.CancelFunc
	sf     singleflight.Group // one import per image name at a time

	imports, importBytes, importSkips, pulls, adopted, cleaned atomic.Int64

	mu       sync.Mutex
	ooms     map[string]bool           // guarded by mu; container IDs with an OOM event
	adoptees map[string]*containerTask // guarded by mu; re-adopted at New, by task ID
	using    map[string]int            // guarded by mu; tarball paths being imported
}

func newContainerRuntime(ctx context.Context, r *Runtime) (*containerRuntime, error) {
	c := &containerRuntime{r: r, ns: r.cfg.ContainerdNamespace, ooms: map[string]bool{},
		adoptees: map[string]*containerTask{}, using: map[string]int{}}
	sock := r.cfg.ContainerdSocket
	if sock == "" {
		p, err := startContainerd(ctx, r.cfg.ContainerdDir)
		if err != nil {
			return nil, err
		}
		c.priv, sock = p, p.sock
	}
	client, err := containerd.New(sock, containerd.WithDefaultNamespace(c.ns), containerd.WithTimeout(10*time.Second))
	if err != nil {
		c.stopPrivate()
		return nil, fmt.Errorf("connect %s: %w", sock, err)
	}
	c.client = client
	c.bg, c.cancel = context.WithCancel(namespaces.WithNamespace(context.Background(), c.ns))
	if ok, err := client.IsServing(c.bg); !ok {
		c.close()
		return nil, fmt.Errorf("containerd at %s not serving: %v", sock, err)
	}
	c.watchOOM()
	if err := c.reconcile(ctx); err != nil {
		r.log.Warn("reconcile containers", "err", err)
	}
	return c, nil
}

func (c *containerRuntime) stopPrivate() {
	if c.priv != nil {
		_ = c.priv.stop()
	}
}

func (c *containerRuntime) close() error {
	c.cancel()
	err := c.client.Close()
	c.stopPrivate()
	return err
}

// watchOOM records containers that had an OOM event (a second source besides the cgroup's
// counter, which disappears with the cgroup).
func (c *containerRuntime) watchOOM() {
	ch, errs := c.client.EventService().Subscribe(c.bg, `topic=="/tasks/oom"`)
	go func() {
		for {
			select {
			case env := <-ch:
				if env == nil || env.Event == nil {
					continue
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if e, ok := v.(*apievents.TaskOOM); ok {
					c.mu.Lock()
					c.ooms[e.ContainerID] = true
					c.mu.Unlock()
				}
			case <-errs:
				return
			case <-c.bg.Done():
				return
			}
		}
	}()
}

func (c *containerRuntime) stats() ContainerStats {
	return ContainerStats{Imports: c.imports.Load(), ImportBytes: c.importBytes.Load(),
		ImportSkips: c.importSkips.Load(), Pulls: c.pulls.Load(), Adopted: c.adopted.Load(), CleanedUp: c.cleaned.Load()}
}

// ContainerStats reports import/pull counters (zero without containerd).
func (r *Runtime) ContainerStats() ContainerStats {
	c := r.ctr.Load()
	if c == nil {
		return ContainerStats{}
	}
	return c.stats()
}

// Adopted returns the tasks an earlier daemon left, by task ID, until Forget: containers found
// running (or finished but not yet collected), with their exit status; process tasks from the
// state directory, running or ended while no daemon was there, with their exit status as their
// reaper recorded it (Result.Unknown when it could not); and process tasks found in a cgroup
// with no state entry, whose exit status is unknown. Wait and Kill work as for tasks started
// here; all are cleaned up when they end, whether or not anyone claims them.
func (r *Runtime) Adopted() map[string]Running {
	out := map[string]Running{}
	r.mu.Lock()
	for id, t := range r.orphans {
		out[id] = t
	}
	r.mu.Unlock()
	c := r.ctr.Load()
	if c == nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, t := range c.adoptees {
		out[id] = t
	}
	return out
}

// EnvInUse reports whether this node is importing the tarball at path right now (a hook for
// envs.PruneOptions.InUse).
func (r *Runtime) EnvInUse(path string) bool {
	c := r.ctr.Load()
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.using[path] > 0
}

func containerID(taskID string) string { return "eddy-" + taskID }

// imageName is the containerd image name of an environment version.
func imageName(v envs.Version) string {
	return fmt.Sprintf("eddy.env/%s/%s:%d", v.Source, strings.ToLower(v.Env), v.Timestamp)
}

// envImage returns the image of an environment version (file, relative to the share; the
// newest when empty), importing and unpacking it when this containerd does not have that
// version yet.
func (c *containerRuntime) envImage(ctx context.Context, taskID, env, file string) (containerd.Image, StartInfo, error) {
	var info StartInfo
	if c.r.cfg.ShareRoot == "" {
		return nil, info, errors.New("no share root configured to find environments in")
	}
	var (
		v   envs.Version
		err error
	)
	if file != "" {
		v, err = envs.Lookup(c.r.cfg.ShareRoot, env, file)
	} else {
		v, err = envs.Newest(c.r.cfg.ShareRoot, env)
	}
	switch {
	case errors.Is(err, envs.ErrNotFound) && file != "":
		return nil, info, fmt.Errorf("%w: %q version %s is no longer on the share", ErrEnvNotFound, env, file)
	case errors.Is(err, envs.ErrNotFound):
		return nil, info, fmt.Errorf("%w: %q (looked in %s and %s)", ErrEnvNotFound, env, envs.Dir, envs.KohakuDir)
	case err != nil:
		return nil, info, err
	}
	info.EnvFile = v.Rel
	name := imageName(v)
	res, err, _ := c.sf.Do(name, func() (any, error) { return c.ensureImported(ctx, taskID, v, name) })
	if err != nil {
		return nil, info, err
	}
	if n := res.(int64); n >= 0 {
		info.Imported, info.ImportBytes = true, n
	}
	img, err := c.client.GetImage(ctx, name)
	return img, info, err
}

// ensureImported imports version v as image name unless this containerd has it already. It
// returns the tarball bytes read for an import, or -1 when the version was imported before.
func (c *containerRuntime) ensureImported(ctx context.Context, taskID string, v envs.Version, name string) (int64, error) {
	snap := c.r.cfg.Snapshotter
	if img, err := c.client.GetImage(ctx, name); err == nil {
		l := img.Labels()
		if l[labelEnvSize] == strconv.FormatInt(v.Size, 10) && l[labelEnvTime] == strconv.FormatInt(v.ModTime.UnixNano(), 10) {
			if ok, err := img.IsUnpacked(ctx, snap); err == nil && ok {
				c.importSkips.Add(1)
				return -1, nil
			}
			if err := img.Unpack(ctx, snap); err != nil {
				return 0, fmt.Errorf("unpack %s: %w", name, err)
			}
			c.importSkips.Add(1)
			return -1, nil
		}
		// Same name, different file (rewritten in place): import again.
	} else if !errdefs.IsNotFound(err) {
		return 0, fmt.Errorf("look up image %s: %w", name, err)
	}

	c.mu.Lock()
	c.using[v.Path]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.using[v.Path]--; c.using[v.Path] <= 0 {
			delete(c.using, v.Path)
		}
		c.mu.Unlock()
	}()
	if c.r.lease {
		host, _ := os.Hostname()
		release, err := envs.Lease(v, host+"-"+taskID)
		if err != nil {
			c.r.log.Warn("no lease on tarball", "err", err)
		}
		defer release()
	}
	start := time.Now()
	f, err := os.Open(v.Path)
	if err != nil {
		return 0, fmt.Errorf("open tarball: %w", err)
	}
	defer f.Close()
	counted := &countingReader{r: bufio.NewReaderSize(f, 1<<20)}
	var rd io.Reader = counted
	if v.Gzip {
		zr, err := gzip.NewReader(counted)
		if err != nil {
			return 0, fmt.Errorf("tarball %s: %w", v.Rel, err)
		}
		defer zr.Close()
		rd = zr
	}
	if _, err := c.client.Import(ctx, rd, containerd.WithIndexName(name)); err != nil {
		return 0, fmt.Errorf("import %s: %w", v.Rel, err)
	}
	read := time.Since(start)
	img, err := c.client.GetImage(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("imported image %s: %w", name, err)
	}
	if err := img.Unpack(ctx, snap); err != nil {
		return 0, fmt.Errorf("unpack %s: %w", name, err)
	}
	// Record which file this version came from, so a rewrite in place is noticed.
	meta := img.Metadata()
	meta.Labels = map[string]string{labelEnv: v.Env, labelEnvFile: v.Rel,
		labelEnvSize: strconv.FormatInt(v.Size, 10), labelEnvTime: strconv.FormatInt(v.ModTime.UnixNano(), 10)}
	if _, err := c.client.ImageService().Update(ctx, meta, "labels"); err != nil {
		return 0, fmt.Errorf("label image %s: %w", name, err)
	}
	c.imports.Add(1)
	c.importBytes.Add(counted.n)
	c.r.log.Info("environment imported", "env", v.Env, "file", v.Rel, "image", name, "digest", img.Target().Digest,
		"bytes", counted.n, "read_import", read, "total", time.Since(start))
	c.dropOlderVersions(ctx, v)
	return counted.n, nil
}

// dropOlderVersions deletes the images of older versions of the same environment; running
// containers keep their snapshots (containerd's GC keeps what a container references).
func (c *containerRuntime) dropOlderVersions(ctx context.Context, v envs.Version) {
	imgs, err := c.client.ImageService().List(ctx, fmt.Sprintf(`labels."%s"==%s`, labelEnv, v.Env))
	if err != nil {
		return
	}
	keep := imageName(v)
	for _, im := range imgs {
		if im.Name == keep {
			continue
		}
		_, tsStr, _ := strings.Cut(im.Name[strings.LastIndexByte(im.Name, '/')+1:], ":")
		if ts, err := strconv.ParseInt(tsStr, 10, 64); err == nil && ts < v.Timestamp {
			if err := c.client.ImageService().Delete(ctx, im.Name); err == nil {
				c.r.log.Info("older environment image removed", "image", im.Name)
			}
		}
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// refImage returns a registry image, pulling and unpacking it when it is not present.
func (c *containerRuntime) refImage(ctx context.Context, ref string) (containerd.Image, error) {
	if img, err := c.client.GetImage(ctx, ref); err == nil {
		if ok, _ := img.IsUnpacked(ctx, c.r.cfg.Snapshotter); ok {
			return img, nil
		}
	}
	v, err, _ := c.sf.Do("pull:"+ref, func() (any, error) {
		img, err := c.client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPullSnapshotter(c.r.cfg.Snapshotter))
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		c.pulls.Add(1)
		return img, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(containerd.Image), nil
}

// containerTask is a task running in a containerd container.
type containerTask struct {
	taskEnd // id: the eddy task ID
	c       *containerRuntime
	cid     string // container ID
	cgroup  string // cgroup path relative to the hierarchy roots
	ctr     containerd.Container
	task    containerd.Task
	files   []*os.File
	killed  atomic.Bool
	info    StartInfo // set before start returns
	gpus    []string  // the GPUs it was given (re-adopted tasks: from its label)
}

var _ StartInfoer = (*containerTask)(nil)

// StartInfo says how the task's image was made ready (zero for re-adopted tasks).
func (t *containerTask) StartInfo() StartInfo { return t.info }

func (c *containerRuntime) start(ctx context.Context, spec Spec, sc Scopes) (Running, error) {
	op := fmt.Sprintf("runtime: start container %s", spec.ID)
	ctx = namespaces.WithNamespace(ctx, c.ns)
	t0 := time.Now()
	var (
		img  containerd.Image
		info StartInfo
		err  error
	)
	if spec.Container.Env != "" {
		img, info, err = c.envImage(ctx, spec.ID, spec.Container.Env, spec.Container.EnvFile)
	} else {
		img, err = c.refImage(ctx, spec.Container.Image)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	tImage := time.Since(t0)
	info.ImageReady = tImage

	lay := c.r.cfg.Layout
	mountAt := spec.Container.SharedMount
	if mountAt == "" {
		mountAt = lay.SharedMount
	}
	dataDir := spec.Container.DataDir
	if sc.Shared != "" && (dataDir == "" || filepath.Clean(dataDir) == filepath.Join(c.r.cfg.ShareRoot, SharedDataDir)) {
		// The share's shared data directory by its default name (as the daemon names it):
		// the Layout may rename it.
		dataDir = sc.Shared
	}
	var mounts []specs.Mount
	if dataDir != "" {
		if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%s: data dir %s: not a directory (%v)", op, dataDir, err)
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: dataDir, Destination: mountAt,
			Options: []string{"rbind", "rw"}})
	}
	inside := Scopes{Shared: mountAt}
	for _, b := range []struct {
		host, at string
		env      *string
	}{{sc.User, lay.UserMount, &inside.User}, {sc.Job, lay.JobMount, &inside.Job}, {sc.Scratch, lay.ScratchMount, &inside.Scratch}} {
		if b.host == "" || b.at == "" {
			continue
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: b.host, Destination: b.at,
			Options: []string{"rbind", "rw"}})
		*b.env = b.at
	}
	workDir, err := containerWorkDir(spec.WorkDir, c.r.cfg.ShareRoot, dataDir, mountAt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	cid := containerID(spec.ID)
	cgroup := filepath.Join("/", c.r.cfg.CgroupParent, cid)
	env := taskEnv(spec, inside, false)
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithEnv(env),
		oci.WithUIDGID(spec.Uid, spec.Gid),
		oci.WithMounts(mounts),
		oci.WithCgroup(cgroup),
		oci.WithHostname(cid),
		oci.WithNoNewPrivileges,
	}
	if len(spec.Command) > 0 {
		opts = append(opts, oci.WithProcessArgs(spec.Command...))
	}
	if workDir != "" {
		opts = append(opts, oci.WithProcessCwd(workDir))
	}
	if spec.MemBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(spec.MemBytes)), oci.WithMemorySwap(spec.MemBytes))
	}
	if spec.Cores > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(int64(spec.Cores*period), period))
	}
	opts = append(opts, gpuDevices(spec.GPUs)...)

	stdout, stderr, err := openLogs(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	labels := map[string]string{labelTaskID: spec.ID, labelLogDir: spec.LogDir, labelCgroup: cgroup,
		labelUID: strconv.FormatUint(uint64(spec.Uid), 10), labelGID: strconv.FormatUint(uint64(spec.Gid), 10)}
	if len(spec.GPUs) > 0 {
		// A later daemon that re-adopts the container reserves them again.
		labels[labelGPUs] = strings.Join(spec.GPUs, ",")
	}
	ctr, err := c.client.NewContainer(ctx, cid,
		containerd.WithImage(img),
		containerd.WithSnapshotter(c.r.cfg.Snapshotter),
		containerd.WithNewSnapshot(cid, img),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("%s: create container: %w", op, err)
	}
	t := &containerTask{taskEnd: newTaskEnd(spec.ID), c: c, cid: cid, cgroup: cgroup, ctr: ctr,
		files: []*os.File{stdout, stderr}, info: info, gpus: slices.Clone(spec.GPUs)}
	// Streams to files, and Delete waits for the copy to finish: no lost last lines.
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, stdout, stderr)))
	if err != nil {
		t.cleanup(ctx)
		return nil, fmt.Errorf("%s: create task: %w", op, err)
	}
	t.task = task
	statusC, err := task.Wait(c.bg)
	if err != nil {
		t.cleanup(ctx)
		return nil, fmt.Errorf("%s: wait task: %w", op, err)
	}
	if err := task.Start(ctx); err != nil {
		t.cleanup(ctx)
		return nil, fmt.Errorf("%s: start task: %w", op, err)
	}
	t.res.Started = time.Now()
	t.info.Started = time.Since(t0)
	c.r.log.Info("container task started", "task", spec.ID, "container", cid, "image", img.Name(),
		"pid", task.Pid(), "imported", info.Imported, "image_ready", tImage, "start", t.info.Started)
	go t.wait(statusC)
	return t, nil
}

// containerWorkDir maps a task's working directory to a path inside the container: the share
// root (the default for tasks) means the image's own; a directory under the data directory
// maps to the same place under mountAt; any other path outside the share is taken as a path
// inside the container. Other directories of the share are not in the container: an error.
func containerWorkDir(wd, shareRoot, dataDir, mountAt string) (string, error) {
	if wd == "" {
		return "", nil
	}
	wd = filepath.Clean(wd)
	under := func(dir string) (string, bool) {
		if dir == "" {
			return "", false
		}
		rel, err := filepath.Rel(filepath.Clean(dir), wd)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return "", false
		}
		return rel, true
	}
	if rel, ok := under(dataDir); ok {
		return filepath.Join(mountAt, rel), nil
	}
	if rel, ok := under(shareRoot); ok {
		if rel == "." {
			return "", nil
		}
		return "", fmt.Errorf("work dir %s: only the share's data directory is in the container (at %s)", wd, mountAt)
	}
	return wd, nil
}

// gpuDevices passes the NVIDIA device nodes of the given GPUs (and the control nodes) into
// the container when they exist on this node.
func gpuDevices(gpus []string) []oci.SpecOpts {
	if len(gpus) == 0 {
		return nil
	}
	var opts []oci.SpecOpts
	var paths []string
	for _, g := range gpus {
		paths = append(paths, "/dev/nvidia"+g)
	}
	paths = append(paths, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			opts = append(opts, oci.WithLinuxDevice(p, "rwm"))
		}
	}
	opts = append(opts, oci.WithEnv([]string{"NVIDIA_VISIBLE_DEVICES=" + strings.Join(gpus, ",")}))
	return opts
}

// wait collects the exit status, then deletes the task (which waits for the output copy),
// the container and its snapshot.
func (t *containerTask) wait(statusC <-chan containerd.ExitStatus) {
	var st containerd.ExitStatus
	select {
	case st = <-statusC:
	case <-t.c.bg.Done():
		t.finish(Result{ExitCode: -1, Err: "runtime closed while the container runs (it is re-adopted by the next daemon)"})
		return
	}
	code, exitedAt, err := st.Result()
	ctx, cancel := context.WithTimeout(t.c.bg, time.Minute)
	defer cancel()
	res := Result{ExitCode: int(code), Finished: exitedAt}
	if err != nil {
		res.Err = err.Error()
		res.ExitCode = -1
	}
	if res.Finished.IsZero() {
		res.Finished = time.Now()
	}
	oom := t.c.r.cg.oomKilledAt(t.cgroup)
	if !oom && code == 137 && !t.killed.Load() {
		// The event may trail the exit a little.
		for i := 0; i < 10 && !oom; i++ {
			t.c.mu.Lock()
			oom = t.c.ooms[t.cid]
			t.c.mu.Unlock()
			if !oom {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	res.OOMKilled = oom
	if oom || t.killed.Load() {
		res.Signal = "SIGKILL"
	}
	t.cleanup(ctx)
	t.finish(res)
}

func (t *containerTask) finish(res Result) {
	t.mu.Lock()
	started := t.res.Started
	t.res = res
	t.res.Started = started
	t.mu.Unlock()
	t.c.mu.Lock()
	delete(t.c.ooms, t.cid)
	t.c.mu.Unlock()
	t.c.r.log.Info("container task ended", "task", t.id, "exit_code", res.ExitCode, "oom_killed", res.OOMKilled, "err", res.Err)
	close(t.done)
}

// cleanup removes task, container and snapshot; files are closed after the task's output
// has been copied (task.Delete waits for it).
func (t *containerTask) cleanup(ctx context.Context) {
	if t.task != nil {
		if _, err := t.task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			t.c.r.log.Warn("delete task", "task", t.id, "err", err)
		}
	}
	if err := t.ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		t.c.r.log.Warn("delete container", "task", t.id, "err", err)
	}
	for _, f := range t.files {
		f.Close()
	}
	t.c.cleaned.Add(1)
}

func (t *containerTask) Kill(ctx context.Context) error {
	select {
	case <-t.done:
		return nil
	default:
	}
	t.killed.Store(true)
	kctx := namespaces.WithNamespace(ctx, t.c.ns)
	if err := t.task.Kill(kctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("runtime: kill %s: %w", t.id, err)
	}
	return t.waitKilled(ctx)
}

// reconcile finds eddy's containers left by an earlier daemon: running ones are re-adopted
// (output re-attached to their log files), the rest are deleted with their snapshots.
func (c *containerRuntime) reconcile(ctx context.Context) error {
	ctx = namespaces.WithNamespace(ctx, c.ns)
	ctrs, err := c.client.Containers(ctx, fmt.Sprintf(`labels."%s"`, labelTaskID))
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, ctr := range ctrs {
		labels, err := ctr.Labels(ctx)
		if err != nil {
			continue
		}
		id := labels[labelTaskID]
		t := &containerTask{taskEnd: newTaskEnd(id), c: c, cid: ctr.ID(), cgroup: labels[labelCgroup], ctr: ctr}
		if g := labels[labelGPUs]; g != "" {
			t.gpus = strings.Split(g, ",")
		}
		var attach cio.Attach = func(*cio.FIFOSet) (cio.IO, error) { return nil, nil }
		if dir := labels[labelLogDir]; dir != "" {
			uid, _ := strconv.ParseUint(labels[labelUID], 10, 32)
			gid, _ := strconv.ParseUint(labels[labelGID], 10, 32)
			if out, errOut, err := openLogs(Spec{LogDir: dir, Uid: uint32(uid), Gid: uint32(gid)}); err == nil {
				t.files = []*os.File{out, errOut}
				attach = cio.NewAttach(cio.WithStreams(nil, out, errOut))
			}
		}
		task, err := ctr.Task(ctx, attach)
		if err != nil {
			c.r.log.Info("removing container without a task", "task", id, "container", ctr.ID(), "err", err)
			t.cleanup(ctx)
			if errdefs.IsNotFound(err) {
				// containerd 2.x deletes, when it starts, the task of a container that ended
				// while it was down, exit status and all: the task is accounted for as ended
				// with an unknown status, as a process task whose reaper kept no record.
				c.adoptEnded(ctx, t)
			}
			continue
		}
		t.task = task
		status, err := task.Status(ctx)
		if err != nil {
			t.cleanup(ctx)
			continue
		}
		statusC, err := task.Wait(c.bg)
		if err != nil {
			t.cleanup(ctx)
			continue
		}
		if status.Status == containerd.Created {
			// Never started: nobody waits for it.
			_ = task.Kill(ctx, syscall.SIGKILL)
		}
		if info, err := ctr.Info(ctx); err == nil {
			t.res.Started = info.CreatedAt
		}
		c.adopted.Add(1)
		c.mu.Lock()
		c.adoptees[id] = t
		c.mu.Unlock()
		c.r.mu.Lock()
		c.r.running[id] = t
		c.r.mu.Unlock()
		c.r.log.Info("container re-adopted", "task", id, "container", ctr.ID(), "status", status.Status)
		go t.wait(statusC)
		go func() {
			<-t.done
			c.r.mu.Lock()
			if c.r.running[id] == Running(t) {
				delete(c.r.running, id)
			}
			c.r.mu.Unlock()
		}()
	}
	return nil
}

// adoptEnded lists t, whose container ended while no containerd ran and left no exit status,
// among the adopted tasks, ended with an unknown exit status.
func (c *containerRuntime) adoptEnded(ctx context.Context, t *containerTask) {
	if info, err := t.ctr.Info(ctx); err == nil {
		t.res.Started = info.CreatedAt
	}
	t.finish(Result{ExitCode: -1, Finished: time.Now(), Unknown: true,
		Err: "exit status unknown: the container ended while containerd was down and containerd kept no record"})
	c.adopted.Add(1)
	c.mu.Lock()
	c.adoptees[t.id] = t
	c.mu.Unlock()
}

// ImportedEnvs lists the environment tarballs (paths relative to the share, as in
// envs.Version.Rel) whose images this node's containerd holds, for placement: a node that has
// the version imported starts the task without reading the tarball at all.
//
// A containerd not started yet (see Config.ContainerdLazy) has nothing imported.
func (r *Runtime) ImportedEnvs(ctx context.Context) ([]string, error) {
	c := r.ctr.Load()
	if c == nil {
		return nil, nil
	}
	ctx = namespaces.WithNamespace(ctx, c.ns)
	imgs, err := c.client.ImageService().List(ctx, fmt.Sprintf(`labels."%s"`, labelEnvFile))
	if err != nil {
		return nil, fmt.Errorf("runtime: list imported environments: %w", err)
	}
	var out []string
	for _, im := range imgs {
		out = append(out, im.Labels[labelEnvFile])
	}
	return out, nil
}
