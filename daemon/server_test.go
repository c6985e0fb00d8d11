package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
)

// fakeCache records the names the API hands it.
type fakeCache struct {
	mu    sync.Mutex
	calls []string // guarded by mu: "op name"
}

func (f *fakeCache) record(op, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+name)
}

func (f *fakeCache) Stats() cache.Stats {
	return cache.Stats{HitBytes: 10, MissBytes: 20, CachedBytes: 30, Files: 2, PassthroughOpens: 1}
}

func (f *fakeCache) List(_ context.Context, prefix string) ([]cache.FileInfo, error) {
	f.record("ls", prefix)
	return []cache.FileInfo{{Path: "a/b", Size: 100, CachedBytes: 50, Percent: 50}}, nil
}

func (f *fakeCache) Warm(_ context.Context, name string, progress func(cache.Progress)) error {
	f.record("warm", name)
	if name == "missing" {
		return fmt.Errorf("warm %s: %w", name, syscall.ENOENT)
	}
	progress(cache.Progress{Path: name, Files: 1, Bytes: 100, BytesDone: 100, BytesFetch: 100, FilesDone: 1})
	return nil
}

func (f *fakeCache) Pin(_ context.Context, name string) error   { f.record("pin", name); return nil }
func (f *fakeCache) Unpin(_ context.Context, name string) error { f.record("unpin", name); return nil }
func (f *fakeCache) Evict(_ context.Context, name string) error {
	f.record("evict", name)
	if name == "x" {
		return errors.New("boom")
	}
	return nil
}

func TestResolve(t *testing.T) {
	s := newAPIServer(nil, "/mnt/share", "/srv", nil, slog.Default())
	cases := []struct {
		p, cwd string
		want   string
		ok     bool
	}{
		{"data/x", "", "data/x", true},
		{"data/x", "/root", "data/x", true},
		{"x", "/mnt/share/data", "data/x", true},
		{"../y", "/mnt/share/data", "y", true},
		{"../../etc/passwd", "/mnt/share/data", "", false},
		{"/mnt/share/data/x", "", "data/x", true},
		{"/mnt/share", "", ".", true},
		{"/mnt/share/", "", ".", true},
		{"/mnt/share2/x", "", "", false},
		{"/etc/passwd", "", "", false},
		{"../x", "", "", false},
		{"a/../../x", "", "", false},
		{"", "", ".", true},
		{"", "/mnt/share/data", "data", true},
		{"a\x00b", "", "", false},
	}
	for _, c := range cases {
		got, err := s.resolve(c.p, c.cwd)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("resolve(%q, %q) = %q, %v; want %q ok=%v", c.p, c.cwd, got, err, c.want, c.ok)
		}
	}
}

// startTestAPI serves the API for fc on a unix socket and returns a client.
func startTestAPI(t *testing.T, fc CacheControl) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "edm-api", "eddy.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}
	s := newAPIServer(fc, "/mnt/share", "/srv", func() api.Health { return api.Health{Status: "ok", Mount: "/mnt/share"} }, slog.Default())
	srv := serveHTTP(l, s, slog.Default())
	t.Cleanup(func() { srv.Close() })
	return api.NewUnix(sock)
}

func TestAPI(t *testing.T) {
	fc := &fakeCache{}
	cl := startTestAPI(t, fc)
	ctx := context.Background()

	h, err := cl.Health(ctx)
	if err != nil || h.Status != "ok" {
		t.Fatalf("health = %+v, %v", h, err)
	}
	st, err := cl.CacheStats(ctx)
	if err != nil || st.MissBytes != 20 || st.Mount != "/mnt/share" {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	// The JSON keys are the CLI's contract.
	var raw map[string]any
	if err := cl.Do(ctx, http.MethodGet, "/v1/cache/stats", nil, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hit_bytes", "miss_bytes", "cached_bytes", "files", "evictions", "passthrough_opens", "errors"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("stats JSON lacks %q: %v", k, raw)
		}
	}
	files, err := cl.CacheList(ctx, "/mnt/share/a", "")
	if err != nil || len(files) != 1 {
		t.Fatalf("ls = %v, %v", files, err)
	}
	if _, err := cl.CacheList(ctx, "../etc", ""); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Fatalf("ls ../etc: err = %v, want an escape error", err)
	}
	var events []api.WarmEvent
	err = cl.CacheWarm(ctx, api.PathsRequest{Paths: []string{"d/f", "missing"}}, func(ev api.WarmEvent) { events = append(events, ev) })
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("warm err = %v, want a failure naming 'missing'", err)
	}
	var done int
	for _, ev := range events {
		if ev.Done {
			done++
		}
	}
	if done != 2 {
		t.Fatalf("warm events = %+v, want 2 done lines", events)
	}
	resp, err := cl.CacheEvict(ctx, api.PathsRequest{Paths: []string{"ok", "x", "/elsewhere"}})
	if err != nil || len(resp.Results) != 3 || resp.Results[0].Error != "" || resp.Results[1].Error == "" || resp.Results[2].Error == "" {
		t.Fatalf("evict = %+v, %v", resp, err)
	}
	if _, err := cl.CachePin(ctx, api.PathsRequest{Paths: []string{"sub"}, Cwd: "/mnt/share/data"}); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	calls := strings.Join(fc.calls, ",")
	fc.mu.Unlock()
	if want := "ls a,warm d/f,warm missing,evict ok,evict x,pin data/sub"; calls != want {
		t.Fatalf("calls = %s, want %s", calls, want)
	}
}

func TestAPIBounds(t *testing.T) {
	cl := startTestAPI(t, &fakeCache{})
	ctx := context.Background()
	big := api.PathsRequest{Paths: []string{strings.Repeat("a", api.MaxRequestBody+10)}}
	var ae *api.Error
	if _, err := cl.CachePin(ctx, big); !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: err = %v, want 413", err)
	}
	if _, err := cl.CachePin(ctx, api.PathsRequest{}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("no paths: err = %v, want 400", err)
	}
}

func TestListenUnixRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := listenUnix(sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: err = %v, want 'in use'", err)
	}
	l.Close()
	// A stale socket file (no listener) is replaced. net.UnixListener.Close
	// removes the file, so leave a stale one behind explicitly.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	l2, err := listenUnix(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestRequireToken(t *testing.T) {
	h := RequireToken("s3cret", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	cases := []struct {
		auth string
		want int
	}{
		{"", 401}, {"Bearer nope", 401}, {"Bearer s3cret", 204}, {"s3cret", 401},
	}
	for _, c := range cases {
		rec := &recorder{h: http.Header{}}
		r, _ := http.NewRequest("GET", "/v1/health", nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		h.ServeHTTP(rec, r)
		if rec.code != c.want {
			t.Errorf("auth %q: status %d, want %d", c.auth, rec.code, c.want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(code int)        { r.code = code }
