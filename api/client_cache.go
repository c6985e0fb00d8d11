package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Health calls GET /v1/health.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.Do(ctx, http.MethodGet, "/v1/health", nil, &h)
	return h, err
}

// CacheStats calls GET /v1/cache/stats.
func (c *Client) CacheStats(ctx context.Context) (CacheStats, error) {
	var s CacheStats
	err := c.Do(ctx, http.MethodGet, "/v1/cache/stats", nil, &s)
	return s, err
}

// CacheList calls GET /v1/cache/ls for a path (share-relative, or absolute
// under the mountpoint; "" for everything), resolved against cwd as in
// PathsRequest.
func (c *Client) CacheList(ctx context.Context, path, cwd string) ([]FileInfo, error) {
	q := url.Values{}
	q.Set("path", path)
	if cwd != "" {
		q.Set("cwd", cwd)
	}
	var out []FileInfo
	err := c.Do(ctx, http.MethodGet, "/v1/cache/ls?"+q.Encode(), nil, &out)
	return out, err
}

// CacheWarm calls POST /v1/cache/warm and hands every progress line to fn.
// It returns an error naming the paths that failed, after all were tried.
func (c *Client) CacheWarm(ctx context.Context, req PathsRequest, fn func(WarmEvent)) error {
	var failed []string
	err := c.Stream(ctx, http.MethodPost, "/v1/cache/warm", req, func(line []byte) error {
		var ev WarmEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("warm: decode progress: %w", err)
		}
		if ev.Done && ev.Error != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", ev.Arg, ev.Error))
		}
		if fn != nil {
			fn(ev)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("warm failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// CachePin, CacheUnpin and CacheEvict call POST /v1/cache/{pin,unpin,evict}.
func (c *Client) CachePin(ctx context.Context, req PathsRequest) (PathsResponse, error) {
	return c.paths(ctx, "pin", req)
}

// CacheUnpin: see CachePin.
func (c *Client) CacheUnpin(ctx context.Context, req PathsRequest) (PathsResponse, error) {
	return c.paths(ctx, "unpin", req)
}

// CacheEvict: see CachePin.
func (c *Client) CacheEvict(ctx context.Context, req PathsRequest) (PathsResponse, error) {
	return c.paths(ctx, "evict", req)
}

func (c *Client) paths(ctx context.Context, op string, req PathsRequest) (PathsResponse, error) {
	var out PathsResponse
	err := c.Do(ctx, http.MethodPost, "/v1/cache/"+op, req, &out)
	return out, err
}
