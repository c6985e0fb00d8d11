package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// MaxRequestBody bounds every request body the daemon and the scheduler accept: the largest
// legitimate ones (a heartbeat's inventory delta, a path list) are far below it.
const MaxRequestBody = 1 << 20

// WriteJSON answers status with v as the JSON body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers status with err's text and the code the status stands for (CodeOf).
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteErrorCode(w, status, CodeOf(status), err)
}

// WriteErrorCode answers status with err's text and a code more precise than the status's.
func WriteErrorCode(w http.ResponseWriter, status int, code ErrorCode, err error) {
	WriteJSON(w, status, ErrorBody{Error: err.Error(), Code: code})
}

// LimitBody makes reading r's body past MaxRequestBody fail with *http.MaxBytesError (and the
// server close the connection), for handlers that read the body themselves.
func LimitBody(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
}

// ReadBody reads r's body, at most MaxRequestBody bytes. When it cannot, it has answered: 413
// (CodeTooLarge) over the limit, else 400 with "<malformed>: <error>"; ok is then false.
func ReadBody(w http.ResponseWriter, r *http.Request, malformed string) (body []byte, ok bool) {
	LimitBody(w, r)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeBodyError(w, err, malformed)
		return nil, false
	}
	return body, true
}

// DecodeBody decodes r's JSON body into v, refusing unknown fields (a misspelt field is an
// error rather than a default silently taken). When it cannot, it has answered as ReadBody
// does; ok is then false.
func DecodeBody(w http.ResponseWriter, r *http.Request, v any, malformed string) (ok bool) {
	body, ok := ReadBody(w, r, malformed)
	if !ok {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeBodyError(w, err, malformed)
		return false
	}
	return true
}

func writeBodyError(w http.ResponseWriter, err error, malformed string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", mbe.Limit))
		return
	}
	WriteError(w, http.StatusBadRequest, fmt.Errorf("%s: %v", malformed, err))
}
