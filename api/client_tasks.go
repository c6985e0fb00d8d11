package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// The task and node calls, served by the scheduler (and forwarded to it by a joined node's
// daemon). A daemon that is not in cluster mode answers them 404.

// SubmitTask calls POST /v1/tasks: the task as queued.
func (c *Client) SubmitTask(ctx context.Context, spec TaskSpec) (Task, error) {
	var t Task
	err := c.Do(ctx, http.MethodPost, "/v1/tasks", spec, &t)
	return t, err
}

// Tasks calls GET /v1/tasks: at most limit tasks (0: all), newest first.
func (c *Client) Tasks(ctx context.Context, limit int) ([]Task, error) {
	var ts []Task
	err := c.Do(ctx, http.MethodGet, "/v1/tasks?limit="+strconv.Itoa(limit), nil, &ts)
	return ts, err
}

// Task calls GET /v1/tasks/{id}: one task with its placement explanation.
func (c *Client) Task(ctx context.Context, id string) (Task, error) {
	var t Task
	err := c.Do(ctx, http.MethodGet, taskPath(id), nil, &t)
	return t, err
}

// KillTask calls POST /v1/tasks/{id}/kill: a queued task ends at once, a placed one when its
// node has killed it (KillAsked is set meanwhile).
func (c *Client) KillTask(ctx context.Context, id string) (Task, error) {
	var t Task
	err := c.Do(ctx, http.MethodPost, taskPath(id)+"/kill", nil, &t)
	return t, err
}

// TaskLog calls GET /v1/tasks/{id}/logs: up to MaxLogChunk bytes of the task's stream
// ("stdout" or "stderr") from offset.
func (c *Client) TaskLog(ctx context.Context, id, stream string, offset int64) (LogChunk, error) {
	q := url.Values{}
	q.Set("stream", stream)
	q.Set("offset", strconv.FormatInt(offset, 10))
	var ch LogChunk
	err := c.Do(ctx, http.MethodGet, taskPath(id)+"/logs?"+q.Encode(), nil, &ch)
	return ch, err
}

// Nodes calls GET /v1/nodes: the cluster's nodes.
func (c *Client) Nodes(ctx context.Context) ([]NodeStatus, error) {
	var ns []NodeStatus
	err := c.Do(ctx, http.MethodGet, "/v1/nodes", nil, &ns)
	return ns, err
}

func taskPath(id string) string { return "/v1/tasks/" + url.PathEscape(id) }
