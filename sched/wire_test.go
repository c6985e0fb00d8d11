package sched

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/eddy-cluster/eddy/api"
	"github.com/eddy-cluster/eddy/internal/wiretest"
)

// The scheduler's own NodeRecord, NodeStatus and HeartbeatRequest used to be the wire types;
// converted to api's, with every field set, they encode to the same JSON, and the conversions
// back lose nothing.
func TestWireTypesKeepTheJSON(t *testing.T) {
	rec := wiretest.Filled[NodeRecord](t)
	wiretest.SameJSON(t, "node record", rec, wireNodeRecord(rec))
	if back := nodeRecordFrom(wireNodeRecord(rec)); !reflect.DeepEqual(back, rec) {
		t.Fatalf("node record round trip: %+v, want %+v", back, rec)
	}

	st := wiretest.Filled[NodeStatus](t)
	wiretest.SameJSON(t, "node status", st, wireNodeStatus(st))

	hb := wiretest.Filled[HeartbeatRequest](t)
	wiretest.SameJSON(t, "heartbeat", hb, wireHeartbeat(hb))
	if back := heartbeatFrom(wireHeartbeat(hb)); !reflect.DeepEqual(back, hb) {
		t.Fatalf("heartbeat round trip: %+v, want %+v", back, hb)
	}
	empty := HeartbeatRequest{Node: "a"}
	wiretest.SameJSON(t, "heartbeat without inventory", empty, wireHeartbeat(empty))
	if back := heartbeatFrom(wireHeartbeat(empty)); !reflect.DeepEqual(back, empty) {
		t.Fatalf("empty heartbeat round trip: %+v", back)
	}

	// What the scheduler decodes from a node is what the node's JSON said.
	var w api.HeartbeatRequest
	b, _ := json.Marshal(hb)
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if back := heartbeatFrom(w); !reflect.DeepEqual(back, hb) {
		t.Fatalf("heartbeat decoded: %+v, want %+v", back, hb)
	}
}
