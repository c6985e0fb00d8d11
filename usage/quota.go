package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// The quota table lives on the share, so that every node reads the same one.
const (
	TableDir  = ".eddy"
	TableFile = ".eddy/quotas.json"
	// UserPrefix marks a user quota's target ("user:alice"); any other target is a directory.
	UserPrefix = "user:"
)

// Quota is one limit: on a directory of the share (every file below it counts) or on a
// user (every file they own, anywhere on the share). Sizes are apparent bytes; 0 is no limit.
type Quota struct {
	Target string  `json:"target"`        // "users/alice" or "user:alice"
	Uid    *uint32 `json:"uid,omitempty"` // a user quota's uid, resolved when it was set
	Hard   int64   `json:"hard,omitempty"`
	Soft   int64   `json:"soft,omitempty"`
}

// IsUser reports whether q limits a user (rather than a directory).
func (q Quota) IsUser() bool { return strings.HasPrefix(q.Target, UserPrefix) }

// Table is the content of TableFile.
type Table struct {
	Version int       `json:"version"`
	Updated time.Time `json:"updated,omitzero"`
	Quotas  []Quota   `json:"quotas"`
}

// Put sets q (replacing the quota of the same target).
func (t *Table) Put(q Quota) {
	for i := range t.Quotas {
		if t.Quotas[i].Target == q.Target {
			t.Quotas[i] = q
			return
		}
	}
	t.Quotas = append(t.Quotas, q)
	sort.Slice(t.Quotas, func(i, j int) bool { return t.Quotas[i].Target < t.Quotas[j].Target })
}

// Remove drops target's quota and reports whether there was one.
func (t *Table) Remove(target string) bool {
	for i := range t.Quotas {
		if t.Quotas[i].Target == target {
			t.Quotas = append(t.Quotas[:i], t.Quotas[i+1:]...)
			return true
		}
	}
	return false
}

// LoadTable reads the quota table from the share (an empty one when there is none).
func LoadTable(ctx context.Context, fsys origin.FS) (Table, origin.Fingerprint, error) {
	a, err := fsys.Lstat(ctx, TableFile)
	if origin.IsNotExist(err) {
		return Table{Version: 1}, origin.Fingerprint{}, nil
	}
	if err != nil {
		return Table{}, origin.Fingerprint{}, err
	}
	if a.Size > 16<<20 {
		return Table{}, origin.Fingerprint{}, fmt.Errorf("%s: %d bytes, too large", TableFile, a.Size)
	}
	f, err := fsys.Open(ctx, TableFile, syscall.O_RDONLY)
	if err != nil {
		return Table{}, origin.Fingerprint{}, err
	}
	defer f.Close()
	buf := make([]byte, a.Size)
	n, err := f.ReadAt(ctx, buf, 0)
	if err != nil && n < len(buf) && !errors.Is(err, io.EOF) {
		return Table{}, origin.Fingerprint{}, err
	}
	var t Table
	if err := json.Unmarshal(buf[:n], &t); err != nil {
		return Table{}, origin.Fingerprint{}, fmt.Errorf("%s: %w", TableFile, err)
	}
	return t, a.Fingerprint(), nil
}

// SaveTable writes the table to the share atomically: a temporary file beside it, synced,
// then renamed over it, so that a reader on any node sees the old table or the new one.
func SaveTable(ctx context.Context, fsys origin.FS, t Table) error {
	t.Version = 1
	t.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := fsys.Mkdir(ctx, TableDir, 0o755, origin.Owner{}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("create %s: %w", TableDir, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := TableFile + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := fsys.Create(ctx, tmp, syscall.O_WRONLY|syscall.O_EXCL, 0o644, origin.Owner{})
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	_, werr := f.WriteAt(ctx, b, 0)
	if werr == nil {
		werr = f.Sync(ctx)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = fsys.Rename(ctx, tmp, TableFile, 0)
	}
	if werr != nil {
		_ = fsys.Unlink(ctx, tmp)
		return fmt.Errorf("write %s: %w", TableFile, werr)
	}
	return nil
}

// Status is one quota with the usage it is checked against.
type Status struct {
	Quota
	Used     int64     `json:"used"`  // bytes
	Files    int64     `json:"files"` // files
	Counted  bool      `json:"counted"`
	WalkedAt time.Time `json:"walked_at,omitzero"`
	OverSoft bool      `json:"over_soft,omitempty"`
	OverHard bool      `json:"over_hard,omitempty"`
}

type used struct {
	bytes, files int64
	during       int64 // bytes charged while a walk of this target runs
	walkedAt     time.Time
	counted      bool
	softWarned   bool
}

// Tracker holds the quota table and each quota's usage: counted by periodic walks of the
// origin, and kept current between them by the writes through this node (Charge). Writes
// that bypass this node (other nodes, the origin directly) are counted at the next walk.
type Tracker struct {
	fsys     origin.FS
	log      *slog.Logger
	interval time.Duration
	workers  int

	mu      sync.Mutex
	table   Table
	fp      origin.Fingerprint
	used    map[string]*used // by target
	dirs    []string         // directory targets
	byUid   map[uint32]string
	walking bool
	kick    chan struct{}
}

// NewTracker returns a tracker over fsys; Run loads the table and walks.
func NewTracker(fsys origin.FS, interval time.Duration, workers int, log *slog.Logger) *Tracker {
	if interval <= 0 {
		interval = 15 * time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	return &Tracker{fsys: fsys, log: log, interval: interval, workers: workers, used: map[string]*used{}, byUid: map[uint32]string{}, kick: make(chan struct{}, 1)}
}

// Run loads the table, walks the quotas' trees now and every interval, and reloads the table
// when another node changed it (checked every few seconds), until ctx ends.
func (t *Tracker) Run(ctx context.Context) {
	reload := time.NewTicker(5 * time.Second)
	defer reload.Stop()
	walk := time.NewTicker(t.interval)
	defer walk.Stop()
	t.Reload(ctx)
	t.Recount(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload.C:
			if t.Reload(ctx) {
				t.Recount(ctx)
			}
		case <-t.kick:
			t.Recount(ctx)
		case <-walk.C:
			t.Recount(ctx)
		}
	}
}

// Kick asks Run for a recount soon.
func (t *Tracker) Kick() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Reload reads the table if it changed on the share; it reports whether it did.
func (t *Tracker) Reload(ctx context.Context) bool {
	tab, fp, err := LoadTable(ctx, t.fsys)
	if err != nil {
		t.log.Warn("quota table unreadable; keeping the last one", "file", TableFile, "err", err)
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if fp == t.fp && len(tab.Quotas) == len(t.table.Quotas) {
		return false
	}
	t.setLocked(tab, fp)
	return true
}

// SetTable installs tab (just written to the share by this node).
func (t *Tracker) SetTable(tab Table) {
	t.mu.Lock()
	t.setLocked(tab, origin.Fingerprint{})
	t.mu.Unlock()
	t.Kick()
}

func (t *Tracker) setLocked(tab Table, fp origin.Fingerprint) {
	t.table, t.fp = tab, fp
	t.dirs = nil
	t.byUid = map[uint32]string{}
	keep := map[string]*used{}
	for _, q := range tab.Quotas {
		if u := t.used[q.Target]; u != nil {
			keep[q.Target] = u
		} else {
			keep[q.Target] = &used{}
		}
		if q.IsUser() {
			if q.Uid != nil {
				t.byUid[*q.Uid] = q.Target
			}
		} else {
			t.dirs = append(t.dirs, q.Target)
		}
	}
	t.used = keep
}

// within reports whether name is dir or below it.
func within(name, dir string) bool {
	return dir == "." || name == dir || strings.HasPrefix(name, dir+"/")
}

// Applies reports whether a quota may cover name (whatever its owner); false lets the FUSE
// view skip the bookkeeping.
func (t *Tracker) Applies(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.byUid) > 0 {
		return true
	}
	for _, d := range t.dirs {
		if within(name, d) {
			return true
		}
	}
	return false
}

// targetsLocked are the quotas covering a file named name owned by uid.
func (t *Tracker) targetsLocked(name string, uid uint32) []string {
	var out []string
	for _, d := range t.dirs {
		if within(name, d) {
			out = append(out, d)
		}
	}
	if u, ok := t.byUid[uid]; ok {
		out = append(out, u)
	}
	return out
}

func (t *Tracker) quotaLocked(target string) Quota {
	for _, q := range t.table.Quotas {
		if q.Target == target {
			return q
		}
	}
	return Quota{}
}

// Charge accounts a change of delta bytes to the file name owned by uid. Growth (delta > 0)
// that would take a quota covering it past its hard limit is refused with syscall.EDQUOT and
// not accounted; delta 0 asks whether anything may be added (a new file), refused when a
// covering quota is already at its hard limit. Shrinking is always accounted. Passing a soft
// limit logs a warning (once, until usage falls below it again).
func (t *Tracker) Charge(name string, uid uint32, delta int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	targets := t.targetsLocked(name, uid)
	if len(targets) == 0 {
		return nil
	}
	if delta >= 0 {
		for _, tg := range targets {
			q, u := t.quotaLocked(tg), t.used[tg]
			if q.Hard > 0 && u != nil && (u.bytes+delta > q.Hard || (delta == 0 && u.bytes >= q.Hard)) {
				return fmt.Errorf("quota of %s: %d of %d bytes used: %w", tg, u.bytes, q.Hard, syscall.EDQUOT)
			}
		}
	}
	if delta == 0 {
		return nil
	}
	for _, tg := range targets {
		u := t.used[tg]
		if u == nil {
			continue
		}
		u.bytes += delta
		if t.walking {
			u.during += delta
		}
		t.softLocked(tg, u)
	}
	return nil
}

func (t *Tracker) softLocked(target string, u *used) {
	q := t.quotaLocked(target)
	switch {
	case q.Soft > 0 && u.bytes > q.Soft && !u.softWarned:
		u.softWarned = true
		t.log.Warn("soft quota exceeded", "target", target, "used", u.bytes, "soft", q.Soft, "hard", q.Hard)
	case q.Soft > 0 && u.bytes <= q.Soft:
		u.softWarned = false
	}
}

// Status lists the quotas with their usage.
func (t *Tracker) Status() []Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Status, 0, len(t.table.Quotas))
	for _, q := range t.table.Quotas {
		s := Status{Quota: q}
		if u := t.used[q.Target]; u != nil {
			s.Used, s.Files, s.Counted, s.WalkedAt = u.bytes, u.files, u.counted, u.walkedAt
		}
		s.OverSoft = q.Soft > 0 && s.Used > q.Soft
		s.OverHard = q.Hard > 0 && s.Used >= q.Hard
		out = append(out, s)
	}
	return out
}

// Recount walks the trees the quotas cover and resets their usage to what the walk found
// (plus what was charged while it ran). With a user quota the whole share is walked (a user's
// files may be anywhere); otherwise only the quota'd directories.
func (t *Tracker) Recount(ctx context.Context) {
	t.mu.Lock()
	if t.walking || len(t.table.Quotas) == 0 {
		t.mu.Unlock()
		return
	}
	t.walking = true
	dirs := append([]string(nil), t.dirs...)
	byUid := make(map[uint32]string, len(t.byUid))
	for k, v := range t.byUid {
		byUid[k] = v
	}
	for _, u := range t.used {
		u.during = 0
	}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.walking = false
		t.mu.Unlock()
	}()

	start := time.Now()
	workers := t.workers
	if workers <= 0 {
		workers = DefaultWorkers()
	}
	type acc struct{ bytes, files int64 }
	roots := dirs
	if len(byUid) > 0 {
		roots = []string{"."}
	}
	// Nested directory quotas: walk only the outermost.
	sort.Strings(roots)
	var outer []string
	for _, r := range roots {
		if len(outer) > 0 && within(r, outer[len(outer)-1]) {
			continue
		}
		outer = append(outer, r)
	}
	per := make([]map[string]*acc, workers)
	for i := range per {
		per[i] = map[string]*acc{}
	}
	links := sync.Map{}
	var w Walker
	visit := func(worker int, name string, a origin.Attr) {
		if a.IsDir() {
			return
		}
		if a.Nlink > 1 {
			if _, dup := links.LoadOrStore(linkKey{a.Dev, a.Ino}, true); dup {
				return
			}
		}
		add := func(tg string) {
			m := per[worker]
			x := m[tg]
			if x == nil {
				x = &acc{}
				m[tg] = x
			}
			x.bytes += a.Size
			x.files++
		}
		for _, d := range dirs {
			if within(name, d) {
				add(d)
			}
		}
		if tg, ok := byUid[a.Uid]; ok {
			add(tg)
		}
	}
	var err error
	for _, r := range outer {
		if _, lerr := t.fsys.Lstat(ctx, r); origin.IsNotExist(lerr) {
			continue
		}
		if err = w.Walk(ctx, t.fsys, r, WalkOptions{Workers: workers}, visit); err != nil {
			break
		}
	}
	if err != nil {
		t.log.Warn("quota recount stopped", "err", err)
		return
	}
	total := map[string]acc{}
	for _, m := range per {
		for k, x := range m {
			s := total[k]
			s.bytes += x.bytes
			s.files += x.files
			total[k] = s
		}
	}
	now := time.Now()
	t.mu.Lock()
	for tg, u := range t.used {
		if !containsTarget(dirs, byUid, tg) {
			continue // set while the walk ran: the next walk counts it
		}
		s := total[tg]
		u.bytes, u.files = s.bytes+u.during, s.files
		u.during, u.walkedAt, u.counted = 0, now, true
		t.softLocked(tg, u)
	}
	t.mu.Unlock()
	p := w.Progress()
	t.log.Info("quota usage recounted", "quotas", len(total), "files", p.Files, "dirs", p.Dirs, "errors", p.Errors, "took", time.Since(start).Round(time.Millisecond))
}

func containsTarget(dirs []string, byUid map[uint32]string, tg string) bool {
	for _, d := range dirs {
		if d == tg {
			return true
		}
	}
	for _, v := range byUid {
		if v == tg {
			return true
		}
	}
	return false
}
