package integration

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Peer fetch over one nfs:// origin with three daemons (node 0 the scheduler and tracker):
// the file is read from the origin about once however many nodes read it; a peer killed in the
// middle of a transfer, a file replaced on the origin during the fan-out and a scheduler that
// is gone all leave readers with the right bytes, without a hang. Origin bytes are counted on
// the NFS server's veth.
func TestPeerFetch(t *testing.T) {
	pc := newPeerCluster(t, "--revalidate", "2s")
	const size = 96 << 20

	// 1. A reads; then B and C at once: the origin is read about once.
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
	t.Logf("fan-out of %d MiB: origin tx %d (node 0), %d (nodes 1 and 2); peer_bytes %d, %d; served_bytes node 0 %d, node 1 %d, node 2 %d",
		size>>20, txA, txBC, s1.PeerBytes, s2.PeerBytes, s0.ServedBytes, s1.ServedBytes, s2.ServedBytes)
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

	// 2. A peer killed mid-transfer: the reader finishes with the right bytes.
	want2 := writeRandom(t, pc.env.org("kill.bin"), size, 12)
	if got := sha256File(t, pc.nodes[2].mnt("kill.bin")); got != want2 {
		t.Fatalf("node 2 read %s, want %s", got, want2)
	}
	var killed atomic.Bool
	got, err := pacedHash(pc.nodes[1].mnt("kill.bin"), 15*time.Millisecond, func(n int64) {
		if n >= size/4 && killed.CompareAndSwap(false, true) {
			pc.nodes[2].kill9()
		}
	})
	if err != nil || got != want2 {
		t.Fatalf("node 1 read with its peer killed: %s, %v; want %s", got, err, want2)
	}
	t.Logf("peer killed: node 1 peer_bytes now %d", pc.stats(t, 1).PeerBytes)

	// 3. The file replaced on the origin during the fan-out: every read is one version whole.
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
	got, err = pacedHash(pc.nodes[1].mnt("rep.bin"), 20*time.Millisecond, func(n int64) {
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
	time.Sleep(3 * time.Second) // past --revalidate and the attribute cache
	for _, i := range []int{0, 1} {
		if got := sha256File(t, pc.nodes[i].mnt("rep.bin")); got != v2 {
			t.Fatalf("node %d reads %s after the replacement, want v2 %s", i, got, v2)
		}
	}

	// 4. The scheduler gone: reads go to the origin at once, no hang.
	want4 := writeRandom(t, pc.env.org("nosched.bin"), size/2, 15)
	pc.nodes[0].kill9()
	peer0 := pc.stats(t, 1).PeerBytes
	t0 := time.Now()
	done := make(chan string, 1)
	go func() { s, _ := hashFile(pc.nodes[1].mnt("nosched.bin")); done <- s }()
	select {
	case got := <-done:
		if got != want4 {
			t.Fatalf("node 1 read %s without a scheduler, want %s", got, want4)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("read without a scheduler did not finish within 90s")
	}
	t.Logf("without the scheduler: %d MiB read in %s, peer_bytes %d -> %d", size>>21, time.Since(t0).Round(time.Millisecond),
		peer0, pc.stats(t, 1).PeerBytes)
}
