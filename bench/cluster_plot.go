package bench

// The cluster benchmark's plots: one line per backend against the number of nodes, as SVG
// written by hand like the main suite's (no plotting tools on the machine).

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/eddy-cluster/eddy/units"
)

// clusterColor gives each backend of the cluster benchmark a colour.
var clusterColor = map[string]string{
	ClusterNFS:       "#1565c0",
	ClusterEddy:      "#2e7d32",
	ClusterEddyPeers: "#e65100",
}

// series is one line of a lineChart: y values at the chart's x positions (NaN: no point).
type series struct {
	name  string
	color string
	ys    []float64
}

// lineChart renders series against categorical x values (the node counts, evenly spaced) on
// a linear y axis from 0. ref > 0 draws a dashed horizontal reference line labelled refLabel.
func lineChart(title, xLabel, yLabel string, xs []int, ss []series, ref float64, refLabel string) string {
	const (
		width, height = 720, 420
		left, right   = 80, 170
		top, bottom   = 50, 60
	)
	hi := ref
	for _, s := range ss {
		for _, y := range s.ys {
			if !math.IsNaN(y) {
				hi = math.Max(hi, y)
			}
		}
	}
	if hi <= 0 {
		hi = 1
	}
	step := niceStep(hi / 5)
	hi = math.Ceil(hi*1.05/step) * step
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	x := func(i int) float64 {
		if len(xs) == 1 {
			return left + plotW/2
		}
		return left + float64(i)*plotW/float64(len(xs)-1)
	}
	y := func(v float64) float64 { return top + plotH - v/hi*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for v := 0.0; v <= hi+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+plotW, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`+"\n", left-6, y(v)+4, fmtNum(v))
	}
	for i, n := range xs {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x(i), top, x(i), top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%d</text>`+"\n", x(i), top+plotH+16, n)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", left+plotW/2, height-18, html.EscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n",
		top+plotH/2, top+plotH/2, html.EscapeString(yLabel))
	if ref > 0 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c62828" stroke-dasharray="5 3"/>`+"\n", left, y(ref), left+plotW, y(ref))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c62828">%s</text>`+"\n", left+plotW+6, y(ref)+4, html.EscapeString(refLabel))
	}
	for si, s := range ss {
		var pts []string
		for i, v := range s.ys {
			if i < len(xs) && !math.IsNaN(v) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), s.color)
		}
		for i, v := range s.ys {
			if i < len(xs) && !math.IsNaN(v) {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x(i), y(v), s.color)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", x(i)+5, y(v)-5, s.color, fmtNum(v))
			}
		}
		ly := top + 10 + 18*si
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", left+plotW+6, ly, left+plotW+26, ly, s.color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s</text>`+"\n", left+plotW+30, ly+4, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// writePlots writes wall-time.svg, origin-bytes.svg and node-mbps.svg (file workload),
// env-start-time.svg and env-origin-bytes.svg (env workload), each backend against the number
// of nodes, and returns their names; failed rows leave a gap.
func (r *ClusterReport) writePlots(dir string) ([]string, error) {
	type plot struct{ name, svg string }
	var plots []plot
	if rows := rowsOf(r.Results, WorkloadFile); len(rows) > 0 {
		xs, lines, fileBytes := clusterLines(rows)
		size := units1(fileBytes)
		plots = append(plots,
			plot{"wall-time.svg", lineChart("Time until the last node has every byte of the "+size+" file", "nodes reading at once",
				"wall time, s", xs, lines(func(x ClusterRow) float64 { return x.WallS }), 0, "")},
			plot{"origin-bytes.svg", lineChart("Bytes the NFS server sent while the nodes read the "+size+" file", "nodes reading at once",
				"origin bytes, GiB", xs, lines(func(x ClusterRow) float64 { return float64(x.OriginBytes) / (1 << 30) }),
				float64(fileBytes)/(1<<30), "file size")},
			plot{"node-mbps.svg", lineChart("Each node's read rate (median over the nodes)", "nodes reading at once",
				"MB/s per node", xs, lines(func(x ClusterRow) float64 { return x.MBps }), 0, "")})
	}
	if rows := rowsOf(r.Results, WorkloadEnv); len(rows) > 0 {
		xs, lines, tarBytes := clusterLines(rows)
		plots = append(plots,
			plot{"env-start-time.svg", lineChart("Time until the last node's container started (one "+units.FormatBytesUpToGiB(tarBytes)+" tarball)",
				"nodes starting a container at once", "wall time, s", xs, lines(func(x ClusterRow) float64 { return x.WallS }), 0, "")},
			plot{"env-origin-bytes.svg", lineChart("Bytes the NFS server sent while the nodes started their containers", "nodes starting a container at once",
				"origin bytes, GiB", xs, lines(func(x ClusterRow) float64 { return float64(x.OriginBytes) / (1 << 30) }),
				float64(tarBytes)/(1<<30), "tarball size")})
	}
	var files []string
	for _, p := range plots {
		if err := os.WriteFile(filepath.Join(dir, p.name), []byte(p.svg), 0o644); err != nil {
			return files, fmt.Errorf("write plot: %w", err)
		}
		files = append(files, p.name)
	}
	return files, nil
}

// clusterLines returns the node counts of rows (sorted), a function making one series per
// backend of a row's value at each (NaN where the row is missing or failed), and the largest
// file_bytes.
func clusterLines(rows []ClusterRow) (xs []int, lines func(func(ClusterRow) float64) []series, fileBytes int64) {
	var backends []string
	for _, x := range rows {
		if !slices.Contains(xs, x.Nodes) {
			xs = append(xs, x.Nodes)
		}
		if !slices.Contains(backends, x.Backend) {
			backends = append(backends, x.Backend)
		}
		fileBytes = max(fileBytes, x.FileBytes)
	}
	slices.Sort(xs)
	lines = func(val func(ClusterRow) float64) []series {
		var ss []series
		for _, bn := range backends {
			s := series{name: bn, color: clusterColor[bn]}
			if s.color == "" {
				s.color = "#333333"
			}
			for _, n := range xs {
				v := math.NaN()
				for _, x := range rows {
					if x.Backend == bn && x.Nodes == n && x.Status == StatusOK {
						v = val(x)
					}
				}
				s.ys = append(s.ys, v)
			}
			ss = append(ss, s)
		}
		return ss
	}
	return xs, lines, fileBytes
}

// units1 names a file size for a title: "1 GiB", "64 MiB".
func units1(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}
