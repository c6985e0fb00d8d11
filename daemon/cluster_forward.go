package daemon

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// forwardedRoutes are the control API's paths a joined node forwards to the scheduler: the task
// and node commands of the local socket, the scheduler group's status and membership, and the
// periodic gc's status.
var forwardedRoutes = []string{"/v1/tasks", "/v1/tasks/", "/v1/nodes", api.RaftPath, api.RaftPath + "/", api.CacheWherePath,
	api.GCStatusPath}

// forwardTasksToScheduler serves the task and node commands of the local socket by forwarding
// them to the scheduler at --join (a URL, or host:port for plain HTTP; several, comma-separated,
// for a scheduler group: any member will do, a follower forwards to its leader).
func (d *Daemon) forwardTasksToScheduler(m *clusterMember) error {
	var targets []*url.URL
	for _, a := range strings.Split(m.cfg.Join, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		target, err := url.Parse(a)
		if err != nil || target.Host == "" {
			target, err = url.Parse("http://" + a)
		}
		if err != nil {
			return fmt.Errorf("cluster: --join %q: %w", a, err)
		}
		targets = append(targets, target)
	}
	if len(targets) == 0 {
		return fmt.Errorf("cluster: --join %q: no address", m.cfg.Join)
	}
	fwd := forwarderAll(targets, m.token, m.clientTLS)
	for _, p := range forwardedRoutes {
		d.Handle(p, fwd)
	}
	return nil
}

// forwarder sends calls to the scheduler at target (forwarderAll with one target).
func forwarder(target *url.URL, token string, tlsCfg *tls.Config) http.Handler {
	return forwarderAll([]*url.URL{target}, token, tlsCfg)
}

// forwarderAll sends calls to the scheduler at one of targets with the cluster token: the one that
// answered last, else the next, while one cannot be reached or answers api.CodeNotLeader (for up
// to 15 s). The scheduler acts for the caller this daemon saw (the local socket's peer from the
// kernel, or what this daemon's own token-checked listener accepted): the identity header is set
// from it, whatever the client sent.
func forwarderAll(targets []*url.URL, token string, tlsCfg *tls.Config) http.Handler {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var cur atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := api.IdentityFrom(r.Context())
		if !ok {
			writeError(w, http.StatusForbidden, errors.New("the daemon cannot tell who is calling; refused"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxRequestBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("read request: %w", err))
			return
		}
		if len(body) > api.MaxRequestBody {
			writeError(w, http.StatusRequestEntityTooLarge, errors.New("request body too large"))
			return
		}
		key := r.Header.Get(api.IdempotencyHeader)
		if key == "" && r.Method == http.MethodPost && r.URL.Path == "/v1/tasks" && len(targets) > 1 {
			key = fmt.Sprintf("%x", time.Now().UnixNano()) + "-" + id.String() // one key across the tries
		}
		deadline := time.Now().Add(15 * time.Second)
		var last error
		for round := 0; ; round++ {
			start := int(cur.Load())
			for k := range targets {
				i := (start + k) % len(targets)
				t := targets[i]
				u := *t
				u.Path, u.RawPath, u.RawQuery = strings.TrimRight(t.Path, "/")+r.URL.Path, "", r.URL.RawQuery
				out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
				if err != nil {
					writeError(w, http.StatusBadRequest, err)
					return
				}
				for k, vs := range r.Header {
					out.Header[k] = vs
				}
				out.Header.Set(api.IdentityHeader, id.String())
				out.Header.Set("Authorization", "Bearer "+token)
				if key != "" {
					out.Header.Set(api.IdempotencyHeader, key)
				}
				resp, err := hc.Do(out)
				if err != nil {
					last = err
					continue
				}
				if resp.StatusCode == http.StatusServiceUnavailable && len(targets) > 1 {
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					var eb api.ErrorBody
					if jerr := json.Unmarshal(b, &eb); jerr == nil && eb.Code == api.CodeNotLeader {
						last = errors.New(eb.Error)
						continue
					}
					copyResponse(w, resp.StatusCode, resp.Header, bytes.NewReader(b))
					return
				}
				cur.Store(int32(i))
				copyResponse(w, resp.StatusCode, resp.Header, resp.Body)
				resp.Body.Close()
				return
			}
			if time.Now().After(deadline) || r.Context().Err() != nil {
				writeError(w, http.StatusBadGateway, fmt.Errorf("no scheduler answered (%s): %v", strings.Join(targetStrings(targets), ","), last))
				return
			}
			time.Sleep(time.Duration(min(round+1, 5)) * 200 * time.Millisecond)
		}
	})
}

func targetStrings(ts []*url.URL) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Host
	}
	return out
}

// copyResponse writes a forwarded answer, flushing as it streams.
func copyResponse(w http.ResponseWriter, status int, h http.Header, body io.Reader) {
	for k, vs := range h {
		if k == "Content-Length" || k == "Connection" || k == "Transfer-Encoding" {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(status)
	buf := make([]byte, 32<<10)
	fl, _ := w.(http.Flusher)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}
