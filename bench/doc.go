// Package bench is the benchmark suite: it stands up baselines (NFS via nfs-ganesha, SSHFS, local
// disk) beside eddy on one machine over a shaped link, runs the workloads and writes
// results.json, results.md and plots.
package bench
