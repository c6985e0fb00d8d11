package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/consistency"
	"github.com/eddy-cluster/eddy/daemon"
	"github.com/eddy-cluster/eddy/fusefs"
	"github.com/eddy-cluster/eddy/runtime"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(daemonCommand) }

// envName is the EDDY_* variable of a daemon flag.
func envName(flag string) []string {
	return []string{"EDDY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func daemonFlags() []cli.Flag {
	str := func(name, value, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: envName(name)}
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return &cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: envName(name)}
	}
	boolf := func(name, usage string) cli.Flag {
		return &cli.BoolFlag{Name: name, Usage: usage, EnvVars: envName(name)}
	}
	slice := func(name, usage string) cli.Flag {
		return &cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: envName(name)}
	}
	flags := []cli.Flag{
		str("origin", "", "the shared directory: a `PATH` (any POSIX dir: NFS/SSHFS/local) or a URL such as nfs://server/export (required)"),
		str("mount", "", "mount the cached view on `DIR` (required)"),
		str("cache-dir", "", "local cache directory (index and chunks), on local disk outside the share (required unless --no-cache)"),
		str("cache-size", fmt.Sprintf("%d%%", cache.DefaultMaxPercent), "cache quota: bytes with a unit (50G) or a percentage of the cache filesystem (20%)"),
		str("min-free", fmt.Sprintf("%d%%", cache.DefaultMinFreePercent), "keep this percentage of the cache filesystem free"),
		dur("revalidate", cache.DefaultRevalidate, "revalidate open files against the origin at least this often (always on open)"),
		str("chunk-size", fmt.Sprintf("%dM", cache.DefaultChunkSize>>20), "cache chunk size (64K-256M, multiple of 4K)"),
		slice("include", "cache only files matching this `GLOB` (repeatable; default: every regular file)"),
		slice("exclude", "never cache files matching this `GLOB` (repeatable)"),
		boolf("no-cache", "no local cache: plain origin-over-FUSE"),
		dur("offline-grace", 0, "while the origin is down, serve fully cached files validated within this window read-only (0: off)"),
		dur("origin-timeout", daemon.DefaultOriginTimeout, "fail origin operations with EIO after this long"),
		dur("attr-timeout", time.Second, "how long the kernel may cache names and attributes (file contents are revalidated on every open regardless)"),
		dur("attr-timeout-max", time.Minute, "entries unchanged for a while are cached longer: a tenth of their age, from --attr-timeout up to this (as NFS's acregmin/acregmax); 0: --attr-timeout for all"),
		slice("consistency", "`GLOB=ttl:DURATION` (or GLOB=strict): opens of files under GLOB (relative to the share) trust the last origin check for DURATION instead of checking at every open, and the kernel keeps their names and attributes as long (repeatable; first match wins; default strict close-to-open; see docs/consistency.md)"),
		dur("passthrough-settle", fusefs.DefaultPassthroughSettle, "open a warm file with kernel passthrough only once it has been unchanged this long (a file being written is read through the daemon, which follows its changes); negative: at once"),
		str("socket", defaultSocket, "unix socket of the local control API, open to every local user (mode 0666; each caller is identified by the kernel and gets only their own rights)"),
		str("socket-group", "", "restrict the socket to members of `GROUP` (name or gid; mode 0660) instead of every local user"),
		&cli.StringFlag{Name: "config", Usage: "TOML `FILE` with any of these flags as keys (flags and EDDY_* variables take precedence)", EnvVars: envName("config")},
		str("metrics", "off", "OpenTelemetry metrics exporter: off, stdout or prometheus"),
		str("metrics-addr", daemon.DefaultMetricsAddr, "address of the Prometheus /metrics endpoint (with --metrics prometheus)"),
		dur("metrics-interval", daemon.DefaultMetricsInterval, "export period (with --metrics stdout)"),
		str("log-level", "info", "log level: debug, info, warn, error"),
		dur("shutdown-timeout", daemon.DefaultShutdownTimeout, "bound on unmounting at SIGINT/SIGTERM"),
		// Cluster mode.
		boolf("scheduler", "cluster: this daemon holds the task queue and places tasks"),
		str("join", "", "cluster: join the scheduler at `ADDR` (several, comma-separated: the members of a scheduler group; the leader is found among them)"),
		str("scheduler-peers", "", "cluster: with --scheduler, the scheduler group's members as `NAME=HOST:PORT,...` (node names and raft addresses; 3 or 5); default: this scheduler alone"),
		str("raft-listen", "", "cluster: with --scheduler, this member's raft transport address `HOST:PORT` (required with --scheduler-peers; authenticated with the cluster token, TLS with --tls-cert)"),
		str("listen", "", "cluster: serve the cluster API on `ADDR` (host:port)"),
		str("token-file", "", "cluster: read the cluster token from `FILE` (or set EDDY_TOKEN)"),
		str("tls-cert", "", "cluster: TLS certificate `FILE` for --listen"),
		str("tls-key", "", "cluster: TLS key `FILE` for --listen"),
		str("tls-ca", "", "cluster: verify the scheduler's TLS certificate against the CA certificates (PEM) in `FILE` (without it the certificate is not verified)"),
		str("node-name", "", "cluster: this node's name (default: the hostname)"),
		slice("label", "cluster: node label `k=v` (repeatable)"),
		dur("locality-wait", daemon.DefaultLocalityWait, "cluster: how long a task may wait for a node with its inputs cached"),
		boolf("peer-fetch", "cluster: fetch missing chunks from other nodes (found through the scheduler) before the origin, and serve this node's chunks to them (needs --listen)"),
		&cli.IntFlag{Name: "peer-upload-slots", Value: daemon.DefaultPeerUploadSlots, Usage: "cluster: with --peer-fetch, chunks served to other nodes at once (`N`)", EnvVars: envName("peer-upload-slots")},
		dur("peer-wait", daemon.DefaultPeerWait, "cluster: with --peer-fetch, how long to wait for a node that is fetching a chunk from the origin before reading the origin"),
		dur("peer-timeout", daemon.DefaultPeerTimeout, "cluster: with --peer-fetch, bound on one chunk fetch from another node (wait included); past it the origin is read"),
		// The status page.
		str("ui-listen", "", "serve the status page for people on `ADDR` (host:port; off by default; a loopback address such as 127.0.0.1:7070 is advised, reached over an SSH tunnel); log in with the cluster token"),
		str("ui-viewer-token-file", "", "status page: a read-only viewer token in `FILE` (viewers see everything and act on nothing)"),
		dur("ui-sample-interval", 10*time.Second, "status page: sample the cluster for its charts this often"),
		// Housekeeping.
		dur("quota-walk-interval", daemon.DefaultQuotaWalkInterval, "recount quota usage with a walk of the origin this often (writes through eddy are counted as they happen)"),
		&cli.Float64Flag{Name: "share-full-warn", Value: daemon.DefaultShareFullPercent, Usage: "report the share nearly full at this used-space `PERCENT` (statfs of the origin)", EnvVars: envName("share-full-warn")},
		&cli.IntFlag{Name: "usage-workers", Usage: "parallel workers of du and quota walks (0: 4 per CPU, at least 8)", EnvVars: envName("usage-workers")},
		str("containerd-socket", "", "containers: use the node's running containerd at this socket `PATH` (e.g. /run/containerd/containerd.sock)"),
		str("containerd-dir", "", "containers: start a private containerd with root, state and socket under `DIR` "+
			"(default: <cache-dir>-containerd, started at the first container task when containerd is installed)"),
		// Tasks' scopes and users.
		boolf("allow-root-tasks", "tasks: run tasks as uid 0 (root) on this node; on the scheduler, accept them at submit (off: refused)"),
		str("shared-data-dir", runtime.SharedDataDir, "tasks: the share's permanent directory every task shares (a `NAME` under the share; /shared in containers)"),
		str("users-dir", runtime.UsersDir, "tasks: the share's directory of per-user directories (`NAME`/<user>, owned by the user)"),
		str("jobs-dir", runtime.JobsDir, "tasks: the share's directory of per-task directories (`NAME`/<task-id>, kept until eddy gc removes them)"),
		str("user-dir-mode", "0700", "tasks: the mode (octal) of a user's directory when eddy makes it"),
		str("scratch-dir", "", "tasks: node-local `DIR` of each task's scratch directory, removed when the task ends (default: <cache-dir>-scratch)"),
		str("shared-mount", runtime.DefaultSharedMount, "container tasks: where the shared data directory appears"),
		str("user-mount", runtime.DefaultUserMount, "container tasks: where the user's directory appears"),
		str("job-mount", runtime.DefaultJobMount, "container tasks: where the task's job directory appears"),
		str("scratch-mount", runtime.DefaultScratchMount, "container tasks: where the task's scratch directory appears"),
		// Periodic gc on the scheduler; what it keeps is set as `eddy gc`'s flags are (--gc-*).
		dur("gc-every", 0, "scheduler: every `DURATION` the scheduler group's leader runs eddy gc --yes through its mount, keeping what the --gc-* flags say (0: off; eddy gc --status shows the last run)"),
	}
	return append(flags, policyFlags("gc-")...)
}

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run this node's eddy: the cached FUSE view of the share and the control API",
		Description: "Mounts a read-write view of --origin on --mount, caching file contents in --cache-dir.\n" +
			"Configuration precedence: flags, then EDDY_<FLAG> environment variables (EDDY_CACHE_SIZE, ...),\n" +
			"then the TOML --config file (keys are flag names: cache-size = \"50G\").",
		Flags:  daemonFlags(),
		Before: applyConfigFile,
		Action: runDaemon,
	}
}

// applyConfigFile fills flags that neither the command line nor the
// environment set from the TOML file named by --config.
func applyConfigFile(c *cli.Context) error {
	file := c.String("config")
	if file == "" {
		return nil
	}
	var m map[string]any
	if _, err := toml.DecodeFile(file, &m); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	known := map[string]bool{}
	for _, f := range daemonFlags() {
		known[f.Names()[0]] = true
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := strings.ReplaceAll(k, "_", "-")
		if !known[name] || name == "config" {
			return fmt.Errorf("config %s: unknown key %q (keys are daemon flag names, e.g. cache-size)", file, k)
		}
		if c.IsSet(name) {
			continue // flags and EDDY_* variables win
		}
		vals, err := tomlValues(m[k])
		if err != nil {
			return fmt.Errorf("config %s: %s: %w", file, k, err)
		}
		for _, v := range vals {
			if err := c.Set(name, v); err != nil {
				return fmt.Errorf("config %s: %s = %q: %w", file, k, v, err)
			}
		}
	}
	return nil
}

func tomlValues(v any) ([]string, error) {
	switch x := v.(type) {
	case string, bool, int64, float64:
		return []string{fmt.Sprint(x)}, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, err := tomlValues(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		return out, nil
	case map[string]any:
		// labels as a table: label = { gpu = "a100" }
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]string, 0, len(x))
		for _, k := range keys {
			out = append(out, fmt.Sprintf("%s=%v", k, x[k]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported value %v (%T)", v, v)
}

// daemonConfig turns the command's flags into a daemon.Config.
func daemonConfig(c *cli.Context) (daemon.Config, error) {
	cfg := daemon.Config{
		Origin:            c.String("origin"),
		Mount:             c.String("mount"),
		CacheDir:          c.String("cache-dir"),
		Revalidate:        c.Duration("revalidate"),
		Include:           c.StringSlice("include"),
		Exclude:           c.StringSlice("exclude"),
		NoCache:           c.Bool("no-cache"),
		OfflineGrace:      c.Duration("offline-grace"),
		OriginTimeout:     c.Duration("origin-timeout"),
		AttrTimeout:       c.Duration("attr-timeout"),
		AttrTimeoutMax:    c.Duration("attr-timeout-max"),
		PassthroughSettle: c.Duration("passthrough-settle"),
		Socket:            lookupString(c, "socket"),
		SocketGroup:       c.String("socket-group"),
		Metrics:           c.String("metrics"),
		MetricsAddr:       c.String("metrics-addr"),
		MetricsInterval:   c.Duration("metrics-interval"),
		ShutdownTimeout:   c.Duration("shutdown-timeout"),
		Scheduler:         c.Bool("scheduler"),
		Join:              c.String("join"),
		SchedulerPeers:    c.String("scheduler-peers"),
		RaftListen:        c.String("raft-listen"),
		Listen:            c.String("listen"),
		Token:             os.Getenv("EDDY_TOKEN"),
		TokenFile:         c.String("token-file"),
		TLSCert:           c.String("tls-cert"),
		TLSKey:            c.String("tls-key"),
		TLSCA:             c.String("tls-ca"),
		NodeName:          c.String("node-name"),
		LocalityWait:      c.Duration("locality-wait"),
		PeerFetch:         c.Bool("peer-fetch"),
		PeerUploadSlots:   c.Int("peer-upload-slots"),
		PeerWait:          c.Duration("peer-wait"),
		PeerTimeout:       c.Duration("peer-timeout"),
		ContainerdSocket:  c.String("containerd-socket"),
		ContainerdDir:     c.String("containerd-dir"),
		UIListen:          c.String("ui-listen"),
		UIViewerTokenFile: c.String("ui-viewer-token-file"),
		UISampleInterval:  c.Duration("ui-sample-interval"),
		QuotaWalkInterval: c.Duration("quota-walk-interval"),
		ShareFullPercent:  c.Float64("share-full-warn"),
		UsageWorkers:      c.Int("usage-workers"),
		Version:           version,
	}
	var err error
	if cfg.Consistency, err = consistency.ParseAll(c.StringSlice("consistency")); err != nil {
		return cfg, fmt.Errorf("--consistency: %w", err)
	}
	if err := scopeConfig(c, &cfg); err != nil {
		return cfg, err
	}
	cfg.GCEvery = c.Duration("gc-every")
	pol, err := policyFromFlags(c, "gc-")
	if err != nil {
		return cfg, err
	}
	cfg.GCPolicy = &pol
	if cfg.CacheBytes, cfg.CachePercent, err = units.ParseSizeOrPercent(c.String("cache-size")); err != nil {
		return cfg, fmt.Errorf("--cache-size: %w", err)
	}
	if cfg.CacheBytes == 0 && cfg.CachePercent == 0 {
		cfg.NoCache = true // a cache of size 0 is no cache
	}
	if cfg.MinFreePercent, err = units.ParsePercent(c.String("min-free")); err != nil {
		return cfg, fmt.Errorf("--min-free: %w", err)
	}
	if cfg.ChunkSize, err = units.ParseSize(c.String("chunk-size")); err != nil {
		return cfg, fmt.Errorf("--chunk-size: %w", err)
	}
	if cfg.Labels, err = daemon.ParseLabels(c.StringSlice("label")); err != nil {
		return cfg, err
	}
	if cfg.Metrics == "off" {
		cfg.Metrics = ""
	}
	return cfg, nil
}

func runDaemon(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("daemon takes no arguments (got %q); use --origin, --mount and --cache-dir", c.Args().Slice())
	}
	cfg, err := daemonConfig(c)
	if err != nil {
		return err
	}
	lvl, err := parseLogLevel(lookupString(c, "log-level"))
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(cfg.Logger)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()
	stopProfile, err := startCPUProfile()
	if err != nil {
		return err
	}
	defer stopProfile()
	return daemon.Run(ctx, cfg)
}
