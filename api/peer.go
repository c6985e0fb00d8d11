package api

// Peer fetch: nodes fetch chunks of a file version from each other instead of the origin. The
// scheduler's tracker (PeerLookupPath, PeerHavePath) knows which nodes hold which chunks and
// hands out fetch leases; the chunk itself travels node to node (PeerChunkPath). Every call
// carries the cluster token; the chunk route refuses anything else (a call forwarded for a
// local user, the local socket, the status page).

import (
	"fmt"
	"strconv"
	"strings"
)

const (
	// PeerLookupPath: POST PeerLookupRequest, answered with PeerLookupResponse.
	PeerLookupPath = "/v1/cluster/peers/lookup"
	// PeerHavePath: POST PeerHaveRequest (chunks a node now holds or dropped), no answer body.
	PeerHavePath = "/v1/cluster/peers/have"
	// PeerChunkPath: GET with the query parameters path, fp (Fingerprint.PeerParam),
	// csize, idx and wait_ms; answered with the chunk's bytes and its checksum in
	// PeerSumHeader. 404: the node does not hold the chunk of that version; 503: no upload
	// slot is free.
	PeerChunkPath = "/v1/peer/chunk"
	// PeerSumHeader carries the chunk's checksum (xxhash64, 16 hex digits).
	PeerSumHeader = "X-Eddy-Chunk-Sum"
)

// PeerLookupRequest asks who holds chunk Index of one file version.
type PeerLookupRequest struct {
	Node        string      `json:"node"` // the asking node
	Path        string      `json:"path"` // share-relative
	Fingerprint Fingerprint `json:"fingerprint"`
	ChunkSize   int64       `json:"chunk_size"`
	Index       int         `json:"index"`
}

// PeerHolder is a node that holds (or is fetching, under a lease) a chunk.
type PeerHolder struct {
	Node    string `json:"node"`
	Address string `json:"address"` // its cluster API address
	// Leased: the node is fetching the chunk from the origin right now; its chunk route waits
	// for the fetch (up to the caller's wait_ms).
	Leased bool `json:"leased,omitempty"`
}

// PeerLookupResponse: the holders to try in order; Lease: nobody holds or fetches the chunk,
// and the asking node is to fetch it from the origin within LeaseMs, then report it (Have).
type PeerLookupResponse struct {
	Holders []PeerHolder `json:"holders,omitempty"`
	Lease   bool         `json:"lease,omitempty"`
	LeaseMs int64        `json:"lease_ms,omitempty"`
}

// PeerRange is a half-open range of chunk indexes [From, To).
type PeerRange struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// PeerHaveFile is a node's report about one file version: chunks it now holds (Ranges), or
// chunks it could not fetch (Released: the node's leases on them end).
type PeerHaveFile struct {
	Path        string      `json:"path"`
	Fingerprint Fingerprint `json:"fingerprint"`
	ChunkSize   int64       `json:"chunk_size"`
	Ranges      []PeerRange `json:"ranges,omitempty"`
	Released    []PeerRange `json:"released,omitempty"`
}

// PeerHaveRequest is a node's batch of PeerHaveFile reports (bounded: MaxPeerHaveFiles files,
// MaxPeerRanges ranges each).
type PeerHaveRequest struct {
	Node  string         `json:"node"`
	Files []PeerHaveFile `json:"files"`
}

// Bounds of one PeerHaveRequest.
const (
	MaxPeerHaveFiles = 256
	MaxPeerRanges    = 1024
)

// PeerParam renders f as one query parameter: its fields as decimal numbers joined by dots
// (Gen last, left out when 0, as a node that knows no Gen renders it).
func (f Fingerprint) PeerParam() string {
	p := fmt.Sprintf("%d.%d.%d.%d.%d.%d", f.Size, f.MtimeNs, f.CtimeNs, f.Ino, f.Dev, f.Change)
	if f.Gen != 0 {
		p += "." + strconv.FormatUint(f.Gen, 10)
	}
	return p
}

// ParsePeerParam parses what Fingerprint.PeerParam renders.
func ParsePeerParam(s string) (Fingerprint, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 6 && len(parts) != 7 {
		return Fingerprint{}, fmt.Errorf("fingerprint %q: want 6 or 7 dot-separated numbers", s)
	}
	var n [7]int64
	var u [7]uint64
	for i, p := range parts {
		var err error
		if i < 3 {
			n[i], err = strconv.ParseInt(p, 10, 64)
		} else {
			u[i], err = strconv.ParseUint(p, 10, 64)
		}
		if err != nil {
			return Fingerprint{}, fmt.Errorf("fingerprint %q: %w", s, err)
		}
	}
	return Fingerprint{Size: n[0], MtimeNs: n[1], CtimeNs: n[2], Ino: u[3], Dev: u[4], Change: u[5], Gen: u[6]}, nil
}
