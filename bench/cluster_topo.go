package bench

// The cluster benchmark's set-up: the switch (server and node namespaces), nfs-ganesha in the
// server namespace, and one eddy daemon per node namespace, started on empty caches for every
// run and stopped after it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/bench/topo"
	"github.com/eddy-cluster/eddy/runtime/envs"
)

const (
	clusterSubnet   = "10.81.0" // inside the suite's own namespaces only
	clusterPort     = 7461      // every node's cluster listener, on its own address
	clusterFileName = "big.bin"
	// clusterUpTimeout bounds the wait for every node of a run to be up at the scheduler.
	clusterUpTimeout = 90 * time.Second
)

// clusterEnv is the running set-up of RunCluster.
type clusterEnv struct {
	cfg    *ClusterConfig
	prog   *Progress
	work   string
	export string
	file   clusterFile  // of the file workload (zero without it)
	env    envs.Version // of the env workload (zero without it)
	token  string       // the cluster token file

	sw  *topo.Switch
	nfs *topo.Ganesha

	daemons  []*eddyDaemon // of the current run, node 0 first
	gen      int           // runs so far: every run gets fresh cache directories
	commands map[string][]string
}

func (ce *clusterEnv) setUp(ctx context.Context) error {
	maxN := slices.Max(ce.cfg.Nodes)
	var err error
	ce.sw, err = topo.NewSwitch(ctx, topo.SwitchOptions{Prefix: "ecl", Subnet: clusterSubnet, Nodes: maxN,
		ServerRate: linkRate(ce.cfg.ServerLink), NodeRate: linkRate(ce.cfg.NodeLink)})
	if err != nil {
		return fmt.Errorf("bench cluster: topology: %w", err)
	}
	ce.prog.Printf("bench cluster: switch %s, server %s (%s, link %s), %d nodes %s.. (%s.., links %s)", ce.sw.Bridge, ce.sw.Server,
		ce.sw.ServerAddr, ce.cfg.ServerLink, maxN, ce.sw.Nodes[0], ce.sw.NodeAddrs[0], ce.cfg.NodeLink)
	ce.prog.Printf("bench cluster: nfs-ganesha in %s exporting %s", ce.sw.Server, ce.export)
	ce.nfs, err = topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: ce.sw.Server, Addr: ce.sw.ServerAddr, Export: ce.export,
		ReadyFrom: ce.sw.Nodes[0]})
	if err != nil {
		return fmt.Errorf("bench cluster: %w", err)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return fmt.Errorf("bench cluster: token: %w", err)
	}
	ce.token = filepath.Join(ce.work, "token")
	if err := os.WriteFile(ce.token, []byte(hex.EncodeToString(tok[:])+"\n"), 0o600); err != nil {
		return fmt.Errorf("bench cluster: token: %w", err)
	}
	return nil
}

// nodeFlags are the daemon flags of node i of a cluster of the backend's kind for the
// workload. nfs reading the file runs N independent daemons without a cache; the eddy
// backends, and nfs starting containers (tasks need a scheduler), are a cluster, node 0 its
// scheduler. The env workload gives every node a private containerd, new for every run, so
// nothing is imported when the run starts.
func (ce *clusterEnv) nodeFlags(backend, workload string, i int) []string {
	f := []string{"--shutdown-timeout", "5s"}
	if backend == ClusterNFS && workload != WorkloadEnv {
		return f
	}
	f = append(f, "--node-name", clusterNodeName(i),
		"--listen", fmt.Sprintf("%s:%d", ce.sw.NodeAddrs[i], clusterPort), "--token-file", ce.token)
	if backend != ClusterNFS {
		// The caches share this machine's disk: room for the file whatever the others hold.
		f = append(f, "--cache-size", fmt.Sprintf("%dM", 2*max(ce.file.Size, ce.env.Size)>>20+64), "--min-free", "1%")
	}
	if i == 0 {
		f = append(f, "--scheduler")
	} else {
		f = append(f, "--join", fmt.Sprintf("%s:%d", ce.sw.NodeAddrs[0], clusterPort))
	}
	if backend == ClusterEddyPeers {
		f = append(f, "--peer-fetch")
	}
	if workload == WorkloadEnv {
		f = append(f, "--containerd-dir", filepath.Join(ce.nodeDir(i), fmt.Sprintf("containerd-%d", ce.gen)))
	}
	return f
}

func (ce *clusterEnv) nodeDir(i int) string { return filepath.Join(ce.work, clusterNodeName(i)) }

// clustered says whether the daemons of the backend and workload form a cluster.
func clustered(backend, workload string) bool {
	return backend != ClusterNFS || workload == WorkloadEnv
}

// startNodes starts n daemons of the backend on empty caches (the page cache dropped) and,
// for a cluster, waits until the scheduler sees every node up.
func (ce *clusterEnv) startNodes(ctx context.Context, backend, workload string, n int) error {
	if err := ce.stopNodes(); err != nil {
		return err
	}
	ce.gen++
	// Earlier runs' caches, containerds, and the cluster state a daemon without a cache keeps
	// beside its socket (eddy-<kind>-<node>): every run starts on empty ones.
	var old []string
	for _, g := range []string{"cache-*", "containerd-*", "eddy-*-node*"} {
		m, _ := filepath.Glob(filepath.Join(ce.work, "node*", g))
		old = append(old, m...)
	}
	for _, o := range old {
		if err := os.RemoveAll(o); err != nil {
			return fmt.Errorf("remove old cache: %w", err)
		}
	}
	if err := dropCaches(); err != nil {
		return err
	}
	for i := range n {
		dir := ce.nodeDir(i)
		d := &eddyDaemon{bin: ce.cfg.Eddy, netns: ce.sw.Nodes[i], origin: ce.nfs.URL(), logLevel: ce.cfg.DaemonLogLevel,
			noCache: backend == ClusterNFS, mnt: filepath.Join(dir, "mnt"), cacheDir: filepath.Join(dir, fmt.Sprintf("cache-%d", ce.gen)),
			socket: filepath.Join(dir, "eddy.sock"), logPath: filepath.Join(dir, fmt.Sprintf("daemon-%d.log", ce.gen)),
			extra: ce.nodeFlags(backend, workload, i)}
		if err := d.start(ctx); err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		ce.daemons = append(ce.daemons, d)
		key := fmt.Sprintf("%s node%d", backend, min(i, 1))
		if workload == WorkloadEnv {
			key = "env " + key
		}
		ce.noteCommand(key, d.args)
	}
	if !clustered(backend, workload) {
		return nil
	}
	cl := api.NewUnix(ce.daemons[0].socket, api.WithTimeout(5*time.Second))
	deadline := time.Now().Add(clusterUpTimeout)
	for {
		ns, err := cl.Nodes(ctx)
		up := 0
		for _, x := range ns {
			if x.Up {
				up++
			}
		}
		if err == nil && up == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes up after %s (%v): %s", up, n, clusterUpTimeout, err, logProblems(ce.daemons[0].logPath, 8))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopNodes stops the daemons of the current run (the ones this suite started, by PID).
func (ce *clusterEnv) stopNodes() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error // guarded by mu
	)
	for _, d := range ce.daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.stop(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ce.daemons = nil
	return errors.Join(errs...)
}

func (ce *clusterEnv) noteCommand(key string, args []string) {
	if ce.commands == nil {
		ce.commands = map[string][]string{}
	}
	if _, ok := ce.commands[key]; !ok {
		ce.commands[key] = args
	}
}

// diagnostics are the warnings of every daemon's log of the current run.
func (ce *clusterEnv) diagnostics() string {
	var parts []string
	for i, d := range ce.daemons {
		parts = append(parts, fmt.Sprintf("node %d: %s", i, logProblems(d.logPath, 4)))
	}
	return strings.Join(parts, "; ")
}

// close tears down, in dependency order: daemons and mounts, ganesha, the namespaces, files.
func (ce *clusterEnv) close() error {
	var errs []error
	errs = append(errs, ce.stopNodes())
	if ce.nfs != nil {
		errs = append(errs, ce.nfs.Close())
	}
	if ce.sw != nil {
		errs = append(errs, ce.sw.Close())
	}
	if ce.env.Path != "" {
		os.Remove("/run/containerd/runc/eddy") // runc's per-namespace state dir, when empty
	}
	if mounted := mountsUnder(ce.work); len(mounted) > 0 {
		errs = append(errs, fmt.Errorf("bench cluster: still mounted, %s left in place: %s", ce.work, strings.Join(mounted, " ")))
	} else if err := os.RemoveAll(ce.work); err != nil {
		errs = append(errs, fmt.Errorf("bench cluster: remove %s: %w", ce.work, err))
	}
	return errors.Join(errs...)
}
