package topo

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
}

func newPair(t *testing.T, rate string) *Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := NewPair(ctx, PairOptions{Prefix: "enf", Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		for _, ns := range []string{p.Server, p.Client} {
			if _, err := os.Stat(NetnsPath(ns)); err == nil {
				t.Errorf("netns %s left behind", ns)
			}
		}
	})
	return p
}

func TestPairLinkAndShaping(t *testing.T) {
	needRoot(t)
	p := newPair(t, "100mbit")
	ctx := context.Background()
	var ln net.Listener
	if err := RunIn(p.Server, func() (err error) {
		ln, err = net.Listen("tcp", p.ServerAddr+":7777")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ping := func() error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err := p.DialClient(c, "tcp", p.ServerAddr+":7777")
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := ping(); err != nil {
		t.Fatalf("ping over veth: %v", err)
	}
	out, err := exec.Command("ip", "netns", "exec", p.Server, "tc", "qdisc", "show", "dev", p.ServerVeth).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("tbf")) {
		t.Fatalf("no tbf on %s: %s %v", p.ServerVeth, out, err)
	}
	if err := p.Shape(ctx, Unshaped); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("ip", "netns", "exec", p.Server, "tc", "qdisc", "show", "dev", p.ServerVeth).CombinedOutput()
	if bytes.Contains(out, []byte("tbf")) {
		t.Fatalf("tbf still there after Unshaped: %s", out)
	}
	if err := p.LinkDown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err == nil {
		t.Fatal("ping succeeded with the link down")
	}
	if err := p.LinkUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("ping after LinkUp: %v", err)
	}
	// Nothing of the pair lives in the host namespace.
	for _, dev := range []string{p.ServerVeth, p.ClientVeth} {
		if err := exec.Command("ip", "link", "show", dev).Run(); err == nil {
			t.Errorf("veth %s visible in the host namespace", dev)
		}
	}
}

func TestGaneshaServesAndRestarts(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nfs-cat"); err != nil {
		t.Skip("nfs-cat (libnfs-utils) not installed")
	}
	p := newPair(t, Unshaped)
	export := t.TempDir()
	want := bytes.Repeat([]byte("eddy-topo\n"), 1000)
	if err := os.WriteFile(filepath.Join(export, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g, err := StartGanesha(ctx, GaneshaOptions{Netns: p.Server, ReadyFrom: p.Client, Addr: p.ServerAddr, Export: export})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	cat := func() ([]byte, error) {
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return CommandIn(c, p.Client, "nfs-cat", g.URL()+"/f").Output()
	}
	got, err := cat()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("nfs-cat: %d bytes, err %v\n%s", len(got), err, g.Logs())
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if g.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := cat(); err == nil {
		t.Fatal("nfs-cat succeeded with the server stopped")
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = cat()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("nfs-cat after restart: %d bytes, err %v", len(got), err)
	}
	// A second server must wait for the rpcbind lock.
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := lockFile(lctx, RpcbindLock, time.Minute); err == nil {
		t.Fatal("rpcbind lock not held while the server runs")
	}
	dir := g.Dir
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("ganesha dir left behind")
	}
	f, err := lockFile(ctx, RpcbindLock, time.Second)
	if err != nil {
		t.Fatalf("lock not released by Close: %v", err)
	}
	f.Close()
}
