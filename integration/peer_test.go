package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// peerSize is the size of the peer tests' files, in peerChunk chunks. What they check depends
// on how many chunks a read spans (many still to come when a peer dies or the file is
// replaced), not on how many bytes: 32 chunks of 1 MiB check as much as 12 of 8 MiB.
const (
	peerSize  = 32 << 20
	peerChunk = "1M"
)

// Peer fetch over one nfs:// origin with three daemons (node 0 the scheduler and tracker):
// the file is read from the origin about once however many nodes read it; a peer killed in the
// middle of a transfer, a file replaced on the origin during the fan-out, a peer serving
// corrupt chunks and a scheduler that is gone all leave readers with the right bytes, without
// a hang. Origin bytes are counted on the NFS server's veth.
//
// The cases share one cluster, since its NFS server is most of the set-up (and waits for a
// machine-wide rpcbind lock other suites may hold); they run in this order, each leaving the
// cluster as the next expects: the peer-killed case leaves node 2 down, the corrupt-peer case
// restarts it corrupting, and the no-scheduler case leaves node 0 down.
func TestPeerFetch(t *testing.T) {
	pc := newPeerCluster(t, "--revalidate", "2s", "--chunk-size", peerChunk)
	t.Run("fan-out", pc.testFanOut)
	t.Run("peer-killed", pc.testPeerKilled)
	t.Run("replaced", pc.testReplaced)
	t.Run("corrupt-peer", pc.testCorruptPeer)
	t.Run("no-scheduler", pc.testNoScheduler)
}

// Node 0 reads; then nodes 1 and 2 at once: the origin is read about once.
func (pc *peerCluster) testFanOut(t *testing.T) {
	const size = peerSize
	want := writeRandom(t, pc.env.org("fan.bin"), size, 11)
	tx0 := pc.originTx(t)
	if got := sha256File(t, pc.nodes[0].mnt("fan.bin")); got != want {
		t.Fatalf("node 0 read %s, want %s", got, want)
	}
	txA := pc.originTx(t) - tx0
	var wg sync.WaitGroup
	sums := make([]string, 3)
	for _, i := range []int{1, 2} {
		wg.Add(1)
		go func() { defer wg.Done(); sums[i], _ = hashFile(pc.nodes[i].mnt("fan.bin")) }()
	}
	wg.Wait()
	txBC := pc.originTx(t) - tx0 - txA
	for _, i := range []int{1, 2} {
		if sums[i] != want {
			t.Fatalf("node %d read %s, want %s", i, sums[i], want)
		}
	}
	s1, s2, s0 := pc.stats(t, 1), pc.stats(t, 2), pc.stats(t, 0)
	t.Logf("fan-out of %d MiB: origin tx %d (node 0), %d (nodes 1 and 2); peer_bytes %d, %d; served_bytes node 0 %d, node 1 %d, node 2 %d; miss_bytes (direct) node 0 %d (%d), node 1 %d (%d), node 2 %d (%d)",
		size>>20, txA, txBC, s1.PeerBytes, s2.PeerBytes, s0.ServedBytes, s1.ServedBytes, s2.ServedBytes,
		s0.MissBytes, s0.DirectBytes, s1.MissBytes, s1.DirectBytes, s2.MissBytes, s2.DirectBytes)
	if txA < size {
		t.Fatalf("node 0's read sent %d origin bytes, want >= %d", txA, size)
	}
	if txBC > size/8 {
		t.Fatalf("nodes 1 and 2 made the origin send %d bytes, want about none (file %d)", txBC, size)
	}
	for i, st := range []int64{s1.PeerBytes, s2.PeerBytes} {
		if st < size*9/10 {
			t.Fatalf("node %d peer_bytes %d, want about %d", i+1, st, size)
		}
	}
}

// A peer killed mid-transfer: the reader finishes with the right bytes.
func (pc *peerCluster) testPeerKilled(t *testing.T) {
	const size = peerSize
	want := writeRandom(t, pc.env.org("kill.bin"), size, 12)
	if got := sha256File(t, pc.nodes[2].mnt("kill.bin")); got != want {
		t.Fatalf("node 2 read %s, want %s", got, want)
	}
	peer0 := pc.stats(t, 1).PeerBytes
	var killed atomic.Bool
	got, err := pacedHash(pc.nodes[1].mnt("kill.bin"), 15*time.Millisecond, func(n int64) {
		if n >= size/4 && killed.CompareAndSwap(false, true) {
			pc.nodes[2].kill9()
		}
	})
	if err != nil || got != want {
		t.Fatalf("node 1 read with its peer killed: %s, %v; want %s", got, err, want)
	}
	peer := pc.stats(t, 1).PeerBytes - peer0
	t.Logf("peer killed: node 1 fetched %d of %d bytes from peers", peer, int64(size))
	if peer >= size {
		t.Fatalf("node 1 fetched all %d bytes from its peer: the kill came after the transfer, not during it", peer)
	}
}

// The file replaced on the origin during the fan-out: every read is one version whole, and
// past --revalidate and the attribute cache every node reads the new one.
func (pc *peerCluster) testReplaced(t *testing.T) {
	const size = peerSize
	rep := pc.env.org("rep.bin")
	v1 := writeRandom(t, rep, size, 13)
	if got := sha256File(t, pc.nodes[0].mnt("rep.bin")); got != v1 {
		t.Fatalf("node 0 read %s, want v1 %s", got, v1)
	}
	var v2 string
	var once sync.Once
	replace := func() {
		tmp := filepath.Join(filepath.Dir(rep), ".rep.tmp")
		v2 = writeRandom(t, tmp, size, 14)
		if err := os.Rename(tmp, rep); err != nil {
			t.Error(err)
		}
	}
	got, err := pacedHash(pc.nodes[1].mnt("rep.bin"), 20*time.Millisecond, func(n int64) {
		if n >= size/3 {
			once.Do(replace)
		}
	})
	once.Do(replace)
	switch {
	case err != nil:
		t.Logf("node 1's read across the replacement failed (allowed): %v", err)
	case got != v1 && got != v2:
		t.Fatalf("node 1 read a mix of versions: %s (v1 %s, v2 %s)", got, v1, v2)
	default:
		t.Logf("node 1's read across the replacement: v1 %v, v2 %v", got == v1, got == v2)
	}
	// By 3s (past --revalidate and the attribute cache) both nodes read v2; until then
	// they may still read v1, never a mix.
	deadline := time.Now().Add(3 * time.Second)
	for _, i := range []int{0, 1} {
		for {
			got, err := hashFile(pc.nodes[i].mnt("rep.bin"))
			if err == nil && got == v2 {
				break
			}
			if err == nil && got != v1 {
				t.Fatalf("node %d read a mix of versions: %s (v1 %s, v2 %s)", i, got, v1, v2)
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d reads %s, %v 3s after the replacement, want v2 %s", i, got, err, v2)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// A peer serving corrupt chunks (node 2 restarted with the daemon's test hook): its bytes fail
// the receiver's checksum and are counted in peer_rejected; the reader gets the right bytes
// from elsewhere: the origin when the corrupt node is the only holder, a good peer when there
// is one.
func (pc *peerCluster) testCorruptPeer(t *testing.T) {
	const size = peerSize
	pc.restartCorrupt(t, 2)
	want := writeRandom(t, pc.env.org("corrupt.bin"), size, 16)
	if got := sha256File(t, pc.nodes[2].mnt("corrupt.bin")); got != want {
		t.Fatalf("node 2 read %s, want %s", got, want)
	}

	// Node 2 the only holder: node 1 is sent there for every chunk, rejects it, reads the origin.
	b1, b2, tx0 := pc.stats(t, 1), pc.stats(t, 2), pc.originTx(t)
	if got := sha256File(t, pc.nodes[1].mnt("corrupt.bin")); got != want {
		t.Fatalf("node 1 read %s with a corrupt peer, want %s", got, want)
	}
	a1, a2, tx := pc.stats(t, 1), pc.stats(t, 2), pc.originTx(t)-tx0
	rejected := a1.PeerRejected - b1.PeerRejected
	t.Logf("corrupt peer the only holder: node 1 rejected %d chunks, peer_bytes +%d, origin tx %d; node 2 served_bytes +%d",
		rejected, a1.PeerBytes-b1.PeerBytes, tx, a2.ServedBytes-b2.ServedBytes)
	if rejected <= 0 || a2.ServedBytes == b2.ServedBytes {
		t.Fatalf("node 1 rejected %d chunks, node 2 served %d bytes: the corrupt peer was not asked", rejected, a2.ServedBytes-b2.ServedBytes)
	}
	if a1.PeerBytes != b1.PeerBytes {
		t.Fatalf("node 1 took %d bytes from peers, want none (the only holder is corrupt)", a1.PeerBytes-b1.PeerBytes)
	}
	if tx < size {
		t.Fatalf("node 1's read sent %d origin bytes, want >= %d (read from the origin)", tx, size)
	}
	out, err := pc.nodes[1].cli("cache", "stats")
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d chunks from other nodes failed their checksum", a1.PeerRejected)) {
		t.Fatalf("eddy cache stats does not show %d chunks rejected: %v\n%s", a1.PeerRejected, err, out)
	}

	// Nodes 1 (good) and 2 (corrupt) hold it: node 0 gets it from node 1 wherever it was sent
	// to node 2 first, and the origin is read about not at all. (Node 1's last reports may be
	// on their way: a chunk only node 2 was known to hold then comes from the origin.)
	b0, tx0 := pc.stats(t, 0), pc.originTx(t)
	if got := sha256File(t, pc.nodes[0].mnt("corrupt.bin")); got != want {
		t.Fatalf("node 0 read %s with a corrupt and a good peer, want %s", got, want)
	}
	a0, tx := pc.stats(t, 0), pc.originTx(t)-tx0
	t.Logf("corrupt and good peer: node 0 rejected %d chunks, peer_bytes +%d, origin tx %d",
		a0.PeerRejected-b0.PeerRejected, a0.PeerBytes-b0.PeerBytes, tx)
	if a0.PeerBytes-b0.PeerBytes < size*3/4 || tx > size/4 {
		t.Fatalf("node 0 took %d bytes from peers and %d from the origin, want most from the good peer (file %d)",
			a0.PeerBytes-b0.PeerBytes, tx, size)
	}
}

// The scheduler gone: reads go to the origin at once, no hang.
func (pc *peerCluster) testNoScheduler(t *testing.T) {
	const size = peerSize / 2
	want := writeRandom(t, pc.env.org("nosched.bin"), size, 15)
	pc.nodes[0].kill9()
	peer0 := pc.stats(t, 1).PeerBytes
	t0 := time.Now()
	done := make(chan string, 1)
	go func() { s, _ := hashFile(pc.nodes[1].mnt("nosched.bin")); done <- s }()
	select {
	case got := <-done:
		if got != want {
			t.Fatalf("node 1 read %s without a scheduler, want %s", got, want)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("read without a scheduler did not finish within 90s")
	}
	t.Logf("without the scheduler: %d MiB read in %s, peer_bytes %d -> %d", size>>20, time.Since(t0).Round(time.Millisecond),
		peer0, pc.stats(t, 1).PeerBytes)
}
