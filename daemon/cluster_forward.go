package daemon

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/eddy-cluster/eddy/api"
)

// forwardedRoutes are the control API's paths a joined node forwards to the scheduler: the task
// and node commands of the local socket.
var forwardedRoutes = []string{"/v1/tasks", "/v1/tasks/", "/v1/nodes"}

// forwardTasksToScheduler serves the task and node commands of the local socket by forwarding
// them to the scheduler at --join (a URL, or host:port for plain HTTP).
func (d *Daemon) forwardTasksToScheduler(m *clusterMember) error {
	target, err := url.Parse(m.cfg.Join)
	if err != nil || target.Host == "" {
		target, err = url.Parse("http://" + m.cfg.Join)
	}
	if err != nil {
		return fmt.Errorf("cluster: --join %q: %w", m.cfg.Join, err)
	}
	fwd := forwarder(target, m.token, m.clientTLS)
	for _, p := range forwardedRoutes {
		d.Handle(p, fwd)
	}
	return nil
}

// forwarder sends calls to the scheduler at target with the cluster token. The scheduler acts for
// the caller this daemon saw (the local socket's peer from the kernel, or what this daemon's own
// token-checked listener accepted): the identity header is set from it, whatever the client sent.
func forwarder(target *url.URL, token string, tlsCfg *tls.Config) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target)
	if target.Scheme == "https" {
		rp.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := api.IdentityFrom(r.Context())
		if !ok {
			writeError(w, http.StatusForbidden, errors.New("the daemon cannot tell who is calling; refused"))
			return
		}
		r.Header.Set(api.IdentityHeader, id.String())
		r.Header.Set("Authorization", "Bearer "+token)
		rp.ServeHTTP(w, r)
	})
}
