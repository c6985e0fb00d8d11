package sched

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Peer is a member of the scheduler group: its node name (the raft server ID) and raft address.
type Peer struct {
	Name string
	Addr string
}

// ParsePeers parses "name=host:port,name=host:port".
func ParsePeers(s string) ([]Peer, error) {
	var out []Peer
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, addr, ok := strings.Cut(f, "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("scheduler peer %q: want NAME=HOST:PORT", f)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("scheduler peer %q: %v", f, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("scheduler peer %q named twice", name)
		}
		seen[name] = true
		out = append(out, Peer{Name: name, Addr: addr})
	}
	return out, nil
}

// ReplicaConfig configures a member of the scheduler group.
type ReplicaConfig struct {
	Name string // this member's node name: its raft server ID
	Dir  string // raft's own state: raft.db (log and stable store), snapshots/
	// Listen is the raft transport's TCP address. Empty with no Peers: an in-process transport,
	// a group of one that cannot grow.
	Listen string
	// Peers are the group's members when it is formed (each member is given the same list).
	// A member with no state bootstraps the group from them when it is in the list; one that is
	// not waits to be added (AddMember on the leader). Empty: a group of this member alone.
	Peers []Peer
	// Token authenticates every raft connection (a challenge-response on the cluster token;
	// the token itself never crosses the wire). Required with Listen.
	Token string
	// ServerTLS / ClientTLS: when ServerTLS is set the raft connections are TLS as well.
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// SnapshotThreshold: a snapshot is taken once this many entries follow the last one (default
	// 4096); TrailingLogs entries are kept behind a snapshot for slow followers (default 8192).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration // how often the threshold is checked (default 30 s)
	Logger            *slog.Logger

	// Tests: in-memory transport and stores, faster timeouts.
	Transport        raft.Transport
	LogStore         raft.LogStore
	StableStore      raft.StableStore
	SnapshotStore    raft.SnapshotStore
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
}

// Replica is this node's member of the scheduler group: raft over the FSM.
type Replica struct {
	cfg      ReplicaConfig
	r        *raft.Raft
	fsm      *FSM
	trans    raft.Transport
	tcp      bool // a TCP transport: the group can grow
	notify   chan bool
	closers  []func() error
	log      *slog.Logger
	closeOne sync.Once
	// props is the submit queue (proposeSubmit): batchLoop makes its waiting submits one
	// log entry. quit ends batchLoop.
	props chan proposal
	quit  chan struct{}
}

// proposal is a submit waiting in the queue, and where its answer goes.
type proposal struct {
	cmd     Command
	timeout time.Duration
	done    chan proposalResult
}

type proposalResult struct {
	res ApplyResult
	err error
}

// Batching of submits: at most maxBatch in one entry, maxInflight entries in flight. While
// maxInflight entries wait for their commit, submits gather in the queue, and the next entry
// takes them all: under load an entry carries many submits (one decode and one store write
// on each member), alone a submit goes at once.
const (
	maxBatch    = 128
	maxInflight = 4
)

// OpenReplica starts raft over fsm, bootstrapping the group on first start (see ReplicaConfig).
func OpenReplica(cfg ReplicaConfig, fsm *FSM) (_ *Replica, err error) {
	if cfg.Name == "" {
		return nil, errors.New("scheduler group: no member name")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 4096
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 8192
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = 30 * time.Second
	}
	rp := &Replica{cfg: cfg, fsm: fsm, notify: make(chan bool, 64), log: cfg.Logger,
		props: make(chan proposal, 4*maxBatch), quit: make(chan struct{})}
	defer func() {
		if err != nil {
			rp.runClosers()
		}
	}()
	var self *Peer
	for i := range cfg.Peers {
		if cfg.Peers[i].Name == cfg.Name {
			self = &cfg.Peers[i]
		}
	}
	rp.trans = cfg.Transport
	switch {
	case rp.trans != nil:
	case cfg.Listen == "" && len(cfg.Peers) == 0:
		_, rp.trans = raft.NewInmemTransport(raft.ServerAddress(cfg.Name))
	case cfg.Listen == "":
		return nil, errors.New("scheduler group: --scheduler-peers needs --raft-listen (this member's raft address)")
	default:
		if cfg.Token == "" {
			return nil, errors.New("scheduler group: the raft transport needs the cluster token")
		}
		advertise := cfg.Listen
		if self != nil {
			advertise = self.Addr
		}
		sl, err := listenStream(cfg.Listen, advertise, cfg.Token, cfg.ServerTLS, cfg.ClientTLS, cfg.Logger)
		if err != nil {
			return nil, err
		}
		nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: sl, MaxPool: 3, Timeout: 10 * time.Second,
			Logger: hclogFor(cfg.Logger, "raft-net")})
		rp.trans, rp.tcp = nt, true
		rp.closers = append(rp.closers, nt.Close)
	}
	logs, stable, snaps := cfg.LogStore, cfg.StableStore, cfg.SnapshotStore
	if logs == nil || stable == nil || snaps == nil {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("scheduler group: %w", err)
		}
		bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")}) // fsyncs every append
		if err != nil {
			return nil, fmt.Errorf("scheduler group: log store: %w", err)
		}
		rp.closers = append(rp.closers, bs.Close)
		lc, err := raft.NewLogCache(512, bs)
		if err != nil {
			return nil, err
		}
		fs, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hclogFor(cfg.Logger, "raft-snapshots"))
		if err != nil {
			return nil, fmt.Errorf("scheduler group: snapshot store: %w", err)
		}
		logs, stable, snaps = lc, bs, fs
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Name)
	rc.SnapshotThreshold, rc.TrailingLogs, rc.SnapshotInterval = cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval
	rc.NotifyCh = rp.notify
	rc.Logger = hclogFor(cfg.Logger, "raft")
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout, rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout, cfg.HeartbeatTimeout/2
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("scheduler group: %w", err)
	}
	if !has {
		var servers []raft.Server
		switch {
		case len(cfg.Peers) == 0:
			servers = []raft.Server{{ID: rc.LocalID, Address: rp.trans.LocalAddr(), Suffrage: raft.Voter}}
		case self != nil:
			for _, p := range cfg.Peers {
				servers = append(servers, raft.Server{ID: raft.ServerID(p.Name), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
			}
		default:
			cfg.Logger.Info("scheduler group: not among the peers and no state yet: waiting to be added (eddy scheduler add)", "member", cfg.Name)
		}
		if servers != nil {
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, rp.trans, raft.Configuration{Servers: servers}); err != nil {
				return nil, fmt.Errorf("scheduler group: bootstrap: %w", err)
			}
			cfg.Logger.Info("scheduler group bootstrapped", "members", len(servers))
		}
	}
	r, err := raft.NewRaft(rc, fsm, logs, stable, snaps, rp.trans)
	if err != nil {
		return nil, fmt.Errorf("scheduler group: %w", err)
	}
	rp.r = r
	go rp.batchLoop()
	return rp, nil
}

func (rp *Replica) runClosers() {
	for i := len(rp.closers) - 1; i >= 0; i-- {
		_ = rp.closers[i]()
	}
	rp.closers = nil
}

// Close stops raft and closes its stores.
func (rp *Replica) Close() error {
	var err error
	rp.closeOne.Do(func() {
		close(rp.quit)
		if rp.r != nil {
			err = rp.r.Shutdown().Error()
		}
		rp.runClosers()
	})
	return err
}

// Raft is the raft instance (tests and status).
func (rp *Replica) Raft() *raft.Raft { return rp.r }

// FSM is the state machine.
func (rp *Replica) FSM() *FSM { return rp.fsm }

// IsLeader reports whether this member is the leader now.
func (rp *Replica) IsLeader() bool { return rp.r.State() == raft.Leader }

// Leader is the leader's name ("" when none is known).
func (rp *Replica) Leader() string {
	_, id := rp.r.LeaderWithID()
	return string(id)
}

// apply commits cmds (in order, pipelined) and returns the state machine's answers.
func (rp *Replica) apply(cmds []Command, timeout time.Duration) ([]ApplyResult, error) {
	wait, err := rp.propose(cmds, timeout)
	if err != nil {
		return nil, err
	}
	return wait()
}

// propose hands cmds to raft (in order) and returns a wait for their answers. Raft pipelines
// what is proposed concurrently: the leader writes the entries waiting for it in one append
// (one fsync) and sends them to the followers in one message, so concurrent proposers share
// the commit's cost.
func (rp *Replica) propose(cmds []Command, timeout time.Duration) (func() ([]ApplyResult, error), error) {
	fs := make([]raft.ApplyFuture, len(cmds))
	for i, c := range cmds {
		b, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		fs[i] = rp.r.Apply(b, timeout)
	}
	return func() ([]ApplyResult, error) {
		out := make([]ApplyResult, len(cmds))
		var first error
		for i, f := range fs {
			if err := f.Error(); err != nil {
				if first == nil {
					first = err
				}
				continue
			}
			out[i], _ = f.Response().(ApplyResult)
		}
		if first != nil {
			if errors.Is(first, raft.ErrNotLeader) || errors.Is(first, raft.ErrLeadershipLost) || errors.Is(first, raft.ErrLeadershipTransferInProgress) {
				return out, fmt.Errorf("%w: %v", ErrNotLeader, first)
			}
			return out, first
		}
		return out, nil
	}, nil
}

// proposeSubmit queues a submit for the next batch entry and returns a wait for its answer.
func (rp *Replica) proposeSubmit(cmd Command, timeout time.Duration) func() (ApplyResult, error) {
	p := proposal{cmd: cmd, timeout: timeout, done: make(chan proposalResult, 1)}
	select {
	case rp.props <- p:
	case <-rp.quit:
		return func() (ApplyResult, error) {
			return ApplyResult{}, fmt.Errorf("%w: the scheduler group member is closed", ErrNotLeader)
		}
	}
	return func() (ApplyResult, error) {
		select {
		case r := <-p.done:
			return r.res, r.err
		case <-rp.quit:
			return ApplyResult{}, fmt.Errorf("%w: the scheduler group member is closed", ErrNotLeader)
		}
	}
}

// batchLoop makes the queued submits log entries: one alone as the plain command, several
// as one OpBatch entry.
func (rp *Replica) batchLoop() {
	slots := make(chan struct{}, maxInflight)
	for {
		var first proposal
		select {
		case first = <-rp.props:
		case <-rp.quit:
			return
		}
		select {
		case slots <- struct{}{}:
		case <-rp.quit:
			first.done <- proposalResult{err: fmt.Errorf("%w: the scheduler group member is closed", ErrNotLeader)}
			return
		}
		batch := []proposal{first}
	gather:
		for len(batch) < maxBatch {
			select {
			case p := <-rp.props:
				batch = append(batch, p)
			default:
				break gather
			}
		}
		cmd := first.cmd
		if len(batch) > 1 {
			cmd = Command{ID: newCommandID(), Op: OpBatch, Cmds: make([]Command, len(batch))}
			for i, p := range batch {
				cmd.Cmds[i] = p.cmd
			}
		}
		b, err := json.Marshal(cmd)
		var f raft.ApplyFuture
		if err == nil {
			f = rp.r.Apply(b, first.timeout)
		}
		go func() {
			defer func() { <-slots }()
			if err == nil {
				err = f.Error()
			}
			if err != nil {
				if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
					err = fmt.Errorf("%w: %v", ErrNotLeader, err)
				}
				for _, p := range batch {
					p.done <- proposalResult{err: err}
				}
				return
			}
			var rs []ApplyResult
			switch r := f.Response().(type) {
			case ApplyResult:
				rs = []ApplyResult{r}
			case []ApplyResult:
				rs = r
			}
			for i, p := range batch {
				if i < len(rs) {
					p.done <- proposalResult{res: rs[i]}
				} else {
					p.done <- proposalResult{err: errors.New("the state machine did not answer this submit")}
				}
			}
		}()
	}
}

// AddMember adds a voter (on the leader).
func (rp *Replica) AddMember(name, addr string) error {
	if !rp.tcp {
		return fmt.Errorf("%w: this scheduler has no raft transport (start it with --raft-listen)", ErrConflict)
	}
	if name == "" || addr == "" {
		return fmt.Errorf("%w: a member needs a name and a raft address", ErrBadRequest)
	}
	if err := rp.r.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0, 30*time.Second).Error(); err != nil {
		return rp.membershipErr("add "+name, err)
	}
	return nil
}

// RemoveMember removes a member (on the leader).
func (rp *Replica) RemoveMember(name string) error {
	cf := rp.r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	found := false
	for _, s := range cf.Configuration().Servers {
		found = found || string(s.ID) == name
	}
	if !found {
		return fmt.Errorf("remove %s: %w: not a member", name, ErrNotFound)
	}
	if err := rp.r.RemoveServer(raft.ServerID(name), 0, 30*time.Second).Error(); err != nil {
		return rp.membershipErr("remove "+name, err)
	}
	return nil
}

func (rp *Replica) membershipErr(what string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%s: %w: %v", what, ErrNotLeader, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Members is the group's configuration.
func (rp *Replica) Members() ([]raft.Server, error) {
	cf := rp.r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, err
	}
	return cf.Configuration().Servers, nil
}

// fixSelfAddress updates this member's address in a group of one whose configuration names
// another (it was started without --raft-listen before, or on another port).
func (rp *Replica) fixSelfAddress() {
	srv, err := rp.Members()
	if err != nil || len(srv) != 1 || string(srv[0].ID) != rp.cfg.Name || srv[0].Address == rp.trans.LocalAddr() {
		return
	}
	if err := rp.r.AddVoter(srv[0].ID, rp.trans.LocalAddr(), 0, 10*time.Second).Error(); err != nil {
		rp.log.Warn("scheduler group: update this member's raft address", "err", err)
		return
	}
	rp.log.Info("scheduler group: this member's raft address updated", "from", srv[0].Address, "to", rp.trans.LocalAddr())
}

// hclogFor is an hclog.Logger writing into log (raft's own messages, at info and above).
func hclogFor(log *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: slogWriter{log.With("part", name)},
		DisableTime: true})
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.Contains(msg, "[ERROR]"):
		level = slog.LevelError
	case strings.Contains(msg, "[WARN]"):
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}

// streamLayer is raft's TCP transport with every connection authenticated by the cluster
// token: the server sends a nonce, the client answers with its own nonce and an HMAC-SHA256
// of both under the token, and the server proves the token likewise. Over TLS when serverTLS
// is set.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	token     []byte
	serverTLS *tls.Config
	clientTLS *tls.Config
	log       *slog.Logger
	conns     chan net.Conn
	done      chan struct{}
	closeOne  sync.Once
}

func listenStream(listen, advertise, token string, serverTLS, clientTLS *tls.Config, log *slog.Logger) (*streamLayer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("scheduler group: raft listen %s: %w", listen, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil || adv.IP == nil || adv.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("scheduler group: raft address %q is not one others can reach (give host:port, not :port or 0.0.0.0)", advertise)
	}
	l := &streamLayer{ln: ln, advertise: adv, token: []byte(token), serverTLS: serverTLS, clientTLS: clientTLS, log: log,
		conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l, nil
}

func (l *streamLayer) acceptLoop() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go func() {
			if l.serverTLS != nil {
				c = tls.Server(c, l.serverTLS)
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := l.serverHandshake(c); err != nil {
				l.log.Warn("scheduler group: raft connection refused", "from", c.RemoteAddr(), "err", err)
				c.Close()
				return
			}
			_ = c.SetDeadline(time.Time{})
			select {
			case l.conns <- c:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

const raftHello = "eddy-raft/1"

func (l *streamLayer) mac(role string, a, b []byte) []byte {
	m := hmac.New(sha256.New, l.token)
	m.Write([]byte(raftHello + "/" + role))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

func (l *streamLayer) serverHandshake(c net.Conn) error {
	ns := make([]byte, 32)
	_, _ = rand.Read(ns)
	if _, err := c.Write(append([]byte(raftHello), ns...)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	nc, got := buf[:32], buf[32:]
	if !hmac.Equal(got, l.mac("client", ns, nc)) {
		return errors.New("wrong cluster token")
	}
	_, err := c.Write(l.mac("server", ns, nc))
	return err
}

func (l *streamLayer) clientHandshake(c net.Conn) error {
	buf := make([]byte, len(raftHello)+32)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf[:len(raftHello)]) != raftHello {
		return errors.New("not an eddy raft transport")
	}
	ns := buf[len(raftHello):]
	nc := make([]byte, 32)
	_, _ = rand.Read(nc)
	if _, err := c.Write(append(nc, l.mac("client", ns, nc)...)); err != nil {
		return err
	}
	got := make([]byte, 32)
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !hmac.Equal(got, l.mac("server", ns, nc)) {
		return errors.New("the peer does not hold the cluster token")
	}
	return nil
}

// Dial connects to a member (raft.StreamLayer).
func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(addr))
	if err != nil {
		return nil, err
	}
	if l.serverTLS != nil {
		cfg := l.clientTLS.Clone()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if host, _, err := net.SplitHostPort(string(addr)); err == nil && cfg.ServerName == "" {
			cfg.ServerName = host
		}
		c = tls.Client(c, cfg)
	}
	_ = c.SetDeadline(time.Now().Add(max(timeout, 5*time.Second)))
	if err := l.clientHandshake(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft connection to %s: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Accept returns the next authenticated connection (net.Listener).
func (l *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening (net.Listener).
func (l *streamLayer) Close() error {
	var err error
	l.closeOne.Do(func() {
		close(l.done)
		err = l.ln.Close()
	})
	return err
}

// Addr is the advertised address (net.Listener).
func (l *streamLayer) Addr() net.Addr { return l.advertise }
