package fusefs

import (
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// Entries unchanged for a while are cached by the kernel longer (a tenth of their age, between
// the attribute timeout and its maximum); a recent change in mtime or ctime keeps the minimum.
func TestAttrTimeoutGrowsWithAge(t *testing.T) {
	now := time.Now()
	st := &state{opts: Options{AttrTimeout: time.Second, AttrTimeoutMax: time.Minute}}
	for _, tc := range []struct {
		name         string
		mtime, ctime time.Time
		want         time.Duration
	}{
		{"fresh", now, now, time.Second},
		{"five seconds old", now.Add(-5 * time.Second), now.Add(-5 * time.Second), time.Second},
		{"five minutes old", now.Add(-5 * time.Minute), now.Add(-5 * time.Minute), 30 * time.Second},
		{"a day old", now.Add(-24 * time.Hour), now.Add(-24 * time.Hour), time.Minute},
		{"old mtime, fresh ctime (mtime restored)", now.Add(-24 * time.Hour), now, time.Second},
	} {
		got := st.attrTimeout(origin.Attr{Mtime: tc.mtime, Ctime: tc.ctime})
		if got < tc.want-time.Second || got > tc.want+time.Second {
			t.Errorf("%s: %s, want about %s", tc.name, got, tc.want)
		}
	}
	// Without a larger maximum the mount's fixed timeout applies (0: no override).
	fixed := &state{opts: Options{AttrTimeout: time.Second}}
	if d := fixed.attrTimeout(origin.Attr{Mtime: now.Add(-time.Hour), Ctime: now.Add(-time.Hour)}); d != 0 {
		t.Fatalf("fixed timeout overridden: %s", d)
	}
}
