package daemon

import (
	"encoding/json"
	"testing"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/internal/wiretest"
	"github.com/eddy-cluster/eddy/origin"
)

// The API's answers used to embed the cache's and the origin's types; their api forms, as the
// server converts them, must encode to the same JSON with every field set.
func TestWireTypesKeepTheJSON(t *testing.T) {
	type oldCacheStats struct {
		cache.Stats
		Origin       string               `json:"origin"`
		Mount        string               `json:"mount"`
		NoCache      bool                 `json:"no_cache,omitempty"`
		OriginHealth *origin.OriginHealth `json:"origin_health,omitempty"`
	}
	st, oh := wiretest.Filled[cache.Stats](t), wiretest.Filled[origin.OriginHealth](t)
	wh := wireOriginHealth(oh)
	wiretest.SameJSON(t, "cache stats",
		oldCacheStats{Stats: st, Origin: "/srv", Mount: "/mnt", NoCache: true, OriginHealth: &oh},
		api.CacheStats{CacheCounters: wireCounters(st), Origin: "/srv", Mount: "/mnt", NoCache: true, OriginHealth: &wh})

	type oldWarmEvent struct {
		Arg  string `json:"arg"`
		Name string `json:"name,omitempty"`
		cache.Progress
		Done    bool    `json:"done,omitempty"`
		Error   string  `json:"error,omitempty"`
		Elapsed float64 `json:"elapsed_s"`
	}
	pr := wiretest.Filled[cache.Progress](t)
	wiretest.SameJSON(t, "warm event",
		oldWarmEvent{Arg: "a", Name: "n", Progress: pr, Done: true, Error: "e", Elapsed: 1.5},
		api.WarmEvent{Arg: "a", Name: "n", Progress: wireProgress(pr), Done: true, Error: "e", Elapsed: 1.5})

	files := wiretest.Filled[[]cache.FileInfo](t)
	wiretest.SameJSON(t, "cache ls", files, wireFiles(files))
	wiretest.SameJSON(t, "empty cache ls", []cache.FileInfo{}, wireFiles(nil))

	// And back: a client decoding the answer gets every field.
	var back api.CacheStats
	b, _ := json.Marshal(oldCacheStats{Stats: st, OriginHealth: &oh})
	if err := json.Unmarshal(b, &back); err != nil || back.CacheCounters != wireCounters(st) || *back.OriginHealth != wh {
		t.Fatalf("decoded stats = %+v, %v", back, err)
	}
}
