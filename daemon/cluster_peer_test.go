package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
)

type nopPeerCache struct{ calls int }

func (c *nopPeerCache) SetPeerSource(cache.PeerSource) {}
func (c *nopPeerCache) ServePeerChunk(ctx context.Context, key cache.PeerKey, dst []byte, wait time.Duration) (int, uint64, error) {
	c.calls++
	if dst == nil {
		return 0, 0, nil
	}
	copy(dst, make([]byte, key.Len))
	return int(key.Len), 0xef46db3751d8e999, nil // xxhash64 of nothing, checked by nobody here
}

// The chunk route serves only calls made with the cluster token itself: never one from the
// local socket, the status page or forwarded for a local user.
func TestPeerChunkRouteNodeToNodeOnly(t *testing.T) {
	pc := &nopPeerCache{}
	srv := &peerServer{c: pc, slots: make(chan struct{}, 1), waiters: make(chan struct{}, 1)}
	q := "?path=f&fp=" + api.Fingerprint{Size: 10}.PeerParam() + "&csize=65536&idx=0&len=10"
	for _, tc := range []struct {
		via    string
		status int
	}{{"token", 200}, {"socket", 403}, {"forwarded", 403}, {"ui", 403}, {"", 403}} {
		r := httptest.NewRequest("GET", api.PeerChunkPath+q, nil)
		if tc.via != "" {
			r = r.WithContext(api.WithIdentity(r.Context(), api.Identity{Via: tc.via}))
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code != tc.status {
			t.Fatalf("via %q: %d %s, want %d", tc.via, w.Code, w.Body, tc.status)
		}
		if w.Code == http.StatusOK && (w.Body.Len() != 10 || w.Header().Get(api.PeerSumHeader) == "") {
			t.Fatalf("answer: %d bytes, sum %q", w.Body.Len(), w.Header().Get(api.PeerSumHeader))
		}
	}
	r := httptest.NewRequest("GET", api.PeerChunkPath+"?path=f&fp=1.2&csize=1&idx=0&len=1", nil)
	r = r.WithContext(api.WithIdentity(r.Context(), api.Identity{Via: "token"}))
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("malformed: %d, want 400", w.Code)
	}
}

func TestPeerAddRange(t *testing.T) {
	var rs []api.PeerRange
	for _, i := range []int{3, 4, 5, 2, 9, 5, 10} {
		rs = addRange(rs, i)
	}
	if len(rs) != 2 || rs[0] != (api.PeerRange{From: 2, To: 6}) || rs[1] != (api.PeerRange{From: 9, To: 11}) {
		t.Fatalf("ranges %v", rs)
	}
}
