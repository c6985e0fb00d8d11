package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/housekeeping"
)

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour, "36h": 36 * time.Hour, "0s": 0, "never": -1} {
		if got, err := parseRetention("x", in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7", "-1d", "soon", "-3h"} {
		if _, err := parseRetention("x", in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestWaitExit(t *testing.T) {
	code := func(n int) *int { return &n }
	if err := waitExit(&api.Task{ID: "t1", State: api.StateCompleted, ExitCode: code(0)}); err != nil {
		t.Fatal(err)
	}
	var ec cli.ExitCoder
	err := waitExit(&api.Task{ID: "t1", State: api.StateFailed, ExitCode: code(3)})
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || err.Error() != "task t1 exited with status 3" {
		t.Fatalf("failed task: %v", err)
	}
	err = waitExit(&api.Task{ID: "t2", State: api.StateKilled, Signal: "SIGKILL"})
	if !errors.As(err, &ec) || ec.ExitCode() != 1 || err.Error() != "task t2 killed by SIGKILL" {
		t.Fatalf("killed task: %v", err)
	}
}

func TestCheckScopeName(t *testing.T) {
	for _, ok := range []string{"jobs", "eddy/jobs"} {
		if err := checkScopeName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/jobs", "..", "../x", "a/../b", ".", "jobs/"} {
		if err := checkScopeName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// What formatRetention prints, parseRetention reads back, so the flags' defaults are the
// housekeeping package's.
func TestFormatRetention(t *testing.T) {
	for d, want := range map[time.Duration]string{7 * 24 * time.Hour: "7d", 36 * time.Hour: "36h0m0s", 0: "0s", -1: "never"} {
		got := formatRetention(d)
		back, err := parseRetention("x", got)
		if got != want || err != nil || back != max(d, -1) {
			t.Errorf("%v: %q (want %q), read back %v %v", d, got, want, back, err)
		}
	}
}

// The daemon's --gc-* flags read `eddy gc`'s variables after their own.
func TestPolicyFlagsShareEnv(t *testing.T) {
	t.Setenv("EDDY_JOB_RETENTION", "2d")
	t.Setenv("EDDY_GC_LOG_RETENTION", "never")
	t.Setenv("EDDY_LOG_RETENTION", "1d")
	var got housekeeping.Policy
	app := &cli.App{Flags: policyFlags("gc-"), Action: func(c *cli.Context) (err error) {
		got, err = policyFromFlags(c, "gc-")
		return err
	}}
	if err := app.Run([]string{"eddy", "--gc-keep", "3"}); err != nil {
		t.Fatal(err)
	}
	want := housekeeping.Policy{JobRetention: 48 * time.Hour, LogRetention: -1, KeepEnvs: 3, EnvGrace: housekeeping.DefaultEnvGrace}
	if got != want {
		t.Errorf("policy %+v, want %+v", got, want)
	}
}

func TestPrintGCStatus(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	printGCStatus(&b, api.GCStatus{Scheduler: "s1"}, now)
	if !strings.Contains(b.String(), "off on scheduler s1") || !strings.Contains(b.String(), "--gc-every") {
		t.Errorf("off: %q", b.String())
	}
	b.Reset()
	printGCStatus(&b, api.GCStatus{Scheduler: "s1", Leading: true, EverySec: 3600, JobRetentionSec: 7 * 86400, LogRetentionSec: -1,
		KeepEnvs: 1, Next: now.Add(time.Minute), Last: &api.GCRun{Started: now, Finished: now.Add(time.Second), RemovedCount: 3,
			Removed: []api.GCItem{{Rel: "jobs/t1", Bytes: 2048, Reason: "task t1 ended 8d ago"}}, FreedBytes: 4096, Error: "cancelled: shutdown"}}, now)
	for _, want := range []string{"every 1h0m0s on scheduler s1 (the group's leader", "job dirs 7d, log dirs never", "next run in 1m0s",
		"removed 3 items", "removed jobs/t1", "and 2 more", "the run failed: cancelled: shutdown"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}
