package topo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// SwitchOptions configures NewSwitch.
type SwitchOptions struct {
	// Prefix starts every name the switch creates (netns, veth, bridge).
	// Keep it short (<= 4 characters) and unique to the caller.
	Prefix string
	// Subnet is the first three octets of the /24 every port is in, e.g.
	// "10.81.0": the server is .1, node i is .(10+i).
	Subnet string
	// Nodes is the number of node namespaces (1 to 200).
	Nodes int
	// ServerRate and NodeRate shape the server's port and every node's
	// port with tbf on both veth ends (tc syntax, e.g. "1gbit"); "" or
	// Unshaped leaves that link unshaped.
	ServerRate, NodeRate string
}

// Switch is a Linux bridge in a namespace of its own with one server
// namespace and N node namespaces plugged into it, one veth each: a rack
// switch with a file server and N machines. Each port's link is shaped on
// both ends, so a node's download and upload are each bounded by its own
// link and the server's egress by its link, as with ports on a switch.
// Nothing of it lives in the host's namespace.
type Switch struct {
	Bridge string // netns holding the bridge
	Server string // server netns
	Nodes  []string
	// ServerVeth and NodeVeths are the devices inside the server and node
	// namespaces; ServerAddr and NodeAddrs their addresses.
	ServerVeth string
	NodeVeths  []string
	ServerAddr string
	NodeAddrs  []string

	base string
}

// NewSwitch creates the namespaces, the bridge, the veths and their shaping.
// Names get a random suffix so concurrent suites never collide. On failure
// everything created so far is removed.
func NewSwitch(ctx context.Context, opts SwitchOptions) (s *Switch, err error) {
	if opts.Prefix == "" || opts.Subnet == "" {
		return nil, errors.New("topo: SwitchOptions needs Prefix and Subnet")
	}
	if opts.Nodes < 1 || opts.Nodes > 200 {
		return nil, fmt.Errorf("topo: %d nodes: want 1 to 200", opts.Nodes)
	}
	var rnd [2]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("topo: random suffix: %w", err)
	}
	base := opts.Prefix + hex.EncodeToString(rnd[:])
	// The longest name is a port's veth: base + "p" + up to 3 digits.
	if len(base)+4 > 15 {
		return nil, fmt.Errorf("topo: prefix %q too long for a veth name", opts.Prefix)
	}
	s = &Switch{Bridge: base + "-br", Server: base + "-srv", ServerVeth: base + "s", ServerAddr: opts.Subnet + ".1", base: base}
	defer func() {
		if err != nil {
			_ = s.Close()
			s = nil
		}
	}()
	if err := run(ctx, "ip", "netns", "add", s.Bridge); err != nil {
		return s, err
	}
	br := base + "b"
	steps := [][]string{
		{"-n", s.Bridge, "link", "set", "lo", "up"},
		{"-n", s.Bridge, "link", "add", br, "type", "bridge"},
		{"-n", s.Bridge, "link", "set", br, "up"},
	}
	for _, args := range steps {
		if err := run(ctx, "ip", args...); err != nil {
			return s, err
		}
	}
	if err := s.plug(ctx, br, s.Server, s.ServerVeth, base+"ps", s.ServerAddr, opts.ServerRate); err != nil {
		return s, err
	}
	for i := range opts.Nodes {
		ns := fmt.Sprintf("%s-n%d", base, i)
		veth := fmt.Sprintf("%sn%d", base, i)
		addr := fmt.Sprintf("%s.%d", opts.Subnet, 10+i)
		s.Nodes, s.NodeVeths, s.NodeAddrs = append(s.Nodes, ns), append(s.NodeVeths, veth), append(s.NodeAddrs, addr)
		if err := s.plug(ctx, br, ns, veth, fmt.Sprintf("%sp%d", base, i), addr, opts.NodeRate); err != nil {
			return s, err
		}
	}
	return s, nil
}

// plug creates netns ns with veth inside it (addr/24), its peer port in
// the bridge namespace attached to the bridge, both ends shaped at rate.
func (s *Switch) plug(ctx context.Context, br, ns, veth, port, addr, rate string) error {
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	steps := [][]string{
		{"link", "add", veth, "netns", ns, "type", "veth", "peer", "name", port, "netns", s.Bridge},
		{"-n", ns, "addr", "add", addr + "/24", "dev", veth},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", veth, "up"},
		{"-n", s.Bridge, "link", "set", port, "master", br},
		{"-n", s.Bridge, "link", "set", port, "up"},
	}
	for _, args := range steps {
		if err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	if rate == "" || rate == Unshaped {
		return nil
	}
	for _, end := range [][2]string{{ns, veth}, {s.Bridge, port}} {
		if err := run(ctx, "ip", "netns", "exec", end[0], "tc", "qdisc", "add", "dev", end[1], "root",
			"tbf", "rate", rate, "burst", "256kb", "latency", "50ms"); err != nil {
			return err
		}
	}
	return nil
}

// TxBytes is the bytes the device dev inside netns ns has sent so far (its
// interface counter).
func TxBytes(ctx context.Context, ns, dev string) (int64, error) {
	// sysfs shows the namespace of whoever mounted it: ip netns exec
	// mounts one of ns's own.
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "cat",
		"/sys/class/net/"+dev+"/statistics/tx_bytes").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("topo: tx_bytes of %s in %s: %w: %s", dev, ns, err, strings.TrimSpace(string(out)))
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("topo: tx_bytes of %s in %s: %w", dev, ns, err)
	}
	return v, nil
}

// ServerTx is the bytes the server namespace has sent so far.
func (s *Switch) ServerTx(ctx context.Context) (int64, error) {
	return TxBytes(ctx, s.Server, s.ServerVeth)
}

// Close deletes every namespace of the switch (which removes the veths, the
// bridge and the qdiscs). Processes still inside must have been stopped by
// their owners.
func (s *Switch) Close() error {
	var errs []error
	for _, ns := range append(append([]string{}, s.Nodes...), s.Server, s.Bridge) {
		if _, err := os.Stat(NetnsPath(ns)); err != nil {
			continue
		}
		if err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
