package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

// whereNote says what the scheduler's answer is made of.
const whereNote = "from the inventories the nodes send with their heartbeats: each file's cached bytes per node " +
	"(not which ranges), a few seconds old; files no node caches are not counted"

func cacheWhereCommand() *cli.Command {
	return &cli.Command{
		Name: "where",
		Usage: "cluster-wide: which nodes cache a file or a directory's files, and how much of them " +
			"(or, with --top N, the largest files cached anywhere)",
		ArgsUsage: "PATH",
		Flags: []cli.Flag{jsonFlag(), socketFlag(),
			&cli.IntFlag{Name: "top", Usage: fmt.Sprintf("instead of PATH: the N largest files cached in the cluster (at most %d; root only)", api.MaxCacheTop)}},
		Action: cacheWhere,
	}
}

func cacheWhere(c *cli.Context) error {
	top := c.Int("top")
	switch {
	case top > 0 && c.NArg() > 0:
		return fmt.Errorf("cache where: give PATH or --top N, not both")
	case top <= 0 && c.NArg() != 1:
		return fmt.Errorf("cache where takes one PATH (a file or directory in the share), or --top N")
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	if top > 0 {
		out, err := cl.CacheTop(c.Context, top)
		if err != nil {
			return fmt.Errorf("cache where: %w", err)
		}
		if wantJSON(c) {
			return printJSON(os.Stdout, out)
		}
		return printCacheTop(os.Stdout, out)
	}
	h, err := cl.Health(c.Context)
	if err != nil {
		return fmt.Errorf("cache where: %w", err)
	}
	p, err := sharePath(h.Mount, c.Args().First(), cwd())
	if err != nil {
		return fmt.Errorf("cache where: %w", err)
	}
	out, err := cl.CacheWhere(c.Context, p)
	if err != nil {
		return fmt.Errorf("cache where: %w", err)
	}
	if wantJSON(c) {
		return printJSON(os.Stdout, out)
	}
	return printCacheWhere(os.Stdout, out)
}

// sharePath is p share-relative, resolved as the local daemon resolves paths: absolute under the
// mount, relative to cwd when cwd is under the mount, else already share-relative.
func sharePath(mount, p, cwd string) (string, error) {
	mount = filepath.Clean(mount)
	under := func(a string) bool { return mount != "." && (a == mount || strings.HasPrefix(a, mount+"/")) }
	abs := ""
	switch {
	case filepath.IsAbs(p):
		abs = filepath.Clean(p)
	case filepath.IsAbs(cwd) && under(filepath.Clean(cwd)):
		abs = filepath.Join(cwd, p)
	}
	if abs == "" {
		return p, nil
	}
	if !under(abs) {
		return "", fmt.Errorf("%s is not under the mount %s", p, mount)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(abs, mount), "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

func percent(part, whole int64) string {
	if whole <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
}

func printCacheWhere(w io.Writer, out api.CacheWhere) error {
	what := "file"
	if out.Dir || out.Path == "." {
		what = fmt.Sprintf("directory: %d cached files", out.Files)
	}
	if out.Files == 0 {
		fmt.Fprintf(w, "%s: no node caches anything of it\n", out.Path)
	} else {
		fmt.Fprintf(w, "%s (%s, %s)\n", out.Path, what, units.FormatBytes(out.SizeBytes))
	}
	t := newTable(w, "NODE", "UP", "FILES", "WHOLE", "CACHED", "OF", "PERCENT")
	for _, n := range out.Nodes {
		t.row(n.Node, n.Up, n.Files, n.WholeFiles, units.FormatBytes(n.CachedBytes), units.FormatBytes(out.SizeBytes), percent(n.CachedBytes, out.SizeBytes))
	}
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "("+whereNote+")")
	return err
}

func printCacheTop(w io.Writer, out api.CacheTop) error {
	t := newTable(w, "PATH", "SIZE", "NODES")
	for _, f := range out.Files {
		var hs []string
		for _, n := range f.Nodes {
			down := ""
			if !n.Up {
				down = ", down"
			}
			hs = append(hs, fmt.Sprintf("%s %s (%s%s)", n.Node, units.FormatBytes(n.CachedBytes), percent(n.CachedBytes, f.SizeBytes), down))
		}
		t.row(f.Path, units.FormatBytes(f.SizeBytes), strings.Join(hs, ", "))
	}
	if err := t.flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "("+whereNote+")")
	return err
}
