package main

import (
	"fmt"
	"net/url"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
)

func init() { register(schedulerCommand) }

// schedulerCommand is `eddy scheduler status|add|remove`: the scheduler group (raft) of a
// cluster, through the local daemon (a scheduler, or a node that forwards to one) or --addr.
func schedulerCommand() *cli.Command {
	return &cli.Command{
		Name:  "scheduler",
		Usage: "the cluster's scheduler group: status, add or remove a member",
		Subcommands: []*cli.Command{
			{
				Name:  "status",
				Usage: "members, leader, term, last log index and each member's health",
				Flags: []cli.Flag{jsonFlag(), socketFlag()},
				Action: func(c *cli.Context) error {
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					var st api.RaftStatus
					if err := cl.Do(c.Context, "GET", api.RaftPath, nil, &st); err != nil {
						return fmt.Errorf("scheduler status: %w", err)
					}
					return printRaftStatus(c, st)
				},
			},
			{
				Name:      "add",
				Usage:     "add a member (start it first with --scheduler --raft-listen ADDR and --scheduler-peers naming the current members)",
				ArgsUsage: "NAME ADDR",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return fmt.Errorf("scheduler add: want NAME ADDR (the member's node name and raft address)")
					}
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					var st api.RaftStatus
					ch := api.RaftMemberChange{Name: c.Args().Get(0), Address: c.Args().Get(1)}
					if err := cl.Do(c.Context, "POST", api.RaftMembersPath, ch, &st); err != nil {
						return fmt.Errorf("scheduler add: %w", err)
					}
					return printRaftStatus(c, st)
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a member",
				ArgsUsage: "NAME",
				Flags:     []cli.Flag{jsonFlag(), socketFlag()},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("scheduler remove: want NAME")
					}
					cl, err := newClient(c)
					if err != nil {
						return err
					}
					var st api.RaftStatus
					if err := cl.Do(c.Context, "DELETE", api.RaftMembersPath+"/"+url.PathEscape(c.Args().Get(0)), nil, &st); err != nil {
						return fmt.Errorf("scheduler remove: %w", err)
					}
					return printRaftStatus(c, st)
				},
			},
		},
	}
}

func printRaftStatus(c *cli.Context, st api.RaftStatus) error {
	if wantJSON(c) {
		return printJSON(os.Stdout, st)
	}
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY (no leader, or no majority of the voters answers)"
	}
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Printf("leader %s  term %d  last index %d  commit %d  (asked %s: %s)  %s\n",
		leader, st.Term, st.LastIndex, st.CommitIndex, st.Member, st.State, health)
	t := newTable(os.Stdout, "NAME", "RAFT ADDRESS", "API", "SUFFRAGE", "STATE", "TERM", "LAST INDEX", "APPLIED", "LAST CONTACT", "ERROR")
	for _, m := range st.Members {
		t.row(m.Name, m.Address, m.API, m.Suffrage, m.State, m.Term, m.LastIndex, m.AppliedIndex, m.LastContact, m.Error)
	}
	return t.flush()
}
