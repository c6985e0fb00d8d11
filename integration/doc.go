// Package integration holds end-to-end tests against real mounts, real servers (nfs-ganesha,
// sshd) and several daemons.
package integration
