package sched

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

// Caller sends one JSON call to a daemon's API (api.Client implements it).
type Caller interface {
	Do(ctx context.Context, method, path string, in, out any) error
}

// LogChunk is a piece of a task's log file (GET /v1/tasks/{id}/logs?stream=&offset=).
type LogChunk struct {
	Data   []byte `json:"data"`
	Offset int64  `json:"offset"` // offset after Data: ask from here next
	State  State  `json:"state"`  // the task's state, so a follower knows when to stop
}

// MaxLogChunk bounds one logs answer.
const MaxLogChunk = 1 << 20

// Authorize wraps h so that every call must carry "Authorization: Bearer TOKEN" (compared in
// constant time). An empty token refuses everything.
func Authorize(token string, h http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong cluster token"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Routes registers the cluster API on mux (no authentication: wrap with Authorize).
func (s *Scheduler) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/cluster/register", func(w http.ResponseWriter, r *http.Request) {
		var rec NodeRecord
		if !decode(w, r, &rec) {
			return
		}
		resp, err := s.Register(r.Context(), rec)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST /v1/cluster/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		var hb HeartbeatRequest
		if !decode(w, r, &hb) {
			return
		}
		resp, err := s.Heartbeat(r.Context(), hb)
		reply(w, resp, err)
	})
	mux.HandleFunc("POST /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		var spec TaskSpec
		if !decode(w, r, &spec) {
			return
		}
		t, err := s.Submit(r.Context(), spec)
		if err == nil {
			writeJSON(w, http.StatusCreated, t)
			return
		}
		reply(w, nil, err)
	})
	mux.HandleFunc("GET /v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		writeJSON(w, http.StatusOK, s.Tasks(limit))
	})
	mux.HandleFunc("GET /v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, err := s.Task(r.PathValue("id"))
		reply(w, t, err)
	})
	mux.HandleFunc("POST /v1/tasks/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		t, err := s.Kill(r.Context(), r.PathValue("id"))
		reply(w, t, err)
	})
	mux.HandleFunc("GET /v1/tasks/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		stream := q.Get("stream")
		if stream == "" {
			stream = "stdout"
		}
		off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
		if q.Get("offset") == "" {
			off, err = 0, nil
		}
		if err != nil || off < 0 {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("offset must be a non-negative integer"))
			return
		}
		chunk, err := s.ReadLog(r.PathValue("id"), stream, off, MaxLogChunk)
		reply(w, chunk, err)
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Nodes())
	})
}

// ReadLog reads up to max bytes of a task's log from offset, without reading what comes before.
func (s *Scheduler) ReadLog(id, stream string, offset int64, max int) (LogChunk, error) {
	p, err := s.LogPath(id, stream)
	if err != nil {
		return LogChunk{}, err
	}
	t, _ := s.Task(id)
	c := LogChunk{Offset: offset, State: t.State}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil // not started yet
	}
	if err != nil {
		return c, fmt.Errorf("logs %s: %w", id, err)
	}
	defer f.Close()
	buf := make([]byte, max)
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("logs %s: %w", id, err)
	}
	c.Data, c.Offset = buf[:n], offset+int64(n)
	return c, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("malformed request body: %v", err))
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadRequest):
			status = http.StatusBadRequest
		case errors.Is(err, ErrNeverFits):
			status = http.StatusUnprocessableEntity
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrConflict):
			status = http.StatusConflict
		}
		writeErr(w, status, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
