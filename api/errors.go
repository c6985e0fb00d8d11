package api

import (
	"fmt"
	"net/http"
)

// ErrorCode says what kind of failure an error body reports, so that a client branches on it
// rather than on the message, which is for people.
type ErrorCode string

// Error codes. Most follow the HTTP status (CodeOf); the others name a case a status cannot.
const (
	CodeBadRequest   ErrorCode = "bad_request"   // 400: a malformed body, path or parameter
	CodeUnauthorized ErrorCode = "unauthorized"  // 401: a missing or wrong cluster token
	CodeForbidden    ErrorCode = "forbidden"     // 403: the caller may not do this
	CodeNotFound     ErrorCode = "not_found"     // 404
	CodeConflict     ErrorCode = "conflict"      // 409
	CodeTooLarge     ErrorCode = "too_large"     // 413: a request body over MaxRequestBody
	CodeNeverFits    ErrorCode = "never_fits"    // 422 from the scheduler: no node could ever run the task
	CodeNotCacheable ErrorCode = "not_cacheable" // 422 from the daemon: excluded from the cache, or not a file
	CodeUnavailable  ErrorCode = "unavailable"   // 503: the daemon has no cache (--no-cache), or it is closed
	CodeInternal     ErrorCode = "internal"      // 500 and anything else
	// CodePinned: the file is pinned and was not evicted (a PathResult of evict).
	CodePinned ErrorCode = "pinned"
)

// CodeOf is the code an HTTP error status stands for when nothing more precise is known.
func CodeOf(status int) ErrorCode {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	return CodeInternal
}

// ErrorBody is the JSON body of every non-2xx answer of the daemon and the scheduler.
type ErrorBody struct {
	Error string    `json:"error"`
	Code  ErrorCode `json:"code,omitempty"`
}

// Error is a non-2xx answer from the API, as the client returns it.
type Error struct {
	Status  int       // the HTTP status
	Code    ErrorCode // from the body; CodeOf(Status) when the body has none (a proxy's answer)
	Message string    // the body's error text, shown to users as is
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("api: %s", http.StatusText(e.Status))
	}
	return e.Message
}
