package sched

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
)

// whereCluster is a scheduler with three nodes: a caches d/x whole and 50 of d/y's 80 bytes,
// b caches all of d/y and e/big, c nothing.
func whereCluster(t *testing.T) *Scheduler {
	t.Helper()
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.Register(ctx, node(n, 4)); err != nil {
			t.Fatal(err)
		}
	}
	inv := map[string][]cache.InventoryItem{
		"a": {{Path: "d/x", CachedBytes: 100, Size: 100}, {Path: "d/y", CachedBytes: 50, Size: 80}},
		"b": {{Path: "d/y", CachedBytes: 80, Size: 80}, {Path: "e/big", CachedBytes: 1000, Size: 1000}},
	}
	for n, items := range inv {
		if _, err := s.Heartbeat(ctx, HeartbeatRequest{Node: n, Inventory: &cache.InventoryDelta{Gen: 1, Full: true, Items: items}}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestCacheWhere(t *testing.T) {
	s := whereCluster(t)
	w, err := s.CacheWhere("d")
	if err != nil {
		t.Fatal(err)
	}
	if w.Path != "d" || !w.Dir || w.Files != 2 || w.SizeBytes != 180 || len(w.Nodes) != 3 {
		t.Fatalf("d: %+v", w)
	}
	want := []api.WhereNode{
		{Node: "a", Up: true, Files: 2, WholeFiles: 1, CachedBytes: 150, SizeBytes: 180},
		{Node: "b", Up: true, Files: 1, WholeFiles: 1, CachedBytes: 80, SizeBytes: 80},
		{Node: "c", Up: true},
	}
	for i, n := range want {
		if w.Nodes[i] != n {
			t.Errorf("d: node %d: %+v, want %+v", i, w.Nodes[i], n)
		}
	}
	// A file; a leading slash and "./" are share-relative too.
	for _, p := range []string{"d/y", "/d/y", "./d/y"} {
		w, err = s.CacheWhere(p)
		if err != nil || w.Path != "d/y" || w.Dir || w.Files != 1 || w.SizeBytes != 80 || w.Nodes[0].Node != "b" || w.Nodes[0].CachedBytes != 80 ||
			w.Nodes[1].Node != "a" || w.Nodes[1].CachedBytes != 50 || w.Nodes[1].WholeFiles != 0 || w.Nodes[2].CachedBytes != 0 {
			t.Errorf("%s: %+v %v", p, w, err)
		}
	}
	// The whole share; a prefix that is not a directory; nothing cached.
	if w, _ = s.CacheWhere(""); w.Path != "." || w.Files != 3 || w.SizeBytes != 1180 || w.Nodes[0].Node != "b" || w.Nodes[0].CachedBytes != 1080 {
		t.Errorf("whole share: %+v", w)
	}
	if w, _ = s.CacheWhere("d/x/"); w.Path != "d/x" || w.Files != 1 || w.Dir {
		t.Errorf("d/x/: %+v", w)
	}
	if w, _ = s.CacheWhere("e/bi"); w.Files != 0 || w.Nodes[0].CachedBytes != 0 {
		t.Errorf("e/bi: %+v", w)
	}
	if _, err := s.CacheWhere("../etc"); err == nil || !strings.Contains(err.Error(), "bad request") {
		t.Errorf("../etc: %v", err)
	}
	// A removed file is gone from the answer.
	if _, err := s.Heartbeat(context.Background(), HeartbeatRequest{Node: "a", InventoryBase: 1, Inventory: &cache.InventoryDelta{Gen: 2, Removed: []string{"d/x"}}}); err != nil {
		t.Fatal(err)
	}
	if w, _ = s.CacheWhere("d/x"); w.Files != 0 || w.Nodes[0].CachedBytes != 0 {
		t.Errorf("d/x after removal: %+v", w)
	}
}

func TestCacheTop(t *testing.T) {
	s := whereCluster(t)
	top, err := s.CacheTop(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Files) != 2 || top.Files[0].Path != "e/big" || top.Files[1].Path != "d/x" || top.Files[0].SizeBytes != 1000 ||
		len(top.Files[0].Nodes) != 1 || top.Files[0].Nodes[0].Node != "b" {
		t.Fatalf("top 2: %+v", top)
	}
	top, _ = s.CacheTop(10)
	if len(top.Files) != 3 || top.Files[2].Path != "d/y" || len(top.Files[2].Nodes) != 2 || top.Files[2].Nodes[0].Node != "b" || top.Files[2].Nodes[1].CachedBytes != 50 {
		t.Fatalf("top 10: %+v", top)
	}
}

func TestCacheWhereHTTP(t *testing.T) {
	s := whereCluster(t)
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("sekrit", mux))
	defer srv.Close()
	call := func(path string, id string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer sekrit")
		if id != "" {
			req.Header.Set(api.IdentityHeader, id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, body := call(api.CacheWherePath+"?path=d/y", "")
	var w api.CacheWhere
	if st != 200 || json.Unmarshal([]byte(body), &w) != nil || w.Files != 1 || w.Nodes[0].Node != "b" {
		t.Fatalf("where: %d %s", st, body)
	}
	for _, k := range []string{`"path":"d/y"`, `"files":1`, `"size_bytes":80`, `"nodes":[`, `"cached_bytes":80`, `"whole_files":1`, `"up":true`} {
		if !strings.Contains(body, k) {
			t.Errorf("where JSON lacks %s: %s", k, body)
		}
	}
	if st, body = call(api.CacheWherePath+"?top=1", ""); st != 200 || !strings.Contains(body, `"path":"e/big"`) {
		t.Fatalf("top: %d %s", st, body)
	}
	if st, body = call(api.CacheWherePath+"?top=0", ""); st != 400 {
		t.Fatalf("top=0: %d %s", st, body)
	}
	user := api.Identity{Uid: 1000, Gid: 1000}.String()
	if st, body = call(api.CacheWherePath+"?path=d", user); st != 200 {
		t.Fatalf("a user's where: %d %s", st, body)
	}
	if st, body = call(api.CacheWherePath+"?top=5", user); st != 403 {
		t.Fatalf("a user's top: %d %s", st, body)
	}
}
