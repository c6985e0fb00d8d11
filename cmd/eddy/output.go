package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

const defaultSocket = api.DefaultSocket

// jsonFlag is the --json flag commands add when they can print JSON.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: flagJSON, Usage: "print JSON instead of a table"}
}

// socketFlag lets a subcommand take --socket after its name too
// ("eddy cache stats --socket S"); newClient honours it.
func socketFlag() cli.Flag {
	return &cli.StringFlag{Name: flagSocket, Usage: "unix socket of the local daemon's API (default " + defaultSocket + ", or EDDY_SOCKET)"}
}

// wantJSON reports whether --json was given (on the command or globally).
func wantJSON(c *cli.Context) bool {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(flagJSON) && ctx.Bool(flagJSON) {
			return true
		}
	}
	return false
}

// printJSON writes v as indented JSON followed by a newline.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine writes v as one compact JSON line (for streams).
func printJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// table accumulates aligned rows; Flush prints them.
type table struct {
	tw *tabwriter.Writer
}

// newTable starts a table with the given column headers.
func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(headers) > 0 {
		t.row(anySlice(headers)...)
	}
	return t
}

func anySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// row adds one row; values are printed with fmt's %v.
func (t *table) row(cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

// flush prints the table.
func (t *table) flush() error { return t.tw.Flush() }

// humanRate renders bytes per second.
func humanRate(bytesPerSec float64) string {
	if bytesPerSec <= 0 {
		return "-"
	}
	return units.FormatBytes(int64(bytesPerSec)) + "/s"
}

// humanDuration renders a duration compactly ("3s", "2m05s", "1h02m").
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// humanAgo renders how long ago t was ("5m ago"), "-" for the zero time.
func humanAgo(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(time.Since(t)) + " ago"
}

// isTerminal reports whether f is a terminal (progress bars only there).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newClient returns an API client for the daemon the flags name: the
// cluster address (--addr with --token/--client-token-file/EDDY_TOKEN) when
// given, else the local unix socket (--socket / EDDY_SOCKET).
func newClient(c *cli.Context) (*api.Client, error) {
	if addr := lookupString(c, flagAddr); addr != "" {
		token := lookupString(c, flagToken)
		if f := lookupString(c, "client-token-file"); f != "" && token == "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read token file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		opts := []api.Option{api.WithToken(token)}
		if f := lookupString(c, "client-tls-ca"); f != "" {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read TLS CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", f)
			}
			opts = append(opts, api.WithTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
		}
		return api.NewTCP(addr, opts...), nil
	}
	sock := lookupString(c, flagSocket)
	if sock == "" {
		sock = defaultSocket
	}
	return api.NewUnix(sock), nil
}

// lookupString finds a string flag set anywhere in the command lineage,
// falling back to its (global) default.
func lookupString(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) {
			return ctx.String(name)
		}
	}
	return c.String(name)
}

// cwd returns the working directory the API resolves relative paths
// against (see api.PathsRequest).
func cwd() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	return filepath.Clean(d)
}
