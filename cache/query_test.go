package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Warm fetches a whole directory, reports progress (ending at 100%), and
// is cancellable.
func TestWarmDirectory(t *testing.T) {
	o := newFakeOrigin()
	var total int64
	for i := range 6 {
		n := fmt.Sprintf("ds/sub%d/f%d", i%2, i)
		total += o.put(n, pattern((i+1)*testChunk/2+3, uint64(60+i))).Size
	}
	o.put("other/x", pattern(testChunk, 70))
	s := openStore(t, o, testConfig(t))
	var mu sync.Mutex
	var last Progress
	calls := 0
	if err := s.Warm(context.Background(), "ds", func(p Progress) { mu.Lock(); last = p; calls++; mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if last.Files != 6 || last.FilesDone != 6 || last.Bytes != total || last.BytesDone != total {
		t.Fatalf("final progress %+v (total %d)", last, total)
	}
	if got := s.CachedBytes("ds"); got != total {
		t.Fatalf("CachedBytes(ds) = %d, want %d", got, total)
	}
	if s.CachedBytes("other") != 0 {
		t.Fatal("warmed outside the directory")
	}
	reads := o.totalReads()
	if err := s.Warm(context.Background(), "ds", nil); err != nil || o.totalReads() != reads {
		t.Fatalf("second warm: %v, %d origin reads", err, o.totalReads()-reads)
	}
	list, err := s.List(context.Background(), "ds/sub0")
	if err != nil || len(list) != 3 || list[0].Percent != 100 {
		t.Fatalf("List: %+v %v", list, err)
	}

	// Cancellation.
	o.put("big", pattern(40*testChunk, 71))
	gate := make(chan struct{})
	o.gate = gate
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Warm(ctx, "big", nil) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled warm: %v", err)
	}
	close(gate)
}

// InventoryDelta: a full listing first (paged), then bounded deltas with
// additions and removals; an unknown generation gets a full listing.
func TestInventoryDelta(t *testing.T) {
	o := newFakeOrigin()
	s := openStore(t, o, testConfig(t))
	ctx := context.Background()
	for i := range 5 {
		n := fmt.Sprintf("f%d", i)
		o.put(n, pattern(testChunk, uint64(80+i)))
		cacheFile(t, s, o, n)
	}
	d, err := s.InventoryDelta(ctx, 0, 2)
	if err != nil || !d.Full || !d.More || len(d.Items) != 2 {
		t.Fatalf("first page %+v %v", d, err)
	}
	seen := map[string]bool{}
	for _, it := range d.Items {
		seen[it.Path] = true
	}
	for d.More {
		d, err = s.InventoryDelta(ctx, d.Gen, 2)
		if err != nil || d.Full {
			t.Fatalf("next page %+v %v", d, err)
		}
		for _, it := range d.Items {
			seen[it.Path] = true
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paged listing saw %d files", len(seen))
	}
	gen := d.Gen
	s.Evict(ctx, "f1")
	o.put("f5", pattern(testChunk, 90))
	cacheFile(t, s, o, "f5")
	d, err = s.InventoryDelta(ctx, gen, 10)
	if err != nil || d.Full || d.More {
		t.Fatalf("delta %+v %v", d, err)
	}
	if len(d.Removed) != 1 || d.Removed[0] != "f1" || len(d.Items) != 1 || d.Items[0].Path != "f5" || d.Items[0].CachedBytes != testChunk {
		t.Fatalf("delta %+v", d)
	}
	if d2, _ := s.InventoryDelta(ctx, d.Gen, 10); len(d2.Items)+len(d2.Removed) != 0 || d2.Full {
		t.Fatalf("empty delta %+v", d2)
	}
	if d3, _ := s.InventoryDelta(ctx, 12345, 10); !d3.Full {
		t.Fatal("a generation from another process must get a full listing")
	}
}

// The OpenTelemetry counters read the same atomics as Stats.
func TestMetricsMatchStats(t *testing.T) {
	reader := metric.NewManualReader()
	mp := metric.NewMeterProvider(metric.WithReader(reader))
	o := newFakeOrigin()
	data := pattern(2*testChunk, 95)
	o.put("f", data)
	cfg := testConfig(t)
	cfg.Meter = mp.Meter("test")
	s := openStore(t, o, cfg)
	h, _ := mustOpen(t, s, o, "f")
	readAll(t, h, int64(len(data)))
	readAll(t, h, int64(len(data)))
	s.NotePassthroughOpen(1)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	hist := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Gauge[int64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Histogram[float64]:
				hist = d.DataPoints[0].Count > 0
			}
		}
	}
	st := s.Stats()
	if got["eddy.cache.hit.bytes"] != st.HitBytes || got["eddy.cache.miss.bytes"] != st.MissBytes ||
		got["eddy.cache.passthrough.opens"] != 1 || st.HitBytes == 0 || !hist {
		t.Fatalf("metrics %v vs stats %+v (histogram %v)", got, st, hist)
	}
}
