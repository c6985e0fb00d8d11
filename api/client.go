package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to one eddy daemon's API, over its unix socket or over TCP
// (cluster mode) with a bearer token.
type Client struct {
	base string // "http://eddy" for unix sockets, "http(s)://host:port" for TCP
	// bases: the addresses of a scheduler group's members (NewTCP with a comma-separated list),
	// tried in turn (see sendAny); nil for one address.
	bases []string
	cur   atomic.Int32 // index in bases of the member that answered last
	token string
	hc    *http.Client
	where string // for error messages
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends "Authorization: Bearer TOKEN" on every call.
func WithToken(token string) Option { return func(c *Client) { c.token = strings.TrimSpace(token) } }

// WithTLS uses HTTPS with the given configuration for TCP addresses.
func WithTLS(cfg *tls.Config) Option {
	return func(c *Client) {
		if strings.HasPrefix(c.base, "http://") && c.where != "" && !strings.HasPrefix(c.where, "unix:") {
			c.base = "https://" + strings.TrimPrefix(c.base, "http://")
		}
		for i, b := range c.bases {
			if strings.HasPrefix(b, "http://") {
				c.bases[i] = "https://" + strings.TrimPrefix(b, "http://")
			}
		}
		if t, ok := c.hc.Transport.(*http.Transport); ok {
			t.TLSClientConfig = cfg
		}
	}
}

// WithTimeout bounds each call that does not stream (default: none; the
// caller's context bounds calls).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.hc.Timeout = d } }

// NewUnix returns a client for the daemon listening on a unix socket.
func NewUnix(socket string, opts ...Option) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	c := &Client{base: "http://eddy", hc: &http.Client{Transport: tr}, where: "unix:" + socket}
	for _, o := range opts {
		o(c)
	}
	return c
}

// NewTCP returns a client for a daemon's TCP address ("host:port", or a full
// "http://" / "https://" URL), or for a scheduler group: several addresses, comma-separated,
// tried in turn until one answers (a follower forwards to the leader; see sendAny).
func NewTCP(addr string, opts ...Option) *Client {
	var bases []string
	for _, a := range strings.Split(addr, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		bases = append(bases, strings.TrimRight(a, "/"))
	}
	base := ""
	if len(bases) > 0 {
		base = bases[0]
	}
	if len(bases) < 2 {
		bases = nil
	}
	c := &Client{base: base, bases: bases, hc: &http.Client{Transport: &http.Transport{MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second}}, where: addr}
	for _, o := range opts {
		o(c)
	}
	return c
}

// String names the daemon the client talks to.
func (c *Client) String() string { return c.where }

// Do sends one call: in (if not nil) is sent as the JSON body, and a 2xx
// answer's JSON body is decoded into out (if not nil). A non-2xx answer is an
// *Error. The typed methods are built on it; the node agent calls it with the
// cluster protocol's paths (RegisterPath, HeartbeatPath).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Stream sends one call and hands each JSON line of the answer to fn.
func (c *Client) Stream(ctx context.Context, method, path string, in any, fn func(line []byte) error) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s %s: read stream: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = b
	}
	if c.bases != nil {
		return c.sendAny(ctx, method, path, body)
	}
	return c.sendTo(ctx, c.base, method, path, body, "")
}

func (c *Client) sendTo(ctx context.Context, base, method, path string, body []byte, idemKey string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idemKey != "" {
		req.Header.Set(IdempotencyHeader, idemKey)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("cannot reach the eddy daemon at %s (is `eddy daemon` running? set --socket or EDDY_SOCKET): %w", c.where, unwrapURL(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, errorFrom(resp.StatusCode, b)
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorFrom is the *Error of a non-2xx answer: the ErrorBody's text and code, or, from
// something that is not eddy (a proxy), the body as text and the status's code.
func errorFrom(status int, body []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		if eb.Code == "" {
			eb.Code = CodeOf(status)
		}
		return &Error{Status: status, Code: eb.Code, Message: eb.Error}
	}
	return &Error{Status: status, Code: CodeOf(status), Message: strings.TrimSpace(string(body))}
}
