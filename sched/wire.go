package sched

import (
	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/cache"
	"github.com/eddy-cluster/eddy/origin"
)

// The wire types of tasks and of the node <-> scheduler protocol are defined in package api.
// The scheduler's logic speaks of them by these names, which are the same types: what the
// store keeps and the HTTP layer sends is exactly api's JSON.
type (
	State            = api.State
	TaskSpec         = api.TaskSpec
	Task             = api.Task
	PlacementInfo    = api.PlacementInfo
	Candidate        = api.Candidate
	EnvStart         = api.EnvStart
	LogChunk         = api.LogChunk
	TaskReport       = api.TaskReport
	RegisterResponse = api.RegisterResponse
	// HeartbeatResponse is what the agent receives; its Assign carries Tasks.
	HeartbeatResponse = api.HeartbeatResponse
)

// Task states (see api.State).
const (
	StateQueued    = api.StateQueued
	StateAssigned  = api.StateAssigned
	StateRunning   = api.StateRunning
	StateCompleted = api.StateCompleted
	StateFailed    = api.StateFailed
	StateKilled    = api.StateKilled
	StateLost      = api.StateLost
)

// MaxLogChunk bounds one logs answer.
const MaxLogChunk = api.MaxLogChunk

// Three types differ from their wire form, because they hold something of the scheduler's or
// the cache's: Resources (placement's arithmetic), hence NodeRecord and NodeStatus, and
// HeartbeatRequest (the cache's InventoryDelta). They are converted here, at the HTTP boundary
// (the server in http.go, the client in agent.go).

// ShareSpace is how full the share is, as a node reports it in its heartbeats (the wire type
// as it is: nothing of the scheduler's in it).
type ShareSpace = api.ShareSpace

// wireNodeRecord is rec as a node registers with it.
func wireNodeRecord(rec NodeRecord) api.NodeRecord {
	return api.NodeRecord{Name: rec.Name, Address: rec.Address, Total: api.Resources(rec.Total), GPUIDs: rec.GPUIDs,
		Labels: rec.Labels, LinkBps: rec.LinkBps}
}

// nodeRecordFrom is the scheduler's record of a registration.
func nodeRecordFrom(rec api.NodeRecord) NodeRecord {
	return NodeRecord{Name: rec.Name, Address: rec.Address, Total: Resources(rec.Total), GPUIDs: rec.GPUIDs,
		Labels: rec.Labels, LinkBps: rec.LinkBps}
}

// wireNodeStatus is st as GET /v1/nodes answers it.
func wireNodeStatus(st NodeStatus) api.NodeStatus {
	return api.NodeStatus{NodeRecord: wireNodeRecord(st.NodeRecord), Up: st.Up, Free: api.Resources(st.Free), LastSeen: st.LastSeen,
		Running: st.Running, CachedFiles: st.CachedFiles, InvGen: st.InvGen, EnvsImported: st.EnvsImported, Share: st.Share}
}

// wireHeartbeat is hb as a node sends it.
func wireHeartbeat(hb HeartbeatRequest) api.HeartbeatRequest {
	out := api.HeartbeatRequest{Node: hb.Node, Tasks: hb.Tasks, InventoryBase: hb.InventoryBase, EnvsImported: hb.EnvsImported, Share: hb.Share}
	if d := hb.Inventory; d != nil {
		w := api.InventoryDelta{Gen: d.Gen, Full: d.Full, Removed: d.Removed, More: d.More}
		if d.Items != nil {
			w.Items = make([]api.InventoryItem, len(d.Items))
			for i, it := range d.Items {
				w.Items[i] = api.InventoryItem{Path: it.Path, Fingerprint: api.Fingerprint(it.Fingerprint), CachedBytes: it.CachedBytes, Size: it.Size}
			}
		}
		out.Inventory = &w
	}
	return out
}

// heartbeatFrom is the scheduler's form of a node's heartbeat.
func heartbeatFrom(hb api.HeartbeatRequest) HeartbeatRequest {
	out := HeartbeatRequest{Node: hb.Node, Tasks: hb.Tasks, InventoryBase: hb.InventoryBase, EnvsImported: hb.EnvsImported, Share: hb.Share}
	if w := hb.Inventory; w != nil {
		d := cache.InventoryDelta{Gen: w.Gen, Full: w.Full, Removed: w.Removed, More: w.More}
		if w.Items != nil {
			d.Items = make([]cache.InventoryItem, len(w.Items))
			for i, it := range w.Items {
				d.Items[i] = cache.InventoryItem{Path: it.Path, Fingerprint: origin.Fingerprint(it.Fingerprint), CachedBytes: it.CachedBytes, Size: it.Size}
			}
		}
		out.Inventory = &d
	}
	return out
}
