package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
	"github.com/eddy-cluster/eddy/sched"
)

// CacheControl is what the API needs of the node's cache (*cache.Store).
type CacheControl interface {
	Stats() cache.Stats
	List(ctx context.Context, prefix string) ([]cache.FileInfo, error)
	Warm(ctx context.Context, name string, progress func(cache.Progress)) error
	Pin(ctx context.Context, name string) error
	Unpin(ctx context.Context, name string) error
	Evict(ctx context.Context, name string) error
}

// maxPaths bounds the paths of one request.
const maxPaths = 10000

// apiServer serves the control API (see package api) over HTTP/JSON.
type apiServer struct {
	cache  CacheControl // nil with --no-cache
	mount  string       // clean absolute mountpoint
	health func() api.Health
	origin string
	// originHealth reports the guarded origin's health; nil when unknown.
	originHealth func() origin.OriginHealth
	// access decides what non-root local callers may warm and see in ls; nil: they may do
	// neither (ls shows them nothing).
	access Access
	// shareSpace, when set, is how full the share is (server_housekeeping.go).
	shareSpace func() *api.ShareSpace
	// peerRejected counts the chunks other nodes sent that failed their checksum; peer fetch
	// (cluster_peer.go) adds to it. It lives here, not in the cache, because the peer source
	// drops those chunks before the cache sees them.
	peerRejected atomic.Int64
	log          *slog.Logger
	mux          *http.ServeMux
	started      time.Time
}

func newAPIServer(c CacheControl, mount, originName string, health func() api.Health, log *slog.Logger) *apiServer {
	s := &apiServer{cache: c, mount: filepath.Clean(mount), origin: originName, health: health, log: log, mux: http.NewServeMux(), started: time.Now()}
	s.mux.HandleFunc("GET /v1/health", s.handleHealth)
	s.mux.HandleFunc("GET /v1/cache/stats", s.handleStats)
	s.mux.HandleFunc("GET /v1/cache/ls", s.handleList)
	s.mux.HandleFunc("POST /v1/cache/warm", s.handleWarm)
	s.mux.HandleFunc("POST /v1/cache/pin", s.pathsHandler("pin"))
	s.mux.HandleFunc("POST /v1/cache/unpin", s.pathsHandler("unpin"))
	s.mux.HandleFunc("POST /v1/cache/evict", s.pathsHandler("evict"))
	return s
}

// ServeHTTP implements http.Handler. Every call must come with the caller's api.Identity in
// its context: the local socket's ConnContext puts the kernel's peer credentials there, the
// cluster listener (sched.Authorize) a token holder's. Without one nothing is served.
//
// Authorization, by caller: root may do everything. Other users may read health, stats and the
// task and node lists, submit tasks that run as themselves, kill and read the logs of their own
// tasks (the task routes check), warm what they may read and see in ls what they may list;
// pin, unpin and evict change the cache every user of the node shares and are root's.
func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := api.IdentityFrom(r.Context()); !ok {
		writeError(w, http.StatusForbidden, errors.New("the daemon cannot tell who is calling (no peer credentials); refused"))
		return
	}
	api.LimitBody(w, r) // also bounds what the forwarder sends on to the scheduler
	s.mux.ServeHTTP(w, r)
}

// callerOf is the caller's identity (ServeHTTP made sure there is one).
func callerOf(r *http.Request) api.Identity {
	id, _ := api.IdentityFrom(r.Context())
	return id
}

// writeError answers status with err in the API's error body (api.WriteError).
func writeError(w http.ResponseWriter, status int, err error) { api.WriteError(w, status, err) }

// writeFailure answers err with the status and code its cause calls for.
func writeFailure(w http.ResponseWriter, err error) {
	api.WriteErrorCode(w, statusOf(err), errorCode(err), err)
}

// errorCode is the api.ErrorCode of err: a cause the status cannot tell apart by itself, else
// the status's (api.CodeOf).
func errorCode(err error) api.ErrorCode {
	switch {
	case errors.Is(err, cache.ErrPinned):
		return api.CodePinned
	case errors.Is(err, cache.ErrNotCacheable):
		return api.CodeNotCacheable
	}
	return api.CodeOf(statusOf(err))
}

// statusOf maps an error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, origin.ErrEscape), errors.Is(err, errBadPath):
		return http.StatusBadRequest
	case errors.Is(err, syscall.ENOENT), errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, os.ErrPermission), errors.Is(err, errNoAccessCheck):
		return http.StatusForbidden
	case errors.Is(err, cache.ErrNotCacheable):
		return http.StatusUnprocessableEntity
	case errors.Is(err, cache.ErrClosed), errors.Is(err, errNoCache):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

var (
	errBadPath = errors.New("bad path")
	errNoCache = errors.New("the daemon runs with --no-cache")
)

// resolve turns a path given to the API into a share-relative origin name.
// Accepted: a path relative to the share ("data/x"), an absolute path under
// the mountpoint, or a relative path resolved against cwd when cwd lies under
// the mountpoint. Nothing may leave the share.
func (s *apiServer) resolve(p, cwd string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 || strings.IndexByte(cwd, 0) >= 0 {
		return "", fmt.Errorf("%q: %w", p, origin.ErrEscape)
	}
	abs := ""
	switch {
	case filepath.IsAbs(p):
		abs = filepath.Clean(p)
	case cwd != "" && filepath.IsAbs(cwd) && within(filepath.Clean(cwd), s.mount):
		abs = filepath.Join(cwd, p)
	}
	if abs != "" {
		if !within(abs, s.mount) {
			return "", fmt.Errorf("%s is not under the mount %s: %w", p, s.mount, errBadPath)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(abs, s.mount), "/")
		return origin.Clean(rel)
	}
	return origin.Clean(p)
}

func (s *apiServer) handleHealth(w http.ResponseWriter, r *http.Request) {
	api.WriteJSON(w, http.StatusOK, s.health())
}

func (s *apiServer) handleStats(w http.ResponseWriter, r *http.Request) {
	out := api.CacheStats{Origin: s.origin, Mount: s.mount, NoCache: s.cache == nil}
	if s.cache != nil {
		out.CacheCounters = wireCounters(s.cache.Stats())
	}
	out.PeerRejected = s.peerRejected.Load()
	if s.originHealth != nil {
		h := wireOriginHealth(s.originHealth())
		out.OriginHealth = &h
	}
	if s.shareSpace != nil {
		out.Share = s.shareSpace()
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (s *apiServer) handleList(w http.ResponseWriter, r *http.Request) {
	if s.cache == nil {
		api.WriteJSON(w, http.StatusOK, []api.FileInfo{})
		return
	}
	name, err := s.resolve(r.URL.Query().Get("path"), r.URL.Query().Get("cwd"))
	if err != nil {
		writeFailure(w, err)
		return
	}
	files, err := s.cache.List(r.Context(), name)
	if err != nil {
		writeFailure(w, fmt.Errorf("list %s: %w", name, err))
		return
	}
	if id := callerOf(r); !id.Root() {
		if files, err = s.listable(r.Context(), id, files); err != nil {
			writeFailure(w, fmt.Errorf("list %s: %w", name, err))
			return
		}
	}
	api.WriteJSON(w, http.StatusOK, wireFiles(files))
}

// listable keeps the files a non-root caller could see with ls -l in the mount: every directory
// from the share's root to the file's may be listed and entered by them.
func (s *apiServer) listable(ctx context.Context, id api.Identity, files []cache.FileInfo) ([]cache.FileInfo, error) {
	if s.access == nil || len(files) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	var dirs []string
	for _, f := range files {
		for d := path.Dir(f.Path); !seen[d]; d = path.Dir(d) {
			seen[d] = true
			dirs = append(dirs, d)
			if d == "." || d == "/" {
				break
			}
		}
	}
	ok, err := s.access.Listable(ctx, id, dirs)
	if err != nil {
		return nil, err
	}
	out := files[:0]
	for _, f := range files {
		visible := true
		for d := path.Dir(f.Path); visible; d = path.Dir(d) {
			visible = ok[d]
			if d == "." || d == "/" {
				break
			}
		}
		if visible {
			out = append(out, f)
		}
	}
	return out, nil
}

func decodePaths(w http.ResponseWriter, r *http.Request) (api.PathsRequest, bool) {
	var req api.PathsRequest
	if !api.DecodeBody(w, r, &req, "bad request body") {
		return req, false
	}
	if len(req.Paths) == 0 {
		writeError(w, http.StatusBadRequest, errors.New("no paths given"))
		return req, false
	}
	if len(req.Paths) > maxPaths {
		writeError(w, http.StatusBadRequest, fmt.Errorf("too many paths (%d > %d)", len(req.Paths), maxPaths))
		return req, false
	}
	return req, true
}

func (s *apiServer) pathsHandler(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if id := callerOf(r); !id.Root() {
			writeError(w, http.StatusForbidden, fmt.Errorf("cache %s: only root may pin, unpin or evict: it changes the cache every user of this node shares (you are uid %d)", op, id.Uid))
			return
		}
		req, ok := decodePaths(w, r)
		if !ok {
			return
		}
		if s.cache == nil {
			writeError(w, http.StatusServiceUnavailable, errNoCache)
			return
		}
		fn := map[string]func(context.Context, string) error{
			"pin": s.cache.Pin, "unpin": s.cache.Unpin, "evict": s.cache.Evict,
		}[op]
		resp := api.PathsResponse{Results: make([]api.PathResult, 0, len(req.Paths))}
		for _, p := range req.Paths {
			res := api.PathResult{Path: p}
			name, err := s.resolve(p, req.Cwd)
			if err == nil {
				res.Name = name
				err = fn(r.Context(), name)
			}
			if err != nil {
				res.Error, res.Code = err.Error(), errorCode(err)
				s.log.Info("cache "+op+" failed", "path", p, "err", err)
			}
			resp.Results = append(resp.Results, res)
		}
		api.WriteJSON(w, http.StatusOK, resp)
	}
}

// handleWarm streams progress as JSON lines, one path after the other.
func (s *apiServer) handleWarm(w http.ResponseWriter, r *http.Request) {
	req, ok := decodePaths(w, r)
	if !ok {
		return
	}
	if s.cache == nil {
		writeError(w, http.StatusServiceUnavailable, errNoCache)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex // serialises writes to w
	enc := json.NewEncoder(w)
	emit := func(ev api.WarmEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
		if flusher != nil {
			flusher.Flush()
		}
	}
	for _, p := range req.Paths {
		if r.Context().Err() != nil {
			return
		}
		start := time.Now()
		ev := api.WarmEvent{Arg: p}
		name, err := s.resolve(p, req.Cwd)
		if err == nil {
			err = s.mayWarm(r.Context(), callerOf(r), name)
		}
		if err == nil {
			ev.Name = name
			var last time.Time
			var lastP cache.Progress
			var pmu sync.Mutex // guards last, lastP
			err = s.cache.Warm(r.Context(), name, func(pr cache.Progress) {
				pmu.Lock()
				lastP = pr
				now := time.Now()
				if now.Sub(last) < 100*time.Millisecond {
					pmu.Unlock()
					return
				}
				last = now
				pmu.Unlock()
				emit(api.WarmEvent{Arg: p, Name: name, Progress: wireProgress(pr), Elapsed: time.Since(start).Seconds()})
			})
			pmu.Lock()
			ev.Progress = wireProgress(lastP)
			pmu.Unlock()
		}
		ev.Done = true
		ev.Elapsed = time.Since(start).Seconds()
		if err != nil {
			ev.Error = err.Error()
			s.log.Info("cache warm failed", "path", p, "err", err)
		}
		emit(ev)
	}
}

// mayWarm: root warms anything; other callers what they may read (see Access).
func (s *apiServer) mayWarm(ctx context.Context, id api.Identity, name string) error {
	if id.Root() {
		return nil
	}
	if s.access == nil {
		return fmt.Errorf("warm %s: %w: only root may warm on this daemon", name, errNoAccessCheck)
	}
	if err := s.access.MayWarm(ctx, id, name); err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	return nil
}

// RequireToken wraps h so that every call must carry "Authorization: Bearer
// TOKEN" (compared in constant time) and acts for the identity it names (see
// sched.Authorize, which it is). For the cluster's TCP listener.
func RequireToken(token string, h http.Handler) http.Handler { return sched.Authorize(token, h) }

// maxUnixSocketPath is the longest path Linux binds a unix socket to (sun_path is 108 bytes,
// NUL included); a longer one fails with a bare EINVAL.
const maxUnixSocketPath = 107

// listenUnix listens on a unix socket for the local API: its directory is
// created, a stale socket is removed (one a live daemon answers on is not),
// and the socket is opened to every local user (mode 0666) or, with group
// (a name or a number), to that group's members only (root:group, 0660).
// Who calls is told by the kernel per connection (peerIdentity), so an open
// socket gives nobody more than their own rights.
func listenUnix(sock, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, err
		}
		gid = g
	}
	if len(sock) > maxUnixSocketPath {
		return nil, fmt.Errorf("socket %s is %d bytes long; a unix socket path holds at most %d: choose a shorter --socket", sock, len(sock), maxUnixSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if fi, err := os.Lstat(sock); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("socket %s: exists and is not a socket", sock)
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is in use by a running daemon; stop it or choose another --socket", sock)
		}
		if err := os.Remove(sock); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", sock, err)
		}
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	mode := os.FileMode(0o666)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(sock, os.Geteuid(), gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("chown socket %s to group %s: %w", sock, group, err)
		}
	}
	if err := os.Chmod(sock, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", sock, err)
	}
	return l, nil
}

// lookupGroup resolves --socket-group: a group name or a numeric gid.
func lookupGroup(group string) (int, error) {
	if n, err := strconv.ParseUint(group, 10, 31); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w", group, err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: gid %q: %w", group, g.Gid, err)
	}
	return n, nil
}

// serveHTTP serves h on l (shut it down with the returned server). On a unix
// socket every connection's context carries its peer's identity from the
// kernel; a connection whose peer cannot be told gets none, and the API
// refuses its calls.
func serveHTTP(l net.Listener, h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if l.Addr().Network() == "unix" {
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			id, err := peerIdentity(c)
			if err != nil {
				log.Warn("local API: cannot tell who connects; its calls are refused", "err", err)
				return ctx
			}
			return api.WithIdentity(ctx, id)
		}
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server", "err", err)
		}
	}()
	return srv
}
