package topo

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWOptions configures StartVersityGW.
type VersityGWOptions struct {
	// Bin is the versitygw binary (scripts/versitygw.sh builds it).
	Bin string
	// Netns is the (server) network namespace versitygw runs in.
	Netns string
	// Addr and Port are where it listens, reachable from the client side.
	Addr string
	Port int
	// Dir is the root of its posix backend (created): one directory per
	// bucket.
	Dir string
	// Access and Secret are the root user's keys. They reach versitygw in
	// its environment, never on its command line.
	Access, Secret string
	// ReadyFrom is the namespace readiness is checked from (the client
	// side); defaults to Netns.
	ReadyFrom string
	// StartTimeout bounds the wait for it to listen (default 20 s).
	StartTimeout time.Duration
	// AccessLog, when set, is the file versitygw logs every request to
	// (to count what a client asked for).
	AccessLog string
}

// VersityGW is a versitygw S3 gateway over a POSIX directory, running in a
// network namespace in its own process group. Close stops it.
type VersityGW struct {
	opts VersityGWOptions
	// Args is its exact command line, for the record.
	Args []string
	// LogPath is its output.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	waitErr error // guarded by mu; set before done is closed
}

// StartVersityGW starts versitygw in opts.Netns and waits until its port
// answers from opts.ReadyFrom.
func StartVersityGW(ctx context.Context, opts VersityGWOptions) (*VersityGW, error) {
	if opts.Bin == "" || opts.Netns == "" || opts.Addr == "" || opts.Port == 0 || opts.Dir == "" ||
		opts.Access == "" || opts.Secret == "" {
		return nil, errors.New("topo: VersityGWOptions needs Bin, Netns, Addr, Port, Dir, Access and Secret")
	}
	if opts.ReadyFrom == "" {
		opts.ReadyFrom = opts.Netns
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 20 * time.Second
	}
	if _, err := os.Stat(opts.Bin); err != nil {
		return nil, fmt.Errorf("topo: versitygw not built (scripts/versitygw.sh): %w", err)
	}
	data := filepath.Join(opts.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("topo: versitygw dir: %w", err)
	}
	g := &VersityGW{opts: opts, LogPath: filepath.Join(opts.Dir, "versitygw.log"), done: make(chan struct{})}
	logf, err := os.Create(g.LogPath)
	if err != nil {
		return nil, fmt.Errorf("topo: versitygw log: %w", err)
	}
	defer logf.Close()
	args := []string{"--port", g.HostPort(), "--quiet"}
	if opts.AccessLog != "" {
		args = append(args, "--access-log", opts.AccessLog)
	}
	cmd := CommandIn(context.Background(), opts.Netns, opts.Bin, append(args, "posix", data)...)
	g.Args = cmd.Args
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + opts.Dir,
		"ROOT_ACCESS_KEY_ID=" + opts.Access, "ROOT_SECRET_ACCESS_KEY=" + opts.Secret}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("topo: start versitygw: %w", err)
	}
	g.cmd = cmd
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.waitErr = err
		g.mu.Unlock()
		close(g.done)
	}()
	wctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- WaitPort(wctx, opts.ReadyFrom, g.HostPort()) }()
	select {
	case err := <-ready:
		if err != nil {
			_ = g.Close()
			return nil, fmt.Errorf("topo: versitygw not serving: %w: %s", err, g.Logs())
		}
	case <-g.done:
		g.mu.Lock()
		werr := g.waitErr
		g.mu.Unlock()
		return nil, fmt.Errorf("topo: versitygw exited at start (%v): %s", werr, g.Logs())
	}
	return g, nil
}

// HostPort is the listen address, HOST:PORT.
func (g *VersityGW) HostPort() string {
	return net.JoinHostPort(g.opts.Addr, strconv.Itoa(g.opts.Port))
}

// Addr and Port are where it listens.
func (g *VersityGW) Addr() string { return g.opts.Addr }
func (g *VersityGW) Port() int    { return g.opts.Port }

// Endpoint is the http:// URL of the gateway.
func (g *VersityGW) Endpoint() string { return "http://" + g.HostPort() }

// Keys returns the root user's access and secret key.
func (g *VersityGW) Keys() (access, secret string) { return g.opts.Access, g.opts.Secret }

// Client returns a minio client of the gateway whose connections are
// dialled from inside netns (path-style requests, region us-east-1).
func (g *VersityGW) Client(netns string) (*minio.Client, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialIn(ctx, netns, network, addr)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	cl, err := minio.New(g.HostPort(), &minio.Options{Creds: credentials.NewStaticV4(g.opts.Access, g.opts.Secret, ""),
		Region: "us-east-1", BucketLookup: minio.BucketLookupPath, Transport: tr})
	if err != nil {
		return nil, fmt.Errorf("topo: versitygw client: %w", err)
	}
	return cl, nil
}

// Seed creates bucket and uploads every regular file under root to it, the
// key being the file's path relative to root, with the given number of
// uploads at a time. The client is dialled from inside netns.
func (g *VersityGW) Seed(ctx context.Context, netns, bucket, root string, workers int) (files int, bytes int64, err error) {
	cl, err := g.Client(netns)
	if err != nil {
		return 0, 0, err
	}
	if err := cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return 0, 0, fmt.Errorf("topo: make bucket %s: %w", bucket, err)
	}
	var paths []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("topo: seed %s: %w", bucket, err)
	}
	workers = max(workers, 1)
	jobs := make(chan string)
	var (
		mu    sync.Mutex
		errs  []error
		total int64
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				rel, _ := filepath.Rel(root, p)
				info, err := cl.FPutObject(ctx, bucket, filepath.ToSlash(rel), p,
					minio.PutObjectOptions{ContentType: "application/octet-stream"})
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("topo: upload %s: %w", rel, err))
				}
				total += info.Size
				mu.Unlock()
			}
		}()
	}
	for _, p := range paths {
		mu.Lock()
		failed := len(errs) > 0
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return len(paths), total, errors.Join(errs...)
}

// Close stops versitygw (SIGTERM to its group, SIGKILL after 5 s) and
// waits for it.
func (g *VersityGW) Close() error {
	if g.cmd == nil {
		return nil
	}
	return sshStopGroup(g.cmd, g.done, 5*time.Second)
}

// Logs returns the tail of versitygw's output.
func (g *VersityGW) Logs() string {
	b, _ := os.ReadFile(g.LogPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
