package sched

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/eddy-cluster/eddy/api"
)

// Caller sends one JSON call to a daemon's API (api.Client implements it): the agent's calls
// to the scheduler (api.RegisterPath, api.HeartbeatPath).
type Caller interface {
	Do(ctx context.Context, method, path string, in, out any) error
}

// Authorize wraps h so that every call must carry "Authorization: Bearer TOKEN" (compared in
// constant time). An empty token refuses everything.
//
// Token holders are the cluster's daemons and administrators. A call that names a user in
// api.IdentityHeader (a daemon forwarding a local user's call) acts as that user; one that names
// nobody acts as root. The header is read here only, after the token: a call without the token
// never gets to name anybody.
func Authorize(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			api.WriteError(w, http.StatusUnauthorized, errors.New("missing or wrong cluster token"))
			return
		}
		id := api.Identity{Via: "token"} // root
		if vs := r.Header.Values(api.IdentityHeader); len(vs) > 0 {
			fid, err := api.ParseIdentity(vs[0])
			if err == nil && len(vs) > 1 {
				err = fmt.Errorf("%d %s headers; want one", len(vs), api.IdentityHeader)
			}
			if err != nil {
				api.WriteError(w, http.StatusBadRequest, fmt.Errorf("%s: %v", api.IdentityHeader, err))
				return
			}
			fid.Via = "forwarded"
			id = fid
		}
		h.ServeHTTP(w, r.WithContext(api.WithIdentity(r.Context(), id)))
	})
}

// caller is the identity the server put in r's context (Authorize, or the daemon's local socket
// from the kernel's peer credentials). Without one nothing is served: it answers 403 and ok is
// false.
func caller(w http.ResponseWriter, r *http.Request) (id api.Identity, ok bool) {
	id, ok = api.IdentityFrom(r.Context())
	if !ok {
		api.WriteError(w, http.StatusForbidden, errors.New("the server cannot tell who is calling; refused"))
	}
	return id, ok
}

// rootOnly answers 403 unless the caller is root.
func rootOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	id, ok := caller(w, r)
	if ok && !id.Root() {
		api.WriteError(w, http.StatusForbidden, fmt.Errorf("%s: %w: only root or a cluster daemon may (you are uid %d)", what, ErrForbidden, id.Uid))
		return false
	}
	return ok
}

// owned returns task id when the caller may act on it: its owner (the uid it runs as) or root.
func (s *Scheduler) owned(op, id string, c api.Identity) (*Task, error) {
	t, err := s.Task(id)
	if err != nil {
		return nil, err
	}
	if !c.Root() && t.Uid != c.Uid {
		return nil, fmt.Errorf("%s %s: %w: the task runs as uid %d and you are uid %d; only its owner or root may", op, id, ErrForbidden, t.Uid, c.Uid)
	}
	return t, nil
}

// redactEnv hides the values of another user's task environment from a non-root caller (like
// /proc/PID/environ, which only the owner reads; the command line stays visible, like ps).
func redactEnv(t *Task, c api.Identity) {
	if c.Root() || t.Uid == c.Uid || len(t.Env) == 0 {
		return
	}
	env := make([]string, len(t.Env))
	for i, e := range t.Env {
		k, _, _ := strings.Cut(e, "=")
		env[i] = k + "=(hidden)"
	}
	t.Env = env
}

// submitIdentity makes spec run as the caller. A non-root caller's task runs as its own uid and
// primary gid: a spec that names others is refused, not rewritten. Root (and token holders naming
// nobody) may submit for any user; a spec naming nobody runs as root, which the runtime refuses
// unless it is configured to allow it.
func submitIdentity(spec *TaskSpec, claims taskClaims, c api.Identity) error {
	if c.Root() {
		return nil
	}
	if claims.Uid != nil && *claims.Uid != c.Uid {
		return fmt.Errorf("submit: %w: you are uid %d and cannot submit a task to run as uid %d (a task runs as its submitter; only root or a cluster administrator may submit for another user)", ErrForbidden, c.Uid, *claims.Uid)
	}
	if claims.Gid != nil && *claims.Gid != c.Gid {
		return fmt.Errorf("submit: %w: your primary group is gid %d and a task cannot claim gid %d (a task runs with its submitter's primary group)", ErrForbidden, c.Gid, *claims.Gid)
	}
	spec.Uid, spec.Gid = c.Uid, c.Gid
	return nil
}

// taskClaims are the identity fields a submit names, nil when absent.
type taskClaims struct {
	Uid *uint32 `json:"uid"`
	Gid *uint32 `json:"gid"`
}

// Routes registers the cluster API on mux (no authentication: wrap with Authorize, or serve it
// where the caller's api.Identity is in the request context). The node calls (register,
// heartbeat) are root's; everyone may submit (as themselves), list, show and see nodes; a task's
// kill and logs are its owner's and root's.
func (s *Scheduler) Routes(mux *http.ServeMux) {
	s.peerRoutes(mux) // the peer tracker (peers.go)
	mux.HandleFunc("POST "+api.RegisterPath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "register") {
			return
		}
		var rec api.NodeRecord
		if !api.DecodeBody(w, r, &rec, malformed) {
			return
		}
		resp, err := s.Register(r.Context(), nodeRecordFrom(rec))
		reply(w, resp, err)
	})
	mux.HandleFunc("POST "+api.HeartbeatPath, func(w http.ResponseWriter, r *http.Request) {
		if !rootOnly(w, r, "heartbeat") {
			return
		}
		var hb api.HeartbeatRequest
		if !api.DecodeBody(w, r, &hb, malformed) {
			return
		}
		resp, err := s.Heartbeat(r.Context(), heartbeatFrom(hb))
		reply(w, resp, err)
	})
	mux.HandleFunc("POST /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller(w, r)
		if !ok {
			return
		}
		body, ok := api.ReadBody(w, r, malformed)
		if !ok {
			return
		}
		var spec TaskSpec
		var claims taskClaims
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			api.WriteError(w, http.StatusBadRequest, fmt.Errorf("%s: %v", malformed, err))
			return
		}
		_ = json.Unmarshal(body, &claims) // decoded above: cannot fail
		if err := submitIdentity(&spec, claims, c); err != nil {
			reply(w, nil, err)
			return
		}
		t, err := s.SubmitKey(r.Context(), spec, r.Header.Get(api.IdempotencyHeader))
		if err == nil {
			api.WriteJSON(w, http.StatusCreated, t)
			return
		}
		reply(w, nil, err)
	})
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller(w, r)
		if !ok {
			return
		}
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		ts := s.Tasks(limit)
		for _, t := range ts {
			redactEnv(t, c)
		}
		api.WriteJSON(w, http.StatusOK, ts)
	})
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller(w, r)
		if !ok {
			return
		}
		t, err := s.Task(r.PathValue("id"))
		if err == nil {
			redactEnv(t, c)
		}
		reply(w, t, err)
	})
	mux.HandleFunc("POST /v1/tasks/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller(w, r)
		if !ok {
			return
		}
		// A task's owner never changes, so checking before the kill is not racy.
		if _, err := s.owned("kill", r.PathValue("id"), c); err != nil {
			reply(w, nil, err)
			return
		}
		t, err := s.Kill(r.Context(), r.PathValue("id"))
		reply(w, t, err)
	})
	mux.HandleFunc("GET /v1/tasks/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		c, ok := caller(w, r)
		if !ok {
			return
		}
		if _, err := s.owned("logs", r.PathValue("id"), c); err != nil {
			reply(w, nil, err)
			return
		}
		q := r.URL.Query()
		stream := q.Get("stream")
		if stream == "" {
			stream = "stdout"
		}
		off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
		if q.Get("offset") == "" {
			off, err = 0, nil
		}
		if err != nil || off < 0 {
			api.WriteError(w, http.StatusBadRequest, fmt.Errorf("offset must be a non-negative integer"))
			return
		}
		chunk, err := s.ReadLog(r.PathValue("id"), stream, off, MaxLogChunk)
		reply(w, chunk, err)
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := caller(w, r); !ok {
			return
		}
		ns := s.Nodes()
		out := make([]api.NodeStatus, len(ns))
		for i, n := range ns {
			out[i] = wireNodeStatus(n)
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
	s.raftRoutes(mux)
	s.whereRoutes(mux)
	s.assignmentRoutes(mux)
}

// ReadLog reads up to max bytes of a task's log from offset, without reading what comes before.
func (s *Scheduler) ReadLog(id, stream string, offset int64, max int) (LogChunk, error) {
	p, err := s.LogPath(id, stream)
	if err != nil {
		return LogChunk{}, err
	}
	t, _ := s.Task(id)
	c := LogChunk{Offset: offset, State: t.State}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil // not started yet
	}
	if err != nil {
		return c, fmt.Errorf("logs %s: %w", id, err)
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("logs %s: %w", id, err)
	}
	c.Data, c.Offset = buf[:n], offset+int64(n)
	return c, nil
}

// malformed begins the 400 answer to a request body that cannot be read or decoded.
const malformed = "malformed request body"

// reply answers v, or err with the status and code of the sentinel it wraps.
func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			status = http.StatusBadRequest
		case errors.Is(err, ErrNeverFits):
			api.WriteErrorCode(w, http.StatusUnprocessableEntity, api.CodeNeverFits, err)
			return
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrConflict):
			status = http.StatusConflict
		case errors.Is(err, ErrForbidden):
			status = http.StatusForbidden
		case errors.Is(err, ErrNotLeader):
			api.WriteErrorCode(w, http.StatusServiceUnavailable, api.CodeNotLeader, err)
			return
		}
		api.WriteError(w, status, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, v)
}
