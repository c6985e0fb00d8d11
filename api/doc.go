// Package api is the one wire contract of eddy's control API: the JSON types the daemon and the
// scheduler serve and the CLI and benchmarks read, the error body both servers answer with, the
// request-size limit both enforce, and a client for it, over the local unix socket or the
// cluster's TCP address, carrying the cluster token.
//
// It imports nothing of eddy's (go list -deps ./api shows no eddy package), so a client links
// neither the cache nor the scheduler. The servers keep their own internal types and convert at
// their boundary (package daemon for the cache, package sched for nodes and inventories).
package api
