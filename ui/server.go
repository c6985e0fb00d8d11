package ui

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

//go:embed assets
var assets embed.FS

// Config is what the status page needs.
type Config struct {
	// AdminToken (the cluster token) logs in an admin; ViewerToken (optional) a viewer.
	AdminToken  string
	ViewerToken string
	// Local is this daemon's control API, task and node routes included in cluster mode (the
	// scheduler's own, or forwarded to it by a joined node).
	Local Caller
	// Scheduler is the scheduler's API when it is another daemon (a joined node), for its
	// health (version, uptime); nil: this daemon is the scheduler (or there is none).
	Scheduler Caller
	// SchedulerAddr is shown as the cluster's scheduler ("" outside cluster mode).
	SchedulerAddr string
	// NodeName is this daemon's node.
	NodeName string
	// Node returns the API of a cluster node at its address (its cluster listener, with the
	// token); nil outside cluster mode. This node is always called through Local.
	Node func(addr string) Caller
	// SampleInterval is how often the charts' samples are taken (default 10 s); Samples how
	// many are kept (default 360).
	SampleInterval time.Duration
	Samples        int
	// SessionTTL bounds a session's life (default 12 h).
	SessionTTL time.Duration
	// CallTimeout bounds each call to a node (default 3 s).
	CallTimeout time.Duration
	// LoginDelay slows a failed login down (default 500 ms).
	LoginDelay time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// Server is the status page's HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	mux      *http.ServeMux
	tmpl     *template.Template
	static   fs.FS
	samples  *sampler
	users    userNames

	started  atomic.Bool
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// New returns the status page's handler. Start begins the sampling; Close ends it.
func New(cfg Config) (*Server, error) {
	if cfg.AdminToken == "" {
		return nil, errors.New("status page: no cluster token to log in with (set --token-file or EDDY_TOKEN)")
	}
	if cfg.Local == nil {
		return nil, errors.New("status page: no API to read")
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 10 * time.Second
	}
	if cfg.Samples <= 0 {
		cfg.Samples = 360
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 3 * time.Second
	}
	if cfg.LoginDelay == 0 {
		cfg.LoginDelay = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tmpl, err := template.ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.SessionTTL, cfg.Now), mux: http.NewServeMux(),
		tmpl: tmpl, static: static, samples: newSampler(cfg.Samples), users: userNames{m: map[uint32]string{}},
		stop: make(chan struct{}), done: make(chan struct{})}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /{$}", s.handleOverviewPage)
	s.mux.HandleFunc("GET /task/{id}", s.handleTaskPage)
	s.mux.HandleFunc("GET /static/{file}", s.handleStatic)
	s.mux.HandleFunc("POST /logout", s.handleLogout)
	s.mux.HandleFunc("GET /api/overview", s.handleOverview)
	s.mux.HandleFunc("GET /api/task/{id}", s.handleTask)
	s.mux.HandleFunc("GET /api/task/{id}/log", s.handleTaskLog)
	s.mux.HandleFunc("POST /api/task/{id}/kill", s.handleKill)
	s.mux.HandleFunc("GET /api/where", s.handleWhere)
	s.mux.HandleFunc("GET /api/samples", s.handleSamples)
	s.mux.HandleFunc("GET /chart/{name}", s.handleChart)
}

// Start takes the charts' samples every SampleInterval until Close.
func (s *Server) Start() {
	if s.started.Swap(true) {
		return
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(s.cfg.SampleInterval)
		defer tick.Stop()
		for {
			s.sampleOnce()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
}

// Close stops the sampling (after Start) and waits for it.
func (s *Server) Close(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	if !s.started.Load() {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type ctxKey struct{}

// sessionFrom is the request's session (ServeHTTP made sure there is one).
func sessionFrom(r *http.Request) *session {
	se, _ := r.Context().Value(ctxKey{}).(*session)
	return se
}

// ServeHTTP serves the login form to anyone and everything else to a session only: without
// one, a page is a redirect to the login form and anything else (JSON, SVG, scripts, a POST)
// a bare 401. A POST must also come from this site and carry the session's CSRF token.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	if r.URL.Path == "/login" {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.handleLoginForm(w, r)
		case http.MethodPost:
			s.handleLogin(w, r)
		default:
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
		return
	}
	_, se := s.sessionOf(r)
	if se == nil {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && isPage(r.URL.Path) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte("log in first\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
		if !sameOrigin(r) || !equal(csrfOf(r), se.csrf) {
			writeErr(w, http.StatusForbidden, errors.New("missing or wrong CSRF token; reload the page"))
			return
		}
	}
	s.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, se)))
}

// isPage: the paths a person opens in the browser (a redirect to the login form helps them).
func isPage(p string) bool { return p == "/" || strings.HasPrefix(p, "/task/") }

func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := s.tmpl.ExecuteTemplate(w, name, data); err != nil {
		s.log.Warn("status page: render", "page", name, "err", err)
	}
}

func (s *Server) pageData(r *http.Request, extra map[string]any) map[string]any {
	se := sessionFrom(r)
	d := map[string]any{"CSRF": se.csrf, "Role": string(se.role), "Admin": se.role == RoleAdmin, "Node": s.cfg.NodeName,
		"Charts": []string{"cache", "queue", "running"}}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

func (s *Server) handleOverviewPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "index.html", s.pageData(r, nil))
}

func (s *Server) handleTaskPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "task.html", s.pageData(r, map[string]any{"ID": r.PathValue("id")}))
}

func (s *Server) handleStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ext := path.Ext(name)
	if ext != ".js" && ext != ".css" {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(s.static, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(ext))
	_, _ = w.Write(b)
}

// writeErr answers status with err in the API's error body.
func writeErr(w http.ResponseWriter, status int, err error) { api.WriteError(w, status, err) }
