package fusefs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Entry and attribute timeouts under the dataset consistency mode
// (consistency.go): the kernel keeps the name and attributes of a node
// under a TTL rule for what is left of the TTL since the origin gave them,
// so neither it nor an open (trustsCheck) holds them for longer than the
// TTL after the origin was last asked.

// minTTLTimeout is the shortest timeout a TTL entry gets (go-fuse would
// replace a 0 attribute timeout by the mount's default).
const minTTLTimeout = time.Millisecond

// ttlLeft is what is left at now of a TTL of ttl counted from readAt.
func ttlLeft(ttl time.Duration, readAt, now time.Time) time.Duration {
	left := ttl - now.Sub(readAt)
	if left > ttl {
		left = ttl
	}
	return max(left, minTTLTimeout)
}

// setTTLTimeouts gives an entry reply the timeouts of a TTL of ttl counted
// from readAt.
func setTTLTimeouts(out *fuse.EntryOut, ttl time.Duration, readAt time.Time) {
	d := ttlLeft(ttl, readAt, time.Now())
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}
