package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// builders holds the command constructors registered by this package's
// files (each from its own init), so a new command never touches main.go.
var builders []func() *cli.Command

// register adds a top-level command. Call it from init(); the builder runs
// in main, after every init, so it may use anything initialised there.
func register(build func() *cli.Command) { builders = append(builders, build) }

// Global flag names.
const (
	flagSocket    = "socket"
	flagAddr      = "addr"
	flagToken     = "token"
	flagTokenFile = "token-file"
	flagLogLevel  = "log-level"
	flagJSON      = "json"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagSocket, Value: defaultSocket, EnvVars: []string{"EDDY_SOCKET"},
			Usage: "unix socket of the local daemon's API"},
		&cli.StringFlag{Name: flagAddr, EnvVars: []string{"EDDY_ADDR"},
			Usage: "talk to a daemon's cluster API at `HOST:PORT` (or https://...) instead of the local socket"},
		&cli.StringFlag{Name: flagToken, EnvVars: []string{"EDDY_TOKEN"},
			Usage: "cluster token for --addr (prefer --token-file or EDDY_TOKEN)"},
		&cli.StringFlag{Name: "client-token-file", EnvVars: []string{"EDDY_TOKEN_FILE"},
			Usage: "read the cluster token for --addr from `FILE`"},
		&cli.StringFlag{Name: "client-tls-ca", EnvVars: []string{"EDDY_TLS_CA"},
			Usage: "verify an https:// --addr's certificate against the CA certificates (PEM) in `FILE` (default: the system's)"},
		&cli.StringFlag{Name: flagLogLevel, Value: "info", EnvVars: []string{"EDDY_LOG_LEVEL"},
			Usage: "log level: debug, info, warn, error"},
	}
}

func newApp() *cli.App {
	app := &cli.App{
		Name:                 "eddy",
		Usage:                "cached view of a shared directory, and tasks placed where the data is warm",
		Version:              version,
		Flags:                globalFlags(),
		EnableBashCompletion: true,
		Before: func(c *cli.Context) error {
			lvl, err := parseLogLevel(c.String(flagLogLevel))
			if err != nil {
				return err
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors once
	}
	for _, b := range builders {
		app.Commands = append(app.Commands, b())
	}
	sort.Slice(app.Commands, func(i, j int) bool { return app.Commands[i].Name < app.Commands[j].Name })
	return app
}

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "eddy: %v\n", oneLine(err))
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) && ec.ExitCode() != 0 {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

func parseLogLevel(s string) (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return lvl, nil
}

// oneLine keeps an error message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}
