package topo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Unshaped is the Rate that leaves the link without a tbf qdisc.
const Unshaped = "unshaped"

// PairOptions configures NewPair.
type PairOptions struct {
	// Prefix starts every name the pair creates (netns, veth). Keep it short
	// (<= 6 characters) and unique to the caller, e.g. "enf".
	Prefix string
	// ServerAddr and ClientAddr are the veth addresses (without prefix
	// length); defaults 10.77.0.1 and 10.77.0.2, in a /24.
	ServerAddr, ClientAddr string
	// Rate shapes both veth ends with tbf (tc syntax, e.g. "1gbit");
	// "" or Unshaped leaves the link unshaped.
	Rate string
}

// Pair is two network namespaces joined by a veth pair: a server side and a
// client side. Nothing of it lives in the host's namespace.
type Pair struct {
	Server, Client         string // netns names (under /run/netns)
	ServerVeth, ClientVeth string // veth device names, one inside each netns
	ServerAddr, ClientAddr string
	Rate                   string
}

// NewPair creates the namespaces, the veth pair, its addresses and the
// optional shaping. Names get a random suffix so concurrent test packages
// never collide. On failure everything created so far is removed.
func NewPair(ctx context.Context, opts PairOptions) (p *Pair, err error) {
	if opts.Prefix == "" {
		return nil, errors.New("topo: PairOptions.Prefix is required")
	}
	if opts.ServerAddr == "" {
		opts.ServerAddr = "10.77.0.1"
	}
	if opts.ClientAddr == "" {
		opts.ClientAddr = "10.77.0.2"
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("topo: random suffix: %w", err)
	}
	base := opts.Prefix + hex.EncodeToString(rnd[:])
	if len(base)+1 > 15 {
		return nil, fmt.Errorf("topo: prefix %q too long for a veth name", opts.Prefix)
	}
	p = &Pair{
		Server:     base + "-srv",
		Client:     base + "-cli",
		ServerVeth: base + "s",
		ClientVeth: base + "c",
		ServerAddr: opts.ServerAddr,
		ClientAddr: opts.ClientAddr,
		Rate:       opts.Rate,
	}
	defer func() {
		if err != nil {
			_ = p.Close()
			p = nil
		}
	}()
	steps := [][]string{
		{"netns", "add", p.Server},
		{"netns", "add", p.Client},
		{"link", "add", p.ServerVeth, "netns", p.Server, "type", "veth", "peer", "name", p.ClientVeth, "netns", p.Client},
		{"-n", p.Server, "addr", "add", p.ServerAddr + "/24", "dev", p.ServerVeth},
		{"-n", p.Client, "addr", "add", p.ClientAddr + "/24", "dev", p.ClientVeth},
		{"-n", p.Server, "link", "set", "lo", "up"},
		{"-n", p.Client, "link", "set", "lo", "up"},
		{"-n", p.Server, "link", "set", p.ServerVeth, "up"},
		{"-n", p.Client, "link", "set", p.ClientVeth, "up"},
	}
	for _, args := range steps {
		if err := run(ctx, "ip", args...); err != nil {
			return p, err
		}
	}
	if err := p.Shape(ctx, opts.Rate); err != nil {
		return p, err
	}
	return p, nil
}

// Shape replaces the shaping on both veth ends: a tbf at rate, or none for
// "" / Unshaped.
func (p *Pair) Shape(ctx context.Context, rate string) error {
	for _, end := range [][2]string{{p.Server, p.ServerVeth}, {p.Client, p.ClientVeth}} {
		// Deleting a root qdisc that does not exist fails; that is fine.
		_ = run(ctx, "ip", "netns", "exec", end[0], "tc", "qdisc", "del", "dev", end[1], "root")
		if rate == "" || rate == Unshaped {
			continue
		}
		if err := run(ctx, "ip", "netns", "exec", end[0], "tc", "qdisc", "add", "dev", end[1], "root",
			"tbf", "rate", rate, "burst", "256kb", "latency", "50ms"); err != nil {
			return err
		}
	}
	p.Rate = rate
	return nil
}

// LinkDown cuts the link (client end of the veth down); LinkUp restores it.
func (p *Pair) LinkDown(ctx context.Context) error {
	return run(ctx, "ip", "-n", p.Client, "link", "set", p.ClientVeth, "down")
}

// LinkUp brings the client end of the veth back up.
func (p *Pair) LinkUp(ctx context.Context) error {
	return run(ctx, "ip", "-n", p.Client, "link", "set", p.ClientVeth, "up")
}

// Close deletes both namespaces (which removes the veth pair and its
// qdiscs). Processes still inside must have been stopped by their owners.
func (p *Pair) Close() error {
	var errs []error
	for _, ns := range []string{p.Client, p.Server} {
		if _, err := os.Stat(NetnsPath(ns)); err != nil {
			continue
		}
		if err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DialClient dials addr from inside the client namespace. The connection
// stays in that namespace for its whole life, whatever thread uses it; pass
// it as the dialer of clients that must reach the server side.
func (p *Pair) DialClient(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, p.Client, network, addr)
}

// NetnsPath is the bind-mounted namespace file of a named netns.
func NetnsPath(name string) string { return "/run/netns/" + name }

// CommandIn returns a command that runs in the named network namespace but
// in the caller's mount namespace (nsenter --net=...), so FUSE mounts it
// makes are visible on the host, unlike under "ip netns exec".
func CommandIn(ctx context.Context, netns, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + NetnsPath(netns), "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", full...)
}

// RunIn runs fn on a locked OS thread switched into the named network
// namespace, then switches back. Sockets fn creates stay in that namespace;
// goroutines fn starts do not inherit it.
func RunIn(netns string, fn func() error) error {
	target, err := os.Open(NetnsPath(netns))
	if err != nil {
		return fmt.Errorf("topo: open netns %s: %w", netns, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("topo: open own netns: %w", err)
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("topo: setns %s: %w", netns, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it exits with the goroutine instead of
		// serving other goroutines from the wrong namespace.
		return errors.Join(fnErr, fmt.Errorf("topo: restore netns: %w", err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// DialIn dials addr from inside the named network namespace.
func DialIn(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := RunIn(netns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	return conn, err
}

// WaitPort waits until addr accepts TCP connections from inside netns.
func WaitPort(ctx context.Context, netns, addr string) error {
	for {
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := DialIn(dctx, netns, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topo: %s not reachable from %s: %w (last: %v)", addr, netns, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("topo: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
