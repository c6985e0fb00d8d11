package bench

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The plots are horizontal bar charts on a log axis, written as SVG by hand
// (no plotting tools on the machine).

type bar struct {
	label  string
	value  float64
	color  string
	failed bool
}

type barGroup struct {
	name string
	bars []bar
}

// backendColor gives each backend a hue; cold is the light shade, warm the dark.
var backendColor = map[string][2]string{
	BLocal:     {"#bdbdbd", "#616161"},
	BNFS:       {"#90caf9", "#1565c0"},
	BNFSCat:    {"#b3e5fc", "#0277bd"},
	BSSHFS:     {"#ffcc80", "#e65100"},
	BSSHFSKC:   {"#ffe082", "#ff8f00"},
	BEddyNFS:   {"#a5d6a7", "#2e7d32"},
	BEddySSHFS: {"#ce93d8", "#6a1b9a"},
	BEddyLocal: {"#80cbc4", "#00695c"},
	BS3FS:      {"#ef9a9a", "#c62828"},
	BRclone:    {"#b0bec5", "#37474f"},
	BEddyS3:    {"#c5e1a5", "#558b2f"},
}

func stateColor(backend, state string) string {
	c, ok := backendColor[backend]
	if !ok {
		c = [2]string{"#cccccc", "#333333"}
	}
	if state != StateCold {
		return c[1]
	}
	return c[0]
}

// hbarChart renders groups of horizontal bars on a log10 axis. ref > 0
// draws a reference line at that value (1x on speedup charts).
func hbarChart(title, unit string, groups []barGroup, ref float64) string {
	const (
		width    = 960
		left     = 250
		right    = 110
		barH     = 13
		barGap   = 3
		groupGap = 14
		headH    = 18
		top      = 48
	)
	lo, hi := math.Inf(1), math.Inf(-1)
	nbars := 0
	for _, g := range groups {
		for _, b := range g.bars {
			nbars++
			if b.failed || b.value <= 0 {
				continue
			}
			lo = math.Min(lo, b.value)
			hi = math.Max(hi, b.value)
		}
	}
	if ref > 0 {
		lo, hi = math.Min(lo, ref), math.Max(hi, ref)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	lmin := math.Floor(math.Log10(lo))
	lmax := math.Ceil(math.Log10(hi))
	if lmax <= lmin {
		lmax = lmin + 1
	}
	plotW := float64(width - left - right)
	x := func(v float64) float64 {
		if v <= 0 {
			return left
		}
		return left + (math.Log10(v)-lmin)/(lmax-lmin)*plotW
	}
	height := top + len(groups)*(headH+groupGap) + nbars*(barH+barGap) + 40
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
	fmt.Fprintf(&s, `<text x="%d" y="36" fill="#555">%s (log scale)</text>`+"\n", left, html.EscapeString(unit))
	axisBottom := height - 30
	for e := lmin; e <= lmax; e++ {
		v := math.Pow(10, e)
		xx := x(v)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xx, top-6, xx, axisBottom)
		fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`+"\n", xx, axisBottom+14, fmtTick(v))
	}
	if ref > 0 {
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c62828" stroke-dasharray="4 3"/>`+"\n", x(ref), top-6, x(ref), axisBottom)
	}
	y := top
	for _, g := range groups {
		fmt.Fprintf(&s, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+12, html.EscapeString(g.name))
		y += headH
		for _, b := range g.bars {
			fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+barH-2, html.EscapeString(b.label))
			if b.failed {
				fmt.Fprintf(&s, `<text x="%d" y="%d" fill="#c62828">failed</text>`+"\n", left+4, y+barH-2)
			} else {
				w := math.Max(1, x(b.value)-left)
				fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, b.color)
				fmt.Fprintf(&s, `<text x="%.1f" y="%d">%s</text>`+"\n", left+w+4, y+barH-2, fmtNum(b.value))
			}
			y += barH + barGap
		}
		y += groupGap
	}
	s.WriteString("</svg>\n")
	return s.String()
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}

// writePlots writes, per link and latency: throughput by backend and
// workload (cold light, warm dark), operation rates for metadata and
// random reads, and eddy's speedup over the NFS baseline; and per link
// with more than one latency, the round-trip-bound workloads by latency.
// Undelayed plots keep their names (throughput-LINK.svg); delayed ones
// carry the delay (throughput-LINK-2ms.svg). It returns the file names.
func (r *Report) writePlots(dir string) ([]string, error) {
	links, backends, workloads := r.axes()
	states := r.states()
	lats := r.latencies()
	var files []string
	write := func(name, svg string) error {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("write plot: %w", err)
		}
		files = append(files, name)
		return nil
	}
	for _, link := range links {
		for _, lat := range lats {
			if !r.measuredAt(link, lat) {
				continue
			}
			if err := r.writeLinkPlots(write, link, lat, r.backendsAt(backends, lat), workloads, states); err != nil {
				return files, err
			}
		}
		if len(lats) > 1 {
			if err := r.writeLatencyPlot(write, link, lats, backends, workloads, states); err != nil {
				return files, err
			}
		}
	}
	return files, nil
}

func (r *Report) writeLinkPlots(write func(name, svg string) error, link string, lat float64, backends, workloads, states []string) error {
	suffix, title := link, "link "+link
	if lat != 0 {
		suffix += "-" + fmtLatency(lat)
		title += ", latency +" + fmtLatency(lat) + " one-way"
	}
	var tput, ops, speed []barGroup
	for _, w := range workloads {
		var tg, og, sg barGroup
		tg.name, og.name, sg.name = w, w, w
		for _, bn := range backends {
			for _, st := range states {
				x, ok := r.find(link, lat, bn, w, st)
				if !ok {
					continue
				}
				lbl := bn + " " + st
				if w != WMeta {
					tg.bars = append(tg.bars, bar{label: lbl, value: x.MBps, color: stateColor(bn, st), failed: x.Status != StatusOK})
				}
				if w == WMeta || w == WRand {
					og.bars = append(og.bars, bar{label: lbl, value: x.OpsPerSec, color: stateColor(bn, st), failed: x.Status != StatusOK})
				}
			}
		}
		for _, p := range [][2]string{{BEddyNFS, BNFS}, {BEddySSHFS, BNFS}, {BEddyS3, BS3FS}} {
			e := p[0]
			for _, st := range states {
				x, ok1 := r.find(link, lat, e, w, st)
				base, ok2 := r.find(link, lat, p[1], w, st)
				if !ok1 || !ok2 {
					continue
				}
				b := bar{label: fmt.Sprintf("%s ÷ %s, %s", e, p[1], st), color: stateColor(e, st)}
				if x.Status != StatusOK || base.Status != StatusOK || base.value() <= 0 {
					b.failed = true
				} else {
					b.value = x.value() / base.value()
				}
				sg.bars = append(sg.bars, b)
			}
		}
		if len(tg.bars) > 0 {
			tput = append(tput, tg)
		}
		if len(og.bars) > 0 {
			ops = append(ops, og)
		}
		if len(sg.bars) > 0 {
			speed = append(speed, sg)
		}
	}
	if len(tput) > 0 {
		if err := write("throughput-"+suffix+".svg", hbarChart("Throughput by backend and workload, cold (light) vs warm (dark), "+title, "MB/s", tput, 0)); err != nil {
			return err
		}
	}
	if len(ops) > 0 {
		if err := write("ops-"+suffix+".svg", hbarChart("Operations per second: metadata (readdir + lstat) and random 4 KiB reads, "+title, "ops/s", ops, 0)); err != nil {
			return err
		}
	}
	if len(speed) > 0 {
		speedTitle := "eddy's speedup over the NFS baseline (NFSv3 via FUSE, no cache), "
		if slices.Contains(backends, BEddyS3) {
			speedTitle = "eddy's speedup over the uncached baseline (nfs: NFSv3 via FUSE; s3fs for eddy-s3), "
		}
		if err := write("speedup-"+suffix+".svg", hbarChart(speedTitle+title, "x (dashed line: 1x)", speed, 1)); err != nil {
			return err
		}
	}
	return nil
}

// writeLatencyPlot writes latency-LINK.svg: for metadata, the small-file
// epoch and random 4 KiB reads, each proxied backend's operation rate at
// every latency.
func (r *Report) writeLatencyPlot(write func(name, svg string) error, link string, lats []float64, backends, workloads, states []string) error {
	var groups []barGroup
	for _, w := range latencyWorkloads {
		if !slices.Contains(workloads, w) {
			continue
		}
		for _, st := range states {
			g := barGroup{name: w + ", " + st}
			for _, bn := range backends {
				if !Proxied(bn) {
					continue
				}
				for _, l := range lats {
					x, ok := r.find(link, l, bn, w, st)
					if !ok {
						continue
					}
					lbl := bn + " 0ms"
					if l != 0 {
						lbl = bn + " +" + fmtLatency(l)
					}
					g.bars = append(g.bars, bar{label: lbl, value: x.OpsPerSec, color: stateColor(bn, st), failed: x.Status != StatusOK})
				}
			}
			if len(g.bars) > 0 {
				groups = append(groups, g)
			}
		}
	}
	if len(groups) == 0 {
		return nil
	}
	return write("latency-"+link+".svg", hbarChart("Round-trip-bound workloads by one-way latency (TCP latency proxy), link "+link,
		"ops/s: metadata = readdir + lstat, small-files-epoch = files, random-4k = reads", groups, 0))
}
