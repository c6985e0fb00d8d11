package fusefs

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// fakeBacking is a backingGuard: a lock, and whether a backing file is
// kept. afterTry, if set, runs after each admission attempt (the guard's
// unlock), with the attempt's number.
type fakeBacking struct {
	mu       sync.Mutex
	isKept   bool // guarded by mu
	tries    int  // guarded by mu
	afterTry func(try int)
}

func (b *fakeBacking) Lock() { b.mu.Lock() }

func (b *fakeBacking) Unlock() {
	b.tries++
	n := b.tries
	b.mu.Unlock()
	if b.afterTry != nil {
		b.afterTry(n)
	}
}

func (b *fakeBacking) kept() bool { return b.isKept }

// releaseAfterFirstTry is a guard whose first attempt is followed by the
// release of a handle (one that was closing when the open came).
func releaseAfterFirstTry(m *ioMode, pt bool) *fakeBacking {
	return &fakeBacking{afterTry: func(try int) {
		if try == 1 {
			m.release(pt, false)
		}
	}}
}

// ioCounts is an ioMode's state, for comparing.
type ioCounts struct {
	ptOpens, ptWriters, otherOpens int
	ptFP                           origin.Fingerprint
	ptSet                          bool
}

func (m *ioMode) counts() ioCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return ioCounts{m.ptOpens, m.ptWriters, m.otherOpens, m.ptFP, m.ptSet}
}

func TestIOModeTry(t *testing.T) {
	v1 := origin.Fingerprint{Size: 1, Ino: 7}
	v2 := origin.Fingerprint{Size: 2, Ino: 7}
	now := time.Unix(1000, 0)
	recently := now.Add(-ptSwitchQuiet / 2) // the last passthrough handle closed just now
	longAgo := now.Add(-ptSwitchQuiet)
	reader := func(fp origin.Fingerprint, complete bool) openRequest {
		return openRequest{readOnly: true, fp: fp, complete: complete}
	}
	writer := openRequest{}
	for _, c := range []struct {
		name   string
		before ioCounts
		idleAt time.Time
		r      openRequest
		kept   bool
		tried  time.Duration // how long the open has been trying
		want   admitStep
		after  ioCounts
	}{
		{
			name:  "first complete reader registers its file",
			r:     reader(v1, true),
			want:  admitRegister,
			after: ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
		},
		{
			name:  "incomplete reader: cached I/O",
			r:     reader(v1, false),
			want:  admitCached,
			after: ioCounts{otherOpens: 1},
		},
		{
			name:  "writer with no passthrough handle: cached I/O",
			r:     writer,
			want:  admitCached,
			after: ioCounts{otherOpens: 1},
		},
		{
			name:   "reader of the backing file's version joins",
			before: ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
			r:      reader(v1, false),
			want:   admitJoin,
			after:  ioCounts{ptOpens: 2, ptFP: v1, ptSet: true},
		},
		{
			name:   "reader of another version waits",
			before: ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
			r:      reader(v2, true),
			kept:   true,
			want:   admitWait,
			after:  ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
		},
		{
			name:   "writer joins while the backing file is kept",
			before: ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
			r:      writer,
			kept:   true,
			want:   admitJoin,
			after:  ioCounts{ptOpens: 2, ptWriters: 1, ptFP: v1, ptSet: true},
		},
		{
			name:   "writer waits while the backing file is not kept",
			before: ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
			r:      writer,
			want:   admitWait,
			after:  ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
		},
		{
			name:   "complete reader waits for cached-I/O handles closing",
			before: ioCounts{otherOpens: 1},
			r:      reader(v1, true),
			tried:  ptDrain / 2,
			want:   admitWait,
			after:  ioCounts{otherOpens: 1},
		},
		{
			name:   "complete reader settles for cached I/O once the drain time is over",
			before: ioCounts{otherOpens: 1},
			r:      reader(v1, true),
			tried:  ptDrain,
			want:   admitCached,
			after:  ioCounts{otherOpens: 2},
		},
		{
			name:   "same version registers again at once",
			before: ioCounts{ptFP: v1, ptSet: true},
			idleAt: recently,
			r:      reader(v1, true),
			want:   admitRegister,
			after:  ioCounts{ptOpens: 1, ptFP: v1, ptSet: true},
		},
		{
			name:   "another version just after the last passthrough close: cached I/O",
			before: ioCounts{ptFP: v1, ptSet: true},
			idleAt: recently,
			r:      reader(v2, true),
			want:   admitCached,
			after:  ioCounts{otherOpens: 1, ptFP: v1, ptSet: true},
		},
		{
			name:   "another version once quiet long enough registers",
			before: ioCounts{ptFP: v1, ptSet: true},
			idleAt: longAgo,
			r:      reader(v2, true),
			want:   admitRegister,
			after:  ioCounts{ptOpens: 1, ptFP: v2, ptSet: true},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &ioMode{ptOpens: c.before.ptOpens, ptWriters: c.before.ptWriters, otherOpens: c.before.otherOpens,
				ptFP: c.before.ptFP, ptSet: c.before.ptSet, ptIdleAt: c.idleAt}
			if got := m.try(c.r, c.kept, now.Add(-c.tried), now); got != c.want {
				t.Fatalf("try = %v, want %v", got, c.want)
			}
			if got := m.counts(); got != c.after {
				t.Fatalf("after try: %+v, want %+v", got, c.after)
			}
		})
	}
}

func TestIOModeRelease(t *testing.T) {
	for _, c := range []struct {
		name         string
		before       ioCounts
		pt, writable bool
		idle         bool
		after        ioCounts
	}{
		{"cached I/O", ioCounts{otherOpens: 2}, false, false, false, ioCounts{otherOpens: 1}},
		{"cached I/O writer", ioCounts{otherOpens: 1}, false, true, false, ioCounts{}},
		{"cached I/O never below zero", ioCounts{}, false, false, false, ioCounts{}},
		{"passthrough, others left", ioCounts{ptOpens: 2}, true, false, false, ioCounts{ptOpens: 1}},
		{"last passthrough handle", ioCounts{ptOpens: 1}, true, false, true, ioCounts{}},
		{"passthrough writer", ioCounts{ptOpens: 2, ptWriters: 1}, true, true, false, ioCounts{ptOpens: 1}},
		{"passthrough never below zero", ioCounts{}, true, false, true, ioCounts{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := &ioMode{ptOpens: c.before.ptOpens, ptWriters: c.before.ptWriters, otherOpens: c.before.otherOpens}
			if idle := m.release(c.pt, c.writable); idle != c.idle {
				t.Fatalf("release idle = %v, want %v", idle, c.idle)
			}
			if got := m.counts(); got != c.after {
				t.Fatalf("after release: %+v, want %+v", got, c.after)
			}
			if c.idle && time.Since(m.ptIdleAt) > time.Minute {
				t.Fatal("the last passthrough release did not record when")
			}
		})
	}
}

// Two passthrough opens of one version: the second release leaves the
// inode idle, and a new version may register only after ptSwitchQuiet.
func TestIOModeVersionSwitch(t *testing.T) {
	v1 := origin.Fingerprint{Size: 1}
	v2 := origin.Fingerprint{Size: 2}
	var m ioMode
	g := &fakeBacking{isKept: true}
	ctx := context.Background()
	for range 2 {
		if a, e := m.admit(ctx, openRequest{readOnly: true, fp: v1, complete: true}, g); e != 0 || !a.passthrough() {
			t.Fatalf("admit v1: %v %v", a, e)
		}
	}
	if !m.passthroughOpen() || !m.open() || m.passthroughWriters() {
		t.Fatalf("two passthrough readers: %+v", m.counts())
	}
	if m.release(true, false) || !m.release(true, false) {
		t.Fatal("idle reported at the wrong release")
	}
	if m.passthroughOpen() || m.open() {
		t.Fatalf("after both releases: %+v", m.counts())
	}
	if a, _ := m.admit(ctx, openRequest{readOnly: true, fp: v2, complete: true}, g); a != cachedIO {
		t.Fatalf("another version at once: %v, want cached I/O", a)
	}
	m.release(false, false)
	m.mu.Lock()
	m.ptIdleAt = m.ptIdleAt.Add(-ptSwitchQuiet)
	m.mu.Unlock()
	if a, _ := m.admit(ctx, openRequest{readOnly: true, fp: v2, complete: true}, g); a != registerPassthrough {
		t.Fatalf("another version after the quiet time: %v, want registered", a)
	}
}

// The release of the previous open arrives after the next open asked: the
// waiting open is admitted once it does.
func TestIOModeAdmitAfterLateRelease(t *testing.T) {
	v1 := origin.Fingerprint{Size: 1}
	t.Run("cached I/O releasing, passthrough next", func(t *testing.T) {
		m := &ioMode{otherOpens: 1}
		g := releaseAfterFirstTry(m, false)
		a, e := m.admit(context.Background(), openRequest{readOnly: true, fp: v1, complete: true}, g)
		if g.tries < 2 {
			t.Fatal("admitted without waiting for the release")
		}
		if e != 0 || a != registerPassthrough {
			t.Fatalf("admit: %v %v, want registered", a, e)
		}
	})
	t.Run("writer waits for the backing file's passthrough readers", func(t *testing.T) {
		m := &ioMode{ptOpens: 1, ptFP: v1, ptSet: true}
		g := releaseAfterFirstTry(m, true)
		a, e := m.admit(context.Background(), openRequest{}, g)
		if g.tries < 2 {
			t.Fatal("admitted without waiting for the release")
		}
		if e != 0 || a != cachedIO {
			t.Fatalf("admit: %v %v, want cached I/O", a, e)
		}
		if got := m.counts(); got.otherOpens != 1 || got.ptOpens != 0 {
			t.Fatalf("after: %+v", got)
		}
	})
}

func TestIOModeAdmitRefused(t *testing.T) {
	v1 := origin.Fingerprint{Size: 1}
	v2 := origin.Fingerprint{Size: 2}
	busy := func() *ioMode { return &ioMode{ptOpens: 1, ptFP: v1, ptSet: true} }
	t.Run("another version registered: ETXTBSY", func(t *testing.T) {
		m := busy()
		start := time.Now()
		a, e := m.admitWithin(context.Background(), openRequest{readOnly: true, fp: v2, complete: true}, &fakeBacking{isKept: true}, 20*time.Millisecond)
		if e != syscall.ETXTBSY || a != cachedIO {
			t.Fatalf("admit: %v %v, want ETXTBSY", a, e)
		}
		if time.Since(start) < 20*time.Millisecond {
			t.Fatal("refused without waiting for the passthrough handles")
		}
		if got := m.counts(); got != (ioCounts{ptOpens: 1, ptFP: v1, ptSet: true}) {
			t.Fatalf("a refused open was counted: %+v", got)
		}
	})
	t.Run("interrupted: EINTR", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		a, e := busy().admit(ctx, openRequest{}, &fakeBacking{})
		if e != syscall.EINTR || a != cachedIO {
			t.Fatalf("admit: %v %v, want EINTR", a, e)
		}
	})
}

func TestIOModeCountCreated(t *testing.T) {
	var m ioMode
	m.countCreated()
	if got := m.counts(); got != (ioCounts{otherOpens: 1}) || !m.open() || m.passthroughOpen() {
		t.Fatalf("after countCreated: %+v", got)
	}
	if m.release(false, true) || m.open() {
		t.Fatalf("after its release: %+v", m.counts())
	}
}

func TestIOModeBackingVersion(t *testing.T) {
	v1 := origin.Fingerprint{Size: 1}
	v2 := origin.Fingerprint{Size: 2}
	m := ioMode{ptOpens: 1, ptFP: v1, ptSet: true}
	m.setBackingVersion(v2) // syncBacking brought the backing file up to v2
	a, e := m.admit(context.Background(), openRequest{readOnly: true, fp: v2}, &fakeBacking{})
	if e != 0 || a != joinPassthrough {
		t.Fatalf("a reader of the synced version: %v %v, want to join", a, e)
	}
	if got := m.counts(); got != (ioCounts{ptOpens: 2, ptFP: v2, ptSet: true}) {
		t.Fatalf("after: %+v", got)
	}
}

func TestIOModePassthroughWriters(t *testing.T) {
	m := ioMode{ptOpens: 1, ptFP: origin.Fingerprint{Size: 1}, ptSet: true}
	if a, e := m.admit(context.Background(), openRequest{}, &fakeBacking{isKept: true}); e != 0 || a != joinPassthrough {
		t.Fatalf("writer beside a passthrough reader: %v %v", a, e)
	}
	if !m.passthroughWriters() {
		t.Fatal("passthrough writer not counted")
	}
	m.release(true, true)
	if m.passthroughWriters() || !m.passthroughOpen() {
		t.Fatalf("after the writer's release: %+v", m.counts())
	}
}
