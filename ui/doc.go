// Package ui is eddy's status page for people: an HTTP server, run inside a daemon
// (--ui-listen), that serves a few HTML pages, a small hand-written script polling JSON, and
// server-side SVG charts, all embedded in the binary.
//
// It keeps no state of the cluster of its own: every answer is built from the control API the
// CLI uses (the daemon's routes, the scheduler's task and node routes, and the other nodes'
// /v1/cache routes over the cluster listener), through a Caller. The only things it holds are
// its sessions and, for the charts, a bounded ring of samples it takes from that API.
//
// Nothing is served without a session. A session starts at the login form with the cluster
// token (an admin session, which may kill tasks) or the viewer token (read only); it lives in a
// server-side table under a random id sent as an HttpOnly, SameSite=Strict cookie, and expires.
// Every POST carries the session's CSRF token.
package ui
