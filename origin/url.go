package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// OpenOptions configure Open for every kind of origin.
type OpenOptions struct {
	// Timeout bounds how long a remote origin waits for a server that
	// does not answer (connect, retries after a dropped connection) before
	// an operation fails as unavailable. 0 = the origin's default.
	Timeout time.Duration
	// Logger receives the origin's logs; nil = slog.Default().
	Logger *slog.Logger
	// Dial, if set, makes a remote origin's TCP connections (tests dial
	// inside a network namespace with it). nil = net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Opener opens an origin of one URL scheme. u has passed ParseURL.
type Opener func(ctx context.Context, u *url.URL, opts OpenOptions) (FS, error)

var (
	schemesMu sync.Mutex
	schemes   = map[string]Opener{} // GUARDED_BY(schemesMu)
	rootOK    = map[string]bool{}   // GUARDED_BY(schemesMu): schemes whose URLs may omit the path
)

// SchemeOption adjusts how URLs of one scheme are checked.
type SchemeOption struct{ wholeHost bool }

// WholeHostOK lets a URL of the scheme name its host alone (s3://BUCKET: the
// whole bucket), where other schemes need an export path.
var WholeHostOK = SchemeOption{wholeHost: true}

// RegisterScheme makes Open accept URLs of scheme (lower case). Origin
// packages call it from init, so package origin imports none of them; the
// daemon blank-imports the ones it ships (origin/nfs, origin/s3).
func RegisterScheme(scheme string, open Opener, opts ...SchemeOption) {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	scheme = strings.ToLower(scheme)
	schemes[scheme] = open
	for _, o := range opts {
		if o.wholeHost {
			rootOK[scheme] = true
		}
	}
}

// wholeHostOK reports whether scheme's URLs may omit the path.
func wholeHostOK(scheme string) bool {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	return rootOK[scheme]
}

// Schemes lists the registered URL schemes.
func Schemes() []string {
	schemesMu.Lock()
	defer schemesMu.Unlock()
	var s []string
	for k := range schemes {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// IsURL reports whether spec names a remote origin (SCHEME://...) rather
// than a local path.
func IsURL(spec string) bool {
	i := strings.Index(spec, "://")
	if i <= 0 {
		return false
	}
	for _, r := range spec[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// ParseURL parses and checks a remote origin spec: SCHEME://HOST[:PORT]/PATH
// with an optional query. It refuses user info, fragments, an empty host or
// path, and a path with "." or ".." elements or NUL bytes.
func ParseURL(spec string) (*url.URL, error) {
	if !IsURL(spec) {
		return nil, fmt.Errorf("origin %q: not a URL (want SCHEME://HOST/PATH)", spec)
	}
	u, err := url.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("origin %q: %w", spec, err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	switch {
	case u.Opaque != "":
		return nil, fmt.Errorf("origin %q: want SCHEME://HOST/PATH", spec)
	case u.User != nil:
		return nil, fmt.Errorf("origin %q: user info is not supported (use uid= and gid=)", spec)
	case u.Fragment != "" || strings.Contains(spec, "#"):
		return nil, fmt.Errorf("origin %q: fragments are not allowed", spec)
	case u.Hostname() == "":
		return nil, fmt.Errorf("origin %q: no server host", spec)
	case (u.Path == "" || u.Path == "/") && !wholeHostOK(u.Scheme):
		return nil, fmt.Errorf("origin %q: no export path", spec)
	case strings.IndexByte(u.Path, 0) >= 0:
		return nil, fmt.Errorf("origin %q: NUL byte in path", spec)
	}
	if h := u.Hostname(); strings.Contains(h, ":") {
		if ip := net.ParseIP(h); ip == nil || !strings.HasPrefix(u.Host, "[") {
			return nil, fmt.Errorf("origin %q: bad host %q (IPv6 addresses go in brackets)", spec, u.Host)
		}
	} else if net.ParseIP(h) == nil && !validHostname(h) {
		return nil, fmt.Errorf("origin %q: bad host %q", spec, h)
	}
	if strings.HasSuffix(u.Host, ":") {
		return nil, fmt.Errorf("origin %q: bad port \"\"", spec)
	}
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n <= 0 || n > 65535 || fmt.Sprint(n) != p {
			return nil, fmt.Errorf("origin %q: bad port %q", spec, p)
		}
	}
	for _, el := range strings.Split(strings.Trim(u.Path, "/"), "/") {
		if el == "" && strings.Trim(u.Path, "/") == "" {
			break // the whole host (WholeHostOK)
		}
		if el == "." || el == ".." || el == "" {
			return nil, fmt.Errorf("origin %q: export path %q is not clean", spec, u.Path)
		}
	}
	return u, nil
}

// validHostname: letters, digits, '-', '_' and '.', as DNS names go.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Open opens the origin named by spec: a local directory (a plain path or
// file:///path) with NewPath, or SCHEME://... with the opener registered for
// the scheme (nfs:// once origin/nfs is imported).
func Open(ctx context.Context, spec string, opts OpenOptions) (FS, error) {
	if spec == "" {
		return nil, errors.New("origin: empty origin spec")
	}
	if !IsURL(spec) {
		return NewPath(spec)
	}
	if strings.HasPrefix(strings.ToLower(spec), "file://") {
		u, err := url.Parse(spec)
		if err != nil || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
			return nil, fmt.Errorf("origin %q: want file:///PATH", spec)
		}
		return NewPath(u.Path)
	}
	u, err := ParseURL(spec)
	if err != nil {
		return nil, err
	}
	schemesMu.Lock()
	open := schemes[u.Scheme]
	schemesMu.Unlock()
	if open == nil {
		known := append([]string{"file"}, Schemes()...)
		return nil, fmt.Errorf("origin %q: unknown scheme %q (known: %s)", spec, u.Scheme, strings.Join(known, ", "))
	}
	return open(ctx, u, opts)
}
