package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(cacheCommand) }

func cacheCommand() *cli.Command {
	return &cli.Command{
		Name:  "cache",
		Usage: "inspect and steer the local node's cache",
		Subcommands: []*cli.Command{
			{
				Name:   "stats",
				Usage:  "hit/miss counts and bytes, cached bytes, files, evictions, passthrough opens, errors",
				Flags:  []cli.Flag{jsonFlag(), socketFlag()},
				Action: cacheStats,
			},
			{
				Name:      "ls",
				Usage:     "cached files: size, cached bytes and percent, pinned, last access",
				ArgsUsage: "[PATH]",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action:    cacheLs,
			},
			{
				Name:      "warm",
				Usage:     "fetch files or whole directories into the cache, with a progress bar",
				ArgsUsage: "PATH...",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action:    cacheWarm,
			},
			{
				Name:      "pin",
				Usage:     "keep files (or directories) in the cache; pinned files are never evicted",
				ArgsUsage: "PATH...",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action:    cachePathsAction("pin"),
			},
			{
				Name:      "unpin",
				Usage:     "let pinned files be evicted again",
				ArgsUsage: "PATH...",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action:    cachePathsAction("unpin"),
			},
			{
				Name:      "evict",
				Usage:     "drop files (or directories) from the cache now",
				ArgsUsage: "PATH...",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action:    cachePathsAction("evict"),
			},
			cacheWhereCommand(),
		},
	}
}

func cacheStats(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	s, err := cl.CacheStats(c.Context)
	if err != nil {
		return err
	}
	if wantJSON(c) {
		return printJSON(os.Stdout, s)
	}
	return printStats(os.Stdout, s)
}

func printStats(w io.Writer, s api.CacheStats) error {
	t := newTable(w)
	ratio := "-"
	// Bytes the kernel read by passthrough came from the cache too.
	if tot := s.HitBytes + s.PassthroughBytes + s.MissBytes; tot > 0 {
		ratio = fmt.Sprintf("%.1f%%", 100*float64(s.HitBytes+s.PassthroughBytes)/float64(tot))
	}
	state := "ok"
	if s.Degraded {
		state = "degraded (reads go to the origin)"
	}
	t.row("origin", s.Origin)
	if h := s.OriginHealth; h != nil {
		health := "up"
		if !h.Up {
			health = "DOWN"
		}
		if !h.Since.IsZero() {
			health += " since " + humanAgo(h.Since)
		}
		if h.LastError != "" {
			health += fmt.Sprintf(" (last error %s: %s)", humanAgo(h.LastErrorAt), h.LastError)
		}
		t.row("origin health", health)
	}
	t.row("mount", s.Mount)
	shareRow(t, s.Share)
	if s.NoCache {
		state = "no cache (--no-cache): every read goes to the origin"
	}
	t.row("state", state)
	t.row("hit bytes", fmt.Sprintf("%s (%d chunk reads)", units.FormatBytes(s.HitBytes), s.Hits))
	t.row("miss bytes", fmt.Sprintf("%s (%d chunk fetches; %s read for random readers, not stored)", units.FormatBytes(s.MissBytes), s.Misses, units.FormatBytes(s.DirectBytes)))
	t.row("peer bytes", fmt.Sprintf("%s fetched from other nodes, %s served to them", units.FormatBytes(s.PeerBytes), units.FormatBytes(s.ServedBytes)))
	t.row("peer rejected", fmt.Sprintf("%d chunks from other nodes failed their checksum (fetched elsewhere)", s.PeerRejected))
	t.row("hit ratio", ratio)
	t.row("cached bytes", fmt.Sprintf("%s of %s quota", units.FormatBytes(s.CachedBytes), units.FormatBytes(s.QuotaBytes)))
	t.row("files", fmt.Sprintf("%d (%d pinned)", s.Files, s.PinnedFiles))
	t.row("evictions", fmt.Sprintf("%d (%s)", s.Evictions, units.FormatBytes(s.EvictedBytes)))
	t.row("passthrough opens", fmt.Sprintf("%d (files of %s, read by the kernel from the cache)", s.PassthroughOpens, units.FormatBytes(s.PassthroughBytes)))
	t.row("idle files", fmt.Sprintf("%d (closed, kept open for a quick reopen)", s.IdleFiles))
	t.row("fill backlog", fmt.Sprintf("%d files to complete in the background", s.FillBacklog))
	t.row("revalidations", fmt.Sprintf("%d (%d invalidated)", s.Revalidations, s.Invalidations))
	t.row("checksum failures", s.ChecksumFailures)
	errs := fmt.Sprint(s.Errors)
	if s.LastError != "" {
		errs += fmt.Sprintf(" (last %s: %s)", humanAgo(s.LastErrorAt), s.LastError)
	}
	t.row("errors", errs)
	t.row("disk free", units.FormatBytes(s.DiskFreeBytes))
	t.row("chunk size", units.FormatBytes(s.ChunkSize))
	return t.flush()
}

func cacheLs(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("cache ls takes at most one PATH")
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	files, err := cl.CacheList(c.Context, c.Args().First(), cwd())
	if err != nil {
		return err
	}
	if wantJSON(c) {
		if files == nil {
			files = []api.FileInfo{}
		}
		return printJSON(os.Stdout, files)
	}
	t := newTable(os.Stdout, "PATH", "SIZE", "CACHED", "%", "PINNED", "LAST ACCESS")
	var size, cached int64
	for _, f := range files {
		pinned := ""
		if f.Pinned {
			pinned = "yes"
		}
		t.row(f.Path, units.FormatBytes(f.Size), units.FormatBytes(f.CachedBytes), fmt.Sprintf("%.0f", f.Percent), pinned, humanAgo(f.LastAccess))
		size += f.Size
		cached += f.CachedBytes
	}
	if len(files) > 1 {
		pct := 0.0
		if size > 0 {
			pct = 100 * float64(cached) / float64(size)
		}
		t.row(fmt.Sprintf("(%d files)", len(files)), units.FormatBytes(size), units.FormatBytes(cached), fmt.Sprintf("%.0f", pct), "", "")
	}
	return t.flush()
}

func cacheWarm(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("cache warm needs at least one PATH")
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	req := api.PathsRequest{Paths: c.Args().Slice(), Cwd: cwd()}
	if wantJSON(c) {
		return cl.CacheWarm(c.Context, req, func(ev api.WarmEvent) { _ = printJSONLine(os.Stdout, ev) })
	}
	bar := newProgressBar(os.Stderr, isTerminal(os.Stderr))
	err = cl.CacheWarm(c.Context, req, bar.update)
	bar.finish()
	return err
}

// progressBar draws warm-up progress on a terminal (bytes, rate, ETA) and
// prints one line per finished path elsewhere.
type progressBar struct {
	w        io.Writer
	tty      bool
	last     time.Time
	drawn    bool
	lastLine int
}

func newProgressBar(w io.Writer, tty bool) *progressBar { return &progressBar{w: w, tty: tty} }

func (b *progressBar) update(ev api.WarmEvent) {
	if ev.Done {
		b.clear()
		rate := 0.0
		if ev.Elapsed > 0 {
			rate = float64(ev.BytesFetch) / ev.Elapsed
		}
		if ev.Error != "" {
			fmt.Fprintf(b.w, "%s: FAILED: %s\n", ev.Arg, ev.Error)
			return
		}
		fmt.Fprintf(b.w, "%s: %d files, %s cached (%s fetched in %s, %s)\n", ev.Arg, ev.Files,
			units.FormatBytes(ev.BytesDone), units.FormatBytes(ev.BytesFetch), humanDuration(time.Duration(ev.Elapsed*float64(time.Second))), humanRate(rate))
		return
	}
	if !b.tty || time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := 0.0
	if ev.Bytes > 0 {
		frac = float64(ev.BytesDone) / float64(ev.Bytes)
	}
	if frac > 1 {
		frac = 1
	}
	n := int(frac * width)
	rate := 0.0
	if ev.Elapsed > 0 {
		rate = float64(ev.BytesFetch) / ev.Elapsed
	}
	eta := "-"
	if rate > 0 {
		eta = humanDuration(time.Duration(float64(ev.Bytes-ev.BytesDone) / rate * float64(time.Second)))
	}
	name := ev.Path
	if len(name) > 40 {
		name = "..." + name[len(name)-37:]
	}
	line := fmt.Sprintf("[%s%s] %3.0f%% %s/%s %s ETA %s %d/%d files %s",
		strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac,
		units.FormatBytes(ev.BytesDone), units.FormatBytes(ev.Bytes), humanRate(rate), eta, ev.FilesDone, ev.Files, name)
	pad := ""
	if len(line) < b.lastLine {
		pad = strings.Repeat(" ", b.lastLine-len(line))
	}
	fmt.Fprintf(b.w, "\r%s%s", line, pad)
	b.lastLine = len(line)
	b.drawn = true
}

func (b *progressBar) clear() {
	if b.drawn {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", b.lastLine))
		b.drawn = false
		b.lastLine = 0
	}
}

func (b *progressBar) finish() { b.clear() }

func cachePathsAction(op string) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() == 0 {
			return fmt.Errorf("cache %s needs at least one PATH", op)
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		req := api.PathsRequest{Paths: c.Args().Slice(), Cwd: cwd()}
		var resp api.PathsResponse
		switch op {
		case "pin":
			resp, err = cl.CachePin(c.Context, req)
		case "unpin":
			resp, err = cl.CacheUnpin(c.Context, req)
		case "evict":
			resp, err = cl.CacheEvict(c.Context, req)
		}
		if err != nil {
			return err
		}
		if wantJSON(c) {
			if err := printJSON(os.Stdout, resp); err != nil {
				return err
			}
		}
		var failed []string
		for _, r := range resp.Results {
			if r.Error != "" {
				msg := r.Error
				if op == "evict" && r.Code == api.CodePinned {
					msg = fmt.Sprintf("not evicted: %s is pinned; unpin it first (eddy cache unpin %s)", r.Path, r.Path)
				}
				failed = append(failed, fmt.Sprintf("%s: %s", r.Path, msg))
				if !wantJSON(c) {
					fmt.Fprintf(os.Stderr, "%s: %s\n", r.Path, msg)
				}
			} else if !wantJSON(c) {
				fmt.Fprintf(os.Stdout, "%s %s\n", opPast(op), r.Path)
			}
		}
		if len(failed) > 0 {
			return cli.Exit(errors.New(op+" failed for "+fmt.Sprint(len(failed))+" path(s)"), 1)
		}
		return nil
	}
}

func opPast(op string) string {
	return map[string]string{"pin": "pinned", "unpin": "unpinned", "evict": "evicted"}[op]
}
