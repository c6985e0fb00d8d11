package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(verifyCommand) }

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check the cluster's share end to end: every node sees the others' writes, permissions hold, latency and throughput",
		Description: "Every node writes a marker through its mount (" + api.VerifyDir + "/<run>/<node>), reads every other\n" +
			"node's back and removes its own; a root 0600 file must be refused to nobody through each mount; each node\n" +
			"measures its stat round trip and its read throughput from the origin and from its cache. The local daemon\n" +
			"relays each step to the node's cluster API. Exits non-zero on any failure, saying what to fix.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "size", Value: "16M", Usage: "`SIZE` of each node's throughput test file"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "bound on the whole run"},
			jsonFlag(), socketFlag(),
		},
		Action: verifyAction,
	}
}

type verifyNode struct {
	Name, Address string
}

func verifyAction(c *cli.Context) error {
	size, err := units.ParseSize(c.String("size"))
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	h, err := cl.Health(ctx)
	if err != nil {
		return err
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	rep := api.VerifyReport{
		Run:     time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(rnd[:]),
		Matrix:  map[string]map[string]string{},
		Origins: map[string]string{},
		Perm:    map[string]api.VerifyPermResult{},
		Measure: map[string]api.VerifyMeasures{},
	}
	problem := func(f string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(f, a...)) }

	var nodes []verifyNode
	if ns, err := cl.Nodes(ctx); err == nil && len(ns) > 0 {
		for _, n := range ns {
			if !n.Up {
				problem("node %s is down (last seen %s): start its daemon, or remove it from the cluster", n.Name, humanAgo(n.LastSeen))
				continue
			}
			nodes = append(nodes, verifyNode{Name: n.Name, Address: n.Address})
		}
	} else {
		nodes = []verifyNode{{Name: h.Node}} // a single node (no cluster)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for _, n := range nodes {
		rep.Nodes = append(rep.Nodes, n.Name)
	}

	// round runs one step on every node at once; failed calls are problems, and the node is
	// left out of the later rounds.
	alive := map[string]bool{}
	for _, n := range nodes {
		alive[n.Name] = true
	}
	round := func(step string, mk func(n verifyNode) api.VerifyStepRequest) map[string]api.VerifyStepResponse {
		out := map[string]api.VerifyStepResponse{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range nodes {
			if !alive[n.Name] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := mk(n)
				req.Node, req.Address, req.Step, req.Run = n.Name, n.Address, step, rep.Run
				resp, err := cl.VerifyStep(ctx, req)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					problem("node %s: %s: %v: check that its daemon runs and that its cluster API (--listen %s) is reachable from here", n.Name, step, oneLine(err), n.Address)
					alive[n.Name] = false
					return
				}
				if resp.Error != "" {
					problem("node %s: %s: %s", n.Name, step, resp.Error)
				}
				out[n.Name] = resp
			}()
		}
		wg.Wait()
		return out
	}
	none := func(verifyNode) api.VerifyStepRequest { return api.VerifyStepRequest{} }

	wrote := round(api.VerifyWrite, none)
	for n, r := range wrote {
		rep.Origins[n] = r.Origin
	}
	read := round(api.VerifyRead, func(verifyNode) api.VerifyStepRequest {
		return api.VerifyStepRequest{Writers: rep.Nodes}
	})
	for _, wr := range rep.Nodes {
		rep.Matrix[wr] = map[string]string{}
		for _, rd := range rep.Nodes {
			st := "-"
			if r, ok := read[rd]; ok {
				st = r.Markers[wr]
			}
			rep.Matrix[wr][rd] = st
		}
	}
	diagnoseShares(&rep, read, problem)
	for n, r := range round(api.VerifyPerm, none) {
		if r.Perm == nil {
			continue
		}
		rep.Perm[n] = *r.Perm
		switch {
		case !r.Perm.SecretRefused && r.Perm.Detail != "" && !r.Perm.PublicReadable:
			problem("node %s: permissions not checked: %s", n, r.Perm.Detail)
		case !r.Perm.SecretRefused:
			problem("node %s: %s: check that its mount has default_permissions and the origin keeps modes and owners", n, r.Perm.Detail)
		case !r.Perm.PublicReadable:
			problem("node %s: %s", n, r.Perm.Detail)
		}
	}
	for n, r := range round(api.VerifyMeasure, func(verifyNode) api.VerifyStepRequest {
		return api.VerifyStepRequest{Size: size}
	}) {
		if r.Measure != nil {
			rep.Measure[n] = *r.Measure
		}
	}
	for n := range alive {
		alive[n] = true // clean up wherever possible
	}
	round(api.VerifyCleanup, none)
	rep.OK = len(rep.Problems) == 0

	if wantJSON(c) {
		if err := printJSON(os.Stdout, rep); err != nil {
			return err
		}
	} else {
		printVerify(os.Stdout, rep)
	}
	if !rep.OK {
		return cli.Exit(fmt.Sprintf("eddy: verify: %d problem(s)", len(rep.Problems)), 1)
	}
	return nil
}

// diagnoseShares finds the nodes whose markers the others do not see: the nodes that see each
// other's markers form groups; the largest group is taken for the share, and each node outside
// it is named with its origin.
func diagnoseShares(rep *api.VerifyReport, read map[string]api.VerifyStepResponse, problem func(string, ...any)) {
	sees := func(rd, wr string) bool { return read[rd].Markers[wr] == "ok" }
	var groups [][]string
	placed := map[string]bool{}
	for _, n := range rep.Nodes {
		if placed[n] || read[n].Markers == nil {
			continue
		}
		g := []string{n}
		placed[n] = true
		for _, m := range rep.Nodes {
			if !placed[m] && read[m].Markers != nil && sees(n, m) && sees(m, n) {
				g = append(g, m)
				placed[m] = true
			}
		}
		groups = append(groups, g)
	}
	if len(groups) == 0 {
		return
	}
	sort.SliceStable(groups, func(i, j int) bool { return len(groups[i]) > len(groups[j]) })
	main := groups[0]
	inMain := map[string]bool{}
	for _, n := range main {
		inMain[n] = true
	}
	for _, n := range rep.Nodes {
		if _, ok := read[n]; !ok {
			continue
		}
		if !sees(n, n) {
			problem("node %s: cannot read back its own marker (%s): check its mount and origin", n, read[n].Markers[n])
			continue
		}
		if inMain[n] {
			for _, m := range main {
				if st := read[n].Markers[m]; st != "ok" {
					problem("node %s: the marker of %s is %s", n, m, st)
				}
			}
			continue
		}
		if len(groups) > 1 && len(main) == len(groups[1]) && len(main) > 1 {
			// No majority: say which nodes see which.
			problem("node %s: sees only %s: the nodes do not share one origin", n, strings.Join(seenBy(rep.Nodes, n, sees), ", "))
			continue
		}
		var missing []string
		for _, m := range main {
			if !sees(n, m) {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			missing = main
		}
		problem("node %s: its share is not the others' (markers of %s not found): check its --origin (it has %s; %s %s)",
			n, strings.Join(missing, ", "), rep.Origins[n], strings.Join(main, ", "), hasOrigins(rep, main))
	}
}

func seenBy(nodes []string, rd string, sees func(rd, wr string) bool) []string {
	var out []string
	for _, wr := range nodes {
		if sees(rd, wr) {
			out = append(out, wr)
		}
	}
	return out
}

func hasOrigins(rep *api.VerifyReport, nodes []string) string {
	seen := map[string]bool{}
	var out []string
	for _, n := range nodes {
		if o := rep.Origins[n]; !seen[o] {
			seen[o] = true
			out = append(out, o)
		}
	}
	verb := "has"
	if len(nodes) > 1 {
		verb = "have"
	}
	return verb + " " + strings.Join(out, ", ")
}

func printVerify(w io.Writer, rep api.VerifyReport) {
	fmt.Fprintf(w, "run %s: %d node(s)\n\nmarkers (rows: writer, columns: reader)\n", rep.Run, len(rep.Nodes))
	t := newTable(w, append([]string{"WRITER"}, rep.Nodes...)...)
	for _, wr := range rep.Nodes {
		row := []any{wr}
		for _, rd := range rep.Nodes {
			row = append(row, rep.Matrix[wr][rd])
		}
		t.row(row...)
	}
	t.flush()
	fmt.Fprintln(w)
	t = newTable(w, "NODE", "ORIGIN", "STAT(origin)", "LOOKUP(mount)", "READ(origin)", "READ(cache)", "PERMISSIONS")
	for _, n := range rep.Nodes {
		m, ok := rep.Measure[n]
		st, lk, ro, rc := "-", "-", "-", "-"
		if ok {
			st, lk = fmt.Sprintf("%.2fms", m.OriginStatMs), fmt.Sprintf("%.2fms", m.MountStatMs)
			ro, rc = humanRate(m.OriginReadBps), humanRate(m.CacheReadBps)
		}
		perm := "-"
		if p, ok := rep.Perm[n]; ok {
			switch {
			case p.SecretRefused && p.PublicReadable:
				perm = "ok (0600 refused to nobody)"
			case !p.SecretRefused && p.PublicReadable:
				perm = "FAIL (0600 readable by nobody)"
			default:
				perm = "not checked"
			}
		}
		t.row(n, rep.Origins[n], st, lk, ro, rc, perm)
	}
	t.flush()
	for _, n := range rep.Nodes {
		if m, ok := rep.Measure[n]; ok && m.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", n, m.Note)
		}
	}
	fmt.Fprintln(w)
	if rep.OK {
		fmt.Fprintln(w, "ok: every node sees the same share")
		return
	}
	fmt.Fprintln(w, "problems:")
	for _, p := range rep.Problems {
		fmt.Fprintln(w, "  - "+p)
	}
}
