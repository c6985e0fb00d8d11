package ui

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

// Sample is one point of the charts, taken from the API every SampleInterval.
type Sample struct {
	At      time.Time `json:"at"`
	HitBps  float64   `json:"hit_bps"`  // bytes per second served from the nodes' caches
	MissBps float64   `json:"miss_bps"` // bytes per second fetched from the origin
	Queued  int       `json:"queued"`
	Running int       `json:"running"` // assigned or running
}

// sampler keeps the last samples in memory, and the counters the next rates are taken from.
type sampler struct {
	mu   sync.Mutex
	max  int
	ring []Sample
	prev map[string]counter // by node
}

type counter struct {
	at        time.Time
	hit, miss int64
}

func newSampler(max int) *sampler { return &sampler{max: max, prev: map[string]counter{}} }

func (sp *sampler) add(s Sample) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.ring = append(sp.ring, s)
	if len(sp.ring) > sp.max {
		sp.ring = append(sp.ring[:0], sp.ring[len(sp.ring)-sp.max:]...)
	}
}

func (sp *sampler) all() []Sample {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return append([]Sample(nil), sp.ring...)
}

// rates turns the nodes' counters into bytes per second since their previous reading. A node
// seen for the first time, or whose counters went back (it restarted), adds nothing.
func (sp *sampler) rates(now time.Time, stats map[string]api.CacheCounters) (hit, miss float64) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	next := map[string]counter{}
	for name, c := range stats {
		next[name] = counter{at: now, hit: c.HitBytes, miss: c.MissBytes}
		p, ok := sp.prev[name]
		dt := now.Sub(p.at).Seconds()
		if !ok || dt <= 0 || c.HitBytes < p.hit || c.MissBytes < p.miss {
			continue
		}
		hit += float64(c.HitBytes-p.hit) / dt
		miss += float64(c.MissBytes-p.miss) / dt
	}
	sp.prev = next
	return hit, miss
}

// sampleOnce reads the nodes' cache counters and the queue, and keeps a sample.
func (s *Server) sampleOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.cfg.CallTimeout)
	defer cancel()
	now := s.cfg.Now()
	ns, cluster, err := s.nodes(ctx)
	if err != nil {
		s.log.Debug("status page: sample", "err", err)
		return
	}
	var mu sync.Mutex
	stats := map[string]api.CacheCounters{}
	s.eachUpNode(ctx, ns, func(i int, c Caller, ctx context.Context) {
		var st api.CacheStats
		if c.Do(ctx, http.MethodGet, "/v1/cache/stats", nil, &st) == nil {
			mu.Lock()
			stats[ns[i].Name] = st.CacheCounters
			mu.Unlock()
		}
	})
	smp := Sample{At: now}
	smp.HitBps, smp.MissBps = s.samples.rates(now, stats)
	if cluster {
		var ts []api.Task
		if err := s.cfg.Local.Do(ctx, http.MethodGet, "/v1/tasks?limit=0", nil, &ts); err == nil {
			for _, t := range ts {
				switch t.State {
				case api.StateQueued:
					smp.Queued++
				case api.StateAssigned, api.StateRunning:
					smp.Running++
				}
			}
		}
	}
	s.samples.add(smp)
}

func (s *Server) handleSamples(w http.ResponseWriter, r *http.Request) {
	api.WriteJSON(w, http.StatusOK, s.samples.all())
}

// Chart is what one small chart draws.
type Chart struct {
	Title  string
	Series []Series
	Format func(float64) string
}

// Series is one line of a chart.
type Series struct {
	Name   string
	Color  string
	Values []float64
}

// charts are the charts the page shows, by name.
func charts(samples []Sample) map[string]Chart {
	pick := func(f func(Sample) float64) []float64 {
		v := make([]float64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		return v
	}
	rate := func(v float64) string { return units.FormatBytesOneDecimal(int64(v)) + "/s" }
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	return map[string]Chart{
		"cache": {Title: "Cache hit / miss bytes per second", Format: rate, Series: []Series{
			{Name: "hit", Color: "#1b8a3a", Values: pick(func(s Sample) float64 { return s.HitBps })},
			{Name: "miss", Color: "#c0392b", Values: pick(func(s Sample) float64 { return s.MissBps })},
		}},
		"queue": {Title: "Queue length", Format: count, Series: []Series{
			{Name: "queued", Color: "#2456c9", Values: pick(func(s Sample) float64 { return float64(s.Queued) })},
		}},
		"running": {Title: "Running tasks", Format: count, Series: []Series{
			{Name: "running", Color: "#8e44ad", Values: pick(func(s Sample) float64 { return float64(s.Running) })},
		}},
	}
}

func (s *Server) handleChart(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSuffix(r.PathValue("name"), ".svg")
	samples := s.samples.all()
	c, ok := charts(samples)[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	span := time.Duration(0)
	if len(samples) > 1 {
		span = samples[len(samples)-1].At.Sub(samples[0].At)
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	_, _ = w.Write(RenderSVG(c, span))
}

// RenderSVG draws c as a small line chart (span: the time its values cover).
func RenderSVG(c Chart, span time.Duration) []byte {
	const W, H, left, top, bottom, right = 360.0, 120.0, 8.0, 26.0, 18.0, 8.0
	pw, ph := W-left-right, H-top-bottom
	peak := 0.0
	n := 0
	for _, s := range c.Series {
		n = max(n, len(s.Values))
		for _, v := range s.Values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				peak = max(peak, v)
			}
		}
	}
	scale := peak
	if scale <= 0 {
		scale = 1
	}
	var b bytes.Buffer
	esc := html.EscapeString
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="%s">`, W, H, W, H, esc(c.Title))
	fmt.Fprintf(&b, `<rect width="%g" height="%g" fill="#ffffff"/>`, W, H)
	fmt.Fprintf(&b, `<text x="%g" y="14" font-family="sans-serif" font-size="12" font-weight="bold" fill="#1d2330">%s</text>`, left, esc(c.Title))
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#d0d4dc"/>`, left, top, W-right, top)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#9aa1ad"/>`, left, top+ph, W-right, top+ph)
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-family="sans-serif" font-size="10" fill="#555" text-anchor="end">max %s</text>`, W-right, top-3, esc(c.Format(peak)))
	legend := []string{}
	for _, s := range c.Series {
		last := 0.0
		if len(s.Values) > 0 {
			last = s.Values[len(s.Values)-1]
		}
		legend = append(legend, fmt.Sprintf(`<tspan fill="%s">■ %s %s</tspan>`, esc(s.Color), esc(s.Name), esc(c.Format(last))))
		if len(s.Values) == 0 {
			continue
		}
		var pts []string
		for i, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				v = 0
			}
			x := left + pw
			if n > 1 {
				x = left + pw*float64(i+n-len(s.Values))/float64(n-1)
			}
			y := top + ph - ph*v/scale
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, esc(s.Color), strings.Join(pts, " "))
	}
	label := "no samples yet"
	if n > 0 {
		label = fmt.Sprintf("last %s, %d samples", span.Round(time.Second), n)
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" font-family="sans-serif" font-size="10" fill="#555">%s  %s</text>`, left, H-5, strings.Join(legend, " "), esc(label))
	b.WriteString(`</svg>`)
	return b.Bytes()
}
