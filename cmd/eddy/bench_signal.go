package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// cancelOnSignal returns a context the first SIGINT/SIGTERM cancels, so a benchmark's teardown
// still completes; further signals are reported and ignored so nothing is leaked. what names the
// command, parts what its teardown removes. The returned stop releases the signals.
func cancelOnSignal(parent context.Context, what, parts string) (context.Context, func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		n := 0
		for range sigs {
			n++
			if n == 1 {
				fmt.Fprintf(os.Stderr, "\n%s: interrupted; tearing down (%s)...\n", what, parts)
				cancel()
			} else {
				fmt.Fprintf(os.Stderr, "%s: still tearing down; SIGKILL would leak mounts and namespaces\n", what)
			}
		}
	}()
	return ctx, func() { signal.Stop(sigs); cancel() }
}
