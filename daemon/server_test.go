package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/sched"
)

// fakeCache records the names the API hands it.
type fakeCache struct {
	mu    sync.Mutex
	calls []string         // guarded by mu: "op name"
	files []cache.FileInfo // what List answers (nil: one file, a/b)
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
	if f.files != nil {
		return append([]cache.FileInfo(nil), f.files...), nil
	}
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
	switch name {
	case "x":
		return errors.New("boom")
	case "pinned":
		return fmt.Errorf("cache: evict %s: %w", name, cache.ErrPinned)
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
	l, err := listenUnix(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode = %v, %v; want 0666 (every local user, identified by the kernel)", fi.Mode(), err)
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
	if _, err := cl.CachePin(ctx, big); !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || ae.Code != api.CodeTooLarge {
		t.Fatalf("oversized body: err = %v, want 413", err)
	}
	if _, err := cl.CachePin(ctx, api.PathsRequest{}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != api.CodeBadRequest {
		t.Fatalf("no paths: err = %v, want 400", err)
	}
}

// One request-size limit, api.MaxRequestBody, on both servers: over it, the daemon's cache
// routes, the scheduler's routes behind the daemon and the scheduler on its own all answer 413
// with an error body that says so.
func TestRequestSizeLimit(t *testing.T) {
	s := newAPIServer(&fakeCache{}, "/mnt/share", "/srv", func() api.Health { return api.Health{} }, slog.Default())
	st, err := sched.NewScheduler(sched.SchedulerConfig{Store: sched.NewMemStore(), ShareRoot: t.TempDir(), LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	st.Routes(mux)
	for _, p := range []string{"/v1/cluster/", "/v1/tasks", "/v1/tasks/", "/v1/nodes"} {
		s.mux.Handle(p, mux)
	}
	root := api.Identity{Via: "socket"}
	daemonCl := asFakePeer(t, &root, s)
	schedSrv := httptest.NewServer(sched.Authorize("tok", mux))
	t.Cleanup(schedSrv.Close)
	schedCl := api.NewTCP(schedSrv.URL, api.WithToken("tok"))

	over := strings.Repeat("a", api.MaxRequestBody)
	ctx := context.Background()
	for _, c := range []struct {
		what string
		call func() error
	}{
		{"daemon: cache pin", func() error {
			_, err := daemonCl.CachePin(ctx, api.PathsRequest{Paths: []string{over}})
			return err
		}},
		{"daemon: submit", func() error {
			_, err := daemonCl.SubmitTask(ctx, api.TaskSpec{Command: []string{"echo", over}})
			return err
		}},
		{"scheduler: submit", func() error {
			_, err := schedCl.SubmitTask(ctx, api.TaskSpec{Command: []string{"echo", over}})
			return err
		}},
		{"scheduler: register", func() error {
			return schedCl.Do(ctx, "POST", api.RegisterPath, api.NodeRecord{Name: over}, nil)
		}},
	} {
		err := c.call()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || ae.Code != api.CodeTooLarge ||
			ae.Message != fmt.Sprintf("request body over %d bytes", api.MaxRequestBody) {
			t.Errorf("%s: err = %#v, want 413 %q", c.what, err, api.CodeTooLarge)
		}
	}
	// Under the limit the body is read and decoded: with no node registered, the task is refused
	// as one that can never fit.
	_, err = schedCl.SubmitTask(ctx, api.TaskSpec{Command: []string{"echo", over[:api.MaxRequestBody/2]}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != api.CodeNeverFits {
		t.Fatalf("submit under the limit: err = %v, want 422 %q", err, api.CodeNeverFits)
	}
}

// Evicting a pinned file fails for that path with api.CodePinned, which the CLI recognizes.
func TestEvictPinnedHasItsCode(t *testing.T) {
	cl := startTestAPI(t, &fakeCache{})
	resp, err := cl.CacheEvict(context.Background(), api.PathsRequest{Paths: []string{"pinned", "x", "ok"}})
	if err != nil || len(resp.Results) != 3 {
		t.Fatalf("evict = %+v, %v", resp, err)
	}
	if r := resp.Results[0]; r.Code != api.CodePinned || !strings.HasSuffix(r.Error, cache.ErrPinned.Error()) {
		t.Errorf("pinned: %+v, want code %q", r, api.CodePinned)
	}
	if r := resp.Results[1]; r.Code != api.CodeInternal || r.Error != "boom" {
		t.Errorf("other failure: %+v", r)
	}
	if r := resp.Results[2]; r.Code != "" || r.Error != "" {
		t.Errorf("success: %+v", r)
	}
}

func TestListenUnixRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := listenUnix(sock, "")
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
	if _, err := listenUnix(sock, ""); err == nil || !strings.Contains(err.Error(), "in use") {
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
	l2, err := listenUnix(sock, "")
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

// fakeAccess answers access checks from tables (the kernel's checks are tested in identity_test.go).
type fakeAccess struct {
	readable map[string]bool // names MayWarm accepts
	listable map[string]bool // directories Listable accepts
}

func (f fakeAccess) MayWarm(_ context.Context, id api.Identity, name string) error {
	if f.readable[name] {
		return nil
	}
	return fmt.Errorf("%s: uid %d may not read it: %w", name, id.Uid, os.ErrPermission)
}

func (f fakeAccess) Listable(_ context.Context, _ api.Identity, dirs []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, d := range dirs {
		out[d] = f.listable[d]
	}
	return out, nil
}

// asFakePeer serves h as if every call came from id (nil: from a caller the server cannot tell).
func asFakePeer(t *testing.T, id *api.Identity, h http.Handler) *api.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id != nil {
			r = r.WithContext(api.WithIdentity(r.Context(), *id))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return api.NewTCP(srv.URL)
}

func wantStatus(t *testing.T, what string, err error, status int, msg string) {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, msg) {
		t.Fatalf("%s: err = %v, want %d with %q", what, err, status, msg)
	}
}

// The authorization rules of the local API, cache and task routes, for root, a user and a
// caller the server cannot identify.
func TestAuthorizationByPeer(t *testing.T) {
	fc := &fakeCache{files: []cache.FileInfo{{Path: "pub/a"}, {Path: "pub/sub/b"}, {Path: "secret/c"}, {Path: "top"}, {Path: "pub/hidden/d"}}}
	s := newAPIServer(fc, "/mnt/share", "/srv", func() api.Health { return api.Health{Status: "ok"} }, slog.Default())
	s.access = fakeAccess{
		readable: map[string]bool{"pub/a": true},
		listable: map[string]bool{".": true, "pub": true, "pub/sub": true},
	}
	st, err := sched.NewScheduler(sched.SchedulerConfig{Store: sched.NewMemStore(), ShareRoot: t.TempDir(), LocalityWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	st.Routes(mux)
	for _, p := range []string{"/v1/cluster/", "/v1/tasks", "/v1/tasks/", "/v1/nodes"} {
		s.mux.Handle(p, mux)
	}
	root := asFakePeer(t, &api.Identity{Uid: 0, Gid: 0, Via: "socket"}, s)
	user := asFakePeer(t, &api.Identity{Uid: 1000, Gid: 1000, Groups: []uint32{1000}, Via: "socket"}, s)
	nobody := asFakePeer(t, nil, s)
	ctx := context.Background()

	// Nobody the server can tell: nothing.
	_, err = nobody.Health(ctx)
	wantStatus(t, "health without identity", err, 403, "cannot tell who")

	// Register a node: root's (cluster daemons'), not a user's.
	node := sched.NodeRecord{Name: "n1", Total: sched.Resources{Cores: 4, MemBytes: 8 << 30}}
	wantStatus(t, "user registers a node", user.Do(ctx, "POST", "/v1/cluster/register", node, nil), 403, "only root")
	wantStatus(t, "user heartbeats", user.Do(ctx, "POST", "/v1/cluster/heartbeat", sched.HeartbeatRequest{Node: "n1"}, nil), 403, "only root")
	if err := root.Do(ctx, "POST", "/v1/cluster/register", node, nil); err != nil {
		t.Fatal(err)
	}

	// Reads: everyone.
	if _, err := user.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := user.CacheStats(ctx); err != nil {
		t.Fatal(err)
	}
	var ns []sched.NodeStatus
	if err := user.Do(ctx, "GET", "/v1/nodes", nil, &ns); err != nil || len(ns) != 1 {
		t.Fatalf("user nodes: %v %v", ns, err)
	}
	// ls: a user sees what they could list in the mount; root everything.
	names := func(fs []api.FileInfo) string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Path)
		}
		return strings.Join(out, ",")
	}
	if fs, err := user.CacheList(ctx, "", ""); err != nil || names(fs) != "pub/a,pub/sub/b,top" {
		t.Fatalf("user ls = %s, %v; want pub/a,pub/sub/b,top", names(fs), err)
	}
	if fs, err := root.CacheList(ctx, "", ""); err != nil || len(fs) != 5 {
		t.Fatalf("root ls = %s, %v", names(fs), err)
	}
	// warm: what the user may read; root anything.
	if err := user.CacheWarm(ctx, api.PathsRequest{Paths: []string{"pub/a"}}, nil); err != nil {
		t.Fatalf("user warms a readable file: %v", err)
	}
	if err := user.CacheWarm(ctx, api.PathsRequest{Paths: []string{"secret/c"}}, nil); err == nil || !strings.Contains(err.Error(), "uid 1000 may not read") {
		t.Fatalf("user warms an unreadable file: %v", err)
	}
	if err := root.CacheWarm(ctx, api.PathsRequest{Paths: []string{"secret/c"}}, nil); err != nil {
		t.Fatalf("root warms: %v", err)
	}
	// pin, unpin, evict: root's.
	for op, call := range map[string]func(context.Context, api.PathsRequest) (api.PathsResponse, error){
		"pin": user.CachePin, "unpin": user.CacheUnpin, "evict": user.CacheEvict,
	} {
		_, err := call(ctx, api.PathsRequest{Paths: []string{"pub/a"}})
		wantStatus(t, "user "+op, err, 403, "only root may pin, unpin or evict")
	}
	if _, err := root.CacheEvict(ctx, api.PathsRequest{Paths: []string{"pub/a"}}); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	calls := strings.Join(fc.calls, ",")
	fc.mu.Unlock()
	if want := "ls .,ls .,warm pub/a,warm secret/c,evict pub/a"; calls != want {
		t.Fatalf("cache calls = %s, want %s (refused calls must not reach the cache)", calls, want)
	}

	// Tasks. A user's task runs as the user: a spec naming nobody gets the caller's ids, one
	// naming another uid or gid is refused, not rewritten.
	submit := func(cl *api.Client, spec map[string]any) (*sched.Task, error) {
		var tk sched.Task
		err := cl.Do(ctx, "POST", "/v1/tasks", spec, &tk)
		return &tk, err
	}
	own, err := submit(user, map[string]any{"command": []string{"sleep", "9"}, "env": []string{"MINE=1"}})
	if err != nil || own.Uid != 1000 || own.Gid != 1000 {
		t.Fatalf("user submit = %+v, %v; want uid/gid 1000", own, err)
	}
	if tk, err := submit(user, map[string]any{"command": []string{"true"}, "uid": 1000, "gid": 1000}); err != nil || tk.Uid != 1000 {
		t.Fatalf("user submit naming itself = %+v, %v", tk, err)
	}
	_, err = submit(user, map[string]any{"command": []string{"true"}, "uid": 0, "gid": 0})
	wantStatus(t, "user submits as root", err, 403, "you are uid 1000 and cannot submit a task to run as uid 0")
	_, err = submit(user, map[string]any{"command": []string{"true"}, "uid": 1001, "gid": 1000})
	wantStatus(t, "user submits as 1001", err, 403, "cannot submit a task to run as uid 1001")
	_, err = submit(user, map[string]any{"command": []string{"true"}, "uid": 1000, "gid": 0})
	wantStatus(t, "user submits with gid 0", err, 403, "cannot claim gid 0")
	other, err := submit(root, map[string]any{"command": []string{"sleep", "9"}, "uid": 1001, "gid": 1001, "env": []string{"SECRET=hunter2"}})
	if err != nil || other.Uid != 1001 {
		t.Fatalf("root submits for uid 1001: %+v, %v", other, err)
	}
	// Everyone lists and shows tasks; another user's environment values stay hidden.
	var shown sched.Task
	if err := user.Do(ctx, "GET", "/v1/tasks/"+other.ID, nil, &shown); err != nil || strings.Join(shown.Env, ",") != "SECRET=(hidden)" {
		t.Fatalf("user shows another's task: env %v, %v", shown.Env, err)
	}
	if err := user.Do(ctx, "GET", "/v1/tasks/"+own.ID, nil, &shown); err != nil || strings.Join(shown.Env, ",") != "MINE=1" {
		t.Fatalf("user shows own task: env %v, %v", shown.Env, err)
	}
	if err := root.Do(ctx, "GET", "/v1/tasks/"+other.ID, nil, &shown); err != nil || strings.Join(shown.Env, ",") != "SECRET=hunter2" {
		t.Fatalf("root shows a task: env %v, %v", shown.Env, err)
	}
	var list []sched.Task
	if err := user.Do(ctx, "GET", "/v1/tasks", nil, &list); err != nil || len(list) != 3 {
		t.Fatalf("user lists tasks: %d, %v", len(list), err)
	}
	for _, tk := range list {
		if tk.ID == other.ID && strings.Join(tk.Env, ",") != "SECRET=(hidden)" {
			t.Fatalf("task list shows another's env: %v", tk.Env)
		}
	}
	// Logs and kill: the owner's and root's.
	wantStatus(t, "user reads another's logs", user.Do(ctx, "GET", "/v1/tasks/"+other.ID+"/logs", nil, nil), 403, "runs as uid 1001 and you are uid 1000")
	if err := user.Do(ctx, "GET", "/v1/tasks/"+own.ID+"/logs", nil, nil); err != nil {
		t.Fatalf("user reads own logs: %v", err)
	}
	wantStatus(t, "user kills another's task", user.Do(ctx, "POST", "/v1/tasks/"+other.ID+"/kill", nil, nil), 403, "only its owner or root")
	if tk, _ := st.Task(other.ID); tk.KillAsked || tk.State.Terminal() {
		t.Fatalf("refused kill changed the task: %+v", tk)
	}
	var killed sched.Task
	if err := user.Do(ctx, "POST", "/v1/tasks/"+own.ID+"/kill", nil, &killed); err != nil || !killed.KillAsked {
		t.Fatalf("user kills own task: %+v, %v", killed, err)
	}
	if err := root.Do(ctx, "POST", "/v1/tasks/"+other.ID+"/kill", nil, &killed); err != nil || !killed.KillAsked {
		t.Fatalf("root kills a task: %+v, %v", killed, err)
	}
}

// Over the real socket the caller is who the kernel says, whatever the request claims.
func TestPeerIdentityFromTheKernel(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "edm-api", "eddy.sock")
	l, err := listenUnix(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	s := newAPIServer(&fakeCache{}, "/mnt/share", "/srv", func() api.Health { return api.Health{} }, slog.Default())
	s.mux.HandleFunc("GET /test/whoami", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, 200, callerOf(r)) })
	srv := serveHTTP(l, s, slog.Default())
	t.Cleanup(func() { srv.Close() })

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://eddy/test/whoami", nil)
	req.Header.Set(api.IdentityHeader, "uid=4242,gid=4242") // ignored on the socket
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var id api.Identity
	if err := json.NewDecoder(resp.Body).Decode(&id); err != nil {
		t.Fatal(err)
	}
	groups, _ := os.Getgroups()
	var want []uint32
	for _, g := range groups {
		want = append(want, uint32(g))
	}
	slices.Sort(want)
	got := slices.Clone(id.Groups)
	slices.Sort(got)
	if id.Uid != uint32(os.Geteuid()) || id.Gid != uint32(os.Getegid()) || id.Pid != int32(os.Getpid()) || id.Via != "socket" || !slices.Equal(got, want) {
		t.Fatalf("identity = %+v; want uid %d gid %d pid %d groups %v", id, os.Geteuid(), os.Getegid(), os.Getpid(), want)
	}
}

func TestSocketGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown of the socket to a group needs root")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := listenUnix(sock, "4242")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 || st.Gid != 4242 {
		t.Fatalf("socket mode %o gid %d; want 0660 and gid 4242", st.Mode&0o777, st.Gid)
	}
	if _, err := listenUnix(filepath.Join(t.TempDir(), "t.sock"), "no-such-group-edm"); err == nil || !strings.Contains(err.Error(), "--socket-group") {
		t.Fatalf("unknown group: %v", err)
	}
}

// The forwarder of a joined node names the caller it saw, overwriting what the client sent; the
// scheduler believes the name only with the token.
func TestForwarderCarriesTheCallersIdentity(t *testing.T) {
	var got []string
	var mu sync.Mutex
	backend := httptest.NewServer(sched.Authorize("tok", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := api.IdentityFrom(r.Context())
		mu.Lock()
		got = append(got, id.String()+" "+id.Via)
		mu.Unlock()
		w.WriteHeader(204)
	})))
	defer backend.Close()
	target, _ := url.Parse(backend.URL)
	fwd := forwarder(target, "tok", nil)

	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fwd.ServeHTTP(w, r.WithContext(api.WithIdentity(r.Context(), api.Identity{Uid: 1000, Gid: 100, Via: "socket"})))
	}))
	defer front.Close()
	// A client claiming root (twice): the forwarder says who it really is.
	cl := &http.Client{}
	r, _ := http.NewRequest("GET", front.URL+"/v1/nodes", nil)
	r.Header.Set(api.IdentityHeader, "uid=0,gid=0")
	r.Header.Add(api.IdentityHeader, "uid=0,gid=0")
	resp, err := cl.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("forwarded status %d", resp.StatusCode)
	}
	wantStatus(t, "forward without identity", asFakePeer(t, nil, fwd).Do(context.Background(), "GET", "/v1/nodes", nil, nil), 403, "cannot tell who")

	// Directly at the scheduler: the header without the token is refused, a malformed one too,
	// and a token holder naming nobody is root.
	call := func(token, ident string) int {
		r, _ := http.NewRequest("GET", backend.URL+"/v1/nodes", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		if ident != "" {
			r.Header.Set(api.IdentityHeader, ident)
		}
		resp, err := cl.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := call("", "uid=0,gid=0"); c != 401 {
		t.Fatalf("identity without token: %d", c)
	}
	if c := call("tok", "uid=root"); c != 400 {
		t.Fatalf("malformed identity: %d", c)
	}
	if c := call("tok", ""); c != 204 {
		t.Fatalf("token alone: %d", c)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "uid=1000,gid=100 forwarded,uid=0,gid=0 token"; strings.Join(got, ",") != want {
		t.Fatalf("scheduler saw %q, want %q", strings.Join(got, ","), want)
	}
}

// Without --tls-ca the scheduler's certificate is not verified, and the log says so once; with it
// the CA is the only root; a file with no certificate is an error at start-up.
func TestClientTLS(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	cfg, err := clientTLS(Config{Join: "https://10.0.0.1:7070"}, log)
	if err != nil || !cfg.InsecureSkipVerify || strings.Count(buf.String(), "NOT verified") != 1 {
		t.Fatalf("no CA: %+v %v, log %q", cfg, err, buf.String())
	}
	buf.Reset()
	if cfg, _ := clientTLS(Config{Join: "10.0.0.1:7070"}, log); !cfg.InsecureSkipVerify || buf.Len() != 0 {
		t.Fatalf("plain HTTP cluster: a TLS warning was logged: %q", buf.String())
	}
	bad := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, err := clientTLS(Config{TLSCA: bad}, log); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
	if _, err := clientTLS(Config{TLSCA: bad + ".missing"}, log); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Fatalf("missing CA file: %v", err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	good := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(good, pemCert(srv.Certificate().Raw), 0o600)
	cfg, err = clientTLS(Config{TLSCA: good}, log)
	if err != nil || cfg.InsecureSkipVerify || cfg.RootCAs == nil {
		t.Fatalf("with CA: %+v %v", cfg, err)
	}
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Get(srv.URL); err != nil {
		t.Fatalf("a server the CA vouches for: %v", err)
	} else {
		resp.Body.Close()
	}
	// A CA that did not sign the server's certificate: refused.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(good, pemCert(der), 0o600)
	if cfg, err = clientTLS(Config{TLSCA: good}, log); err != nil {
		t.Fatal(err)
	}
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Get(srv.URL); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server the CA does not vouch for: %v", err)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A socket path too long for a unix socket is refused with a reason, not a bare EINVAL.
func TestListenUnixPathTooLong(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("s", 120))
	if _, err := listenUnix(filepath.Join(dir, "eddy.sock"), ""); err == nil || !strings.Contains(err.Error(), "shorter --socket") {
		t.Fatalf("long socket path: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "ok.sock")
	l, err := listenUnix(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
