package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// CacheWhere calls GET /v1/cache/where?path=P: which nodes cache p (share-relative; "" for
// the whole share) and how much of it.
func (c *Client) CacheWhere(ctx context.Context, p string) (CacheWhere, error) {
	q := url.Values{}
	q.Set("path", p)
	var out CacheWhere
	err := c.Do(ctx, http.MethodGet, CacheWherePath+"?"+q.Encode(), nil, &out)
	return out, err
}

// CacheTop calls GET /v1/cache/where?top=N: the n largest files cached in the cluster.
func (c *Client) CacheTop(ctx context.Context, n int) (CacheTop, error) {
	var out CacheTop
	err := c.Do(ctx, http.MethodGet, CacheWherePath+"?top="+strconv.Itoa(n), nil, &out)
	return out, err
}
