package envs

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/eddy-cluster/eddy/internal/ctxio"
)

// Directories on the share that hold environments, eddy's first.
const (
	Dir       = "containers"
	KohakuDir = "kohakuriver-containers"
)

// Sources, in the order they are searched.
var sources = []struct{ dir, name string }{{Dir, "eddy"}, {KohakuDir, "kohakuriver"}}

// LeaseTTL is how long a lease file protects a version after it was last written (a node that
// crashed mid-import does not protect a version forever).
const LeaseTTL = time.Hour

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("environment not found")
	ErrInvalidName = errors.New("invalid environment name")
	ErrNotTarball  = errors.New("not an image tarball")
)

// Version is one tarball of an environment.
type Version struct {
	Env       string    `json:"env"`
	Path      string    `json:"path"`      // absolute path under the share
	Rel       string    `json:"rel"`       // path relative to the share
	Timestamp int64     `json:"timestamp"` // unix seconds from the file name
	Size      int64     `json:"size"`
	ModTime   time.Time `json:"mod_time"`
	Gzip      bool      `json:"gzip"`
	Source    string    `json:"source"` // "eddy" or "kohakuriver"
}

// Env is one environment with its versions, newest first.
type Env struct {
	Name     string    `json:"name"`
	Versions []Version `json:"versions"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name can be an environment name.
func ValidName(name string) bool { return nameRE.MatchString(name) && !strings.Contains(name, "..") }

// parseFile returns the timestamp and gzip flag of "<env>_<ts>.tar", ".tar.gz" or ".tgz".
func parseFile(env, file string) (ts int64, gz bool, ok bool) {
	rest, ok := strings.CutPrefix(file, env+"_")
	if !ok {
		return 0, false, false
	}
	switch {
	case strings.HasSuffix(rest, ".tar.gz"):
		rest, gz = strings.TrimSuffix(rest, ".tar.gz"), true
	case strings.HasSuffix(rest, ".tgz"):
		rest, gz = strings.TrimSuffix(rest, ".tgz"), true
	case strings.HasSuffix(rest, ".tar"):
		rest = strings.TrimSuffix(rest, ".tar")
	default:
		return 0, false, false
	}
	if rest == "" || strings.TrimLeft(rest, "0123456789") != "" {
		return 0, false, false
	}
	ts, err := strconv.ParseInt(rest, 10, 64)
	return ts, gz, err == nil
}

// Versions lists the versions of one environment, newest first (by the name's timestamp;
// eddy's directory wins a tie).
func Versions(share, name string) ([]Version, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("envs: %q: %w", name, ErrInvalidName)
	}
	var out []Version
	for si, src := range sources {
		dir := filepath.Join(share, src.dir, name)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("envs: list %s: %w", dir, err)
		}
		for _, e := range ents {
			ts, gz, ok := parseFile(name, e.Name())
			if !ok || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			out = append(out, Version{Env: name, Path: filepath.Join(dir, e.Name()),
				Rel: filepath.Join(src.dir, name, e.Name()), Timestamp: ts, Size: fi.Size(),
				ModTime: fi.ModTime(), Gzip: gz, Source: sources[si].name})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Timestamp > out[j].Timestamp })
	return out, nil
}

// Newest returns the newest version of an environment.
func Newest(share, name string) (Version, error) {
	vs, err := Versions(share, name)
	if err != nil {
		return Version{}, err
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("envs: %q under %s: %w", name, share, ErrNotFound)
	}
	return vs[0], nil
}

// Lookup returns one version of an environment by its path relative to the share (as in
// Version.Rel): <containers or kohakuriver-containers>/<name>/<name>_<ts>.tar[.gz]. A path of
// another shape is ErrInvalidName; a file that is not there (pruned) is ErrNotFound.
func Lookup(share, name, rel string) (Version, error) {
	if !ValidName(name) {
		return Version{}, fmt.Errorf("envs: %q: %w", name, ErrInvalidName)
	}
	clean := filepath.ToSlash(filepath.Clean(rel))
	parts := strings.Split(clean, "/")
	for _, src := range sources {
		if len(parts) != 3 || parts[0] != src.dir || parts[1] != name {
			continue
		}
		ts, gz, ok := parseFile(name, parts[2])
		if !ok {
			break
		}
		p := filepath.Join(share, src.dir, name, parts[2])
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return Version{}, fmt.Errorf("envs: %s: %w", clean, ErrNotFound)
		}
		if err != nil {
			return Version{}, fmt.Errorf("envs: %s: %w", clean, err)
		}
		if !fi.Mode().IsRegular() {
			return Version{}, fmt.Errorf("envs: %s: not a regular file: %w", clean, ErrNotTarball)
		}
		return Version{Env: name, Path: p, Rel: filepath.Join(src.dir, name, parts[2]), Timestamp: ts, Size: fi.Size(),
			ModTime: fi.ModTime(), Gzip: gz, Source: src.name}, nil
	}
	return Version{}, fmt.Errorf("envs: %q is not a version of %q (want %s/%s/%s_<unix-ts>.tar): %w", rel, name, Dir, name, name, ErrInvalidName)
}

// List returns every environment on the share, sorted by name.
func List(share string) ([]Env, error) {
	names := map[string]bool{}
	for _, src := range sources {
		ents, err := os.ReadDir(filepath.Join(share, src.dir))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("envs: list: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() && ValidName(e.Name()) {
				names[e.Name()] = true
			}
		}
	}
	var out []Env
	for n := range names {
		vs, err := Versions(share, n)
		if err != nil {
			return nil, err
		}
		if len(vs) > 0 {
			out = append(out, Env{Name: n, Versions: vs})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Import copies the tarball at src into the share as a new version of name. See ImportReader.
func Import(ctx context.Context, share, name, src string, now time.Time) (Version, error) {
	f, err := os.Open(src)
	if err != nil {
		return Version{}, fmt.Errorf("envs: import: %w", err)
	}
	defer f.Close()
	return ImportReader(ctx, share, name, f, now)
}

// ImportReader writes a tarball (docker-archive or OCI layout, plain or gzipped) as a new
// version of name: containers/<name>/<name>_<ts>.tar[.gz] where ts is now's unix time, or one
// more than the newest existing version so the import is always the newest. The bytes go to a
// hidden temporary file in the same directory, are fsynced, and the file is renamed into place
// (never replacing an existing file), then the directory is fsynced: a reader sees the whole
// tarball or nothing.
func ImportReader(ctx context.Context, share, name string, r io.Reader, now time.Time) (Version, error) {
	op := "envs: import " + name
	if !ValidName(name) {
		return Version{}, fmt.Errorf("%s: %w", op, ErrInvalidName)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	gz, err := checkTarball(br)
	if err != nil {
		return Version{}, fmt.Errorf("%s: %w", op, err)
	}
	dir := filepath.Join(share, Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Version{}, fmt.Errorf("%s: %w", op, err)
	}
	tmp, err := os.CreateTemp(dir, "."+name+"_*.tmp")
	if err != nil {
		return Version{}, fmt.Errorf("%s: %w", op, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.CopyBuffer(tmp, ctxio.Reader(ctx, br), make([]byte, 1<<20)); err != nil {
		return Version{}, fmt.Errorf("%s: copy: %w", op, err)
	}
	if err := tmp.Sync(); err != nil {
		return Version{}, fmt.Errorf("%s: fsync: %w", op, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return Version{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := tmp.Close(); err != nil {
		return Version{}, fmt.Errorf("%s: close: %w", op, err)
	}
	if !gz {
		if err := checkTarEntries(tmp.Name()); err != nil {
			return Version{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	ts := now.Unix()
	if vs, err := Versions(share, name); err == nil && len(vs) > 0 && vs[0].Timestamp >= ts {
		ts = vs[0].Timestamp + 1
	}
	ext := ".tar"
	if gz {
		ext = ".tar.gz"
	}
	var final string
	for i := 0; ; i++ {
		final = filepath.Join(dir, fmt.Sprintf("%s_%d%s", name, ts, ext))
		err = renameNoReplace(tmp.Name(), final)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i > 100 {
			return Version{}, fmt.Errorf("%s: rename: %w", op, err)
		}
		ts++ // another import took this second
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	fi, err := os.Stat(final)
	if err != nil {
		return Version{}, fmt.Errorf("%s: %w", op, err)
	}
	return Version{Env: name, Path: final, Rel: filepath.Join(Dir, name, filepath.Base(final)), Timestamp: ts,
		Size: fi.Size(), ModTime: fi.ModTime(), Gzip: gz, Source: "eddy"}, nil
}

// renameNoReplace renames without replacing an existing target (RENAME_NOREPLACE; where the
// file system lacks it, a check then rename).
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fs.ErrExist
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
		if _, serr := os.Lstat(to); serr == nil {
			return fs.ErrExist
		}
		return os.Rename(from, to)
	default:
		return err
	}
}

// checkTarball peeks at the start: gzip magic, or a valid first tar header.
func checkTarball(br *bufio.Reader) (gz bool, err error) {
	head, err := br.Peek(512)
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, zerr := gzip.NewReader(strings.NewReader(string(head)))
		if zerr != nil {
			return false, fmt.Errorf("%w: bad gzip header: %v", ErrNotTarball, zerr)
		}
		zr.Close()
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: too short", ErrNotTarball)
	}
	if _, err := tar.NewReader(strings.NewReader(string(head))).Next(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("%w: %v", ErrNotTarball, err)
	}
	return false, nil
}

// checkTarEntries walks the tar headers (seeking over contents) and wants manifest.json
// (docker-archive) or index.json (OCI layout).
func checkTarEntries(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: no manifest.json (docker-archive) or index.json (OCI layout)", ErrNotTarball)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNotTarball, err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "manifest.json", "index.json":
			return nil
		}
	}
}

// Lease marks a version as being loaded by holder (a node or task) until release is called:
// a hidden file next to the tarball that Prune on any node respects for LeaseTTL.
func Lease(v Version, holder string) (release func(), err error) {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, holder)
	p := filepath.Join(filepath.Dir(v.Path), "."+filepath.Base(v.Path)+".lease."+safe)
	if err := os.WriteFile(p, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return func() {}, fmt.Errorf("envs: lease %s: %w", v.Rel, err)
	}
	return func() { os.Remove(p) }, nil
}

func leased(v Version, now time.Time) bool {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(v.Path), "."+globEscape(filepath.Base(v.Path))+".lease.*"))
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && now.Sub(fi.ModTime()) < LeaseTTL {
			return true
		}
	}
	return false
}

func globEscape(s string) string {
	return strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`).Replace(s)
}

// PruneOptions says what Prune may remove.
type PruneOptions struct {
	Keep  int           // newest versions kept per environment (at least 1)
	Grace time.Duration // versions written, or superseded, less than this ago are kept
	// InUse reports whether a running or queued task uses the tarball at path (absolute).
	InUse  func(path string) bool
	Only   string // prune only this environment when set
	DryRun bool
	Now    time.Time // zero: time.Now()
}

// Kept is a version Prune left although it was old enough to go, and why.
type Kept struct {
	Version
	Reason string `json:"reason"`
}

// PruneReport lists what Prune removed and what it kept on purpose.
type PruneReport struct {
	Removed []Version `json:"removed"`
	Kept    []Kept    `json:"kept"`
	Freed   int64     `json:"freed_bytes"`
}

// Prune removes old versions: per environment it keeps the newest Keep, and any older one
// that is in use (InUse), leased by a node loading it, written less than Grace ago, or whose
// successor was written less than Grace ago (a node may have picked it as the newest just
// before). Abandoned temporary files of failed imports older than Grace go too.
func Prune(ctx context.Context, share string, opt PruneOptions) (PruneReport, error) {
	var rep PruneReport
	if opt.Keep < 1 {
		opt.Keep = 1
	}
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	envs, err := List(share)
	if err != nil {
		return rep, err
	}
	for _, e := range envs {
		if opt.Only != "" && e.Name != opt.Only {
			continue
		}
		for i, v := range e.Versions {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if i < opt.Keep {
				continue
			}
			reason := ""
			switch {
			case opt.InUse != nil && opt.InUse(v.Path):
				reason = "in use by a task"
			case leased(v, now):
				reason = "being loaded by a node"
			case now.Sub(v.ModTime) < opt.Grace:
				reason = "written within the grace period"
			case now.Sub(e.Versions[i-1].ModTime) < opt.Grace:
				reason = "superseded within the grace period"
			}
			if reason != "" {
				rep.Kept = append(rep.Kept, Kept{Version: v, Reason: reason})
				continue
			}
			if !opt.DryRun {
				if err := os.Remove(v.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return rep, fmt.Errorf("envs: prune %s: %w", v.Rel, err)
				}
			}
			rep.Removed = append(rep.Removed, v)
			rep.Freed += v.Size
		}
		if !opt.DryRun {
			tmps, _ := filepath.Glob(filepath.Join(share, Dir, globEscape(e.Name), "."+globEscape(e.Name)+"_*.tmp"))
			for _, p := range tmps {
				if fi, err := os.Stat(p); err == nil && now.Sub(fi.ModTime()) > max(opt.Grace, LeaseTTL) {
					os.Remove(p)
				}
			}
		}
	}
	return rep, nil
}
