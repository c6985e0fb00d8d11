package bench

// `eddy bench cluster`: N nodes read one large file at once from one NFS server behind a
// shaped link, each node behind a shaped link of its own (ports on a switch). How long until
// the last node has every byte, and how many bytes the server sent, for the plain NFS
// baseline, eddy with its cache, and eddy with peer fetch; and the same N nodes starting a
// container from one environment tarball at once (cluster_env.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/eddy-cluster/eddy/units"
)

// Backends of the cluster benchmark (results.json "backend").
const (
	// ClusterNFS: every node reads the origin itself (eddy's nfs:// origin, --no-cache).
	ClusterNFS = BNFS
	// ClusterEddy: eddy with its cache, in cluster mode, no peer fetch.
	ClusterEddy = "eddy"
	// ClusterEddyPeers: as ClusterEddy, with --peer-fetch.
	ClusterEddyPeers = "eddy-peers"
)

// ClusterBackends lists the cluster benchmark's backends in the order it runs them.
func ClusterBackends() []string { return []string{ClusterNFS, ClusterEddy, ClusterEddyPeers} }

var clusterLabels = map[string]string{
	ClusterNFS:       "NFSv3 via FUSE on every node (eddy's nfs:// origin, --no-cache): each node reads the server",
	ClusterEddy:      "eddy daemon per node, cache on, nfs:// origin, cluster mode, no peer fetch",
	ClusterEddyPeers: "eddy daemon per node, cache on, nfs:// origin, cluster mode, --peer-fetch",
}

// ClusterConfig is one invocation of the cluster benchmark. Zero fields take the defaults of
// the full suite, or of the quick suite when Quick is set.
type ClusterConfig struct {
	Out   string // results directory (created)
	Quick bool
	// Nodes are the cluster sizes to measure (default 1,2,4,8; quick 1,4).
	Nodes []int
	// Backends to measure (default ClusterBackends()).
	Backends []string
	// Workloads to measure: WorkloadFile, WorkloadEnv (default both, or the file alone when
	// the machine lacks containerd, runc or busybox).
	Workloads []string
	// Size of the file every node reads (default 4 GiB; quick 1 GiB).
	Size int64
	// EnvSize is the random payload of the environment every node starts (default 512 MiB;
	// quick 256 MiB).
	EnvSize int64
	// Runs per (backend, nodes); the figures are medians (default 3; quick 2).
	Runs int
	// ServerLink and NodeLink are the tbf rates of the server's port and of
	// every node's port (default 1gbit each; "unshaped" for none).
	ServerLink, NodeLink string
	// Eddy is the binary that runs the daemons (default: this one); EddyVersion goes in the report.
	Eddy, EddyVersion string
	// DaemonLogLevel is passed to the daemons (default info).
	DaemonLogLevel string
	// WorkDir is where the export, caches and mounts live (default /var/tmp).
	WorkDir string
	// Progress receives the live progress (default os.Stderr).
	Progress io.Writer
}

// clusterMaxNodes bounds --nodes: every node is a daemon on this machine's 2 cores.
const clusterMaxNodes = 16

func (c *ClusterConfig) setDefaults() error {
	if c.Out == "" {
		return errors.New("bench cluster: an output directory is required (--out DIR)")
	}
	if len(c.Nodes) == 0 {
		c.Nodes = []int{1, 2, 4, 8}
		if c.Quick {
			c.Nodes = []int{1, 4}
		}
	}
	c.Nodes = slices.Clone(c.Nodes)
	slices.Sort(c.Nodes)
	c.Nodes = slices.Compact(c.Nodes)
	if c.Nodes[0] < 1 || c.Nodes[len(c.Nodes)-1] > clusterMaxNodes {
		return fmt.Errorf("bench cluster: node counts %v: want 1 to %d", c.Nodes, clusterMaxNodes)
	}
	if len(c.Backends) == 0 {
		c.Backends = ClusterBackends()
	}
	for _, b := range c.Backends {
		if !slices.Contains(ClusterBackends(), b) {
			return fmt.Errorf("bench cluster: unknown backend %q (want %s)", b, strings.Join(ClusterBackends(), ","))
		}
	}
	if c.Size <= 0 {
		c.Size = 4 << 30
		if c.Quick {
			c.Size = 1 << 30
		}
	}
	if c.EnvSize <= 0 {
		c.EnvSize = 512 << 20
		if c.Quick {
			c.EnvSize = 256 << 20
		}
	}
	if c.Runs <= 0 {
		c.Runs = 3
		if c.Quick {
			c.Runs = 2
		}
	}
	for _, l := range []*string{&c.ServerLink, &c.NodeLink} {
		if *l == "" {
			*l = Link1G
		}
		if linkRate(*l) == "?" {
			return fmt.Errorf("bench cluster: unknown link %q (want 1gbit, 10gbit, unshaped or a tc rate such as 500mbit)", *l)
		}
	}
	if c.DaemonLogLevel == "" {
		c.DaemonLogLevel = "info"
	}
	if err := runDefaults("bench cluster", &c.Eddy, &c.WorkDir, &c.Progress); err != nil {
		return err
	}
	if len(c.Workloads) == 0 {
		var note string
		if c.Workloads, note = defaultWorkloads(); note != "" {
			fmt.Fprintln(c.Progress, note)
		}
		return nil
	}
	var err error
	if c.Workloads, err = checkWorkloads(c.Workloads); err != nil {
		return err
	}
	if slices.Contains(c.Workloads, WorkloadEnv) {
		if err := clusterEnvPrereqs(); err != nil {
			return fmt.Errorf("bench cluster: --workloads env: %w", err)
		}
	}
	return nil
}

func (c *ClusterConfig) runs(w string) bool { return slices.Contains(c.Workloads, w) }

// RunCluster runs the cluster benchmark: writes the file and the environment into a fresh
// export, builds the switch (server and node namespaces), starts nfs-ganesha, and for every
// workload, backend and cluster size starts one daemon per node on empty caches, then has every
// node read the whole file at once (verifying every byte) or start a container from the
// environment at once. It writes results.json, results.md and the plots into cfg.Out.
// Everything it starts is torn down before it returns, also when ctx is cancelled; the
// results gathered so far are written either way.
func RunCluster(ctx context.Context, cfg ClusterConfig) (rep *ClusterReport, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := needRoot("bench cluster", "network namespaces, FUSE mounts, drop_caches", "fuse nfs", "ip", "tc", "nsenter", "ganesha.nfsd", "rpcbind"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench cluster: %w", err)
	}
	prog := NewProgress(cfg.Progress)
	defer prog.Close()
	rep = newClusterReport(&cfg)

	work, err := os.MkdirTemp(cfg.WorkDir, "ecl-")
	if err != nil {
		return nil, fmt.Errorf("bench cluster: work dir: %w", err)
	}
	ce := &clusterEnv{cfg: &cfg, prog: prog, work: work, export: filepath.Join(work, "export")}
	defer func() {
		if cerr := ce.close(); cerr != nil {
			rep.Errors = append(rep.Errors, cerr.Error())
			err = errors.Join(err, cerr)
		}
		rep.Finished = time.Now().UTC()
		rep.Commands = ce.commands
		rep.evaluate()
		if werr := rep.Write(cfg.Out); werr != nil {
			err = errors.Join(err, werr)
		}
		prog.Printf("bench cluster: results in %s", cfg.Out)
	}()

	if err := os.MkdirAll(ce.export, 0o755); err != nil {
		return rep, fmt.Errorf("bench cluster: %w", err)
	}
	if cfg.runs(WorkloadFile) {
		prog.Printf("bench cluster: writing the %s file in %s", units.FormatBytesUpToGiB(cfg.Size), ce.export)
		prog.Begin("write the file")
		ce.file, err = writeClusterFile(ctx, filepath.Join(ce.export, clusterFileName), cfg.Size, prog)
		if err != nil {
			return rep, err
		}
	}
	if cfg.runs(WorkloadEnv) {
		prog.Printf("bench cluster: writing the environment (busybox and a %s payload) in %s", units.FormatBytesUpToGiB(cfg.EnvSize), ce.export)
		prog.Begin("write the environment")
		if err := ce.writeEnv(ctx); err != nil {
			return rep, err
		}
	}
	if err := ce.setUp(ctx); err != nil {
		return rep, err
	}
	for _, w := range cfg.Workloads {
		for _, bn := range cfg.Backends {
			for _, n := range cfg.Nodes {
				row := ce.measure(ctx, w, bn, n)
				rep.Results = append(rep.Results, row)
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
			}
		}
	}
	return rep, nil
}

// measure runs one (workload, backend, nodes) cfg.Runs times.
func (ce *clusterEnv) measure(ctx context.Context, workload, backend string, n int) ClusterRow {
	row := ClusterRow{Workload: workload, Backend: backend, Label: clusterLabels[backend], Nodes: n, FileBytes: ce.file.Size, Status: StatusOK}
	if workload == WorkloadEnv {
		row.FileBytes = ce.env.Size
	}
	for i := range ce.cfg.Runs {
		r, err := ce.runOnce(ctx, workload, backend, n, i)
		if err != nil {
			row.Status, row.Error = StatusFailed, err.Error()
			ce.prog.Printf("  %-4s %-10s N=%d run %d/%d FAILED: %v", workload, backend, n, i+1, ce.cfg.Runs, err)
			return row
		}
		row.Runs = append(row.Runs, r)
		if workload == WorkloadEnv {
			ce.prog.Printf("  env  %-10s N=%d run %d/%d: last container started %6.2f s, submit to start %6.2f s (median; image ready %6.2f s), origin %s (%.2fx the tarball), peers %s, cpu busy %3.0f%%, load %.1f",
				backend, n, i+1, ce.cfg.Runs, r.WallS, median(r.NodeStartS), median(r.NodeImageS), units.FormatBytesUpToGiB(r.OriginBytes),
				float64(r.OriginBytes)/float64(ce.env.Size), units.FormatBytesUpToGiB(r.PeerBytes), 100*r.CPUBusy, r.Load1Before)
			continue
		}
		ce.prog.Printf("  file %-10s N=%d run %d/%d: wall %6.2f s, per node %6.1f MB/s (median), origin %s (%.2fx the file), peers %s, cpu busy %3.0f%%, load %.1f",
			backend, n, i+1, ce.cfg.Runs, r.WallS, median(r.NodeMBps), units.FormatBytesUpToGiB(r.OriginBytes),
			float64(r.OriginBytes)/float64(ce.file.Size), units.FormatBytesUpToGiB(r.PeerBytes), 100*r.CPUBusy, r.Load1Before)
	}
	row.summarize(parseRateBps(linkRate(ce.cfg.ServerLink)), parseRateBps(linkRate(ce.cfg.NodeLink)))
	if workload == WorkloadEnv {
		row.summarizeEnv()
	}
	return row
}
