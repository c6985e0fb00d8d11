package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A server built on DecodeBody answers a body over MaxRequestBody with 413 and a body that
// says so; the client returns it as an *Error with the status and the code.
func TestBodyOverTheLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req PathsRequest
		if DecodeBody(w, r, &req, "bad request body") {
			WriteJSON(w, http.StatusOK, PathsResponse{})
		}
	}))
	defer srv.Close()
	cl := NewTCP(srv.URL)
	ctx := context.Background()

	err := cl.Do(ctx, http.MethodPost, "/", PathsRequest{Paths: []string{strings.Repeat("a", MaxRequestBody)}}, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != http.StatusRequestEntityTooLarge || ae.Code != CodeTooLarge || ae.Message != "request body over 1048576 bytes" {
		t.Fatalf("over the limit: %#v", err)
	}
	err = cl.Do(ctx, http.MethodPost, "/", map[string]any{"pathz": []string{"x"}}, nil)
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code != CodeBadRequest ||
		!strings.HasPrefix(ae.Message, "bad request body: ") || !strings.Contains(ae.Message, "unknown field") {
		t.Fatalf("unknown field: %#v", err)
	}
	if err := cl.Do(ctx, http.MethodPost, "/", PathsRequest{Paths: []string{"x"}}, nil); err != nil {
		t.Fatalf("within the limit: %v", err)
	}
}

// An answer that is not an ErrorBody (a proxy's) still gives the status's code and its text.
func TestErrorFrom(t *testing.T) {
	for _, c := range []struct {
		status int
		body   string
		want   Error
	}{
		{404, `{"error":"task t1 not found","code":"not_found"}`, Error{404, CodeNotFound, "task t1 not found"}},
		{200, `{"error":"x","code":"pinned"}`, Error{200, CodePinned, "x"}},
		{403, `{"error":"only root"}`, Error{403, CodeForbidden, "only root"}},
		{502, "Bad Gateway\n", Error{502, CodeInternal, "Bad Gateway"}},
		{413, "", Error{413, CodeTooLarge, ""}},
	} {
		if got := errorFrom(c.status, []byte(c.body)); *got != c.want {
			t.Errorf("errorFrom(%d, %q) = %+v, want %+v", c.status, c.body, *got, c.want)
		}
	}
	if got := (&Error{Status: 413}).Error(); got != "api: Request Entity Too Large" {
		t.Errorf("empty message: %q", got)
	}
}
