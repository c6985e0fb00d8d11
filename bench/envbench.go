package bench

// `eddy bench env`: how long a container task takes from submit to its container running,
// with its environment tarball cold (read from an nfs:// origin over the shaped link), warm in
// eddy's cache but not imported, and already imported into the node's containerd.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/internal/ctxio"
	"github.com/eddy-cluster/eddy/runtime/envs"
	"github.com/eddy-cluster/eddy/units"
)

// Environment states measured by RunEnv.
const (
	EnvCold     = "cold"     // tarball on the origin only: read over the link, imported
	EnvWarm     = "warm"     // tarball in eddy's on-disk cache (page cache dropped), imported
	EnvImported = "imported" // image already in the node's containerd: tarball not read
)

// EnvConfig configures RunEnv. Zero fields take defaults.
type EnvConfig struct {
	// Size of the random (incompressible) payload layered on busybox; default 512 MiB.
	Size int64
	// Runs per state; the figures are medians. Default 3.
	Runs int
	// Link is the tbf rate between the origin and the node (default 1gbit; "unshaped" for none).
	Link string
	// States to measure, in this order within each run (default cold, imported, warm).
	States []string
	// Eddy is the binary that runs the daemon (default: this one); EddyVersion goes in the report.
	Eddy, EddyVersion string
	// WorkDir is where the export, cache, mount and containerd live (default /var/tmp).
	WorkDir string
	// Progress receives progress lines (default os.Stderr).
	Progress io.Writer
}

// EnvRun is one measured task.
type EnvRun struct {
	Task string `json:"task"`
	File string `json:"file"` // the environment version it ran
	// SubmitToStartS: from the submit call to the container's process running (scheduler and
	// node are one daemon here, so one clock). The assignment is pushed to the node (its
	// long-poll is answered at the commit); each task is still submitted at a random point of
	// the heartbeat interval, as users' tasks are, so that a wait for the next heartbeat (up
	// to 3 s) would show.
	SubmitToStartS float64 `json:"submit_to_start_s"`
	// NodeStartS: the node's runtime start (image ready, container created and started);
	// ImageS: until the image was ready (reading and importing the tarball when needed).
	NodeStartS  float64 `json:"node_start_s"`
	ImageS      float64 `json:"image_s"`
	Imported    bool    `json:"imported"`
	ImportBytes int64   `json:"import_bytes"`
	// OriginBytes: bytes eddy's cache fetched from the origin during the task.
	OriginBytes int64 `json:"origin_bytes"`
}

// EnvResult is one state with the medians of its runs.
type EnvResult struct {
	State          string   `json:"state"`
	Runs           []EnvRun `json:"runs"`
	SubmitToStartS float64  `json:"submit_to_start_s"`
	NodeStartS     float64  `json:"node_start_s"`
	ImageS         float64  `json:"image_s"`
}

// EnvReport is the result of RunEnv.
type EnvReport struct {
	RunInfo
	Link         string      `json:"link"`
	TarballBytes int64       `json:"tarball_bytes"`
	PayloadBytes int64       `json:"payload_bytes"`
	Runs         int         `json:"runs"`
	Daemon       []string    `json:"daemon_command"`
	Results      []EnvResult `json:"results"`
}

const (
	envBenchName  = "benchenv"
	envBenchToken = "bench-env-token"
	envBenchUID   = 65534 // tasks run as nobody (the runtime refuses root)
	// envHeartbeat is the interval nodes heartbeat at (the scheduler's default).
	envHeartbeat = 3 * time.Second
)

func (c *EnvConfig) setDefaults() error {
	if c.Size <= 0 {
		c.Size = 512 << 20
	}
	if c.Runs <= 0 {
		c.Runs = 3
	}
	if c.Link == "" {
		c.Link = Link1G
	}
	if linkRate(c.Link) == "?" {
		return fmt.Errorf("bench env: unknown link %q (want 1gbit, 10gbit, unshaped or a tc rate such as 500mbit)", c.Link)
	}
	if len(c.States) == 0 {
		c.States = []string{EnvCold, EnvImported, EnvWarm}
	}
	for _, s := range c.States {
		if s != EnvCold && s != EnvWarm && s != EnvImported {
			return fmt.Errorf("bench env: unknown state %q (want cold, warm, imported)", s)
		}
	}
	return runDefaults("bench env", &c.Eddy, &c.WorkDir, &c.Progress)
}

// RunEnv measures submit-to-container-start for a container task whose environment tarball is
// cold, warm in eddy's cache, or already imported: nfs-ganesha exports the share from a server
// network namespace, an eddy daemon in cluster mode (scheduler and worker, private containerd)
// runs in the client namespace with the nfs:// origin, the link between them shaped by tbf.
// Each cold and warm run uses a new version of the environment whose payload differs (so
// containerd shares no layer with an earlier one); imported runs reuse the version just
// imported. Everything started is torn down before it returns.
func RunEnv(ctx context.Context, cfg EnvConfig) (rep *EnvReport, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := needRoot("bench env", "network namespaces, FUSE, containerd, drop_caches", "nfs containers", "containerd", "containerd-shim-runc-v2", "runc", "ganesha.nfsd", "rpcbind"); err != nil {
		return nil, err
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("bench env: busybox-static not installed (scripts/deps.sh containers): %w", err)
	}
	prog := NewProgress(cfg.Progress)
	defer prog.Close()
	rep = &EnvReport{RunInfo: newRunInfo(cfg.EddyVersion, "containerd", "runc", "nfs-ganesha"), Link: cfg.Link, Runs: cfg.Runs,
		PayloadBytes: cfg.Size}

	work, err := os.MkdirTemp(cfg.WorkDir, "ebe-")
	if err != nil {
		return nil, fmt.Errorf("bench env: work dir: %w", err)
	}
	b := &envBench{cfg: &cfg, prog: prog, work: work, busybox: bb, export: filepath.Join(work, "export")}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		rep.Finished = time.Now().UTC()
	}()
	if err := b.setUp(ctx); err != nil {
		return rep, err
	}
	rep.Daemon = b.d.args
	byState := map[string]*EnvResult{}
	for _, s := range cfg.States {
		byState[s] = &EnvResult{State: s}
	}
	for run := 1; run <= cfg.Runs; run++ {
		for _, state := range cfg.States {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			r, err := b.measure(ctx, state, run)
			if err != nil {
				return rep, fmt.Errorf("bench env: %s run %d: %w", state, run, err)
			}
			byState[state].Runs = append(byState[state].Runs, r)
			prog.Printf("  %-8s run %d/%d: submit to container start %6.2f s (node %6.2f s, image ready %6.2f s, imported %v, %s from the origin)",
				state, run, cfg.Runs, r.SubmitToStartS, r.NodeStartS, r.ImageS, r.Imported, units.FormatBytesUpToGiB(r.OriginBytes))
		}
	}
	rep.TarballBytes = b.tarballBytes
	for _, s := range cfg.States {
		r := byState[s]
		var e2e, node, img []float64
		for _, x := range r.Runs {
			e2e, node, img = append(e2e, x.SubmitToStartS), append(node, x.NodeStartS), append(img, x.ImageS)
		}
		r.SubmitToStartS, r.NodeStartS, r.ImageS = round2(median(e2e)), round2(median(node)), round2(median(img))
		rep.Results = append(rep.Results, *r)
	}
	return rep, nil
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// envBench is the running set-up of RunEnv.
type envBench struct {
	cfg     *EnvConfig
	prog    *Progress
	work    string
	export  string
	busybox []byte

	*nfsServer // nil until setUp has started it
	d          *eddyDaemon
	cl         *api.Client

	seed         uint64
	current      envs.Version // the newest version on the share
	imported     bool         // current has been imported by the node
	tarballBytes int64
}

func (b *envBench) setUp(ctx context.Context) error {
	for _, d := range []string{b.work, filepath.Join(b.export, "shared_data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		os.Chmod(d, 0o755)
	}
	var err error
	b.nfsServer, err = startNFSServer(ctx, b.prog, "bench env", "ebe", "10.79.0", b.cfg.Link, b.export)
	if err != nil {
		return err
	}
	listen := b.pair.ClientAddr + ":7071"
	b.d = &eddyDaemon{bin: b.cfg.Eddy, netns: b.pair.Client, origin: b.nfs.URL(), logLevel: "info",
		mnt: filepath.Join(b.work, "mnt"), cacheDir: filepath.Join(b.work, "cache"), socket: filepath.Join(b.work, "eddy.sock"),
		logPath: filepath.Join(b.work, "daemon.log"),
		extra: []string{"--scheduler", "--listen", listen, "--node-name", envBenchName,
			"--containerd-dir", filepath.Join(b.work, "containerd"), "--cache-size", "8G", "--min-free", "1%"},
		env: []string{"EDDY_TOKEN=" + envBenchToken}}
	b.prog.Printf("bench env: eddy daemon (cluster mode, private containerd) in %s", b.pair.Client)
	if err := b.d.start(ctx); err != nil {
		return fmt.Errorf("bench env: %w", err)
	}
	b.cl = api.NewUnix(b.d.socket, api.WithTimeout(time.Minute))
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ns, err := b.cl.Nodes(ctx); err == nil && len(ns) == 1 && ns[0].Up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench env: the node did not come up: %s", logProblems(b.d.logPath, 8))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (b *envBench) close() error {
	var errs []error
	if b.d != nil {
		errs = append(errs, b.d.stop())
	}
	errs = append(errs, b.nfsServer.close())
	os.Remove("/run/containerd/runc/eddy") // runc's per-namespace state dir, when empty
	if mounted := mountsUnder(b.work); len(mounted) > 0 {
		errs = append(errs, fmt.Errorf("bench env: still mounted, %s left in place: %s", b.work, strings.Join(mounted, " ")))
	} else if err := os.RemoveAll(b.work); err != nil {
		errs = append(errs, fmt.Errorf("bench env: remove %s: %w", b.work, err))
	}
	return errors.Join(errs...)
}

// measure prepares the state and times one task.
func (b *envBench) measure(ctx context.Context, state string, run int) (EnvRun, error) {
	switch state {
	case EnvCold, EnvWarm:
		if err := b.newVersion(ctx, run); err != nil {
			return EnvRun{}, err
		}
		if state == EnvWarm {
			b.prog.Begin(fmt.Sprintf("warming %s in eddy's cache", b.current.Rel))
			err := b.cl.CacheWarm(ctx, api.PathsRequest{Paths: []string{b.current.Rel}}, nil)
			if err != nil {
				return EnvRun{}, fmt.Errorf("warm: %w", err)
			}
		}
		if err := dropCaches(); err != nil {
			return EnvRun{}, err
		}
	case EnvImported:
		if b.current.Path == "" {
			if err := b.newVersion(ctx, run); err != nil {
				return EnvRun{}, err
			}
		}
		if !b.imported {
			// Import the newest version first (unmeasured).
			if _, err := b.task(ctx, "import "+b.current.Rel); err != nil {
				return EnvRun{}, err
			}
		}
	}
	// Submit at a random point of the heartbeat interval (the last task's end was reported
	// by a heartbeat just now: submitting at once would always wait the whole interval).
	select {
	case <-ctx.Done():
		return EnvRun{}, ctx.Err()
	case <-time.After(rand.N(envHeartbeat)):
	}
	b.prog.Begin(fmt.Sprintf("%s run %d: container task", state, run))
	r, err := b.task(ctx, state)
	if err != nil {
		return r, err
	}
	want := state != EnvImported
	if r.Imported != want {
		return r, fmt.Errorf("the node imported=%v, want %v (state %s)", r.Imported, want, state)
	}
	if state == EnvWarm && r.OriginBytes > b.current.Size/10 {
		return r, fmt.Errorf("warm run fetched %s from the origin", units.FormatBytesUpToGiB(r.OriginBytes))
	}
	return r, nil
}

// task submits a container task running `true` in the newest environment version and waits
// for it to complete.
func (b *envBench) task(ctx context.Context, what string) (EnvRun, error) {
	before, err := b.cl.CacheStats(ctx)
	if err != nil {
		return EnvRun{}, err
	}
	spec := api.TaskSpec{Name: "bench-env " + what, ContainerEnv: envBenchName, Command: []string{"true"},
		Cores: 1, MemBytes: 256 << 20, Uid: envBenchUID, Gid: envBenchUID}
	t0 := time.Now()
	t, err := b.cl.SubmitTask(ctx, spec)
	if err != nil {
		return EnvRun{}, fmt.Errorf("submit: %w", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for !t.State.Terminal() {
		if time.Now().After(deadline) {
			return EnvRun{}, fmt.Errorf("task %s still %s after 10 min", t.ID, t.State)
		}
		select {
		case <-ctx.Done():
			return EnvRun{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if t, err = b.cl.Task(ctx, t.ID); err != nil {
			return EnvRun{}, err
		}
	}
	if t.State != api.StateCompleted || t.EnvStart == nil || t.Started.IsZero() {
		return EnvRun{}, fmt.Errorf("task %s: %s (%s); daemon log: %s", t.ID, t.State, t.Error, logProblems(b.d.logPath, 6))
	}
	after, err := b.cl.CacheStats(ctx)
	if err != nil {
		return EnvRun{}, err
	}
	b.imported = true
	es := t.EnvStart
	return EnvRun{Task: t.ID, File: es.File, SubmitToStartS: round2(t.Started.Sub(t0).Seconds()), NodeStartS: round2(es.StartS),
		ImageS: round2(es.ImageS), Imported: es.Imported, ImportBytes: es.ImportBytes, OriginBytes: after.MissBytes - before.MissBytes}, nil
}

// newVersion writes a new version of the environment into the export (the origin's side, not
// through eddy) and removes the older ones.
func (b *envBench) newVersion(ctx context.Context, run int) error {
	b.seed++
	b.prog.Begin(fmt.Sprintf("run %d: writing a new environment version (%s payload)", run, units.FormatBytesUpToGiB(b.cfg.Size)))
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeEnvImage(ctx, pw, b.work, b.busybox, b.cfg.Size, b.seed, b.prog)) }()
	v, err := envs.ImportReader(ctx, b.export, envBenchName, pr, time.Now())
	pr.CloseWithError(err)
	if err != nil {
		return fmt.Errorf("write environment: %w", err)
	}
	vs, err := envs.Versions(b.export, envBenchName)
	if err != nil {
		return err
	}
	for _, old := range vs {
		if old.Path != v.Path {
			os.Remove(old.Path)
		}
	}
	b.current, b.imported, b.tarballBytes = v, false, v.Size
	return nil
}

// writeEnvImage writes an OCI-layout image tarball to w: one layer holding /bin/busybox, its
// applet links and payload.bin of size random bytes (from seed: incompressible, and different
// for every seed, so no two versions share a layer).
func writeEnvImage(ctx context.Context, w io.Writer, tmpDir string, busybox []byte, size int64, seed uint64, prog *Progress) error {
	layerF, err := os.CreateTemp(tmpDir, "layer-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(layerF.Name())
	defer layerF.Close()
	lh := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(layerF, lh))
	epoch := time.Unix(0, 0)
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "shared"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(busybox)), ModTime: epoch})
	tw.Write(busybox)
	for _, a := range []string{"sh", "true", "echo", "cat", "sleep"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: epoch})
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
	tw.WriteHeader(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd)), ModTime: epoch})
	tw.Write(passwd)
	if err := tw.WriteHeader(&tar.Header{Name: "payload.bin", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
		return err
	}
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	rng := rand.NewChaCha8(key)
	if _, err := io.CopyBuffer(tw, io.LimitReader(ctxio.Reader(ctx, rng), size), make([]byte, 1<<20)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerSize, err := layerF.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	layerDigest := "sha256:" + hex.EncodeToString(lh.Sum(nil))

	blobs := map[string][]byte{}
	put := func(v any) (string, int) {
		b, _ := json.Marshal(v)
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return "sha256:" + d, len(b)
	}
	cfgDigest, cfgSize := put(map[string]any{
		"architecture": goruntime.GOARCH, "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	mDigest, mSize := put(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
			"platform":    map[string]string{"architecture": goruntime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": "bench.env/payload:latest", "org.opencontainers.image.ref.name": "latest"},
		}},
	})
	ow := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := ow.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := ow.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	names := make([]string, 0, len(blobs))
	for d := range blobs {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, d := range names {
		if err := add("blobs/sha256/"+d, blobs[d]); err != nil {
			return err
		}
	}
	if err := ow.WriteHeader(&tar.Header{Name: "blobs/sha256/" + strings.TrimPrefix(layerDigest, "sha256:"), Typeflag: tar.TypeReg,
		Mode: 0o644, Size: layerSize, ModTime: epoch}); err != nil {
		return err
	}
	if _, err := layerF.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(ow, progressReader{layerF, prog}, make([]byte, 1<<20)); err != nil {
		return err
	}
	return ow.Close()
}

type progressReader struct {
	r    io.Reader
	prog *Progress
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.prog.Add(int64(n), 0)
	return n, err
}
