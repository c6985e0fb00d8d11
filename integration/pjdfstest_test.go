package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eddy-cluster/eddy/bench/topo"
)

// POSIX conformance: the pjdfstest suite (vendored in third_party/pjdfstest,
// built by scripts/pjdfstest-build.sh) runs in a fresh directory of an eddy
// mount and in a fresh directory of the origin itself; eddy must pass every
// test the origin passes, except the expected failures below.

// pjdfstestExpected lists, per origin kind, the exact tests ("file.t:N", N
// as pjdfstest numbers them) eddy is expected to fail although the origin's
// own file system passes them, each with the reason. Only limits of the
// origin's protocol or server belong here, never eddy bugs. An entry that
// passes is reported (t.Log) so the list can be trimmed; it does not fail.
var pjdfstestExpected = map[string]map[string]string{
	"path": {},
	"nfs": {
		"utimensat/05.t:7":  "the server (nfs-ganesha VFS) ignores SETATTR of times on a symlink: a symlink's own atime (AT_SYMLINK_NOFOLLOW) is not set",
		"utimensat/05.t:8":  "the server (nfs-ganesha VFS) ignores SETATTR of times on a symlink: a symlink's own mtime (AT_SYMLINK_NOFOLLOW) is not set",
		"utimensat/05.t:13": "the server (nfs-ganesha VFS) ignores SETATTR of times on a symlink: the symlink's mtime set earlier is not there",
		"utimensat/09.t:5":  "NFSv3 times are unsigned 32-bit seconds (nfstime3): an mtime of 2^32 (year 2106) cannot be stored",
	},
}

const (
	// pjdfstestJobs is how many .t files run at once per suite run (four runs
	// go at once: the tests mostly sleep to see ctime move).
	pjdfstestJobs = 4
	// pjdfstestFileTimeout bounds one .t file (each takes seconds).
	pjdfstestFileTimeout = 5 * time.Minute
)

func TestPjdfstest(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole POSIX suite four times (a few minutes)")
	}
	needFUSE(t)
	dest := pjdfstestTool(t)
	t.Run("path", func(t *testing.T) {
		t.Parallel()
		n := newNode(t, "")
		n.start()
		pjdfstestCompare(t, "path", dest, n.mnt("pjd-eddy"), n.org("pjd-origin"))
	})
	t.Run("nfs", func(t *testing.T) {
		t.Parallel()
		env := fltNFS(t, topo.Unshaped)
		n := fltNode(t, env)
		n.start()
		pjdfstestCompare(t, "nfs", dest, n.mnt("pjd-eddy"), env.org("pjd-origin"))
	})
}

var (
	pjdfstestOnce sync.Once
	pjdfstestDest string
	pjdfstestErr  error
)

// pjdfstestTool builds pjdfstest (once per process; the script does nothing
// when the build is current) and returns its directory. The Makefile builds
// it before the tests and names it in EDDY_PJDFSTEST: then a failed build
// fails the test. Run by hand without it, the test skips when the tool
// cannot be built (no compiler and no way to install one).
func pjdfstestTool(t *testing.T) string {
	t.Helper()
	env := os.Getenv("EDDY_PJDFSTEST")
	pjdfstestOnce.Do(func() {
		script, err := filepath.Abs("../scripts/pjdfstest-build.sh")
		if err != nil {
			pjdfstestErr = err
			return
		}
		args := []string{}
		if env != "" {
			args = append(args, env)
		}
		var stderr bytes.Buffer
		cmd := exec.Command(script, args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			pjdfstestErr = fmt.Errorf("%s: %v\n%s", script, err, strings.TrimSpace(stderr.String()))
			return
		}
		bin := strings.TrimSpace(string(out))
		if i := strings.LastIndexByte(bin, '\n'); i >= 0 {
			bin = bin[i+1:]
		}
		pjdfstestDest = filepath.Dir(bin)
		if _, err := os.Stat(filepath.Join(pjdfstestDest, "tests", "conf")); err != nil {
			pjdfstestErr = fmt.Errorf("%s built %s but no tests beside it: %v", script, bin, err)
		}
	})
	if pjdfstestErr != nil {
		if env != "" {
			t.Fatalf("pjdfstest (EDDY_PJDFSTEST=%s): %v", env, pjdfstestErr)
		}
		t.Skipf("pjdfstest cannot be built here: %v", pjdfstestErr)
	}
	return pjdfstestDest
}

// pjdfstestCompare runs the suite in eddyDir (in the mount) and originDir
// (in the origin, outside the mount) at the same time and fails t for every
// test eddy fails that the origin passes, unless expected for kind.
func pjdfstestCompare(t *testing.T, kind, dest, eddyDir, originDir string) {
	start := time.Now()
	if err := os.MkdirAll(originDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dfDir := pjdfstestDf(t, originDir)
	var eddyRes, originRes *pjdSuite
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); eddyRes = pjdfstestRun(dest, eddyDir, dfDir) }()
	go func() { defer wg.Done(); originRes = pjdfstestRun(dest, originDir, "") }()
	wg.Wait()
	for _, r := range []*pjdSuite{eddyRes, originRes} {
		if r.err != nil {
			t.Fatalf("pjdfstest in %s: %v", r.dir, r.err)
		}
	}
	t.Logf("pjdfstest %s: eddy   %s", kind, eddyRes.summary())
	t.Logf("pjdfstest %s: origin %s", kind, originRes.summary())
	t.Logf("pjdfstest %s: both runs took %s", kind, time.Since(start).Round(time.Second))
	if originRes.tests == 0 {
		t.Fatalf("pjdfstest ran no tests on the origin:\n%s", originRes.report(originRes.failures()))
	}

	// A file planning fewer tests through eddy is not compared in full: say
	// which (pjdfstestDf makes both runs see the same file system type).
	planned := map[string]int{}
	for _, f := range originRes.files {
		planned[f.name] = f.planned
	}
	var fewer []string
	for _, f := range eddyRes.files {
		if f.planned < planned[f.name] {
			fewer = append(fewer, fmt.Sprintf("%s (%d of %d)", f.name, f.planned, planned[f.name]))
		}
	}
	if len(fewer) > 0 {
		t.Logf("planned fewer tests through eddy than on the origin: %s", strings.Join(fewer, ", "))
	}

	expected := pjdfstestExpected[kind]
	eddyFails := eddyRes.failures()
	originFails := originRes.failures()
	var unexpected, known, both []string
	for _, k := range sortedKeys(eddyFails) {
		switch {
		case originFails[k] != "":
			both = append(both, k)
		case expected[k] != "":
			known = append(known, k)
		default:
			unexpected = append(unexpected, k)
		}
	}
	for _, k := range sortedKeys(originFails) {
		if eddyFails[k] == "" {
			t.Logf("fails on the origin but passes through eddy: %s: %s", k, originFails[k])
		}
	}
	if len(both) > 0 {
		t.Logf("fail on the origin too (not counted): %s", strings.Join(both, " "))
	}
	if len(known) > 0 {
		m := map[string]string{}
		for _, k := range known {
			m[k] = eddyFails[k]
		}
		t.Logf("expected failures over %s (%d):\n%s", kind, len(known), eddyRes.report(m))
	}
	for _, k := range sortedKeys(expected) {
		if eddyFails[k] == "" {
			t.Logf("expected failure %s passes now (or is not run): trim pjdfstestExpected[%q] (%s)", k, kind, expected[k])
		}
	}
	if len(unexpected) > 0 {
		m := map[string]string{}
		for _, k := range unexpected {
			m[k] = eddyFails[k]
		}
		t.Errorf("eddy over %s fails %d pjdfstest tests the origin passes (run one again: cd %s && prove -v %s/tests/FILE):\n%s",
			kind, len(unexpected), eddyDir, dest, eddyRes.report(m))
	}
}

// pjdfstestDf returns a directory with a df for the eddy run's PATH that
// reports, for a FUSE mount, the type of the file system under originDir.
// The suite takes the type from `df -PT .` and adapts its checks to it (it
// checks that rename updates ctime only on file systems known to, ext4
// among them): through the mount it would see fuse and check less than on
// the origin, so eddy would not be held to what the origin does.
func pjdfstestDf(t *testing.T, originDir string) string {
	t.Helper()
	df, err := exec.LookPath("df")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(df, "-PT", originDir).Output()
	if err != nil {
		t.Fatalf("df -PT %s: %v", originDir, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(lines) < 2 || len(fields) < 2 {
		t.Fatalf("df -PT %s: cannot parse %q", originDir, out)
	}
	fsType := fields[1]
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\n# The origin's file system type for pjdfstest's conf, in place of fuse.\n"+
		"%s \"$@\" | awk -v t=%s 'NR > 1 && $2 ~ /^fuse/ { $2 = t } { print }'\n", df, fsType)
	if err := os.WriteFile(filepath.Join(dir, "df"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pjdSuite is one run of the whole suite in dir.
type pjdSuite struct {
	dir   string
	files []*pjdFile
	tests int // tests planned, over all files
	wall  time.Duration
	err   error // the run could not be done at all
}

// pjdFile is one .t file's TAP result.
type pjdFile struct {
	name    string         // relative to tests/, e.g. "open/26.t"
	planned int            // from the "1..N" line (0: no plan)
	failed  map[int]string // test number -> the "not ok" line or why it counts as failed
	exitErr error
	output  string
}

// pjdfstestRun runs every .t file under dest/tests in its own directory
// under dir; pathDir, if set, goes first in their PATH.
func pjdfstestRun(dest, dir, pathDir string) *pjdSuite {
	s := &pjdSuite{dir: dir}
	start := time.Now()
	defer func() { s.wall = time.Since(start) }()
	// Every ancestor searchable: tests switch to other uids (most work relative
	// to their cwd, but not all).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.err = err
		return s
	}
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(d, fi.Mode().Perm()|0o055)
		}
	}
	tests := filepath.Join(dest, "tests")
	var names []string
	err := filepath.WalkDir(tests, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".t") {
			rel, _ := filepath.Rel(tests, p)
			names = append(names, rel)
		}
		return err
	})
	if err != nil || len(names) == 0 {
		s.err = fmt.Errorf("no .t files under %s: %v", tests, err)
		return s
	}
	sort.Strings(names)
	env := os.Environ()
	if pathDir != "" {
		env = append(env, "PATH="+pathDir+":"+os.Getenv("PATH"))
	}
	s.files = make([]*pjdFile, len(names))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < pjdfstestJobs; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s.files[i] = pjdfstestFile(tests, names[i], dir, env)
			}
		}()
	}
	for i := range names {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, f := range s.files {
		s.tests += f.planned
	}
	return s
}

var (
	tapPlan = regexp.MustCompile(`^1\.\.(\d+)`)
	tapTest = regexp.MustCompile(`^(not )?ok (\d+)\b(.*)$`)
)

// pjdfstestFile runs one .t file (as prove does: the shell script, with its
// own fresh cwd under dir) and parses its TAP output. A "not ok" marked TODO
// is upstream's known failure and counts as a pass; a test planned but not
// run, a missing plan or a non-zero exit counts as failed.
func pjdfstestFile(tests, name, dir string, env []string) *pjdFile {
	f := &pjdFile{name: name, failed: map[int]string{}}
	cwd := filepath.Join(dir, strings.NewReplacer("/", "_", ".t", "").Replace(name))
	if err := os.Mkdir(cwd, 0o755); err != nil {
		f.failed[0] = fmt.Sprintf("mkdir cwd: %v", err)
		return f
	}
	ctx, cancel := context.WithTimeout(context.Background(), pjdfstestFileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", filepath.Join(tests, name))
	cmd.Dir = cwd
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	f.exitErr = cmd.Run()
	if ctx.Err() != nil {
		f.exitErr = fmt.Errorf("timed out after %s", pjdfstestFileTimeout)
	}
	f.output = out.String()

	seen := map[int]bool{}
	sc := bufio.NewScanner(strings.NewReader(f.output))
	for sc.Scan() {
		line := sc.Text()
		if m := tapPlan.FindStringSubmatch(line); m != nil && f.planned == 0 {
			f.planned, _ = strconv.Atoi(m[1])
			continue
		}
		m := tapTest.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		num, _ := strconv.Atoi(m[2])
		seen[num] = true
		if m[1] != "" && !strings.Contains(m[3], "# TODO") {
			f.failed[num] = line
		}
	}
	if f.planned == 0 {
		f.failed[0] = "no TAP plan"
	}
	for i := 1; i <= f.planned; i++ {
		if !seen[i] {
			f.failed[i] = fmt.Sprintf("not run (planned %d)", f.planned)
		}
	}
	if f.exitErr != nil {
		var ee *exec.ExitError
		if errors.As(f.exitErr, &ee) && len(f.failed) > 0 {
			// The failures say it already.
		} else {
			f.failed[0] = fmt.Sprintf("exit: %v", f.exitErr)
		}
	}
	return f
}

// failures maps "file.t:N" to the reason, for every failed test.
func (s *pjdSuite) failures() map[string]string {
	m := map[string]string{}
	for _, f := range s.files {
		for n, why := range f.failed {
			m[fmt.Sprintf("%s:%d", f.name, n)] = why
		}
	}
	return m
}

func (s *pjdSuite) summary() string {
	failed := s.failures()
	files := map[string]bool{}
	for k := range failed {
		files[k[:strings.LastIndexByte(k, ':')]] = true
	}
	return fmt.Sprintf("files=%d tests=%d failed=%d (in %d files) wall=%s%s", len(s.files), s.tests,
		len(failed), len(files), s.wall.Round(time.Second), pjdfstestList(failed))
}

// report prints the failures in keys, grouped by file, with each file's
// failing lines.
func (s *pjdSuite) report(keys map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(keys) {
		fmt.Fprintf(&b, "  %s: %s\n", k, keys[k])
	}
	return b.String()
}

// pjdfstestList formats failures as " [open/26.t: 2,4,6; ...]" (prove's
// "Failed tests" per file), or "" when there are none.
func pjdfstestList(failed map[string]string) string {
	if len(failed) == 0 {
		return ""
	}
	byFile := map[string][]int{}
	for k := range failed {
		i := strings.LastIndexByte(k, ':')
		n, _ := strconv.Atoi(k[i+1:])
		byFile[k[:i]] = append(byFile[k[:i]], n)
	}
	var parts []string
	for _, file := range sortedKeys(byFile) {
		nums := byFile[file]
		sort.Ints(nums)
		s := make([]string, len(nums))
		for i, n := range nums {
			s[i] = strconv.Itoa(n)
		}
		parts = append(parts, file+": "+strings.Join(s, ","))
	}
	return " [" + strings.Join(parts, "; ") + "]"
}

// sortedKeys returns m's keys in order, "file.t:N" keys by file, then by N.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	split := func(k string) (string, int) {
		i := strings.LastIndexByte(k, ':')
		if i < 0 {
			return k, 0
		}
		n, err := strconv.Atoi(k[i+1:])
		if err != nil {
			return k, 0
		}
		return k[:i], n
	}
	sort.Slice(keys, func(i, j int) bool {
		fi, ni := split(keys[i])
		fj, nj := split(keys[j])
		if fi != fj {
			return fi < fj
		}
		return ni < nj
	})
	return keys
}
