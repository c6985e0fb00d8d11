package fusefs

import (
	"context"
	"time"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// The dataset consistency mode (Options.Consistency): under a rule with a
// TTL, a read-only open trusts the node's last check of the file against
// the origin for the TTL instead of asking again (trustsCheck,
// openplan.go), and the kernel keeps the names and attributes of those
// nodes for what is left of the TTL (timeout.go). What stays as it is:
//
//   - A version is what its fingerprint names: the cache keys its chunks by
//     it, and a chunk fetched from an origin file that is no longer that
//     version drops the version and restarts the read on the new one
//     (cache/originread.go), so a read never splices two versions.
//   - A change made through this mount is seen here at once: a writable
//     open, the release of a writable handle and a setattr forget the
//     node's check, and a writable handle open on the node keeps every
//     open asking the origin.
//   - Names outside every TTL rule keep close-to-open.
//
// What a user gives up: a change made on the origin (another node, the
// server itself) may be missed by this node for up to the TTL.

// ttlFor is the consistency TTL of origin name (0: strict).
func (st *state) ttlFor(name string) time.Duration {
	if len(st.opts.Consistency) == 0 {
		return 0
	}
	return st.opts.Consistency.TTL(name)
}

// noteChecked records that the origin gave a for the node's file at at
// (asked then): opens under a TTL may trust it until at+TTL.
func (n *node) noteChecked(a origin.Attr, at time.Time) {
	n.mu.Lock()
	if !n.checked.set || !at.Before(n.checked.at) {
		n.checked = validation{attr: a, at: at, set: true}
	}
	n.mu.Unlock()
}

// forgetChecked makes the next open ask the origin: the file was changed
// through this mount.
func (n *node) forgetChecked() {
	n.mu.Lock()
	n.checked = validation{}
	n.mu.Unlock()
}

// trustedCheck returns the attributes of the node's last check against the
// origin if a read-only open of it under a TTL of ttl may take them instead
// of asking (trustsCheck).
func (n *node) trustedCheck(ttl time.Duration) (validation, bool) {
	if ttl <= 0 {
		return validation{}, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	f := ttlFacts{ttl: ttl, checked: n.checked, writing: n.writers > 0, now: time.Now()}
	return n.checked, trustsCheck(f)
}

// trustedAttr is trustedCheck for a GETATTR, of a node of any type
// (checkStands).
func (n *node) trustedAttr(ttl time.Duration) (validation, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.checked, checkStands(ttlFacts{ttl: ttl, checked: n.checked, writing: n.writers > 0, now: time.Now()})
}

// checkedOpener is implemented by caches that can open a version whose
// attributes the origin gave some time ago (*cache.Store does): the cache's
// own revalidation of open files then counts from that time, not from the
// open.
type checkedOpener interface {
	OpenFileChecked(ctx context.Context, name string, attr origin.Attr, checkedAt time.Time) (cache.Handle, cache.OpenResult, error)
}

// openCache opens name's version a in the cache; checkedAt is when the
// origin gave a (zero: just now).
func (st *state) openCache(ctx context.Context, name string, a origin.Attr, checkedAt time.Time) (cache.Handle, cache.OpenResult, error) {
	if co, ok := st.cache.(checkedOpener); ok && !checkedAt.IsZero() {
		return co.OpenFileChecked(ctx, name, a, checkedAt)
	}
	return st.cache.OpenFile(ctx, name, a)
}
