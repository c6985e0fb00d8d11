package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/daemon"
)

// scopeConfig reads the daemon's flags about tasks' scopes and root's tasks into cfg.
func scopeConfig(c *cli.Context, cfg *daemon.Config) error {
	cfg.AllowRootTasks = c.Bool("allow-root-tasks")
	for _, f := range []struct {
		flag string
		dst  *string
	}{{"shared-data-dir", &cfg.SharedDataDir}, {"users-dir", &cfg.UsersDir}, {"jobs-dir", &cfg.JobsDir}} {
		v := c.String(f.flag)
		if err := checkScopeName(v); err != nil {
			return fmt.Errorf("--%s %q: %w", f.flag, v, err)
		}
		*f.dst = v
	}
	mode, err := strconv.ParseUint(c.String("user-dir-mode"), 8, 32)
	if err != nil || mode > 0o777 || mode&0o700 != 0o700 {
		return fmt.Errorf("--user-dir-mode %q: want an octal mode the user has rwx in, such as 0700 or 0750", c.String("user-dir-mode"))
	}
	cfg.UserDirMode = uint32(mode)
	cfg.ScratchDir = c.String("scratch-dir")
	if cfg.ScratchDir != "" && !filepath.IsAbs(cfg.ScratchDir) {
		return fmt.Errorf("--scratch-dir %q: want an absolute path on this node's own disk", cfg.ScratchDir)
	}
	for _, f := range []struct {
		flag string
		dst  *string
	}{{"shared-mount", &cfg.SharedMount}, {"user-mount", &cfg.UserMount}, {"job-mount", &cfg.JobMount}, {"scratch-mount", &cfg.ScratchMount}} {
		v := c.String(f.flag)
		if !filepath.IsAbs(v) || filepath.Clean(v) == "/" {
			return fmt.Errorf("--%s %q: want an absolute path inside the container, not /", f.flag, v)
		}
		*f.dst = filepath.Clean(v)
	}
	return nil
}

// checkScopeName accepts a directory name under the share's root: one or more plain path
// elements (no "..", not absolute).
func checkScopeName(v string) error {
	if v == "" || filepath.IsAbs(v) || filepath.Clean(v) != v || v == "." || strings.HasPrefix(v, "../") || v == ".." {
		return fmt.Errorf("want a directory name under the share's root, such as jobs")
	}
	return nil
}
