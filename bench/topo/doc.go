// Package topo builds benchmark and test topologies on one machine: network namespaces joined by
// veth with tbf shaping, an nfs-ganesha server, an sshd, and a TCP latency proxy (this kernel has
// no netem) that delays each direction of a connection by a fixed time. Everything it starts it records and
// tears down by PID and name of its own making.
package topo
