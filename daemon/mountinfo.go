package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	Mountpoint string
	FSType     string
	Source     string
}

// Mounts lists the mounts of this process's mount namespace.
func Mounts() ([]MountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	var out []MountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, MountEntry{
			Mountpoint: unescapeMountinfo(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescapeMountinfo(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountAt returns the topmost mount whose mountpoint is exactly dir, if any.
func MountAt(dir string) (MountEntry, bool, error) {
	dir = filepath.Clean(dir)
	ms, err := Mounts()
	if err != nil {
		return MountEntry{}, false, err
	}
	var found MountEntry
	ok := false
	for _, m := range ms {
		if m.Mountpoint == dir {
			found, ok = m, true // later lines are mounted on top
		}
	}
	return found, ok, nil
}

// IsStale reports whether dir is a FUSE mount whose daemon is gone
// ("transport endpoint is not connected"). The kernel may answer stat of the
// mountpoint from its attribute cache for a while after the daemon died, so
// a FUSE mountpoint is also opened and read, which needs the daemon; a mount
// whose daemon does not answer within two seconds counts as in use.
func IsStale(dir string) bool {
	_, err := os.Stat(dir)
	if errors.Is(err, syscall.ENOTCONN) {
		return true
	}
	if err != nil {
		return false
	}
	m, ok, err := MountAt(dir)
	if err != nil || !ok || !strings.HasPrefix(m.FSType, "fuse") {
		return false
	}
	res := make(chan error, 1)
	go func() {
		f, err := os.Open(dir)
		if err == nil {
			_, err = f.Readdirnames(1)
			f.Close()
		}
		res <- err
	}()
	select {
	case err := <-res:
		return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
	case <-time.After(2 * time.Second):
		return false
	}
}

// CleanStale lazily unmounts a stale FUSE mount at dir (left by a daemon
// that was killed). It reports whether there was one.
func CleanStale(dir string) (bool, error) {
	cleaned := false
	for i := 0; i < 8 && IsStale(dir); i++ { // mounts may be stacked
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return cleaned, fmt.Errorf("unmount stale mount %s: %w", dir, err)
		}
		cleaned = true
	}
	return cleaned, nil
}

// WaitMounted waits until dir is a mountpoint of type fstype prefix
// (e.g. "fuse"), or the deadline passes.
func WaitMounted(dir, fstypePrefix string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m, ok, err := MountAt(dir)
		if err == nil && ok && strings.HasPrefix(m.FSType, fstypePrefix) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not mounted after %s", dir, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
