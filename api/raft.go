package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"time"
)

// The scheduler group's membership and status (`eddy scheduler status|add|remove`). The
// scheduler's state is replicated with raft among the group's members; one of them, the leader,
// places tasks.
const (
	// RaftPath: GET answers RaftStatus (the answering member's view, with every member's
	// health); "?local=1" answers only the member's own RaftMember, without asking the others.
	RaftPath = "/v1/cluster/raft"
	// RaftMembersPath: POST RaftMemberChange adds a member (root); DELETE RaftMembersPath+"/NAME"
	// removes one (root). Both answer RaftStatus once the change is committed.
	RaftMembersPath = "/v1/cluster/raft/members"
)

// Error codes of the scheduler group.
const (
	// CodeNotLeader: the member that answered is not the leader and could not forward the call
	// (no leader known, or the call was forwarded already); the answer's Leader names the
	// leader when known. Clients try another scheduler address.
	CodeNotLeader ErrorCode = "not_leader"
)

// LeaderHeader carries the leader's API address on a CodeNotLeader answer, when known.
const LeaderHeader = "X-Eddy-Leader"

// ForwardedHeader marks a call a follower forwarded to the leader: it is never forwarded again.
const ForwardedHeader = "X-Eddy-Forwarded"

// IdempotencyHeader on POST /v1/tasks names the submit: a submit retried with the same key
// (on another scheduler, after a leader change) makes one task, and answers it.
const IdempotencyHeader = "Idempotency-Key"

// RaftMember is one member of the scheduler group.
type RaftMember struct {
	Name     string `json:"name"`     // the member's node name, its raft server ID
	Address  string `json:"address"`  // raft transport address
	API      string `json:"api"`      // cluster API address, when known
	Suffrage string `json:"suffrage"` // voter, nonvoter
	Leader   bool   `json:"leader"`
	// State is the member's own raft state (leader, follower, candidate, shutdown), or
	// "unreachable" when it did not answer.
	State        string `json:"state"`
	Term         uint64 `json:"term,omitempty"`
	LastIndex    uint64 `json:"last_index,omitempty"`
	CommitIndex  uint64 `json:"commit_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	LastContact  string `json:"last_contact,omitempty"` // follower: since it last heard from the leader
	Error        string `json:"error,omitempty"`
}

// RaftStatus is the scheduler group as one member sees it.
type RaftStatus struct {
	Member       string       `json:"member"` // who answered
	State        string       `json:"state"`
	Leader       string       `json:"leader"` // leader's name ("" when none is known)
	LeaderAPI    string       `json:"leader_api,omitempty"`
	Term         uint64       `json:"term"`
	LastIndex    uint64       `json:"last_index"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	Members      []RaftMember `json:"members"`
	// Healthy: a leader is known and a majority of the voters answered.
	Healthy bool `json:"healthy"`
}

// RaftMemberChange adds a member: its node name and raft address.
type RaftMemberChange struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// sendAny sends one call to a scheduler group: to the member that answered last, else to the
// others in turn, while a member cannot be reached or answers CodeNotLeader (no leader known
// yet: an election is under way), for up to about 15 s or the context's end. A submit carries
// one idempotency key across the tries, so that a retried submit makes one task.
func (c *Client) sendAny(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	key := ""
	if method == http.MethodPost && path == "/v1/tasks" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		key = hex.EncodeToString(b[:])
	}
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for round := 0; ; round++ {
		start := int(c.cur.Load())
		for k := range c.bases {
			i := (start + k) % len(c.bases)
			resp, err := c.sendTo(ctx, c.bases[i], method, path, body, key)
			if err == nil {
				c.cur.Store(int32(i))
				return resp, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			var ae *Error
			if errors.As(err, &ae) && ae.Code != CodeNotLeader {
				c.cur.Store(int32(i))
				return nil, err // an answer: the call was made
			}
			last = err
		}
		if time.Now().After(deadline) {
			return nil, last
		}
		t := time.NewTimer(time.Duration(min(round+1, 5)) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, last
		case <-t.C:
		}
	}
}
