package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

// WarmConfig configures RunWarm: `eddy cache warm` of a directory of many small files, beside
// `cp -r` of the same directory from the origin.
type WarmConfig struct {
	Eddy        string // eddy binary (default: this executable)
	EddyVersion string
	Files       int   // files in the dataset directory
	FileSize    int64 // bytes per file
	PerDir      int   // files per subdirectory
	Runs        int
	Link        string
	WorkDir     string
	Progress    io.Writer
}

// Methods RunWarm times.
const (
	WarmCopy = "cp-r"       // cp -r from the NFS origin (eddy's nfs:// with --no-cache) to local disk
	WarmEddy = "cache-warm" // eddy cache warm DIR through a daemon with an empty cache
)

// WarmRun is one timed pass over the dataset.
type WarmRun struct {
	Seconds     float64 `json:"seconds"`
	FilesPerSec float64 `json:"files_per_s"`
	MBps        float64 `json:"mb_per_s"`
	// OriginBytes: bytes the server's end of the link sent during the pass.
	OriginBytes int64 `json:"origin_bytes"`
}

// WarmResult holds one method's runs and their medians.
type WarmResult struct {
	Method      string    `json:"method"`
	Runs        []WarmRun `json:"runs"`
	Seconds     float64   `json:"seconds"`
	FilesPerSec float64   `json:"files_per_s"`
	MBps        float64   `json:"mb_per_s"`
}

// WarmReport is what RunWarm returns (and `eddy bench warm --json` prints).
type WarmReport struct {
	RunInfo
	Link     string       `json:"link"`
	Files    int          `json:"files"`
	FileSize int64        `json:"file_bytes"`
	Runs     int          `json:"runs_per_method"`
	Results  []WarmResult `json:"results"`
	// Speedup: cache-warm files/s over cp -r files/s (medians).
	Speedup float64 `json:"speedup"`
}

func (c *WarmConfig) setDefaults() error {
	if c.Files <= 0 {
		c.Files = 100000
	}
	if c.FileSize <= 0 {
		c.FileSize = 16 << 10
	}
	if c.PerDir <= 0 {
		c.PerDir = 1000
	}
	if c.Runs <= 0 {
		c.Runs = 3
	}
	if c.Link == "" {
		c.Link = Link1G
	}
	if linkRate(c.Link) == "?" {
		return fmt.Errorf("bench warm: unknown link %q (want 1gbit, 10gbit, unshaped or a tc rate such as 500mbit)", c.Link)
	}
	return runDefaults("bench warm", &c.Eddy, &c.WorkDir, &c.Progress)
}

// RunWarm puts a dataset of cfg.Files small files on an nfs-ganesha export in a server network
// namespace and times, in a client namespace joined by a shaped veth link, alternately: cp -r
// of the dataset from the origin (eddy's nfs:// origin with --no-cache, the NFS baseline of
// `eddy bench`: this kernel has no NFS client) to local disk, and `eddy cache warm` of it through
// a daemon with an empty cache. Page caches are dropped before each pass. A warm pass must
// report every file and byte cached, and a copy must hold every file, or the run fails.
// Everything started is torn down before it returns.
func RunWarm(ctx context.Context, cfg WarmConfig) (rep *WarmReport, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := needRoot("bench warm", "network namespaces, FUSE, drop_caches", "nfs", "ganesha.nfsd", "rpcbind", "cp"); err != nil {
		return nil, err
	}
	prog := NewProgress(cfg.Progress)
	defer prog.Close()
	rep = &WarmReport{RunInfo: newRunInfo(cfg.EddyVersion, "nfs-ganesha"), Link: cfg.Link,
		Files: cfg.Files, FileSize: cfg.FileSize, Runs: cfg.Runs}
	work, err := os.MkdirTemp(cfg.WorkDir, "ewb-")
	if err != nil {
		return nil, fmt.Errorf("bench warm: work dir: %w", err)
	}
	b := &warmBench{cfg: &cfg, prog: prog, work: work, export: filepath.Join(work, "export")}
	defer func() {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		rep.Finished = time.Now().UTC()
	}()
	if err := b.setUp(ctx); err != nil {
		return rep, err
	}
	byMethod := map[string]*WarmResult{WarmCopy: {Method: WarmCopy}, WarmEddy: {Method: WarmEddy}}
	for run := 1; run <= cfg.Runs; run++ {
		for _, m := range []string{WarmCopy, WarmEddy} {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			r, err := b.measure(ctx, m, run)
			if err != nil {
				return rep, fmt.Errorf("bench warm: %s run %d: %w", m, run, err)
			}
			byMethod[m].Runs = append(byMethod[m].Runs, r)
			prog.Printf("  %-10s run %d/%d: %8.0f files/s, %6.1f MB/s, %.1f s, %s from the origin",
				m, run, cfg.Runs, r.FilesPerSec, r.MBps, r.Seconds, units.FormatBytesUpToGiB(r.OriginBytes))
		}
	}
	for _, m := range []string{WarmCopy, WarmEddy} {
		r := byMethod[m]
		var s, fps, mbps []float64
		for _, x := range r.Runs {
			s, fps, mbps = append(s, x.Seconds), append(fps, x.FilesPerSec), append(mbps, x.MBps)
		}
		r.Seconds, r.FilesPerSec, r.MBps = round2(median(s)), round2(median(fps)), round2(median(mbps))
		rep.Results = append(rep.Results, *r)
	}
	if c := byMethod[WarmCopy].FilesPerSec; c > 0 {
		rep.Speedup = round2(byMethod[WarmEddy].FilesPerSec / c)
	}
	return rep, nil
}

const warmDataset = "small" // the dataset directory Generate makes under the export

type warmBench struct {
	cfg        *WarmConfig
	prog       *Progress
	work       string
	export     string
	*nfsServer // nil until setUp has started it
}

func (b *warmBench) setUp(ctx context.Context) error {
	if err := os.MkdirAll(b.export, 0o755); err != nil {
		return err
	}
	spec := DatasetSpec{SmallCount: b.cfg.Files, SmallSize: b.cfg.FileSize, PerDir: b.cfg.PerDir}
	b.prog.Printf("bench warm: dataset of %d files of %s in %s", b.cfg.Files, units.FormatBytes(b.cfg.FileSize), b.export)
	b.prog.Begin("generate dataset")
	if _, err := Generate(ctx, b.export, spec, b.prog); err != nil {
		return fmt.Errorf("bench warm: %w", err)
	}
	var err error
	b.nfsServer, err = startNFSServer(ctx, b.prog, "bench warm", "ewb", "10.78.0", b.cfg.Link, b.export)
	if err != nil {
		return err
	}
	return nil
}

// daemon returns a daemon in the client namespace over the export: without a cache for the
// copy (the NFS baseline), with an empty one of its own for the warm-up.
func (b *warmBench) daemon(method string, run int) *eddyDaemon {
	dir := filepath.Join(b.work, fmt.Sprintf("%s-%d", method, run))
	return &eddyDaemon{bin: b.cfg.Eddy, netns: b.pair.Client, origin: b.nfs.URL(), logLevel: "info",
		noCache: method == WarmCopy,
		mnt:     filepath.Join(dir, "mnt"), cacheDir: filepath.Join(dir, "cache"), socket: filepath.Join(dir, "eddy.sock"),
		logPath: filepath.Join(dir, "daemon.log"), extra: []string{"--min-free", "1%"}}
}

func (b *warmBench) measure(ctx context.Context, method string, run int) (r WarmRun, err error) {
	d := b.daemon(method, run)
	if err := d.start(ctx); err != nil {
		return r, err
	}
	dir := filepath.Dir(d.mnt)
	defer func() {
		if serr := d.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := dropCaches(); err != nil {
		return r, err
	}
	src := filepath.Join(d.mnt, warmDataset)
	tx0, err := b.originTx()
	if err != nil {
		return r, err
	}
	label := fmt.Sprintf("%s run %d/%d", method, run, b.cfg.Runs)
	b.prog.Begin(label)
	start := time.Now()
	switch method {
	case WarmCopy:
		// cp says nothing while it runs: the progress line shows the bytes the origin has sent.
		stop := b.followOrigin(tx0)
		err = b.copyAll(ctx, src, filepath.Join(dir, "copy"))
		stop()
	case WarmEddy:
		err = b.warm(ctx, d, src)
	}
	secs := time.Since(start).Seconds()
	if err != nil {
		return r, fmt.Errorf("%w (daemon: %s)", err, logProblems(d.logPath, 4))
	}
	tx1, err := b.originTx()
	if err != nil {
		return r, err
	}
	total := float64(b.cfg.Files) * float64(b.cfg.FileSize)
	return WarmRun{Seconds: round2(secs), FilesPerSec: round2(float64(b.cfg.Files) / secs), MBps: round2(total / 1e6 / secs),
		OriginBytes: tx1 - tx0}, nil
}

// followOrigin adds the bytes the origin sends to the progress line, once a second, until the
// returned stop is called.
func (b *warmBench) followOrigin(tx0 int64) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		last := tx0
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if tx, err := b.originTx(); err == nil && tx > last {
				b.prog.Add(tx-last, 0)
				last = tx
			}
		}
	}()
	return func() { close(done); <-exited }
}

// copyAll runs cp -r and checks the copy holds every file.
func (b *warmBench) copyAll(ctx context.Context, src, dst string) error {
	cmd := exec.CommandContext(ctx, "cp", "-r", src, dst)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cp -r: %w: %s", err, strings.TrimSpace(string(out)))
	}
	n := 0
	err := filepath.WalkDir(dst, func(_ string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		return err
	}
	if n != b.cfg.Files {
		return fmt.Errorf("cp -r copied %d files, want %d", n, b.cfg.Files)
	}
	return nil
}

// warm runs eddy cache warm through the daemon's API (as the CLI does), counting its progress,
// and checks the final event reports every file and byte cached.
func (b *warmBench) warm(ctx context.Context, d *eddyDaemon, src string) error {
	cl := api.NewUnix(d.socket, api.WithTimeout(time.Hour))
	var last api.WarmEvent
	var lastBytes, lastFiles int64
	err := cl.CacheWarm(ctx, api.PathsRequest{Paths: []string{src}}, func(ev api.WarmEvent) {
		b.prog.Add(ev.BytesDone-lastBytes, int64(ev.FilesDone)-lastFiles)
		lastBytes, lastFiles = ev.BytesDone, int64(ev.FilesDone)
		if ev.Done {
			last = ev
		}
	})
	if err != nil {
		return fmt.Errorf("cache warm: %w", err)
	}
	want := int64(b.cfg.Files) * b.cfg.FileSize
	if !last.Done || int(last.Files) != b.cfg.Files || last.BytesDone != want {
		return fmt.Errorf("cache warm reported %d files, %d bytes cached; want %d files, %d bytes", last.Files, last.BytesDone, b.cfg.Files, want)
	}
	return nil
}

// originTx is the byte count the server's end of the link has sent. ip netns exec mounts the
// namespace's own /sys, where the veth's counters are (a thread's setns does not move /sys).
func (b *warmBench) originTx() (int64, error) {
	out, err := exec.Command("ip", "netns", "exec", b.pair.Server, "cat",
		"/sys/class/net/"+b.pair.ServerVeth+"/statistics/tx_bytes").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("server tx bytes: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
}

func (b *warmBench) close() error {
	var errs []error
	errs = append(errs, b.nfsServer.close())
	if mounted := mountsUnder(b.work); len(mounted) > 0 {
		errs = append(errs, fmt.Errorf("bench warm: still mounted, %s left in place: %s", b.work, strings.Join(mounted, " ")))
	} else if err := os.RemoveAll(b.work); err != nil {
		errs = append(errs, fmt.Errorf("bench warm: remove %s: %w", b.work, err))
	}
	return errors.Join(errs...)
}
