package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// cpuProfileEnv names a directory: a daemon started with it set writes a
// CPU profile of its whole run there (daemon-PID.pprof), for measuring what
// a benchmark costs the daemon (`go tool pprof`). eddy bench passes its
// environment to the daemons it starts.
const cpuProfileEnv = "EDDY_CPU_PROFILE_DIR"

// startCPUProfile starts the profile cpuProfileEnv asks for; the returned
// function stops it and closes the file.
func startCPUProfile() (stop func(), err error) {
	dir := os.Getenv(cpuProfileEnv)
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("daemon-%d.pprof", os.Getpid())))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", cpuProfileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
