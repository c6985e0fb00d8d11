package main

import (
	"errors"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/eddy-cluster/eddy/api"
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
