package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/units"
)

func init() { register(quotaCommand) }

func quotaCommand() *cli.Command {
	return &cli.Command{
		Name:  "quota",
		Usage: "limits on the bytes of a scope (a directory of the share) or of a user, checked at every write through eddy",
		Description: "The table is stored on the share (.eddy/quotas.json), so every node applies the same one.\n" +
			"Usage is counted by writes through this node and recounted by periodic walks of the origin\n" +
			"(--quota-walk-interval): writes that bypass eddy count from the next walk on.\n" +
			"A write that would pass a hard quota fails with EDQUOT (\"Disk quota exceeded\"); a soft quota logs a warning.",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "set a hard limit (and optionally a soft one): SIZE such as 500G, 1M, 1048576",
				ArgsUsage: "PATH|user:NAME SIZE",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "soft", Usage: "soft limit `SIZE`: passing it logs a warning and shows in quota ls"}, jsonFlag(), socketFlag()},
				Action:    quotaSet,
			},
			{
				Name:   "ls",
				Usage:  "quotas with their usage and state",
				Flags:  []cli.Flag{jsonFlag(), socketFlag()},
				Action: quotaLs,
			},
			{
				Name:      "rm",
				Usage:     "remove a quota",
				ArgsUsage: "PATH|user:NAME",
				Flags:     []cli.Flag{socketFlag()},
				Action:    quotaRm,
			},
		},
	}
}

func quotaSet(c *cli.Context) error {
	// Flags may follow the arguments too ("users/alice 1T --soft 900G").
	softArg := c.String("soft")
	var args []string
	for rest := c.Args().Slice(); len(rest) > 0; rest = rest[1:] {
		switch a := rest[0]; {
		case (a == "--soft" || a == "-soft") && len(rest) > 1:
			softArg, rest = rest[1], rest[1:]
		case strings.HasPrefix(a, "--soft="):
			softArg = strings.TrimPrefix(a, "--soft=")
		default:
			args = append(args, a)
		}
	}
	if len(args) != 2 {
		return fmt.Errorf("usage: eddy quota set PATH|user:NAME SIZE [--soft SIZE]")
	}
	hard, err := units.ParseSize(args[1])
	if err != nil {
		return fmt.Errorf("SIZE %q: %w", args[1], err)
	}
	var soft int64
	if s := softArg; s != "" {
		if soft, err = units.ParseSize(s); err != nil {
			return fmt.Errorf("--soft %q: %w", s, err)
		}
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	st, err := cl.QuotaSet(c.Context, api.QuotaSetRequest{Target: args[0], Cwd: cwd(), Hard: hard, Soft: soft})
	if err != nil {
		return err
	}
	if wantJSON(c) {
		return printJSON(os.Stdout, st)
	}
	fmt.Printf("quota on %s: hard %s, soft %s\n", st.Target, sizeOrNone(st.Hard), sizeOrNone(st.Soft))
	return nil
}

func quotaRm(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("usage: eddy quota rm PATH|user:NAME")
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	return cl.QuotaRm(c.Context, api.QuotaRmRequest{Target: c.Args().First(), Cwd: cwd()})
}

func quotaLs(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	qs, err := cl.Quotas(c.Context)
	if err != nil {
		return err
	}
	if wantJSON(c) {
		return printJSON(os.Stdout, qs)
	}
	return printQuotas(os.Stdout, qs)
}

func sizeOrNone(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.FormatBytes(n)
}

func printQuotas(w io.Writer, qs []api.QuotaStatus) error {
	if len(qs) == 0 {
		fmt.Fprintln(w, "no quotas (set one with: eddy quota set PATH|user:NAME SIZE)")
		return nil
	}
	t := newTable(w, "TARGET", "USED", "HARD", "SOFT", "USE%", "FILES", "STATE", "COUNTED")
	for _, q := range qs {
		pct := "-"
		if q.Hard > 0 {
			pct = fmt.Sprintf("%.0f%%", 100*float64(q.Used)/float64(q.Hard))
		}
		state := "ok"
		switch {
		case q.OverHard:
			state = "FULL (writes refused)"
		case q.OverSoft:
			state = "over soft limit"
		}
		counted := "not yet walked"
		if q.Counted {
			counted = "walked " + humanAgo(q.WalkedAt)
		}
		t.row(q.Target, units.FormatBytes(q.Used), sizeOrNone(q.Hard), sizeOrNone(q.Soft), pct, q.Files, state, counted)
	}
	return t.flush()
}
