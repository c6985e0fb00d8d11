package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/eddy-cluster/eddy/api"
)

// Caller sends one JSON call to an eddy API: in (if not nil) is the JSON body, a 2xx answer's
// body is decoded into out (if not nil), and a non-2xx answer is an *api.Error. *api.Client
// implements it.
type Caller interface {
	Do(ctx context.Context, method, path string, in, out any) error
}

// HandlerCaller is a Caller that serves each call with h in process, as the caller id (put in
// the request context as the daemon's listeners do). The daemon uses it for its own control
// API, so that the status page reads exactly what the CLI reads, without a socket or a token.
func HandlerCaller(h http.Handler, id api.Identity) Caller { return &handlerCaller{h: h, id: id} }

type handlerCaller struct {
	h  http.Handler
	id api.Identity
}

func (c *handlerCaller) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(api.WithIdentity(ctx, c.id), method, "http://eddy"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.RemoteAddr = "127.0.0.1:0"
	rw := &bufferWriter{header: http.Header{}}
	c.h.ServeHTTP(rw, req)
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	if rw.status/100 != 2 {
		return apiError(rw.status, rw.body.Bytes())
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(rw.body.Bytes(), out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// apiError is the *api.Error of a non-2xx answer, as api.Client builds it.
func apiError(status int, body []byte) *api.Error {
	var eb api.ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		if eb.Code == "" {
			eb.Code = api.CodeOf(status)
		}
		return &api.Error{Status: status, Code: eb.Code, Message: eb.Error}
	}
	return &api.Error{Status: status, Code: api.CodeOf(status), Message: strings.TrimSpace(string(body))}
}

// statusOf is the HTTP status an API error stands for (502 when it is no API answer: the
// daemon could not be reached).
func statusOf(err error) int {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// bufferWriter is the http.ResponseWriter of an in-process call.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *bufferWriter) Header() http.Header { return w.header }
func (w *bufferWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}
func (w *bufferWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.body.Len()+len(b) > 64<<20 {
		return 0, errors.New("answer too large")
	}
	return w.body.Write(b)
}
