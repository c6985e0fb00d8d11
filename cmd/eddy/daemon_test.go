package main

import (
	"os"
	"path/filepath"
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
