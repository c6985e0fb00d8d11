package integration

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/eddy-cluster/eddy/api"
)

// foHistory is the failover test's log of what it saw: submits (acknowledged or not),
// assignments and ends, checked by check.
type foHistory struct {
	mu       sync.Mutex
	acked    map[string]int       // task ID -> submit sequence number
	failed   int                  // submits that were not acknowledged
	assigned map[string][]string  // task ID -> the nodes it was seen assigned to
	ends     map[string]api.State // task ID -> the terminal state seen
	endsSeen map[string][]api.State
}

func newFoHistory() *foHistory {
	return &foHistory{acked: map[string]int{}, assigned: map[string][]string{}, ends: map[string]api.State{}, endsSeen: map[string][]api.State{}}
}

func (h *foHistory) submitted(seq int, id string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.failed++
		return
	}
	h.acked[id] = seq
}

// observe records a task as the scheduler shows it.
func (h *foHistory) observe(t api.Task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.NodeName != "" {
		ns := h.assigned[t.ID]
		if len(ns) == 0 || ns[len(ns)-1] != t.NodeName {
			h.assigned[t.ID] = append(ns, t.NodeName)
		}
	}
	if t.State.Terminal() {
		seen := h.endsSeen[t.ID]
		if len(seen) == 0 || seen[len(seen)-1] != t.State {
			h.endsSeen[t.ID] = append(seen, t.State)
		}
		h.ends[t.ID] = t.State
	}
}

// check reports every violation: an acknowledged submit lost or not ended, a task seen in two
// terminal states or on two nodes, a task run other than once (runs: task ID -> times it ran).
func (h *foHistory) check(runs map[string]int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var bad []string
	for id := range h.acked {
		switch {
		case h.ends[id] == "":
			bad = append(bad, fmt.Sprintf("%s: acknowledged, never ended", id))
		case len(h.endsSeen[id]) > 1:
			bad = append(bad, fmt.Sprintf("%s: two terminal states %v", id, h.endsSeen[id]))
		}
		if len(h.assigned[id]) > 1 {
			bad = append(bad, fmt.Sprintf("%s: assigned to %v", id, h.assigned[id]))
		}
		if n := runs[id]; n > 1 || (n == 0 && h.ends[id] == api.StateCompleted) {
			bad = append(bad, fmt.Sprintf("%s: ran %d times (ended %s)", id, n, h.ends[id]))
		}
	}
	for id, n := range runs {
		if _, ok := h.acked[id]; !ok {
			bad = append(bad, fmt.Sprintf("%s: ran %d times, never acknowledged", id, n))
		}
	}
	sort.Strings(bad)
	return bad
}

func (h *foHistory) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	states := map[api.State]int{}
	for _, s := range h.ends {
		states[s]++
	}
	var parts []string
	for s, n := range states {
		parts = append(parts, fmt.Sprintf("%s=%d", s, n))
	}
	sort.Strings(parts)
	return fmt.Sprintf("acked=%d failed=%d ended: %s", len(h.acked), h.failed, strings.Join(parts, " "))
}

// loopbackGroup lays out a scheduler group of nSched members and nWork workers on loopback
// addresses from 127.0.0.<firstIP>: each daemon's API and raft addresses, and its cluster
// flags (node names prefix0, prefix1, ...; schedulers listed as each other's peers, workers
// joining all of them).
type loopbackGroup struct {
	api, raft []string // by daemon
	join      string   // the schedulers' API addresses, comma-separated
	args      func(i int) []string
}

func newLoopbackGroup(t *testing.T, prefix string, firstIP, nSched, nWork int, token string) loopbackGroup {
	t.Helper()
	var g loopbackGroup
	for i := range nSched + nWork {
		ip := fmt.Sprintf("127.0.0.%d", firstIP+i)
		g.api = append(g.api, freeAddr(t, ip))
		g.raft = append(g.raft, freeAddr(t, ip))
	}
	var peers []string
	for i := range nSched {
		peers = append(peers, fmt.Sprintf("%s%d=%s", prefix, i, g.raft[i]))
	}
	g.join = strings.Join(g.api[:nSched], ",")
	g.args = func(i int) []string {
		a := []string{"--node-name", fmt.Sprintf("%s%d", prefix, i), "--listen", g.api[i], "--token-file", token}
		if i < nSched {
			return append(a, "--scheduler", "--raft-listen", g.raft[i], "--scheduler-peers", strings.Join(peers, ","))
		}
		return append(a, "--join", g.join)
	}
	return g
}
