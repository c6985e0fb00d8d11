package main

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/daemon"
)

// parseDaemon runs `eddy daemon ARGS` up to the point where the flags, EDDY_* variables and
// the TOML file have become a daemon.Config.
func parseDaemon(t *testing.T, args ...string) daemon.Config {
	t.Helper()
	cmd := daemonCommand()
	var cfg daemon.Config
	cmd.Action = func(c *cli.Context) error {
		var err error
		cfg, err = daemonConfig(c)
		return err
	}
	app := &cli.App{Name: "eddy", Commands: []*cli.Command{cmd}}
	if err := app.Run(append([]string{"eddy", "daemon"}, args...)); err != nil {
		t.Fatalf("eddy daemon %v: %v", args, err)
	}
	return cfg
}

func TestDaemonContainerdOptions(t *testing.T) {
	if cfg := parseDaemon(t); cfg.ContainerdSocket != "" || cfg.ContainerdDir != "" {
		t.Fatalf("defaults: socket %q dir %q", cfg.ContainerdSocket, cfg.ContainerdDir)
	}
	conf := filepath.Join(t.TempDir(), "eddy.toml")
	if err := os.WriteFile(conf, []byte("containerd-dir = \"/toml/ctd\"\ncontainerd-socket = \"/toml/ctd.sock\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg := parseDaemon(t, "--config", conf); cfg.ContainerdDir != "/toml/ctd" || cfg.ContainerdSocket != "/toml/ctd.sock" {
		t.Fatalf("from the file: %+v", cfg)
	}
	t.Setenv("EDDY_CONTAINERD_DIR", "/env/ctd")
	cfg := parseDaemon(t, "--config", conf, "--containerd-socket", "/flag/ctd.sock")
	if cfg.ContainerdDir != "/env/ctd" || cfg.ContainerdSocket != "/flag/ctd.sock" {
		t.Fatalf("precedence flag > EDDY_* > file: dir %q socket %q", cfg.ContainerdDir, cfg.ContainerdSocket)
	}
}

// TestServiceUnit checks scripts/eddy.service with systemd's own parser and the daemon's
// flags: no unknown or malformed setting, KillMode=process (tasks outlive a restart), and an
// ExecStart the daemon command accepts.
func TestServiceUnit(t *testing.T) {
	unit, err := os.ReadFile("../../scripts/eddy.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec []string
	settings := map[string]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && !strings.HasPrefix(line, "#") {
			settings[k] = v
		}
		if k == "ExecStart" {
			exec = strings.Fields(v)
		}
	}
	if settings["KillMode"] != "process" {
		t.Errorf("KillMode=%q: a restart would kill the tasks' shims (want process)", settings["KillMode"])
	}
	if _, ok := settings["RuntimeDirectory"]; ok {
		t.Error("RuntimeDirectory is removed at stop, with the task state of a --no-cache daemon in it")
	}
	if len(exec) < 2 || exec[0] != "/usr/local/bin/eddy" || exec[1] != "daemon" {
		t.Fatalf("ExecStart %v: want /usr/local/bin/eddy daemon ...", exec)
	}
	// The daemon parses ExecStart's flags, with a config file like the one the unit names.
	dir := t.TempDir()
	toml := filepath.Join(dir, "eddy.toml")
	if err := os.WriteFile(toml, []byte(fmt.Sprintf("origin = %q\nmount = %q\ncache-dir = %q\n",
		dir, filepath.Join(dir, "mnt"), filepath.Join(dir, "cache"))), 0o644); err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(exec[2:])
	for i, a := range args {
		if a == "/etc/eddy.toml" {
			args[i] = toml
		}
	}
	if cfg := parseDaemon(t, args...); cfg.Mount != filepath.Join(dir, "mnt") {
		t.Fatalf("config from ExecStart: mount %q", cfg.Mount)
	}

	sa, err := osexec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// verify needs ExecStart's binary to exist: point it at an executable of the test's.
	bin := filepath.Join(dir, "eddy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "eddy.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/eddy", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := osexec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "eddy.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
