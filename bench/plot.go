package bench

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
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

// writePlots writes, per link: throughput by backend and workload (cold
// light, warm dark), operation rates for metadata and random reads, and
// eddy's speedup over the NFS baseline. It returns the file names.
func (r *Report) writePlots(dir string) ([]string, error) {
	links, backends, workloads := r.axes()
	states := r.states()
	var files []string
	write := func(name, svg string) error {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("write plot: %w", err)
		}
		files = append(files, name)
		return nil
	}
	for _, link := range links {
		var tput, ops, speed []barGroup
		for _, w := range workloads {
			var tg, og, sg barGroup
			tg.name, og.name, sg.name = w, w, w
			for _, bn := range backends {
				for _, st := range states {
					x, ok := r.find(link, bn, w, st)
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
			for _, e := range []string{BEddyNFS, BEddySSHFS} {
				for _, st := range states {
					x, ok1 := r.find(link, e, w, st)
					base, ok2 := r.find(link, BNFS, w, st)
					if !ok1 || !ok2 {
						continue
					}
					b := bar{label: fmt.Sprintf("%s ÷ nfs, %s", e, st), color: stateColor(e, st)}
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
			if err := write("throughput-"+link+".svg", hbarChart("Throughput by backend and workload, cold (light) vs warm (dark), link "+link, "MB/s", tput, 0)); err != nil {
				return files, err
			}
		}
		if len(ops) > 0 {
			if err := write("ops-"+link+".svg", hbarChart("Operations per second: metadata (readdir + lstat) and random 4 KiB reads, link "+link, "ops/s", ops, 0)); err != nil {
				return files, err
			}
		}
		if len(speed) > 0 {
			if err := write("speedup-"+link+".svg", hbarChart("eddy's speedup over the NFS baseline (NFSv3 via FUSE, no cache), link "+link, "x (dashed line: 1x)", speed, 1)); err != nil {
				return files, err
			}
		}
	}
	return files, nil
}
