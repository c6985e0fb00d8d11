// Package runtime runs one task on this node, as a process in a cgroup or as a containerd
// container: resource limits, GPU assignment, logs, exit status. It knows nothing of placement.
package runtime
