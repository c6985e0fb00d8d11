package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

func (c *nopPeerCache) ServePeerChunkFile(context.Context, cache.PeerKey) (*os.File, int64, uint64, error) {
	return nil, 0, 0, cache.ErrPeerChunkBusy // served by copy
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

// chunkPeerCache serves one chunk of fixed bytes with their true checksum.
type chunkPeerCache struct{ data []byte }

func (c *chunkPeerCache) SetPeerSource(cache.PeerSource) {}
func (c *chunkPeerCache) ServePeerChunk(ctx context.Context, key cache.PeerKey, dst []byte, wait time.Duration) (int, uint64, error) {
	if dst == nil {
		return 0, 0, nil
	}
	return copy(dst, c.data), xxhash.Sum64(c.data), nil
}

// ServePeerChunkFile hands over the chunk stored in a file of its own, at an offset, as the
// cache does: the route sends it from there (sendfile over the test server's TCP).
func (c *chunkPeerCache) ServePeerChunkFile(ctx context.Context, key cache.PeerKey) (*os.File, int64, uint64, error) {
	f, err := os.CreateTemp("", "chunk")
	if err != nil {
		return nil, 0, 0, err
	}
	os.Remove(f.Name())
	const at = 4096
	if _, err := f.WriteAt(c.data, at); err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	if _, err := f.Seek(at, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, 0, err
	}
	return f, int64(len(c.data)), xxhash.Sum64(c.data), nil
}

// A holder whose bytes do not match the checksum it sends (the test hook on) is refused and
// counted; one whose bytes match is taken and not counted.
func TestPeerFetchRejectsCorruptChunk(t *testing.T) {
	data := []byte("0123456789abcdef")
	key := cache.PeerKey{Path: "f", Fingerprint: origin.Fingerprint{Size: 16}, ChunkSize: 65536, Len: int64(len(data))}
	for _, tc := range []struct {
		corrupt      bool
		wantRejected int64
	}{{false, 0}, {true, 1}} {
		srv := &peerServer{c: &chunkPeerCache{data: data}, slots: make(chan struct{}, 1), waiters: make(chan struct{}, 1),
			corrupt: tc.corrupt}
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			srv.ServeHTTP(w, r.WithContext(api.WithIdentity(r.Context(), api.Identity{Via: "token"})))
		}))
		var rejected atomic.Int64
		src := &peerSource{token: "t", scheme: "http", hc: hs.Client(), rejected: &rejected, log: slog.New(slog.DiscardHandler)}
		dst := make([]byte, len(data))
		_, err := src.fetchFrom(context.Background(), api.PeerHolder{Node: "n", Address: hs.URL}, key, dst)
		hs.Close()
		if (err != nil) != tc.corrupt || rejected.Load() != tc.wantRejected {
			t.Fatalf("corrupt %v: err %v, rejected %d; want an error %v, rejected %d", tc.corrupt, err, rejected.Load(), tc.corrupt, tc.wantRejected)
		}
		if !tc.corrupt && !bytes.Equal(dst, data) {
			t.Fatalf("fetched %q, want %q", dst, data)
		}
	}
}

// The rejected-chunk count is exported as an OpenTelemetry counter reading the same atomic as
// the stats, and unregistered with peer fetch.
func TestPeerRejectedMetric(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var rejected atomic.Int64
	reg, err := registerPeerMetrics(mp.Meter("test"), &rejected)
	if err != nil {
		t.Fatal(err)
	}
	rejected.Add(3)
	collect := func() (int64, bool) {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "eddy.cache.peer.rejected" && len(d.DataPoints) > 0 {
					return d.DataPoints[0].Value, true
				}
			}
		}
		return 0, false
	}
	if v, ok := collect(); !ok || v != 3 {
		t.Fatalf("eddy.cache.peer.rejected = %d (found %v), want 3", v, ok)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if _, ok := collect(); ok {
		t.Fatal("eddy.cache.peer.rejected still observed after Unregister")
	}
}
