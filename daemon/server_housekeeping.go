package daemon

// Housekeeping: `eddy verify` (one node's step of the cluster-wide check), `eddy du` (a
// parallel walk of the origin), quotas (the table on the share, the usage the FUSE view
// checks writes against) and the share-full warning.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/fusefs"
	"github.com/eddy-cluster/eddy/origin"
	"github.com/eddy-cluster/eddy/usage"
)

// Defaults of the housekeeping settings.
const (
	DefaultQuotaWalkInterval = 15 * time.Minute
	DefaultShareFullPercent  = 90.0
	shareCheckInterval       = time.Minute
	defaultVerifySize        = 16 << 20
)

// housekeeping is the daemon's part of verify, du, quotas and the share-full warning.
type housekeeping struct {
	d     *Daemon
	quota *usage.Tracker
	// walkFS is what du and quota walks read: the origin, listing with attributes when it is
	// a local directory.
	walkFS origin.FS
	space  atomic.Pointer[api.ShareSpace]

	relayMu   sync.Mutex
	relayOpts []api.Option // for calls to other nodes' cluster APIs (token, TLS)
	relayErr  error
	relayInit bool

	usersMu sync.Mutex
	users   map[uint32]string
}

// startHousekeeping registers the housekeeping routes and starts the quota tracker and the
// share-full check. Call it once the API exists and before the mount (which consults the
// quotas through quotaHook).
func (d *Daemon) startHousekeeping(ctx context.Context) {
	interval := d.cfg.QuotaWalkInterval
	if interval <= 0 {
		interval = DefaultQuotaWalkInterval
	}
	h := &housekeeping{d: d, users: map[uint32]string{}, walkFS: d.origin}
	if !isURL(d.cfg.Origin) {
		// A local directory: walks stat entries beside their directory's descriptor.
		if l, err := usage.NewLocalDir(d.origin, d.cfg.Origin); err == nil {
			h.walkFS = l
			d.OnShutdown(func(context.Context) error { return l.Close() })
		}
	}
	h.quota = usage.NewTracker(h.walkFS, interval, d.cfg.UsageWorkers, d.log.With("part", "quota"))
	d.house = h
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.OnShutdown(func(context.Context) error { cancel(); return nil })
	go h.quota.Run(ctx)
	h.checkSpace(ctx)
	go h.watchSpace(ctx)
	h.registerMetrics()

	mux := d.api.mux
	mux.HandleFunc("POST "+api.VerifyStepPath, h.handleVerifyStep)
	mux.HandleFunc("POST "+api.DuPath, h.handleDu)
	mux.HandleFunc("GET "+api.QuotaPath, h.handleQuotaList)
	mux.HandleFunc("POST "+api.QuotaSetPath, h.handleQuotaSet)
	mux.HandleFunc("POST "+api.QuotaRmPath, h.handleQuotaRm)
	mux.HandleFunc("GET "+api.ShareSpacePath, func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, h.shareSpace())
	})
	d.api.shareSpace = h.shareSpace
}

// quotaHook is what the FUSE view consults before writes grow files; nil before
// startHousekeeping.
func (d *Daemon) quotaHook() fusefs.Quota {
	if d.house == nil {
		return nil
	}
	return d.house.quota
}

// ---- share space ----

func (h *housekeeping) threshold() float64 {
	if t := h.d.cfg.ShareFullPercent; t > 0 {
		return t
	}
	return DefaultShareFullPercent
}

func (h *housekeeping) shareSpace() *api.ShareSpace { return h.space.Load() }

func (h *housekeeping) watchSpace(ctx context.Context) {
	t := time.NewTicker(shareCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.checkSpace(ctx)
		}
	}
}

// checkSpace takes the origin's statfs and warns in the log when the share passes the
// threshold (again every hour while it stays there).
func (h *housekeeping) checkSpace(ctx context.Context) {
	sp := &api.ShareSpace{Threshold: h.threshold(), CheckedAt: time.Now()}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := h.d.origin.Statfs(octx)
	cancel()
	prev := h.space.Load()
	if err != nil {
		sp.Error = err.Error()
		if prev != nil { // keep the last figures
			sp.TotalBytes, sp.AvailBytes, sp.UsedPercent, sp.NearlyFull = prev.TotalBytes, prev.AvailBytes, prev.UsedPercent, prev.NearlyFull
		}
		h.space.Store(sp)
		return
	}
	frs := int64(st.Frsize)
	if frs == 0 {
		frs = int64(st.Bsize)
	}
	sp.TotalBytes = int64(st.Blocks) * frs
	sp.AvailBytes = int64(st.Bavail) * frs
	if used, avail := int64(st.Blocks-st.Bfree), int64(st.Bavail); used+avail > 0 {
		sp.UsedPercent = 100 * float64(used) / float64(used+avail) // as df computes Use%
	}
	sp.NearlyFull = sp.UsedPercent >= sp.Threshold
	warned := prev != nil && prev.NearlyFull
	if sp.NearlyFull && (!warned || time.Since(lastShareWarn.Load().(time.Time)) > time.Hour) {
		lastShareWarn.Store(time.Now())
		h.d.log.Warn("the share is nearly full", "origin", h.d.origin.String(), "used_percent", fmt.Sprintf("%.1f", sp.UsedPercent),
			"threshold_percent", sp.Threshold, "avail_bytes", sp.AvailBytes)
	} else if !sp.NearlyFull && warned {
		h.d.log.Info("the share is no longer nearly full", "used_percent", fmt.Sprintf("%.1f", sp.UsedPercent))
	}
	h.space.Store(sp)
}

var lastShareWarn atomic.Value

func init() { lastShareWarn.Store(time.Time{}) }

func (h *housekeeping) registerMetrics() {
	m := h.d.meter
	if m == nil {
		return
	}
	used, err1 := m.Float64ObservableGauge("eddy.share.used.percent", metric.WithDescription("Used share space (statfs of the origin), percent"), metric.WithUnit("%"))
	full, err2 := m.Int64ObservableGauge("eddy.share.nearly_full", metric.WithDescription("1 when the share's used space is at or above the warning threshold"))
	if err := errors.Join(err1, err2); err != nil {
		h.d.log.Warn("share metrics", "err", err)
		return
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if sp := h.space.Load(); sp != nil {
			o.ObserveFloat64(used, sp.UsedPercent)
			v := int64(0)
			if sp.NearlyFull {
				v = 1
			}
			o.ObserveInt64(full, v)
		}
		return nil
	}, used, full)
	if err != nil {
		h.d.log.Warn("share metrics", "err", err)
		return
	}
	h.d.OnShutdown(func(context.Context) error { return reg.Unregister() })
}

// ---- du ----

func (h *housekeeping) userName(uid uint32) string {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	if n, ok := h.users[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(n); err == nil {
		n = u.Username
	}
	h.users[uid] = n
	return n
}

func (h *housekeeping) handleDu(w http.ResponseWriter, r *http.Request) {
	var req api.DuRequest
	if !api.DecodeBody(w, r, &req, "bad request body") {
		return
	}
	by := usage.By(req.By)
	switch by {
	case "":
		by = usage.ByScope
	case usage.ByScope, usage.ByUser, usage.ByDir:
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("--by %q: want scope, user or dir", req.By))
		return
	}
	s := h.d.api
	name, err := s.resolve(req.Path, req.Cwd)
	if err != nil {
		writeFailure(w, err)
		return
	}
	if id := callerOf(r); !id.Root() {
		ok := false
		if s.access != nil {
			m, err := s.access.Listable(r.Context(), id, []string{name})
			ok = err == nil && m[name]
		}
		if !ok {
			writeError(w, http.StatusForbidden, fmt.Errorf("du %s: you may not list it (uid %d)", name, id.Uid))
			return
		}
	}
	if a, err := h.d.origin.Lstat(r.Context(), name); err != nil {
		writeFailure(w, fmt.Errorf("du %s: %w", name, err))
		return
	} else if !a.IsDir() {
		writeError(w, http.StatusBadRequest, fmt.Errorf("du %s: not a directory", name))
		return
	}
	workers := req.Workers
	if workers <= 0 {
		workers = h.d.cfg.UsageWorkers
	}
	if workers <= 0 {
		workers = usage.DefaultWorkers()
	}
	workers = min(workers, 256)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	emit := func(ev api.DuEvent) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(ev)
		if flusher != nil {
			flusher.Flush()
		}
	}
	start := time.Now()
	var walker usage.Walker
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p := api.WalkProgress(walker.Progress())
				emit(api.DuEvent{Progress: &p, Elapsed: time.Since(start).Seconds()})
			}
		}
	}()
	rep, err := usage.Count(r.Context(), h.walkFS, name, by, usage.WalkOptions{Workers: workers}, &walker, h.userName)
	close(done)
	if err != nil {
		emit(api.DuEvent{Done: true, Error: err.Error(), Elapsed: time.Since(start).Seconds()})
		return
	}
	out := &api.DuReport{Path: rep.Path, By: string(rep.By), Total: api.DuSum(rep.Total), Walk: api.WalkProgress(rep.Walk),
		Workers: workers, Elapsed: time.Since(start).Seconds()}
	for _, g := range rep.Groups {
		out.Groups = append(out.Groups, api.DuSum(g))
	}
	h.d.log.Info("du", "path", name, "by", by, "files", rep.Walk.Files, "dirs", rep.Walk.Dirs, "workers", workers, "took", time.Since(start).Round(time.Millisecond))
	emit(api.DuEvent{Done: true, Report: out, Elapsed: out.Elapsed})
}

// ---- quotas ----

func wireQuota(s usage.Status) api.QuotaStatus {
	return api.QuotaStatus{Target: s.Target, Uid: s.Uid, Hard: s.Hard, Soft: s.Soft, Used: s.Used, Files: s.Files,
		Counted: s.Counted, WalkedAt: s.WalkedAt, OverSoft: s.OverSoft, OverHard: s.OverHard}
}

func (h *housekeeping) handleQuotaList(w http.ResponseWriter, r *http.Request) {
	out := []api.QuotaStatus{}
	for _, s := range h.quota.Status() {
		out = append(out, wireQuota(s))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// target turns a quota target as given (a path, or user:NAME) into the table's form.
func (h *housekeeping) target(t, cwd string) (usage.Quota, error) {
	if name, ok := strings.CutPrefix(t, usage.UserPrefix); ok {
		if name == "" {
			return usage.Quota{}, fmt.Errorf("%q: a user name must follow %q: %w", t, usage.UserPrefix, errBadPath)
		}
		var uid uint64
		u, err := user.Lookup(name)
		if err == nil {
			uid, err = strconv.ParseUint(u.Uid, 10, 32)
		} else if n, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			uid, err = n, nil
		}
		if err != nil {
			return usage.Quota{}, fmt.Errorf("user %q: %v: %w", name, err, errBadPath)
		}
		id := uint32(uid)
		return usage.Quota{Target: usage.UserPrefix + name, Uid: &id}, nil
	}
	name, err := h.d.api.resolve(t, cwd)
	if err != nil {
		return usage.Quota{}, err
	}
	if name == "." || name == usage.TableDir || strings.HasPrefix(name, usage.TableDir+"/") {
		return usage.Quota{}, fmt.Errorf("%q: quotas go on a directory below the share's root: %w", t, errBadPath)
	}
	return usage.Quota{Target: name}, nil
}

func (h *housekeeping) rootOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	if id := callerOf(r); !id.Root() {
		writeError(w, http.StatusForbidden, fmt.Errorf("%s: only root may (you are uid %d)", what, id.Uid))
		return false
	}
	return true
}

func (h *housekeeping) handleQuotaSet(w http.ResponseWriter, r *http.Request) {
	if !h.rootOnly(w, r, "quota set") {
		return
	}
	var req api.QuotaSetRequest
	if !api.DecodeBody(w, r, &req, "bad request body") {
		return
	}
	if req.Hard < 0 || req.Soft < 0 || (req.Hard == 0 && req.Soft == 0) {
		writeError(w, http.StatusBadRequest, errors.New("quota set: give a positive hard size (and optionally --soft)"))
		return
	}
	if req.Hard > 0 && req.Soft > req.Hard {
		writeError(w, http.StatusBadRequest, fmt.Errorf("quota set: --soft %d is above the hard limit %d", req.Soft, req.Hard))
		return
	}
	q, err := h.target(req.Target, req.Cwd)
	if err != nil {
		writeFailure(w, err)
		return
	}
	q.Hard, q.Soft = req.Hard, req.Soft
	tab, _, err := usage.LoadTable(r.Context(), h.d.origin)
	if err == nil {
		tab.Put(q)
		err = usage.SaveTable(r.Context(), h.d.origin, tab)
	}
	if err != nil {
		writeFailure(w, fmt.Errorf("quota set: %w", err))
		return
	}
	h.quota.SetTable(tab)
	h.d.log.Info("quota set", "target", q.Target, "hard", q.Hard, "soft", q.Soft)
	out := api.QuotaStatus{Target: q.Target, Uid: q.Uid, Hard: q.Hard, Soft: q.Soft}
	for _, s := range h.quota.Status() {
		if s.Target == q.Target {
			out = wireQuota(s)
		}
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (h *housekeeping) handleQuotaRm(w http.ResponseWriter, r *http.Request) {
	if !h.rootOnly(w, r, "quota rm") {
		return
	}
	var req api.QuotaRmRequest
	if !api.DecodeBody(w, r, &req, "bad request body") {
		return
	}
	q, err := h.target(req.Target, req.Cwd)
	if err != nil {
		writeFailure(w, err)
		return
	}
	tab, _, err := usage.LoadTable(r.Context(), h.d.origin)
	if err != nil {
		writeFailure(w, fmt.Errorf("quota rm: %w", err))
		return
	}
	if !tab.Remove(q.Target) {
		writeError(w, http.StatusNotFound, fmt.Errorf("quota rm: no quota on %s", q.Target))
		return
	}
	if err := usage.SaveTable(r.Context(), h.d.origin, tab); err != nil {
		writeFailure(w, fmt.Errorf("quota rm: %w", err))
		return
	}
	h.quota.SetTable(tab)
	h.d.log.Info("quota removed", "target", q.Target)
	api.WriteJSON(w, http.StatusOK, map[string]string{"removed": q.Target})
}

// ---- verify ----

var safeRun = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// fileName is a node's name as a file name of the run's directory.
func fileName(node string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, node)
}

func markerContent(run, node string) []byte {
	return []byte("eddy verify run " + run + " node " + node + "\n")
}

func (h *housekeeping) relayOptions() ([]api.Option, error) {
	h.relayMu.Lock()
	defer h.relayMu.Unlock()
	if !h.relayInit {
		h.relayInit = true
		m, err := newClusterMember(h.d.cfg, h.d.log)
		if err != nil {
			h.relayErr = fmt.Errorf("this daemon cannot call other nodes: %w", err)
		} else {
			h.relayOpts = append(m.callOpts, api.WithTimeout(5*time.Minute))
		}
	}
	return h.relayOpts, h.relayErr
}

func (h *housekeeping) handleVerifyStep(w http.ResponseWriter, r *http.Request) {
	if !h.rootOnly(w, r, "verify") {
		return
	}
	var req api.VerifyStepRequest
	if !api.DecodeBody(w, r, &req, "bad request body") {
		return
	}
	if !safeRun.MatchString(req.Run) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("verify: bad run id %q", req.Run))
		return
	}
	self := h.d.cfg.NodeName
	if req.Node != "" && req.Node != self {
		if req.Relayed {
			writeError(w, http.StatusBadRequest, fmt.Errorf("verify: this is node %s, not %s", self, req.Node))
			return
		}
		if req.Address == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("verify: node %s has no cluster API address (start it with --listen)", req.Node))
			return
		}
		opts, err := h.relayOptions()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		req.Relayed = true
		resp, err := api.NewTCP(req.Address, opts...).VerifyStep(r.Context(), req)
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Errorf("node %s at %s: %w", req.Node, req.Address, err))
			return
		}
		api.WriteJSON(w, http.StatusOK, resp)
		return
	}
	api.WriteJSON(w, http.StatusOK, h.verifyLocal(r.Context(), req))
}

// verifyLocal does one step of a verify run on this node, through its own mount.
func (h *housekeeping) verifyLocal(ctx context.Context, req api.VerifyStepRequest) api.VerifyStepResponse {
	d := h.d
	self := d.cfg.NodeName
	resp := api.VerifyStepResponse{Node: self, Origin: d.origin.String(), Mount: d.cfg.Mount}
	rel := api.VerifyDir + "/" + req.Run // share-relative
	dir := filepath.Join(d.cfg.Mount, rel)
	me := fileName(self)
	fail := func(err error) api.VerifyStepResponse { resp.Error = err.Error(); return resp }
	switch req.Step {
	case api.VerifyWrite:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(fmt.Errorf("create %s through the mount: %w", dir, err))
		}
		_ = os.Chmod(filepath.Dir(dir), 0o755)
		_ = os.Chmod(dir, 0o755)
		if err := writeFileSync(filepath.Join(dir, me), markerContent(req.Run, self), 0o644); err != nil {
			return fail(fmt.Errorf("write the marker through the mount: %w", err))
		}
	case api.VerifyRead:
		resp.Markers = map[string]string{}
		for _, wr := range req.Writers {
			b, err := os.ReadFile(filepath.Join(dir, fileName(wr)))
			switch {
			case errors.Is(err, os.ErrNotExist):
				resp.Markers[wr] = "missing"
			case err != nil:
				resp.Markers[wr] = "error: " + err.Error()
			case !bytes.Equal(b, markerContent(req.Run, wr)):
				resp.Markers[wr] = "wrong content"
			default:
				resp.Markers[wr] = "ok"
			}
		}
	case api.VerifyPerm:
		p := h.verifyPerm(ctx, dir, me)
		resp.Perm = &p
	case api.VerifyMeasure:
		m, err := h.verifyMeasure(ctx, rel, dir, me, req.Size)
		if err != nil {
			return fail(err)
		}
		resp.Measure = &m
	case api.VerifyCleanup:
		for _, suffix := range []string{"", ".secret", ".public", ".data"} {
			if err := os.Remove(filepath.Join(dir, me+suffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
				resp.Error = err.Error()
			}
		}
		// The last node's removal succeeds. The parent, VerifyDir, stays: removing it would
		// leave other nodes a cached entry of a directory that is gone (for up to their
		// attribute timeout, as NFS clients do), so the next run's mkdir in it would fail there.
		_ = os.Remove(dir)
	default:
		return fail(fmt.Errorf("unknown step %q", req.Step))
	}
	return resp
}

func writeFileSync(name string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, mode)
	}
	return err
}

// nobody is the unprivileged identity the permission check reads as.
func nobody() (uint32, uint32) {
	if u, err := user.Lookup("nobody"); err == nil {
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return uint32(uid), uint32(gid)
		}
	}
	return 65534, 65534
}

// readAs runs cat as uid:gid (no supplementary groups) on name; nil when it could read it.
func readAs(ctx context.Context, uid, gid uint32, name string) error {
	cat, err := exec.LookPath("cat")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cat, name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s", strings.TrimSpace(stderr.String()))
	}
	return nil
}

func (h *housekeeping) verifyPerm(ctx context.Context, dir, me string) api.VerifyPermResult {
	var p api.VerifyPermResult
	if os.Geteuid() != 0 {
		p.Detail = "the daemon does not run as root: cannot read as another user"
		return p
	}
	secret, public := filepath.Join(dir, me+".secret"), filepath.Join(dir, me+".public")
	if err := writeFileSync(secret, []byte("secret\n"), 0o600); err != nil {
		p.Detail = "write a 0600 file as root: " + err.Error()
		return p
	}
	if err := writeFileSync(public, []byte("public\n"), 0o644); err != nil {
		p.Detail = "write a 0644 file as root: " + err.Error()
		return p
	}
	uid, gid := nobody()
	serr := readAs(ctx, uid, gid, secret)
	perr := readAs(ctx, uid, gid, public)
	p.SecretRefused = serr != nil
	p.PublicReadable = perr == nil
	switch {
	case !p.SecretRefused:
		p.Detail = fmt.Sprintf("uid %d read root's 0600 file %s: the mount does not enforce permissions", uid, secret)
	case !p.PublicReadable:
		p.Detail = fmt.Sprintf("uid %d cannot read a 0644 file either (%v): make the mount and its parent directories searchable by every user", uid, perr)
	default:
		p.Detail = fmt.Sprintf("uid %d: 0600 refused (%v), 0644 read", uid, serr)
	}
	return p
}

func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return float64(ds[len(ds)/2]) / float64(time.Millisecond)
}

func (h *housekeeping) verifyMeasure(ctx context.Context, rel, dir, me string, size int64) (api.VerifyMeasures, error) {
	d := h.d
	if size <= 0 {
		size = defaultVerifySize
	}
	size = min(size, 1<<30)
	m := api.VerifyMeasures{Bytes: size}
	marker := rel + "/" + me
	var ds []time.Duration
	for range 21 {
		t := time.Now()
		if _, err := d.origin.Lstat(ctx, marker); err != nil {
			return m, fmt.Errorf("stat %s on the origin: %w", marker, err)
		}
		ds = append(ds, time.Since(t))
	}
	m.OriginStatMs = median(ds)
	ds = ds[:0]
	for i := range 21 {
		t := time.Now()
		_, err := os.Lstat(filepath.Join(dir, fmt.Sprintf("%s.absent-%d", me, i)))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return m, fmt.Errorf("lookup through the mount: %w", err)
		}
		ds = append(ds, time.Since(t))
	}
	m.MountStatMs = median(ds)

	// A test file written through the mount, read back from the origin, then from the cache.
	data := filepath.Join(dir, me+".data")
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	f, err := os.OpenFile(data, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return m, fmt.Errorf("write the test file through the mount: %w", err)
	}
	for off := int64(0); off < size && err == nil; off += int64(len(buf)) {
		_, err = f.Write(buf[:min(int64(len(buf)), size-off)])
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return m, fmt.Errorf("write the test file through the mount: %w", err)
	}
	name := rel + "/" + me + ".data"
	of, err := d.origin.Open(ctx, name, syscall.O_RDONLY)
	if err != nil {
		return m, fmt.Errorf("open the test file on the origin: %w", err)
	}
	t := time.Now()
	var n int64
	for n < size {
		k, err := of.ReadAt(ctx, buf, n)
		n += int64(k)
		if err != nil || k == 0 {
			break
		}
	}
	el := time.Since(t)
	of.Close()
	if el > 0 {
		m.OriginReadBps = float64(n) / el.Seconds()
	}
	if d.cache == nil {
		m.Note = "no cache (--no-cache)"
		return m, nil
	}
	if err := d.cache.Warm(ctx, name, func(cache.Progress) {}); err != nil {
		m.Note = "warm: " + err.Error()
		return m, nil
	}
	rf, err := os.Open(data)
	if err != nil {
		return m, fmt.Errorf("open the test file through the mount: %w", err)
	}
	defer rf.Close()
	_ = unix.Fadvise(int(rf.Fd()), 0, 0, unix.FADV_DONTNEED) // not from the kernel's page cache
	t = time.Now()
	n, _ = io.CopyBuffer(io.Discard, rf, buf)
	if el := time.Since(t); el > 0 {
		m.CacheReadBps = float64(n) / el.Seconds()
	}
	if strings.HasPrefix(d.origin.String(), "/") {
		m.Note = "a local origin's reads come from the host's page cache"
	}
	return m, nil
}
