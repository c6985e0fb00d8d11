package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 tests: a real versitygw (an S3 gateway over a POSIX directory) on
// loopback, eddy daemons with --origin s3://..., the truth read and written
// with the minio client.

const (
	s3Access = "EDDYTESTKEY"
	s3Secret = "eddy-test-secret-key"
	s3Bucket = "eddy-bucket"
)

// versitygwBin is the server scripts/versitygw.sh builds.
func versitygwBin(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", ".tools", "versitygw", "bin", "versitygw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("versitygw is not built (%v): run scripts/versitygw.sh (make test does)", err)
	}
	return p
}

// s3Env is one versitygw server and a client of it.
type s3Env struct {
	t    *testing.T
	bin  string
	dir  string // the posix backend's root
	addr string // 127.0.0.1:PORT
	log  string
	cl   *minio.Client

	mu   sync.Mutex
	cmd  *exec.Cmd     // guarded by mu; nil when stopped
	done chan struct{} // guarded by mu
}

// startS3 starts versitygw and creates the bucket. Cleanup stops it by PID.
func startS3(t *testing.T) *s3Env {
	t.Helper()
	needFUSE(t)
	base := t.TempDir()
	e := &s3Env{t: t, bin: versitygwBin(t), dir: filepath.Join(base, "es3-data"), addr: freeAddr(t, "127.0.0.1"),
		log: filepath.Join(base, "es3-versitygw.log")}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			b, _ := os.ReadFile(e.log)
			t.Logf("--- versitygw log ---\n%s", tailString(string(b), 60))
		}
	})
	e.start()
	cl, err := minio.New(e.addr, &minio.Options{Creds: credentials.NewStaticV4(s3Access, s3Secret, ""),
		Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	e.cl = cl
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.MakeBucket(ctx, s3Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return e
}

// start runs the server (again) on the same address and directory.
func (e *s3Env) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.t.Fatal("versitygw already running")
	}
	logf, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(e.bin, "--port", e.addr, "--access", s3Access, "--secret", s3Secret, "--quiet", "posix", e.dir)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	e.cmd, e.done = cmd, done
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			e.cmd = nil
			b, _ := os.ReadFile(e.log)
			e.t.Fatalf("versitygw exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("versitygw not listening on %s after 20s", e.addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the server by PID (SIGTERM, then SIGKILL).
func (e *s3Env) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(5 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	e.cmd = nil
}

// url is the origin spec for prefix in the bucket.
func (e *s3Env) url(prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&path_style=1", s3Bucket, prefix, e.addr)
}

func (e *s3Env) put(key string, data []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.cl.PutObject(ctx, s3Bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
}

func (e *s3Env) get(key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := e.cl.GetObject(ctx, s3Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

// s3Node is an eddy daemon over prefix of e's bucket, with the server's
// keys in its environment (unless the caller set others).
func s3Node(t *testing.T, e *s3Env, prefix string) *node {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", s3Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3Secret)
	return newNode(t, e.url(prefix))
}

// waitCachedNode waits until n's cache holds all size bytes of name.
func waitCachedNode(t *testing.T, n *node, name string, size int64) {
	t.Helper()
	waitFullyCached(t, n.eddy, name, size)
}

func tailString(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func randomBytes(size int, seed uint64) []byte {
	b := make([]byte, size)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
