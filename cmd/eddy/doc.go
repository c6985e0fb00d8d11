// Command eddy is the single binary: the node daemon, the CLI for tasks and the cache, and the
// benchmarks. It wires flags, the config file and output formatting (table and --json) onto the
// other packages and holds no business logic.
package main
