package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Role is what a session may do.
type Role string

// Roles: an admin logged in with the cluster token and may act (kill tasks); a viewer logged
// in with the viewer token and may only look.
const (
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
)

const (
	sessionCookie = "eddy_ui_session"
	loginCookie   = "eddy_ui_login" // the login form's CSRF token, before there is a session
	csrfHeader    = "X-CSRF-Token"
	csrfField     = "csrf"
	maxSessions   = 1024
)

// loginStyle is the login form's inline style sheet; loginStyleHash allows it in the form's
// Content-Security-Policy.
const loginStyle = `body{font:15px/1.4 system-ui,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
main{max-width:360px;margin:12vh auto;background:#fff;padding:24px 28px;border-radius:8px;box-shadow:0 1px 4px #0002}
h1{font-size:20px;margin:0 0 4px}p{color:#555;margin:0 0 16px}label{display:block;margin:8px 0 4px}
input[type=password]{width:100%;box-sizing:border-box;padding:8px;font:inherit}
button{margin-top:14px;padding:8px 16px;font:inherit;background:#2456c9;color:#fff;border:0;border-radius:4px}
.err{color:#b00020;font-weight:600}`

var loginStyleHash = func() string {
	h := sha256.Sum256([]byte(loginStyle))
	return "sha256-" + base64.StdEncoding.EncodeToString(h[:])
}()

// session is one row of the server-side session table.
type session struct {
	role    Role
	csrf    string
	expires time.Time
}

// sessions is the session table: random ids to sessions, each with an expiry.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
	now func() time.Time
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, now: now}
}

// randomToken is 32 random bytes, hex.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("ui: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// create starts a session for role and returns its id.
func (s *sessions) create(role Role) (id string, se *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= maxSessions { // drop the one closest to expiry
		var oldest string
		for k, v := range s.m {
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = k
			}
		}
		delete(s.m, oldest)
	}
	id = randomToken()
	se = &session{role: role, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[id] = se
	return id, se
}

// get returns the live session of id, nil when there is none or it has expired.
func (s *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.m[id]
	if se == nil {
		return nil
	}
	if !s.now().Before(se.expires) {
		delete(s.m, id)
		return nil
	}
	c := *se
	return &c
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// sessionOf is r's live session and its id, or nil.
func (srv *Server) sessionOf(r *http.Request) (string, *session) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", nil
	}
	return c.Value, srv.sessions.get(c.Value)
}

// equal compares secrets in constant time; empty never matches.
func equal(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// roleOf is the role a login token grants, "" for none.
func (srv *Server) roleOf(token string) Role {
	// Both comparisons always run, so the time taken does not tell which token matched.
	admin := equal(token, srv.cfg.AdminToken)
	viewer := equal(token, srv.cfg.ViewerToken)
	switch {
	case admin:
		return RoleAdmin
	case viewer:
		return RoleViewer
	}
	return ""
}

// sameOrigin refuses a POST whose Origin (or, without one, Referer) names another site.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// csrfOf is the CSRF token a POST carries: the header (the script's calls) or the form field.
func csrfOf(r *http.Request) string {
	if v := r.Header.Get(csrfHeader); v != "" {
		return v
	}
	if err := r.ParseForm(); err != nil {
		return ""
	}
	return r.PostForm.Get(csrfField)
}

func (srv *Server) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil}
}

// handleLoginForm shows the login form, with a fresh login CSRF token in a cookie and the form.
func (srv *Server) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	srv.showLogin(w, r, http.StatusOK, "")
}

func (srv *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(w, srv.cookie(r, loginCookie, tok, 600))
	// The form is the one page served without a session: its style is inline (allowed by its
	// hash), so that nothing else needs to be.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src '"+loginStyleHash+"'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	srv.render(w, status, "login.html", map[string]any{"CSRF": tok, "Error": msg, "Viewer": srv.cfg.ViewerToken != "",
		"Style": template.CSS(loginStyle), "Node": srv.cfg.NodeName})
}

// handleLogin checks the token and starts a session.
func (srv *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		srv.showLogin(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	lc, err := r.Cookie(loginCookie)
	if err != nil || !equal(lc.Value, r.PostForm.Get(csrfField)) || !sameOrigin(r) {
		srv.showLogin(w, r, http.StatusForbidden, "The form expired; log in again.")
		return
	}
	role := srv.roleOf(r.PostForm.Get("token"))
	if role == "" {
		srv.log.Warn("status page: failed login", "remote", r.RemoteAddr)
		time.Sleep(srv.cfg.LoginDelay)
		srv.showLogin(w, r, http.StatusUnauthorized, "Wrong token.")
		return
	}
	if _, old := srv.sessionOf(r); old != nil {
		c, _ := r.Cookie(sessionCookie)
		srv.sessions.remove(c.Value)
	}
	id, _ := srv.sessions.create(role)
	http.SetCookie(w, srv.cookie(r, loginCookie, "", -1))
	http.SetCookie(w, srv.cookie(r, sessionCookie, id, int(srv.cfg.SessionTTL/time.Second)))
	srv.log.Info("status page: login", "role", role, "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleLogout ends the session (a POST, so it carries the CSRF token like every other).
func (srv *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if id, _ := srv.sessionOf(r); id != "" {
		srv.sessions.remove(id)
	}
	http.SetCookie(w, srv.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
