// Package sched is cluster membership, heartbeats, the persistent task queue (a state machine replicated
// with raft among the scheduler group's members: fsm.go, replica.go, leader.go) and placement
// (resource fit plus warm-input bytes, delay scheduling, cache-affinity hashing), prefetch on
// assignment and retries, plus a trace-driven simulator. It does not run tasks (runtime does) or
// touch FUSE.
package sched
