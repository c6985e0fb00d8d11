package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
)

// RunInfo is where and when a benchmark ran, the head of every report.
type RunInfo struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  Machine           `json:"machine"`
	Kernel   string            `json:"kernel"`
	Versions map[string]string `json:"versions"`
}

// newRunInfo describes this machine now, with eddy's and Go's versions and those of the
// installed packages named.
func newRunInfo(eddyVersion string, packages ...string) RunInfo {
	host, _ := os.Hostname()
	ri := RunInfo{Started: time.Now().UTC(), Kernel: commandVersion("uname", "-srvm"),
		Machine:  Machine{Hostname: host, CPUs: goruntime.NumCPU(), CPU: cpuModel(), MemBytes: memBytes(), OS: osRelease()},
		Versions: map[string]string{"eddy": eddyVersion, "go": goruntime.Version()}}
	for _, pkg := range packages {
		ri.Versions[pkg] = commandVersion("dpkg-query", "-W", "-f", "${Version}", pkg)
	}
	return ri
}

// needRoot checks what a benchmark needs before it starts anything: root, and the programs bins
// (installed by scripts/deps.sh with the groups deps).
func needRoot(what, why, deps string, bins ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s: must run as root (%s)", what, why)
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s: %s not installed (scripts/deps.sh %s): %w", what, bin, deps, err)
		}
	}
	return nil
}

// nfsServer is a server namespace exporting a directory with nfs-ganesha, joined to a client
// namespace by a veth link shaped to rate.
type nfsServer struct {
	pair *topo.Pair
	nfs  *topo.Ganesha
}

// startNFSServer builds the pair (names from prefix, addresses 10.N.0.1 and .2) and starts
// ganesha exporting export; on failure what it made is removed.
func startNFSServer(ctx context.Context, prog *Progress, what, prefix, subnet, link, export string) (*nfsServer, error) {
	s := &nfsServer{}
	var err error
	prog.Printf("%s: network namespaces, %s link", what, link)
	s.pair, err = topo.NewPair(ctx, topo.PairOptions{Prefix: prefix, ServerAddr: subnet + ".1", ClientAddr: subnet + ".2", Rate: linkRate(link)})
	if err != nil {
		return nil, fmt.Errorf("%s: topology: %w", what, err)
	}
	prog.Printf("%s: nfs-ganesha in %s exporting %s", what, s.pair.Server, export)
	s.nfs, err = topo.StartGanesha(ctx, topo.GaneshaOptions{Netns: s.pair.Server, Addr: s.pair.ServerAddr, Export: export, ReadyFrom: s.pair.Client})
	if err != nil {
		err = fmt.Errorf("%s: %w", what, err)
		return nil, errors.Join(err, s.close())
	}
	return s, nil
}

// close stops ganesha and removes the namespaces (a nil server is nothing to close).
func (s *nfsServer) close() error {
	if s == nil {
		return nil
	}
	var errs []error
	if s.nfs != nil {
		errs = append(errs, s.nfs.Close())
	}
	if s.pair != nil {
		errs = append(errs, s.pair.Close())
	}
	return errors.Join(errs...)
}
