package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/eddy-cluster/eddy/sched"
)

// serveClusterAPI serves the whole control API on --listen (TCP, TLS with --tls-cert), every call
// checked against the cluster token. Call it after the routes are in place.
func (d *Daemon) serveClusterAPI(m *clusterMember) error {
	l, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("cluster: listen %s: %w", m.cfg.Listen, err)
	}
	srv := &http.Server{Handler: sched.Authorize(m.token, d.APIHandler()), ReadHeaderTimeout: 10 * time.Second}
	if m.serveTLS {
		srv.TLSConfig = serverTLS(m.cert)
	}
	go func() {
		var err error
		if m.serveTLS {
			err = srv.ServeTLS(l, "", "")
		} else {
			err = srv.Serve(l)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("cluster API server", "err", err)
		}
	}()
	d.OnShutdown(func(ctx context.Context) error { return srv.Shutdown(ctx) })
	m.log.Info("cluster API listening", "addr", m.cfg.Listen, "tls", m.serveTLS)
	return nil
}
