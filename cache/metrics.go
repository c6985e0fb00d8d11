package cache

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics exposes the Stats counters as OpenTelemetry instruments. The
// counters are observable and read the same atomics Stats does, so there
// is one source of truth.
type metrics struct {
	reg   metric.Registration
	fetch metric.Float64Histogram
}

func newMetrics(m metric.Meter, s *Store) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("eddy/cache")
	}
	out := &metrics{}
	var err error
	out.fetch, err = m.Float64Histogram("eddy.cache.fetch.duration",
		metric.WithDescription("Time to fetch one chunk from the origin"), metric.WithUnit("s"))
	if err != nil {
		return out, fmt.Errorf("fetch histogram: %w", err)
	}
	type obs struct {
		name, desc, unit string
		counter          bool
		val              func() int64
	}
	defs := []obs{
		{"eddy.cache.hit.bytes", "Bytes served from the local cache", "By", true, s.c.hitBytes.Load},
		{"eddy.cache.miss.bytes", "Bytes fetched from the origin", "By", true, s.c.missBytes.Load},
		{"eddy.cache.direct.bytes", "Bytes read from the origin for random readers and not stored", "By", true, s.c.directBytes.Load},
		{"eddy.cache.peer.bytes", "Chunk bytes fetched from other nodes instead of the origin", "By", true, s.c.peerBytes.Load},
		{"eddy.cache.served.bytes", "Chunk bytes served to other nodes", "By", true, s.c.servedBytes.Load},
		{"eddy.cache.hits", "Chunk reads served locally", "{chunk}", true, s.c.hits.Load},
		{"eddy.cache.misses", "Chunk fetches from the origin", "{chunk}", true, s.c.misses.Load},
		{"eddy.cache.evictions", "Files evicted", "{file}", true, s.c.evictions.Load},
		{"eddy.cache.evicted.bytes", "Bytes evicted", "By", true, s.c.evictedBytes.Load},
		{"eddy.cache.passthrough.opens", "Opens served by kernel passthrough", "{open}", true, s.c.passthroughOpen.Load},
		{"eddy.cache.passthrough.bytes", "Sizes of the files opened by kernel passthrough", "By", true, s.c.passthroughBytes.Load},
		{"eddy.cache.revalidations", "Fingerprint checks against the origin", "{check}", true, s.c.revalidations.Load},
		{"eddy.cache.invalidations", "Cached files dropped because the origin changed", "{file}", true, s.c.invalidations.Load},
		{"eddy.cache.checksum.failures", "Chunks that failed their checksum", "{chunk}", true, s.c.checksumFailures.Load},
		{"eddy.cache.errors", "Cache-side errors (reads fell back to the origin)", "{error}", true, s.c.errors.Load},
		{"eddy.cache.cached.bytes", "Bytes cached", "By", false, func() int64 { return max(0, s.c.cachedBytes.Load()) }},
		{"eddy.cache.files", "Files in the cache", "{file}", false, func() int64 { return max(0, s.c.files.Load()) }},
		{"eddy.cache.quota.bytes", "Cache quota", "By", false, s.disk.quota.Load},
		{"eddy.cache.disk.free.bytes", "Free bytes on the cache file system", "By", false, s.c.diskFree.Load},
		{"eddy.cache.idle.files", "Closed files kept open for a quick reopen", "{file}", false, func() int64 { return int64(s.IdleFiles()) }},
	}
	insts := make([]metric.Observable, 0, len(defs))
	type pair struct {
		c metric.Int64ObservableCounter
		g metric.Int64ObservableGauge
		v func() int64
	}
	var pairs []pair
	for _, d := range defs {
		if d.counter {
			c, err := m.Int64ObservableCounter(d.name, metric.WithDescription(d.desc), metric.WithUnit(d.unit))
			if err != nil {
				return out, fmt.Errorf("%s: %w", d.name, err)
			}
			insts = append(insts, c)
			pairs = append(pairs, pair{c: c, v: d.val})
		} else {
			g, err := m.Int64ObservableGauge(d.name, metric.WithDescription(d.desc), metric.WithUnit(d.unit))
			if err != nil {
				return out, fmt.Errorf("%s: %w", d.name, err)
			}
			insts = append(insts, g)
			pairs = append(pairs, pair{g: g, v: d.val})
		}
	}
	out.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, p := range pairs {
			if p.c != nil {
				o.ObserveInt64(p.c, p.v())
			} else {
				o.ObserveInt64(p.g, p.v())
			}
		}
		return nil
	}, insts...)
	if err != nil {
		return out, fmt.Errorf("register callback: %w", err)
	}
	return out, nil
}

func (m *metrics) fetched(ctx context.Context, d time.Duration) {
	if m == nil || m.fetch == nil {
		return
	}
	m.fetch.Record(ctx, d.Seconds())
}

func (m *metrics) unregister() {
	if m != nil && m.reg != nil {
		_ = m.reg.Unregister()
	}
}
