package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

// The JSON the page's script reads. Each is built, at each call, from the control API's own
// answers (api types, embedded as they are) plus what the page derives from them.

// Overview is GET /api/overview.
type Overview struct {
	Now     time.Time   `json:"now"`
	Role    Role        `json:"role"`
	Cluster ClusterView `json:"cluster"`
	Alerts  []Alert     `json:"alerts"`
	Nodes   []NodeView  `json:"nodes"`
	// Queued (in the scheduler's order), Running (assigned or running) and Recent (ended,
	// newest first, at most maxRecent), after the filters.
	Queued  []TaskView `json:"queued"`
	Running []TaskView `json:"running"`
	Recent  []TaskView `json:"recent"`
	// Counts are the unfiltered number of tasks in each state.
	Counts map[api.State]int `json:"counts"`
	Users  []string          `json:"users"` // users with tasks, for the filter
}

// ClusterView is the cluster's header: the scheduler and this daemon.
type ClusterView struct {
	Mode         string    `json:"mode"` // "scheduler", "node" (joined) or "single"
	Node         string    `json:"node"` // the node serving the page
	Scheduler    string    `json:"scheduler,omitempty"`
	Version      string    `json:"version"`
	StartedAt    time.Time `json:"started_at"`
	UptimeS      float64   `json:"uptime_s"`
	SchedulerErr string    `json:"scheduler_error,omitempty"`
	// Raft is the scheduler group (GET /v1/cluster/raft): its members, leader and term; nil
	// outside cluster mode, or when it could not be read (RaftErr).
	Raft    *api.RaftStatus `json:"raft,omitempty"`
	RaftErr string          `json:"raft_error,omitempty"`
}

// Alert is one thing that needs a person's attention.
type Alert struct {
	Level string `json:"level"` // "error" or "warn"
	Kind  string `json:"kind"`  // "node_down", "origin", "quota", "cache", "share", "scheduler", "scheduler_member", "stats"
	Node  string `json:"node,omitempty"`
	Text  string `json:"text"`
}

// NodeView is one node: the scheduler's view (api.NodeStatus) and the node's own cache stats.
type NodeView struct {
	api.NodeStatus
	HeartbeatAgeS float64         `json:"heartbeat_age_s"`
	Cache         *api.CacheStats `json:"cache,omitempty"`
	CacheErr      string          `json:"cache_error,omitempty"`
	HitRatio      *float64        `json:"hit_ratio,omitempty"` // hit bytes / (hit + miss bytes)
}

// TaskView is one task with what the page shows beside it.
type TaskView struct {
	api.Task
	User     string `json:"user"`               // the name of its uid, else the uid
	Position int    `json:"position,omitempty"` // in the queue, from 1
	Waiting  string `json:"waiting,omitempty"`  // why a queued task waits
}

const maxRecent = 50

// userNames caches uid -> user name.
type userNames struct {
	mu sync.Mutex
	m  map[uint32]string
}

func (u *userNames) name(uid uint32) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n, ok := u.m[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if us, err := user.LookupId(n); err == nil {
		n = us.Username
	}
	if len(u.m) < 4096 {
		u.m[uid] = n
	}
	return n
}

// nodes is the cluster's nodes (GET /v1/nodes); outside cluster mode (the daemon answers 404)
// the one local node, and ok is false.
func (s *Server) nodes(ctx context.Context) (ns []api.NodeStatus, cluster bool, err error) {
	err = s.cfg.Local.Do(ctx, http.MethodGet, "/v1/nodes", nil, &ns)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return []api.NodeStatus{{NodeRecord: api.NodeRecord{Name: s.cfg.NodeName}, Up: true, LastSeen: s.cfg.Now()}}, false, nil
	}
	return ns, true, err
}

// nodeAPI is the API of node n: Local for this node, else its cluster listener.
func (s *Server) nodeAPI(n api.NodeStatus) Caller {
	if n.Name == s.cfg.NodeName || s.cfg.Node == nil || n.Address == "" {
		if n.Name == s.cfg.NodeName {
			return s.cfg.Local
		}
		return nil
	}
	return s.cfg.Node(n.Address)
}

// eachUpNode calls fn for every up node with its API, at once, each bounded by CallTimeout.
func (s *Server) eachUpNode(ctx context.Context, ns []api.NodeStatus, fn func(i int, c Caller, ctx context.Context)) {
	var wg sync.WaitGroup
	for i, n := range ns {
		c := s.nodeAPI(n)
		if !n.Up || c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			defer cancel()
			fn(i, c, cctx)
		}()
	}
	wg.Wait()
}

// nodeViews is the nodes with their cache stats, sorted by name.
func (s *Server) nodeViews(ctx context.Context, ns []api.NodeStatus) []NodeView {
	now := s.cfg.Now()
	out := make([]NodeView, len(ns))
	for i, n := range ns {
		out[i] = NodeView{NodeStatus: n}
		if !n.LastSeen.IsZero() {
			out[i].HeartbeatAgeS = max(0, now.Sub(n.LastSeen).Seconds())
		}
	}
	s.eachUpNode(ctx, ns, func(i int, c Caller, ctx context.Context) {
		var st api.CacheStats
		if err := c.Do(ctx, http.MethodGet, "/v1/cache/stats", nil, &st); err != nil {
			out[i].CacheErr = err.Error()
			return
		}
		out[i].Cache = &st
		if tot := st.HitBytes + st.MissBytes; tot > 0 {
			r := float64(st.HitBytes) / float64(tot)
			out[i].HitRatio = &r
		}
	})
	for i := range out {
		if !out[i].Up {
			out[i].CacheErr = "node down"
		} else if out[i].Cache == nil && out[i].CacheErr == "" {
			out[i].CacheErr = "no address to reach it at"
		}
	}
	slices.SortFunc(out, func(a, b NodeView) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// alerts are the nodes down, the unhealthy origins and the caches over quota.
func alerts(nodes []NodeView) []Alert {
	var out []Alert
	for _, n := range nodes {
		if !n.Up {
			out = append(out, Alert{Level: "error", Kind: "node_down", Node: n.Name,
				Text: fmt.Sprintf("node %s is down: no heartbeat for %s", n.Name, age(n.HeartbeatAgeS))})
			continue
		}
		if n.Cache == nil {
			out = append(out, Alert{Level: "warn", Kind: "stats", Node: n.Name, Text: fmt.Sprintf("node %s: cannot read its cache stats: %s", n.Name, n.CacheErr)})
			continue
		}
		if oh := n.Cache.OriginHealth; oh != nil && !oh.Up {
			out = append(out, Alert{Level: "error", Kind: "origin", Node: n.Name,
				Text: fmt.Sprintf("node %s: origin %s unhealthy since %s: %s", n.Name, n.Cache.Origin, oh.Since.Format(time.DateTime), oh.LastError)})
		}
		if q := n.Cache.QuotaBytes; q > 0 && n.Cache.CachedBytes > q {
			out = append(out, Alert{Level: "warn", Kind: "quota", Node: n.Name,
				Text: fmt.Sprintf("node %s: cache over quota: %s used of %s", n.Name, units.FormatBytesOneDecimal(n.Cache.CachedBytes), units.FormatBytesOneDecimal(q))})
		}
		if n.Cache.Degraded {
			out = append(out, Alert{Level: "error", Kind: "cache", Node: n.Name,
				Text: fmt.Sprintf("node %s: cache degraded, reads go to the origin: %s", n.Name, n.Cache.LastError)})
		}
		if sp := n.Cache.Share; sp != nil && sp.NearlyFull {
			out = append(out, Alert{Level: "warn", Kind: "share", Node: n.Name,
				Text: fmt.Sprintf("node %s: the share is nearly full: %.1f%% used (warning at %g%%), %s free", n.Name, sp.UsedPercent, sp.Threshold, units.FormatBytesOneDecimal(sp.AvailBytes))})
		}
	}
	return out
}

// raftAlerts are a scheduler group without a leader or a majority, and its members that do not
// answer.
func raftAlerts(rs *api.RaftStatus) []Alert {
	if rs == nil {
		return nil
	}
	var out []Alert
	if !rs.Healthy {
		why := "no leader known"
		if rs.Leader != "" {
			why = "a majority of its voters does not answer"
		}
		out = append(out, Alert{Level: "error", Kind: "scheduler", Text: fmt.Sprintf("scheduler group unhealthy (as %s sees it): %s", rs.Member, why)})
	}
	for _, m := range rs.Members {
		if m.State == "unreachable" || m.State == "" || m.Error != "" {
			text := fmt.Sprintf("scheduler member %s is unreachable", m.Name)
			if m.Error != "" {
				text += ": " + m.Error
			}
			out = append(out, Alert{Level: "error", Kind: "scheduler_member", Node: m.Name, Text: text})
		}
	}
	return out
}

func age(s float64) string { return (time.Duration(s) * time.Second).String() }

// TaskFilter selects tasks: by state ("" all; "queued", "running" (assigned or running),
// "ended", or one state), user (name or uid) and node.
type TaskFilter struct{ State, User, Node string }

func (f TaskFilter) match(t TaskView) bool {
	switch f.State {
	case "":
	case "running":
		if t.State != api.StateRunning && t.State != api.StateAssigned {
			return false
		}
	case "ended":
		if !t.State.Terminal() {
			return false
		}
	default:
		if string(t.State) != f.State {
			return false
		}
	}
	if f.User != "" && f.User != t.User && f.User != strconv.FormatUint(uint64(t.Uid), 10) {
		return false
	}
	return f.Node == "" || f.Node == t.NodeName || f.Node == t.TaskSpec.Node
}

// queueOrder is the scheduler's: higher priority first, then older (task ids grow).
func queueOrder(a, b TaskView) int {
	if a.Priority != b.Priority {
		return b.Priority - a.Priority
	}
	return strings.Compare(a.ID, b.ID)
}

// waiting explains, from the nodes' free resources, why a queued task has not been placed.
func waiting(t api.Task, nodes []NodeView) string {
	var why []string
	if t.Error != "" {
		why = append(why, t.Error)
	}
	ask := fmt.Sprintf("%g cores, %s memory, %d GPUs", t.Cores, units.FormatBytesOneDecimal(t.MemBytes), t.GPUs)
	fits := func(n NodeView, r api.Resources) bool {
		if t.MemBytes > r.MemBytes || t.Cores > r.Cores || t.GPUs > r.GPUs {
			return false
		}
		for k, v := range t.Labels {
			if n.Labels[k] != v {
				return false
			}
		}
		return true
	}
	var up, everFit, fitNow []string
	for _, n := range nodes {
		if t.TaskSpec.Node != "" && n.Name != t.TaskSpec.Node {
			continue
		}
		if !n.Up {
			continue
		}
		up = append(up, n.Name)
		if fits(n, n.Total) {
			everFit = append(everFit, n.Name)
		}
		if fits(n, n.Free) {
			fitNow = append(fitNow, n.Name)
		}
	}
	switch {
	case t.TaskSpec.Node != "" && len(up) == 0:
		why = append(why, "its node "+t.TaskSpec.Node+" is down or unknown")
	case len(up) == 0:
		why = append(why, "no node is up")
	case len(everFit) == 0:
		why = append(why, "no up node has "+ask+" with its labels")
	case len(fitNow) == 0 && t.TaskSpec.Node != "":
		why = append(why, "waiting for room on "+t.TaskSpec.Node+" (needs "+ask+")")
	case len(fitNow) == 0:
		why = append(why, "no node has room now (needs "+ask+")")
	case !t.FirstChance.IsZero() && len(t.Inputs) > 0:
		why = append(why, "waiting for a node with its inputs cached (locality wait since "+t.FirstChance.Format(time.TimeOnly)+")")
	default:
		why = append(why, "fits "+strings.Join(fitNow, ", ")+" now: about to be placed")
	}
	return strings.Join(why, "; ")
}

// overview builds GET /api/overview.
func (s *Server) overview(ctx context.Context, se *session, f TaskFilter) (Overview, error) {
	now := s.cfg.Now()
	ov := Overview{Now: now, Role: se.role, Counts: map[api.State]int{}, Queued: []TaskView{}, Running: []TaskView{}, Recent: []TaskView{}}
	ns, cluster, err := s.nodes(ctx)
	if err != nil {
		return ov, fmt.Errorf("nodes: %w", err)
	}
	ov.Nodes = s.nodeViews(ctx, ns)
	ov.Alerts = alerts(ov.Nodes)
	ov.Cluster = s.clusterView(ctx, cluster)
	ov.Alerts = append(raftAlerts(ov.Cluster.Raft), ov.Alerts...)
	if ov.Cluster.RaftErr != "" {
		ov.Alerts = append([]Alert{{Level: "warn", Kind: "scheduler", Text: "scheduler group: cannot read its status: " + ov.Cluster.RaftErr}}, ov.Alerts...)
	}
	if ov.Cluster.SchedulerErr != "" {
		ov.Alerts = append([]Alert{{Level: "error", Kind: "scheduler", Text: "scheduler: " + ov.Cluster.SchedulerErr}}, ov.Alerts...)
	}
	if ov.Alerts == nil {
		ov.Alerts = []Alert{}
	}
	if !cluster {
		return ov, nil
	}
	var ts []api.Task
	if err := s.cfg.Local.Do(ctx, http.MethodGet, "/v1/tasks?limit=0", nil, &ts); err != nil {
		return ov, fmt.Errorf("tasks: %w", err)
	}
	users := map[string]bool{}
	var queued []TaskView
	for _, t := range ts {
		tv := s.taskView(t, se)
		users[tv.User] = true
		ov.Counts[t.State]++
		switch {
		case t.State == api.StateQueued:
			queued = append(queued, tv)
		case t.State.Terminal():
			if f.match(tv) {
				ov.Recent = append(ov.Recent, tv)
			}
		default:
			if f.match(tv) {
				ov.Running = append(ov.Running, tv)
			}
		}
	}
	slices.SortFunc(queued, queueOrder)
	for i := range queued {
		queued[i].Position = i + 1
		if f.match(queued[i]) {
			queued[i].Waiting = waiting(queued[i].Task, ov.Nodes)
			ov.Queued = append(ov.Queued, queued[i])
		}
	}
	slices.SortFunc(ov.Running, func(a, b TaskView) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(ov.Recent, func(a, b TaskView) int { return b.Finished.Compare(a.Finished) })
	if len(ov.Recent) > maxRecent {
		ov.Recent = ov.Recent[:maxRecent]
	}
	for u := range users {
		ov.Users = append(ov.Users, u)
	}
	slices.Sort(ov.Users)
	return ov, nil
}

func (s *Server) clusterView(ctx context.Context, cluster bool) ClusterView {
	cv := ClusterView{Mode: "single", Node: s.cfg.NodeName, Scheduler: s.cfg.SchedulerAddr}
	src := s.cfg.Local
	if cluster {
		cv.Mode = "scheduler"
		if s.cfg.Scheduler != nil {
			cv.Mode, src = "node", s.cfg.Scheduler
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	if cluster {
		// The group's status asks each member (2 s each, at once): give it its own bound.
		rctx, rcancel := context.WithTimeout(ctx, s.cfg.CallTimeout+3*time.Second)
		var rs api.RaftStatus
		err := s.cfg.Local.Do(rctx, http.MethodGet, api.RaftPath, nil, &rs)
		rcancel()
		var ae *api.Error
		switch {
		case err == nil:
			cv.Raft = &rs
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound: // a scheduler without a group
		default:
			cv.RaftErr = err.Error()
		}
	}
	var h api.Health
	if err := src.Do(cctx, http.MethodGet, "/v1/health", nil, &h); err != nil {
		cv.SchedulerErr = err.Error()
		return cv
	}
	cv.Version, cv.StartedAt = h.Version, h.StartedAt
	cv.UptimeS = max(0, s.cfg.Now().Sub(h.StartedAt).Seconds())
	return cv
}

// taskView is t as a session sees it: a viewer does not see environment values (as the
// scheduler hides them from users other than the task's owner).
func (s *Server) taskView(t api.Task, se *session) TaskView {
	if se.role != RoleAdmin && len(t.Env) > 0 {
		env := make([]string, len(t.Env))
		for i, e := range t.Env {
			k, _, _ := strings.Cut(e, "=")
			env[i] = k + "=(hidden)"
		}
		t.Env = env
	}
	return TaskView{Task: t, User: s.users.name(t.Uid)}
}

// WhereView is GET /api/where: how much of a path each node caches. In cluster mode it is the
// scheduler's answer (GET /v1/cache/where, from the inventories the nodes' heartbeats carry: a
// few seconds old, per-file totals); on a single node, the node's own GET /v1/cache/ls.
type WhereView struct {
	Path      string      `json:"path"`
	Source    string      `json:"source"` // "scheduler" or "node"
	Files     int         `json:"files"`  // files of the path some node caches
	SizeBytes int64       `json:"size_bytes"`
	Nodes     []WhereNode `json:"nodes"`
}

// WhereNode is one node's share of a path.
type WhereNode struct {
	Node        string `json:"node"`
	Up          bool   `json:"up"`
	Files       int    `json:"files"`
	WholeFiles  int    `json:"whole_files"` // of Files, those cached in full
	CachedBytes int64  `json:"cached_bytes"`
	SizeBytes   int64  `json:"size_bytes"` // of the files it caches some of
	Error       string `json:"error,omitempty"`
}

func (s *Server) where(ctx context.Context, p string) (WhereView, error) {
	q := url.Values{}
	q.Set("path", p)
	var cw api.CacheWhere
	err := s.cfg.Local.Do(ctx, http.MethodGet, api.CacheWherePath+"?"+q.Encode(), nil, &cw)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return s.whereLocal(ctx, p) // not in cluster mode
	}
	if err != nil {
		return WhereView{}, err
	}
	out := WhereView{Path: cw.Path, Source: "scheduler", Files: cw.Files, SizeBytes: cw.SizeBytes, Nodes: make([]WhereNode, len(cw.Nodes))}
	for i, n := range cw.Nodes {
		out.Nodes[i] = WhereNode{Node: n.Node, Up: n.Up, Files: n.Files, WholeFiles: n.WholeFiles, CachedBytes: n.CachedBytes, SizeBytes: n.SizeBytes}
		if !n.Up {
			out.Nodes[i].Error = "node down (as of its last heartbeat)"
		}
	}
	return out, nil
}

// whereLocal is the one node's share of p, from its own cache listing.
func (s *Server) whereLocal(ctx context.Context, p string) (WhereView, error) {
	out := WhereView{Path: p, Source: "node", Nodes: []WhereNode{{Node: s.cfg.NodeName, Up: true}}}
	q := url.Values{}
	q.Set("path", p)
	var files []api.FileInfo
	if err := s.cfg.Local.Do(ctx, http.MethodGet, "/v1/cache/ls?"+q.Encode(), nil, &files); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return out, nil // nothing of it cached
		}
		return out, err
	}
	n := &out.Nodes[0]
	for _, f := range files {
		if f.CachedBytes == 0 {
			continue
		}
		n.Files++
		n.CachedBytes += f.CachedBytes
		n.SizeBytes += f.Size
		if f.CachedBytes >= f.Size {
			n.WholeFiles++
		}
	}
	out.Files, out.SizeBytes = n.Files, n.SizeBytes
	return out, nil
}

// The JSON handlers.

func (s *Server) handleOverview(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ov, err := s.overview(r.Context(), sessionFrom(r), TaskFilter{State: q.Get("state"), User: q.Get("user"), Node: q.Get("node")})
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	api.WriteJSON(w, http.StatusOK, ov)
}

// TaskPage is GET /api/task/{id}: the task (with its placement explanation) and the session's
// rights on it.
type TaskPage struct {
	TaskView
	CanKill bool `json:"can_kill"`
}

func (s *Server) handleTask(w http.ResponseWriter, r *http.Request) {
	var t api.Task
	if err := s.cfg.Local.Do(r.Context(), http.MethodGet, "/v1/tasks/"+url.PathEscape(r.PathValue("id")), nil, &t); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	se := sessionFrom(r)
	api.WriteJSON(w, http.StatusOK, TaskPage{TaskView: s.taskView(t, se), CanKill: se.role == RoleAdmin && !t.State.Terminal()})
}

// handleTaskLog answers the scheduler's api.LogChunk as it is.
func (s *Server) handleTaskLog(w http.ResponseWriter, r *http.Request) {
	q := url.Values{}
	stream := r.URL.Query().Get("stream")
	if stream != "stderr" {
		stream = "stdout"
	}
	off, err := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if err != nil || off < 0 {
		off = 0
	}
	q.Set("stream", stream)
	q.Set("offset", strconv.FormatInt(off, 10))
	var ch api.LogChunk
	if err := s.cfg.Local.Do(r.Context(), http.MethodGet, "/v1/tasks/"+url.PathEscape(r.PathValue("id"))+"/logs?"+q.Encode(), nil, &ch); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	api.WriteJSON(w, http.StatusOK, ch)
}

// handleKill kills a task: an admin's only (ServeHTTP has checked the CSRF token).
func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	se := sessionFrom(r)
	id := r.PathValue("id")
	if se.role != RoleAdmin {
		writeErr(w, http.StatusForbidden, errors.New("a viewer may not kill tasks; log in with the cluster token"))
		return
	}
	var t api.Task
	if err := s.cfg.Local.Do(r.Context(), http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/kill", nil, &t); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	s.log.Info("status page: task killed", "task", id, "remote", r.RemoteAddr)
	api.WriteJSON(w, http.StatusOK, s.taskView(t, se))
}

func (s *Server) handleWhere(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSpace(r.URL.Query().Get("path"))
	wv, err := s.where(r.Context(), p)
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	api.WriteJSON(w, http.StatusOK, wv)
}
