package ui

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

const (
	adminToken  = "admin-secret"
	viewerToken = "viewer-secret"
	secretEnv   = "SECRET=hunter2"
)

// fakeCluster serves the control API's routes the page reads, with canned answers.
type fakeCluster struct {
	mu     sync.Mutex
	killed []string
}

func (f *fakeCluster) handler() http.Handler {
	now := time.Now()
	exit0 := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, api.Health{Status: "ok", Version: "v9.9", Node: "n1", StartedAt: now.Add(-time.Hour)})
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, []api.NodeStatus{
			{NodeRecord: api.NodeRecord{Name: "n1", Address: "a1", Total: api.Resources{Cores: 4, MemBytes: 8 << 30}}, Up: true, Free: api.Resources{Cores: 2, MemBytes: 4 << 30}, LastSeen: now, Running: 1},
			{NodeRecord: api.NodeRecord{Name: "n2", Address: "a2", Total: api.Resources{Cores: 4, MemBytes: 8 << 30}}, Up: false, LastSeen: now.Add(-time.Minute)},
		})
	})
	mux.HandleFunc("GET /v1/cache/stats", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, api.CacheStats{CacheCounters: api.CacheCounters{HitBytes: 300, MissBytes: 100, CachedBytes: 2000, QuotaBytes: 1000},
			Origin: "/srv/share", OriginHealth: &api.OriginHealth{Up: false, LastError: "stale handle"},
			Share: &api.ShareSpace{TotalBytes: 100 << 30, AvailBytes: 3 << 30, UsedPercent: 97, Threshold: 95, NearlyFull: true}})
	})
	mux.HandleFunc("GET "+api.CacheWherePath, func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, api.CacheWhere{Path: r.URL.Query().Get("path"), Files: 1, SizeBytes: 100, Dir: true, Nodes: []api.WhereNode{
			{Node: "n1", Up: true, Files: 1, CachedBytes: 60, SizeBytes: 100}, {Node: "n2"}}})
	})
	mux.HandleFunc("GET "+api.RaftPath, func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, api.RaftStatus{Member: "n1", State: "leader", Leader: "n1", Term: 7, Healthy: true, Members: []api.RaftMember{
			{Name: "n1", State: "leader", Leader: true, Suffrage: "voter", Term: 7},
			{Name: "n2", State: "unreachable", Suffrage: "voter", Error: "connection refused"},
		}})
	})
	mux.HandleFunc("GET /v1/cache/ls", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, []api.FileInfo{{Path: r.URL.Query().Get("path") + "/a", Size: 100, CachedBytes: 60}})
	})
	tasks := []api.Task{
		{ID: "t3", TaskSpec: api.TaskSpec{Command: []string{"sleep", "9"}, Cores: 4, Uid: 1234, Env: []string{secretEnv}}, State: api.StateQueued, Submitted: now},
		{ID: "t2", TaskSpec: api.TaskSpec{Command: []string{"sleep", "9"}, Cores: 2, Uid: 1234, Priority: 5}, State: api.StateQueued, Submitted: now},
		{ID: "t1", TaskSpec: api.TaskSpec{Command: []string{"true"}, Uid: 1234}, State: api.StateRunning, NodeName: "n1", Started: now},
		{ID: "t0", TaskSpec: api.TaskSpec{Command: []string{"true"}, Uid: 1235}, State: api.StateCompleted, NodeName: "n1", ExitCode: &exit0, Finished: now},
	}
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, 200, tasks) })
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, t := range tasks {
			if t.ID == r.PathValue("id") {
				api.WriteJSON(w, 200, t)
				return
			}
		}
		api.WriteError(w, 404, io.EOF)
	})
	mux.HandleFunc("GET /v1/tasks/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, api.LogChunk{Data: []byte("hello\n"), Offset: 6, State: api.StateRunning})
	})
	mux.HandleFunc("POST /v1/tasks/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := api.IdentityFrom(r.Context()); !ok || !id.Root() {
			api.WriteError(w, 403, io.EOF)
			return
		}
		f.mu.Lock()
		f.killed = append(f.killed, r.PathValue("id"))
		f.mu.Unlock()
		api.WriteJSON(w, 200, api.Task{ID: r.PathValue("id"), State: api.StateKilled})
	})
	return mux
}

func newTestServer(t *testing.T) (*httptest.Server, *fakeCluster) {
	t.Helper()
	f := &fakeCluster{}
	c := HandlerCaller(f.handler(), api.Identity{Via: "ui"})
	s, err := New(Config{AdminToken: adminToken, ViewerToken: viewerToken, Local: c, NodeName: "n1",
		Node: func(addr string) Caller { return c }, LoginDelay: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s.sampleOnce()
	s.sampleOnce()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts, f
}

// client is a browser: a cookie jar, no redirects followed.
func client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var hiddenCSRF = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)
var metaCSRF = regexp.MustCompile(`name="eddy-csrf" content="([0-9a-f]+)"`)

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login logs c in with token and returns the session's CSRF token.
func login(t *testing.T, ts *httptest.Server, c *http.Client, token string) string {
	t.Helper()
	_, body := get(t, c, ts.URL+"/login")
	m := hiddenCSRF.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in the login form: %s", body)
	}
	resp, err := c.PostForm(ts.URL+"/login", url.Values{"csrf": {m[1]}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: status %d", resp.StatusCode)
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && ck.Value != "" {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || len(sc.Value) != 64 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, a random id", sc)
	}
	_, page := get(t, c, ts.URL+"/")
	m = metaCSRF.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf meta in the page: %s", page)
	}
	return m[1]
}

func post(t *testing.T, c *http.Client, u, csrf string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, nil)
	if csrf != "" {
		req.Header.Set(csrfHeader, csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Every route, and any other path, gives nothing without a session: pages redirect to the
// login form, the rest is a bare 401; no data of the cluster is in any body.
func TestUnauthenticatedGetsNothing(t *testing.T) {
	ts, f := newTestServer(t)
	c := client(t)
	routes := []string{"/", "/task/t1", "/static/app.js", "/static/task.js", "/static/style.css", "/api/overview", "/api/task/t1",
		"/api/task/t1/log", "/api/where?path=data", "/api/samples", "/chart/cache.svg", "/chart/queue.svg", "/chart/running.svg", "/nope"}
	for _, p := range routes {
		for _, method := range []string{"GET", "POST"} {
			req, _ := http.NewRequest(method, ts.URL+p, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			switch {
			case resp.StatusCode == http.StatusSeeOther && method == "GET":
				if loc := resp.Header.Get("Location"); loc != "/login" {
					t.Errorf("%s %s: redirect to %q", method, p, loc)
				}
			case resp.StatusCode == http.StatusUnauthorized:
			default:
				t.Errorf("%s %s: status %d, want 401 or a redirect to /login", method, p, resp.StatusCode)
			}
			for _, leak := range []string{"n1", "n2", "t1", "sleep", "hunter2", "svg", "v9.9", "function", "{"} {
				if strings.Contains(body, leak) {
					t.Errorf("%s %s: body has %q: %q", method, p, leak, body)
				}
			}
		}
	}
	// POST /api/task/t1/kill without a session did nothing.
	if len(f.killed) != 0 {
		t.Fatalf("killed without a session: %v", f.killed)
	}
	// A made-up session cookie is no session.
	u, _ := url.Parse(ts.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: strings.Repeat("a", 64)}})
	if resp, _ := get(t, c, ts.URL+"/api/overview"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged session: %d", resp.StatusCode)
	}
}

func TestLogin(t *testing.T) {
	ts, _ := newTestServer(t)
	c := client(t)
	// A wrong token: no session.
	_, body := get(t, c, ts.URL+"/login")
	m := hiddenCSRF.FindStringSubmatch(body)
	resp, _ := c.PostForm(ts.URL+"/login", url.Values{"csrf": {m[1]}, "token": {"nope"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	// The login form without its CSRF token is refused, even with the right token.
	resp, _ = c.PostForm(ts.URL+"/login", url.Values{"token": {adminToken}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login without csrf: %d", resp.StatusCode)
	}
	if resp, _ := get(t, c, ts.URL+"/api/overview"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after failed logins: %d", resp.StatusCode)
	}
	csrf := login(t, ts, c, adminToken)
	if resp, _ := get(t, c, ts.URL+"/api/overview"); resp.StatusCode != 200 {
		t.Fatalf("after login: %d", resp.StatusCode)
	}
	// Log out: the session is gone from the server's table, not only from the browser.
	ck := c.Jar.Cookies(mustURL(ts.URL))
	resp, _ = post(t, c, ts.URL+"/logout", csrf)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	c2 := client(t)
	c2.Jar.SetCookies(mustURL(ts.URL), ck)
	if resp, _ := get(t, c2, ts.URL+"/api/overview"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("old session after logout: %d", resp.StatusCode)
	}
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

func TestSessionExpires(t *testing.T) {
	now := time.Now()
	ss := newSessions(time.Hour, func() time.Time { return now })
	id, se := ss.create(RoleAdmin)
	if got := ss.get(id); got == nil || got.csrf != se.csrf || got.role != RoleAdmin {
		t.Fatalf("get: %+v", got)
	}
	now = now.Add(time.Hour)
	if ss.get(id) != nil {
		t.Fatal("session alive after its TTL")
	}
	id2, se2 := ss.create(RoleViewer)
	if id2 == id || se2.csrf == se.csrf {
		t.Fatal("ids and CSRF tokens must be fresh")
	}
}

func TestCSRFAndRoles(t *testing.T) {
	ts, f := newTestServer(t)
	admin, viewer := client(t), client(t)
	acsrf := login(t, ts, admin, adminToken)
	vcsrf := login(t, ts, viewer, viewerToken)
	if acsrf == vcsrf {
		t.Fatal("sessions share a CSRF token")
	}
	// No CSRF token, a wrong one, the other session's: refused.
	for _, tok := range []string{"", "deadbeef", vcsrf} {
		if resp, _ := post(t, admin, ts.URL+"/api/task/t1/kill", tok); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("admin kill with csrf %q: %d", tok, resp.StatusCode)
		}
	}
	// A form POST without the field is refused as well, and one from another site.
	resp, _ := admin.PostForm(ts.URL+"/logout", url.Values{})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without csrf: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", ts.URL+"/api/task/t1/kill", nil)
	req.Header.Set(csrfHeader, acsrf)
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := admin.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site kill: %v %v", err, resp.StatusCode)
	}
	if len(f.killed) != 0 {
		t.Fatalf("killed: %v", f.killed)
	}
	// A viewer with its own CSRF token may not kill.
	if resp, body := post(t, viewer, ts.URL+"/api/task/t1/kill", vcsrf); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "viewer") {
		t.Fatalf("viewer kill: %d %s", resp.StatusCode, body)
	}
	if len(f.killed) != 0 {
		t.Fatalf("killed: %v", f.killed)
	}
	// The admin with its token may.
	if resp, body := post(t, admin, ts.URL+"/api/task/t1/kill", acsrf); resp.StatusCode != 200 || !strings.Contains(body, `"killed"`) {
		t.Fatalf("admin kill: %d %s", resp.StatusCode, body)
	}
	if len(f.killed) != 1 || f.killed[0] != "t1" {
		t.Fatalf("killed: %v", f.killed)
	}
	// A viewer sees environment values hidden; the admin sees them; the page tells who may kill.
	_, vb := get(t, viewer, ts.URL+"/api/task/t3")
	_, ab := get(t, admin, ts.URL+"/api/task/t3")
	if strings.Contains(vb, "hunter2") || !strings.Contains(vb, "SECRET=(hidden)") || !strings.Contains(vb, `"can_kill":false`) {
		t.Fatalf("viewer's task: %s", vb)
	}
	if !strings.Contains(ab, "hunter2") || !strings.Contains(ab, `"can_kill":true`) {
		t.Fatalf("admin's task: %s", ab)
	}
	_, vp := get(t, viewer, ts.URL+"/")
	if !strings.Contains(vp, `content="viewer"`) {
		t.Fatalf("viewer page role: %s", vp)
	}
}

func TestOverview(t *testing.T) {
	ts, _ := newTestServer(t)
	c := client(t)
	login(t, ts, c, viewerToken)
	_, body := get(t, c, ts.URL+"/api/overview")
	var ov Overview
	if err := json.Unmarshal([]byte(body), &ov); err != nil {
		t.Fatal(err)
	}
	if ov.Cluster.Version != "v9.9" || ov.Cluster.UptimeS < 3500 || ov.Cluster.Mode != "scheduler" {
		t.Errorf("cluster: %+v", ov.Cluster)
	}
	if rs := ov.Cluster.Raft; rs == nil || rs.Leader != "n1" || rs.Term != 7 || len(rs.Members) != 2 {
		t.Errorf("scheduler group: %+v", ov.Cluster.Raft)
	}
	if len(ov.Nodes) != 2 || !ov.Nodes[0].Up || ov.Nodes[1].Up || ov.Nodes[0].HitRatio == nil || *ov.Nodes[0].HitRatio != 0.75 {
		t.Errorf("nodes: %+v", ov.Nodes)
	}
	kinds := map[string]bool{}
	for _, a := range ov.Alerts {
		kinds[a.Kind+":"+a.Node] = true
	}
	for _, k := range []string{"node_down:n2", "origin:n1", "quota:n1", "share:n1", "scheduler_member:n2"} {
		if !kinds[k] {
			t.Errorf("no alert %s in %+v", k, ov.Alerts)
		}
	}
	// The queue in the scheduler's order (priority first), with why each waits.
	if len(ov.Queued) != 2 || ov.Queued[0].ID != "t2" || ov.Queued[0].Position != 1 || ov.Queued[1].Position != 2 {
		t.Fatalf("queue: %+v", ov.Queued)
	}
	if !strings.Contains(ov.Queued[1].Waiting, "no node has room now") || !strings.Contains(ov.Queued[0].Waiting, "fits n1") {
		t.Errorf("why waiting: %q / %q", ov.Queued[0].Waiting, ov.Queued[1].Waiting)
	}
	if strings.Contains(body, "hunter2") {
		t.Error("a viewer's overview shows environment values")
	}
	if len(ov.Running) != 1 || len(ov.Recent) != 1 || ov.Recent[0].ExitCode == nil {
		t.Errorf("running %+v recent %+v", ov.Running, ov.Recent)
	}
	// Filters.
	_, body = get(t, c, ts.URL+"/api/overview?state=queued")
	ov = Overview{}
	json.Unmarshal([]byte(body), &ov)
	if len(ov.Queued) != 2 || len(ov.Running) != 0 || len(ov.Recent) != 0 {
		t.Errorf("state=queued: %d %d %d", len(ov.Queued), len(ov.Running), len(ov.Recent))
	}
	_, body = get(t, c, ts.URL+"/api/overview?user=1235")
	ov = Overview{}
	json.Unmarshal([]byte(body), &ov)
	if len(ov.Queued) != 0 || len(ov.Running) != 0 || len(ov.Recent) != 1 {
		t.Errorf("user=1235: %d %d %d", len(ov.Queued), len(ov.Running), len(ov.Recent))
	}
	_, body = get(t, c, ts.URL+"/api/overview?node=n1&state=ended")
	ov = Overview{}
	json.Unmarshal([]byte(body), &ov)
	if len(ov.Queued) != 0 || len(ov.Running) != 0 || len(ov.Recent) != 1 {
		t.Errorf("node=n1,state=ended: %d %d %d", len(ov.Queued), len(ov.Running), len(ov.Recent))
	}
	// Where: the up node's share of a path.
	_, body = get(t, c, ts.URL+"/api/where?path=data")
	var wv WhereView
	json.Unmarshal([]byte(body), &wv)
	if len(wv.Nodes) != 2 || wv.Source != "scheduler" || wv.Files != 1 || wv.Nodes[0].Node != "n1" || wv.Nodes[0].CachedBytes != 60 || !strings.HasPrefix(wv.Nodes[1].Error, "node down") {
		t.Errorf("where: %s", body)
	}
	// The log chunk as the scheduler gave it.
	_, body = get(t, c, ts.URL+"/api/task/t1/log?stream=stdout&offset=0")
	var ch api.LogChunk
	if json.Unmarshal([]byte(body), &ch); string(ch.Data) != "hello\n" || ch.Offset != 6 {
		t.Errorf("log: %s", body)
	}
}

func TestPagesRender(t *testing.T) {
	ts, _ := newTestServer(t)
	c := client(t)
	login(t, ts, c, adminToken)
	resp, page := get(t, c, ts.URL+"/")
	for _, want := range []string{`id="cluster"`, `id="nodes-table"`, `id="queued-table"`, `id="running-table"`, `id="recent-table"`,
		`id="where-form"`, `id="raft-table"`, `src="/chart/cache.svg"`, `src="/static/app.js"`, `content="admin"`} {
		if !strings.Contains(page, want) {
			t.Errorf("overview page lacks %s", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	_, tp := get(t, c, ts.URL+"/task/%3Cscript%3E")
	if strings.Contains(tp, "<script>") || !strings.Contains(tp, "&lt;script&gt;") {
		t.Errorf("task id not escaped: %s", tp)
	}
	resp, js := get(t, c, ts.URL+"/static/app.js")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") || !strings.Contains(js, "/api/overview") {
		t.Errorf("app.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, name := range []string{"cache", "queue", "running"} {
		resp, svg := get(t, c, ts.URL+"/chart/"+name+".svg")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, "<polyline") {
			t.Errorf("chart %s: %d %q", name, resp.StatusCode, svg)
		}
	}
	if resp, _ := get(t, c, ts.URL+"/chart/nope.svg"); resp.StatusCode != 404 {
		t.Errorf("unknown chart: %d", resp.StatusCode)
	}
	// The login form's inline style is the one its CSP allows.
	c2 := client(t)
	resp, lp := get(t, c2, ts.URL+"/login")
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), loginStyleHash) || !strings.Contains(lp, "<style>"+loginStyle+"</style>") {
		t.Errorf("login style/CSP mismatch")
	}
}

func TestRenderSVG(t *testing.T) {
	svg := string(RenderSVG(Chart{Title: "a <b>", Format: func(v float64) string { return "x" }, Series: []Series{
		{Name: "s", Color: "#000", Values: []float64{0, 5, 10}},
	}}, time.Minute))
	if !strings.Contains(svg, "a &lt;b&gt;") || !strings.Contains(svg, `points="8.0,102.0 180.0,64.0 352.0,26.0"`) || !strings.Contains(svg, "3 samples") {
		t.Fatalf("svg: %s", svg)
	}
	empty := string(RenderSVG(Chart{Title: "e", Format: func(float64) string { return "" }, Series: []Series{{Name: "s"}}}, 0))
	if !strings.Contains(empty, "no samples yet") {
		t.Fatalf("empty: %s", empty)
	}
}

func TestSamplerRates(t *testing.T) {
	sp := newSampler(3)
	t0 := time.Now()
	if h, m := sp.rates(t0, map[string]api.CacheCounters{"a": {HitBytes: 100, MissBytes: 10}}); h != 0 || m != 0 {
		t.Fatalf("first reading: %v %v", h, m)
	}
	h, m := sp.rates(t0.Add(2*time.Second), map[string]api.CacheCounters{"a": {HitBytes: 300, MissBytes: 50}, "b": {HitBytes: 9}})
	if h != 100 || m != 20 {
		t.Fatalf("rates: %v %v", h, m)
	}
	// A restarted node (counters back to 0) adds nothing.
	if h, _ := sp.rates(t0.Add(3*time.Second), map[string]api.CacheCounters{"a": {HitBytes: 1}, "b": {HitBytes: 19}}); h != 10 {
		t.Fatalf("after restart: %v", h)
	}
	for i := range 5 {
		sp.add(Sample{Queued: i})
	}
	if all := sp.all(); len(all) != 3 || all[0].Queued != 2 {
		t.Fatalf("ring: %+v", all)
	}
}
