package api

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// IdentityHeader carries the identity a call is made for ("uid=1000,gid=1000") from a daemon
// that forwards a local user's call (the task commands of a joined node's socket) to the
// scheduler. It is honoured only on calls that carry the cluster token: token holders are the
// cluster's daemons and its administrators, trusted to name the user they act for.
const IdentityHeader = "X-Eddy-Identity"

// Identity is who makes an API call: a local socket's peer (from the kernel, SO_PEERCRED and
// SO_PEERGROUPS), the user a cluster daemon forwards for (IdentityHeader), or, for a cluster
// token holder naming nobody, root.
type Identity struct {
	Uid    uint32   `json:"uid"`
	Gid    uint32   `json:"gid"`              // primary group
	Groups []uint32 `json:"groups,omitempty"` // supplementary groups; known for local socket peers only
	Pid    int32    `json:"pid,omitempty"`    // local socket peers only
	Via    string   `json:"via,omitempty"`    // "socket", "token", "forwarded"
}

// Root reports whether the caller is root (local uid 0 or a cluster token holder naming nobody),
// who may do everything.
func (id Identity) Root() bool { return id.Uid == 0 }

// String is the IdentityHeader form: "uid=U,gid=G".
func (id Identity) String() string { return fmt.Sprintf("uid=%d,gid=%d", id.Uid, id.Gid) }

// ParseIdentity parses the IdentityHeader form "uid=U,gid=G".
func ParseIdentity(s string) (Identity, error) {
	var id Identity
	var seen [2]bool
	parts := strings.Split(strings.TrimSpace(s), ",")
	for _, p := range parts {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if !ok || err != nil {
			return Identity{}, fmt.Errorf("identity %q: want uid=N,gid=N", s)
		}
		switch strings.TrimSpace(k) {
		case "uid":
			id.Uid, seen[0] = uint32(n), true
		case "gid":
			id.Gid, seen[1] = uint32(n), true
		default:
			return Identity{}, fmt.Errorf("identity %q: unknown key %q (want uid=N,gid=N)", s, k)
		}
	}
	if len(parts) != 2 || !seen[0] || !seen[1] {
		return Identity{}, fmt.Errorf("identity %q: want uid=N,gid=N", s)
	}
	return id, nil
}

type identityKey struct{}

// WithIdentity returns ctx carrying the caller's identity.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the caller's identity ctx carries; ok is false when there is none (the
// server must then refuse what needs one).
func IdentityFrom(ctx context.Context) (id Identity, ok bool) {
	id, ok = ctx.Value(identityKey{}).(Identity)
	return id, ok
}
