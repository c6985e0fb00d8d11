package daemon

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/cache/origin"
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

// ServeHTTP implements http.Handler.
func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxRequestBody)
	s.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, api.ErrorBody{Error: err.Error()})
}

// statusOf maps an error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, origin.ErrEscape), errors.Is(err, errBadPath):
		return http.StatusBadRequest
	case errors.Is(err, syscall.ENOENT), errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
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
	writeJSON(w, http.StatusOK, s.health())
}

func (s *apiServer) handleStats(w http.ResponseWriter, r *http.Request) {
	out := api.CacheStats{Origin: s.origin, Mount: s.mount, NoCache: s.cache == nil}
	if s.cache != nil {
		out.Stats = s.cache.Stats()
	}
	if s.originHealth != nil {
		h := s.originHealth()
		out.OriginHealth = &h
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *apiServer) handleList(w http.ResponseWriter, r *http.Request) {
	if s.cache == nil {
		writeJSON(w, http.StatusOK, []cache.FileInfo{})
		return
	}
	name, err := s.resolve(r.URL.Query().Get("path"), r.URL.Query().Get("cwd"))
	if err != nil {
		writeError(w, statusOf(err), err)
		return
	}
	files, err := s.cache.List(r.Context(), name)
	if err != nil {
		writeError(w, statusOf(err), fmt.Errorf("list %s: %w", name, err))
		return
	}
	if files == nil {
		files = []cache.FileInfo{}
	}
	writeJSON(w, http.StatusOK, files)
}

func decodePaths(w http.ResponseWriter, r *http.Request) (api.PathsRequest, bool) {
	var req api.PathsRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", mbe.Limit))
			return req, false
		}
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
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
				res.Error = err.Error()
				s.log.Info("cache "+op+" failed", "path", p, "err", err)
			}
			resp.Results = append(resp.Results, res)
		}
		writeJSON(w, http.StatusOK, resp)
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
				emit(api.WarmEvent{Arg: p, Name: name, Progress: pr, Elapsed: time.Since(start).Seconds()})
			})
			pmu.Lock()
			ev.Progress = lastP
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

// RequireToken wraps h so that every call must carry "Authorization: Bearer
// TOKEN" (compared in constant time). For the cluster's TCP listener.
func RequireToken(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong cluster token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// listenUnix listens on a unix socket for the local API: its directory is
// created, a stale socket is removed (one a live daemon answers on is not),
// and the socket gets mode 0600.
func listenUnix(sock string) (net.Listener, error) {
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
	if err := os.Chmod(sock, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", sock, err)
	}
	return l, nil
}

// serveHTTP runs an http.Server on l until ctx ends, then shuts it down.
func serveHTTP(l net.Listener, h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server", "err", err)
		}
	}()
	return srv
}
