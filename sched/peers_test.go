package sched

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// trackerRig is a scheduler with nodes a, b and c behind its HTTP API, and lookup and have
// calls for one file's chunks (1 MiB) as those nodes make them.
type trackerRig struct {
	clk  *clock
	srv  *httptest.Server
	fp   api.Fingerprint
	look func(nodeName string, idx int, f api.Fingerprint) api.PeerLookupResponse
	have func(nodeName string, from, to int)
}

func newTrackerRig(t *testing.T) *trackerRig {
	t.Helper()
	clk := &clock{t: time.Unix(1000, 0)}
	s := newTestScheduler(t, NewMemStore(), clk)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c"} {
		if _, err := s.Register(ctx, node(n, 2)); err != nil {
			t.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	s.Routes(mux)
	srv := httptest.NewServer(Authorize("tok", mux))
	t.Cleanup(srv.Close)
	c := api.NewTCP(srv.URL, api.WithToken("tok"))
	fp := api.Fingerprint{Size: 3 << 20, MtimeNs: 7, Ino: 9}
	r := &trackerRig{clk: clk, srv: srv, fp: fp}
	r.look = func(nodeName string, idx int, f api.Fingerprint) api.PeerLookupResponse {
		t.Helper()
		var resp api.PeerLookupResponse
		req := api.PeerLookupRequest{Node: nodeName, Path: "d/f", Fingerprint: f, ChunkSize: 1 << 20, Index: idx}
		if err := c.Do(ctx, "POST", api.PeerLookupPath, req, &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	r.have = func(nodeName string, from, to int) {
		t.Helper()
		req := api.PeerHaveRequest{Node: nodeName, Files: []api.PeerHaveFile{{Path: "d/f", Fingerprint: fp, ChunkSize: 1 << 20,
			Ranges: []api.PeerRange{{From: from, To: to}}}}}
		if err := c.Do(ctx, "POST", api.PeerHavePath, req, nil); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Copies spread: a node still fetching a chunk from a peer is offered to the next asker before
// a source that has already been handed out, so N copies leave N links, not one.
func TestPeerTrackerSpreadsSources(t *testing.T) {
	r := newTrackerRig(t)
	if l := r.look("a", 0, r.fp); !l.Lease {
		t.Fatalf("first miss: %+v, want a lease", l)
	}
	if l := r.look("b", 0, r.fp); len(l.Holders) != 1 || l.Holders[0].Node != "a" {
		t.Fatalf("second miss: %+v, want a", l)
	}
	l := r.look("c", 0, r.fp)
	if len(l.Holders) != 2 || l.Holders[0].Node != "b" || !l.Holders[0].Leased || l.Holders[1].Node != "a" {
		t.Fatalf("third miss: %+v, want b (fetching, never handed out) before a", l)
	}
	// a dropped its copy and asks again: b and c may be fetching from a, so they are not offered.
	if l := r.look("a", 0, r.fp); len(l.Holders) != 0 {
		t.Fatalf("the lease holder asking again: %+v, want nobody fetching from it", l)
	}
}

func TestPeerTrackerLeasesAndHolders(t *testing.T) {
	r := newTrackerRig(t)
	clk, srv, fp, look, have := r.clk, r.srv, r.fp, r.look, r.have
	if r := look("a", 0, fp); !r.Lease || len(r.Holders) != 0 {
		t.Fatalf("first miss: %+v, want a lease and no holders", r)
	}
	if r := look("b", 0, fp); r.Lease || len(r.Holders) != 1 || r.Holders[0].Node != "a" || !r.Holders[0].Leased {
		t.Fatalf("second miss: %+v, want a's lease", r)
	}
	have("a", 0, 2)
	for idx := range 2 {
		if r := look("b", idx, fp); r.Lease || len(r.Holders) != 1 || r.Holders[0].Node != "a" || r.Holders[0].Leased ||
			r.Holders[0].Address != "127.0.0.1:1" {
			t.Fatalf("chunk %d after a's report: %+v, want holder a", idx, r)
		}
	}
	if r := look("a", 0, fp); len(r.Holders) != 0 {
		t.Fatalf("holder asking (it dropped the chunk): %+v, want no other holder", r)
	}
	if r := look("c", 2, fp); !r.Lease {
		t.Fatalf("chunk 2: %+v, want a lease for c", r)
	}
	clk.Add(PeerLeaseTTL + time.Second)
	if r := look("b", 2, fp); !r.Lease || len(r.Holders) != 0 {
		t.Fatalf("chunk 2 after c's lease expired: %+v, want a lease for b", r)
	}
	other := fp
	other.MtimeNs++
	if r := look("b", 0, other); !r.Lease || len(r.Holders) != 0 {
		t.Fatalf("another version: %+v, want no holders of it", r)
	}
	// A call forwarded for a local user is refused.
	var resp api.PeerLookupResponse
	req, _ := http.NewRequest("POST", srv.URL+api.PeerLookupPath, nil)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set(api.IdentityHeader, "uid=1000,gid=1000")
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusForbidden {
		t.Fatalf("forwarded user call: %d %+v, want 403", hr.StatusCode, resp)
	}
}
