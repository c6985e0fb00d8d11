// Package topo builds benchmark and test topologies on one machine: network namespaces joined by
// veth with tbf shaping, an nfs-ganesha server, an sshd. Everything it starts it records and
// tears down by PID and name of its own making.
package topo
