package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/api"
)

// peerCluster is three daemons in the client namespace of one nfs:// origin (ganesha in the
// server namespace), node 0 the scheduler, all with --peer-fetch. Origin bytes are the server
// veth's transmit counter.
type peerCluster struct {
	env   *nfsEnv
	nodes []*fnode
	addrs []string
}

func newPeerCluster(t *testing.T, extra ...string) *peerCluster {
	t.Helper()
	needFUSE(t)
	tnEnsure(t, "nfs", "ganesha.nfsd", "rpcbind")
	t0 := time.Now()
	env := fltNFS(t, "unshaped")
	// Most of a slow set-up is the wait for the machine-wide rpcbind lock (another suite's
	// NFS server holds it): said here, so that a slow run shows where its time went.
	t.Logf("NFS server up in %s", time.Since(t0).Round(time.Millisecond))
	openPath(t, env.export)
	base := t.TempDir()
	token := filepath.Join(base, "peer-token")
	if err := os.WriteFile(token, []byte("peer-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := &peerCluster{env: env}
	for i := range 3 {
		pc.addrs = append(pc.addrs, fmt.Sprintf("%s:%d", env.pair.ClientAddr, 7461+i))
	}
	for i := range 3 {
		flags := []string{"--node-name", fmt.Sprintf("peer%d", i), "--listen", pc.addrs[i], "--token-file", token, "--peer-fetch"}
		if i == 0 {
			flags = append(flags, "--scheduler")
		} else {
			flags = append(flags, "--join", pc.addrs[0])
		}
		n := fltNode(t, env, append(flags, extra...)...)
		n.start()
		pc.nodes = append(pc.nodes, n)
	}
	pc.waitUp(t)
	return pc
}

// waitUp waits until the scheduler sees all the cluster's nodes up.
func (pc *peerCluster) waitUp(t *testing.T) {
	t.Helper()
	cl := api.NewUnix(pc.nodes[1].Socket)
	waitUntil(t, "all nodes up", 60*time.Second, func() bool {
		var ns []struct {
			Name string `json:"name"`
			Up   bool   `json:"up"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.Do(ctx, "GET", "/v1/nodes", nil, &ns); err != nil {
			return false
		}
		up := 0
		for _, n := range ns {
			if n.Up {
				up++
			}
		}
		return up == len(pc.nodes)
	}, func() string { return pc.nodes[0].tail(40) })
}

// peerCorruptEnv is the daemon's test hook (daemon/cluster_peer.go): a daemon started with it
// set to 1 corrupts every chunk it serves to other nodes.
const peerCorruptEnv = "EDDY_TEST_PEER_CORRUPT"

// restartCorrupt restarts node i with the corrupting test hook on. The variable is in the test
// process's environment only while that daemon starts, so that no other daemon or command the
// test runs inherits it (and t.Setenv refuses to run beside a parallel test).
func (pc *peerCluster) restartCorrupt(t *testing.T, i int) {
	t.Helper()
	n := pc.nodes[i]
	if !n.signal(syscall.SIGTERM, 10*time.Second) {
		n.kill9()
	}
	t.Setenv(peerCorruptEnv, "1")
	n.start()
	if err := os.Unsetenv(peerCorruptEnv); err != nil {
		t.Fatal(err)
	}
	// Health answers before the cluster part is up; the peer source is in place once the
	// daemon says it is ready.
	waitUntil(t, fmt.Sprintf("node %d ready", i), 30*time.Second, func() bool {
		return strings.Contains(lastRun(n), "eddy ready")
	}, func() string { return n.tail(40) })
	pc.waitUp(t)
	if !strings.Contains(lastRun(n), "TEST HOOK: "+peerCorruptEnv) {
		t.Fatalf("node %d runs with %s=1 and did not warn about it:\n%s", i, peerCorruptEnv, n.tail(40))
	}
}

// lastRun is n's log since its daemon last started.
func lastRun(n *fnode) string {
	b, _ := os.ReadFile(n.LogFile)
	s := string(b)
	if i := strings.LastIndex(s, "=== start "); i >= 0 {
		s = s[i:]
	}
	return s
}

// originTx is the bytes the server namespace has sent so far.
func (pc *peerCluster) originTx(t *testing.T) int64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", pc.env.pair.Server, "cat",
		"/sys/class/net/"+pc.env.pair.ServerVeth+"/statistics/tx_bytes").CombinedOutput()
	if err != nil {
		t.Fatalf("server tx bytes: %v %s", err, out)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (pc *peerCluster) stats(t *testing.T, i int) api.CacheStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := api.NewUnix(pc.nodes[i].Socket).CacheStats(ctx)
	if err != nil {
		t.Fatalf("node %d stats: %v", i, err)
	}
	return st
}

// pacedHash reads path in 4 MiB pieces, sleeping pause after each, calls progress with the
// bytes read so far, and returns the content's sha256.
func pacedHash(path string, pause time.Duration, progress func(int64)) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 4<<20)
	var total int64
	for {
		n, err := f.Read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if progress != nil {
			progress(total)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
