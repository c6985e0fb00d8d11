// Package daemon assembles one node's eddy: origin, cache, FUSE mount, control API server,
// scheduler agent and task runtime; it owns start-up checks, signals and clean shutdown.
package daemon
