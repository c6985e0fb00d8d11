package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/ui"
)

// startUI serves the status page on --ui-listen. It reads this daemon's control API in process
// (as root: the page does its own authorization, a session per login), the scheduler's health
// at --join, and the other nodes' cache routes at their cluster addresses with the token.
func (d *Daemon) startUI() error {
	c := d.cfg
	if c.UIListen == "" {
		return nil
	}
	log := d.log.With("part", "ui")
	token, err := clusterToken(c)
	if err != nil {
		return fmt.Errorf("--ui-listen: the status page's login needs the cluster token: %w", err)
	}
	viewer := ""
	if c.UIViewerTokenFile != "" {
		b, err := os.ReadFile(c.UIViewerTokenFile)
		if err != nil {
			return fmt.Errorf("--ui-viewer-token-file: %w", err)
		}
		if viewer = strings.TrimSpace(string(b)); viewer == "" {
			return fmt.Errorf("--ui-viewer-token-file %s is empty", c.UIViewerTokenFile)
		}
		if viewer == token {
			return errors.New("--ui-viewer-token-file holds the cluster token: a viewer token must differ from it")
		}
	}
	cfg := ui.Config{AdminToken: token, ViewerToken: viewer, NodeName: c.NodeName, SampleInterval: c.UISampleInterval,
		Local: ui.HandlerCaller(d.APIHandler(), api.Identity{Via: "ui"}), Logger: log}
	if c.Scheduler || c.Join != "" {
		m, err := newClusterMember(c, log)
		if err != nil {
			return err
		}
		clients := &nodeClients{opts: append(append([]api.Option{}, m.callOpts...), api.WithTimeout(10*time.Second)), m: map[string]*api.Client{}}
		cfg.Node = clients.get
		cfg.SchedulerAddr = c.Listen
		if c.Join != "" {
			cfg.SchedulerAddr = c.Join
			cfg.Scheduler = clients.get(c.Join)
		}
	}
	srv, err := ui.New(cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.UIListen)
	if err != nil {
		return fmt.Errorf("--ui-listen %s: %w", c.UIListen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status page server", "err", err)
		}
	}()
	srv.Start()
	d.OnShutdown(func(ctx context.Context) error {
		err := hs.Shutdown(ctx)
		return errors.Join(err, srv.Close(ctx))
	})
	log.Info("status page listening", "addr", "http://"+l.Addr().String(), "viewer_token", viewer != "")
	return nil
}

// nodeClients keeps one client per node address, so their connections are reused.
type nodeClients struct {
	opts []api.Option
	mu   sync.Mutex
	m    map[string]*api.Client
}

func (n *nodeClients) get(addr string) ui.Caller {
	n.mu.Lock()
	defer n.mu.Unlock()
	cl := n.m[addr]
	if cl == nil {
		cl = api.NewTCP(addr, n.opts...)
		n.m[addr] = cl
	}
	return cl
}
