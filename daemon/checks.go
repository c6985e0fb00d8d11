package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/eddy-cluster/eddy/origin"
)

// isURL reports whether an --origin value is a URL rather than a path.
func isURL(spec string) bool { return origin.IsURL(spec) }

func checkGlob(g string) error {
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("glob %q: %w", g, err)
	}
	return nil
}

// checkFuse fails with a clear message when the kernel's FUSE device is missing.
func checkFuse() error {
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		return fmt.Errorf("no /dev/fuse: load the fuse module (modprobe fuse), or give the container --device /dev/fuse")
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("/dev/fuse is not a character device")
	}
	return nil
}

// checkOriginDir checks a path origin: it must exist and be a directory.
func checkOriginDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("origin %s: no such directory", dir)
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("origin %s: transport endpoint is not connected (a stale mount; unmount it first)", dir)
	case err != nil:
		return fmt.Errorf("origin %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("origin %s: not a directory", dir)
	}
	return nil
}

// prepareMountpoint cleans a stale mount left by a crashed daemon, creates
// the mountpoint if needed, and refuses one that is in use.
func prepareMountpoint(dir string, logf func(msg string, args ...any)) error {
	cleaned, err := CleanStale(dir)
	if err != nil {
		return err
	}
	if cleaned {
		logf("cleaned up a stale mount left by a previous daemon", "mount", dir)
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create mountpoint %s: %w", dir, err)
		}
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("mountpoint %s: not a directory", dir)
	}
	m, ok, err := MountAt(dir)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("mountpoint %s is in use (%s from %s is mounted there); unmount it or choose another --mount", dir, m.FSType, m.Source)
	}
	return nil
}

// resolvePath makes p absolute and resolves the symlinks of its longest
// existing prefix, so containment checks compare real locations.
func resolvePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	cur := abs
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// within reports whether p is dir or lies beneath it (both clean, absolute).
func within(p, dir string) bool {
	if p == dir {
		return true
	}
	if dir == "/" {
		return true
	}
	return strings.HasPrefix(p, dir+"/")
}

// checkLayout refuses layouts that would loop: the cache dir inside the mount
// or the origin, the mount inside the origin or the origin inside the mount.
// originDir is "" for URL origins.
func checkLayout(originDir, mount, cacheDir string) error {
	if mount == "/" {
		return fmt.Errorf("mountpoint / is not allowed")
	}
	if originDir != "" {
		switch {
		case within(mount, originDir):
			return fmt.Errorf("mountpoint %s is inside the origin %s; choose a mountpoint outside it", mount, originDir)
		case within(originDir, mount):
			return fmt.Errorf("origin %s is inside the mountpoint %s; choose a mountpoint outside it", originDir, mount)
		}
	}
	if cacheDir != "" {
		switch {
		case within(cacheDir, mount):
			return fmt.Errorf("cache dir %s is inside the mount %s; put it on local disk outside the mount", cacheDir, mount)
		case originDir != "" && within(cacheDir, originDir):
			return fmt.Errorf("cache dir %s is inside the origin %s; put it on local disk outside the share", cacheDir, originDir)
		case within(mount, cacheDir):
			return fmt.Errorf("mountpoint %s is inside the cache dir %s", mount, cacheDir)
		}
	}
	return nil
}
