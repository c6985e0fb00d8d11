package sched

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/eddy-cluster/eddy/api"
)

// ForwardConfig is how a member reaches the others' cluster APIs: the cluster token, and the
// TLS configuration when the cluster API is served over TLS (nil: plain HTTP).
type ForwardConfig struct {
	Token string
	TLS   *tls.Config
}

// memberAPI is a member's cluster API base URL: its node record's address (every scheduler
// daemon is also a node of the cluster; its raft server ID is its node name). "" when unknown.
func (s *Scheduler) memberAPI(name string) string {
	if name == "" {
		return ""
	}
	rec, ok := s.fsm.Node(name)
	if !ok || rec.Address == "" {
		return ""
	}
	if strings.Contains(rec.Address, "://") {
		return strings.TrimRight(rec.Address, "/")
	}
	if s.cfg.Forward.TLS != nil {
		return "https://" + rec.Address
	}
	return "http://" + rec.Address
}

// servedByFollower: the reads a follower answers from its copy of the replicated state (a
// task it does not have yet goes to the leader, which may have just accepted it).
func (s *Scheduler) servedByFollower(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	switch {
	case p == "/v1/tasks", strings.HasPrefix(p, api.RaftPath):
		return true
	case strings.HasPrefix(p, "/v1/tasks/"):
		id, _, _ := strings.Cut(strings.TrimPrefix(p, "/v1/tasks/"), "/")
		_, ok := s.fsm.Task(id)
		return ok
	}
	return false
}

// LeaderRouter serves local (the scheduler's routes) on a member of a replicated group: the
// leader serves everything; a follower answers the reads it can (servedByFollower) and forwards
// the rest to the leader's API with the cluster token, acting for the caller it saw. With no
// leader known, or for a call already forwarded once, it answers 503 with api.CodeNotLeader,
// and the client tries another scheduler address.
func (s *Scheduler) LeaderRouter(local http.Handler) http.Handler {
	if s.rep == nil {
		return local
	}
	// A leader that cannot be reached (partitioned, say) fails a forwarded call in seconds,
	// not after the kernel's connect retries: the caller tries another member.
	dialer := &net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}
	tr := &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second, TLSClientConfig: s.cfg.Forward.TLS,
		DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.servedByFollower(r) {
			s.awaitLeader(r.Context(), 5*time.Second) // an election under way: wait for its end
		}
		if s.rep.IsLeader() || s.servedByFollower(r) {
			local.ServeHTTP(w, r)
			return
		}
		leader := s.rep.Leader()
		target := s.memberAPI(leader)
		if target == "" || r.Header.Get(api.ForwardedHeader) != "" {
			if target != "" {
				w.Header().Set(api.LeaderHeader, target)
			}
			api.WriteErrorCode(w, http.StatusServiceUnavailable, api.CodeNotLeader,
				fmt.Errorf("scheduler %s is not the leader and cannot forward (leader: %q)", s.rep.cfg.Name, leader))
			return
		}
		id, ok := api.IdentityFrom(r.Context())
		if !ok {
			api.WriteError(w, http.StatusForbidden, errors.New("the server cannot tell who is calling; refused"))
			return
		}
		u, err := url.Parse(target)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, err)
			return
		}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(u)
				pr.Out.Host = u.Host
				pr.Out.Header.Set("Authorization", "Bearer "+s.cfg.Forward.Token)
				pr.Out.Header.Set(api.IdentityHeader, id.String())
				pr.Out.Header.Set(api.ForwardedHeader, s.rep.cfg.Name)
			},
			Transport:     tr,
			FlushInterval: -1,
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				api.WriteErrorCode(w, http.StatusServiceUnavailable, api.CodeNotLeader, fmt.Errorf("forward to the leader %s: %v", leader, err))
			},
		}
		// The call waits on the leader it was forwarded to. When this member hears of another
		// leader (or of none: an election), that one may never answer (it is cut off, say), so
		// the call is given up and answered not_leader, and the caller tries again (a submit
		// with its idempotency key, which makes one task whichever leader committed it).
		ctx, cancel := s.untilServerCloses(r) // and a shutdown here does not wait for it
		defer cancel()
		go func() {
			tk := time.NewTicker(100 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
					if s.rep.Leader() != leader {
						cancel()
						return
					}
				}
			}
		}()
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

// awaitLeader waits, up to d, until this member acts as the leader or knows the leader's API.
func (s *Scheduler) awaitLeader(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		if s.rep.IsLeader() {
			if s.Leading() {
				return
			}
		} else if s.memberAPI(s.rep.Leader()) != "" {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// raftRoutes registers the group's status and membership calls (a replicated scheduler only).
func (s *Scheduler) raftRoutes(mux *http.ServeMux) {
	if s.rep == nil {
		return
	}
	mux.HandleFunc("GET "+api.RaftPath, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := caller(w, r); !ok {
			return
		}
		if r.URL.Query().Get("local") != "" {
			api.WriteJSON(w, http.StatusOK, s.localMember())
			return
		}
		api.WriteJSON(w, http.StatusOK, s.RaftStatus(r.Context()))
	})
	mux.HandleFunc("POST "+api.RaftMembersPath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "add a scheduler") {
			return
		}
		var ch api.RaftMemberChange
		if !api.DecodeBody(w, r, &ch, malformed) {
			return
		}
		if err := s.rep.AddMember(ch.Name, ch.Address); err != nil {
			reply(w, nil, err)
			return
		}
		s.log.Info("scheduler group: member added", "member", ch.Name, "address", ch.Address)
		api.WriteJSON(w, http.StatusOK, s.RaftStatus(r.Context()))
	})
	mux.HandleFunc("DELETE "+api.RaftMembersPath+"/{name}", func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "remove a scheduler") {
			return
		}
		if err := s.rep.RemoveMember(r.PathValue("name")); err != nil {
			reply(w, nil, err)
			return
		}
		s.log.Info("scheduler group: member removed", "member", r.PathValue("name"))
		api.WriteJSON(w, http.StatusOK, s.RaftStatus(r.Context()))
	})
}

func statU(st map[string]string, k string) uint64 {
	v, _ := strconv.ParseUint(st[k], 10, 64)
	return v
}

// localMember is this member's own view.
func (s *Scheduler) localMember() api.RaftMember {
	st := s.rep.r.Stats()
	m := api.RaftMember{Name: s.rep.cfg.Name, Address: string(s.rep.trans.LocalAddr()), API: s.memberAPI(s.rep.cfg.Name),
		State: strings.ToLower(st["state"]), Term: statU(st, "term"), LastIndex: statU(st, "last_log_index"),
		CommitIndex: statU(st, "commit_index"), AppliedIndex: statU(st, "applied_index")}
	m.Leader = m.State == "leader"
	if !m.Leader {
		m.LastContact = st["last_contact"]
	}
	return m
}

// RaftStatus is the group as this member sees it, each member's health asked of it (2 s each).
func (s *Scheduler) RaftStatus(ctx context.Context) api.RaftStatus {
	self := s.localMember()
	out := api.RaftStatus{Member: self.Name, State: self.State, Leader: s.rep.Leader(), Term: self.Term, LastIndex: self.LastIndex,
		CommitIndex: self.CommitIndex, AppliedIndex: self.AppliedIndex}
	out.LeaderAPI = s.memberAPI(out.Leader)
	srv, err := s.rep.Members()
	if err != nil {
		return out
	}
	var wg sync.WaitGroup
	out.Members = make([]api.RaftMember, len(srv))
	for i, sv := range srv {
		base := api.RaftMember{Name: string(sv.ID), Address: string(sv.Address), API: s.memberAPI(string(sv.ID)),
			Suffrage: strings.ToLower(sv.Suffrage.String())}
		if string(sv.ID) == self.Name {
			self.Suffrage, self.Address = base.Suffrage, base.Address
			out.Members[i] = self
			continue
		}
		out.Members[i] = base
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Members[i] = s.askMember(ctx, base)
		}()
	}
	wg.Wait()
	voters, up := 0, 0
	for i := range out.Members {
		m := &out.Members[i]
		m.Leader = m.Name == out.Leader && out.Leader != ""
		if m.Suffrage == strings.ToLower(raft.Voter.String()) {
			voters++
			if m.State != "unreachable" && m.State != "" {
				up++
			}
		}
	}
	slices.SortFunc(out.Members, func(a, b api.RaftMember) int { return strings.Compare(a.Name, b.Name) })
	out.Healthy = out.Leader != "" && up > voters/2
	return out
}

// askMember asks a member for its own view.
func (s *Scheduler) askMember(ctx context.Context, m api.RaftMember) api.RaftMember {
	if m.API == "" {
		m.State, m.Error = "unreachable", "its API address is not known yet (it has not registered as a node)"
		return m
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl := api.NewTCP(m.API, api.WithToken(s.cfg.Forward.Token))
	if s.cfg.Forward.TLS != nil {
		cl = api.NewTCP(m.API, api.WithToken(s.cfg.Forward.Token), api.WithTLS(s.cfg.Forward.TLS))
	}
	var got api.RaftMember
	if err := cl.Do(ctx, "GET", api.RaftPath+"?local=1", nil, &got); err != nil {
		m.State, m.Error = "unreachable", err.Error()
		return m
	}
	got.Suffrage, got.Address, got.API = m.Suffrage, m.Address, m.API
	return got
}
