package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// VerifyStep calls POST /v1/verify/step.
func (c *Client) VerifyStep(ctx context.Context, req VerifyStepRequest) (VerifyStepResponse, error) {
	var out VerifyStepResponse
	err := c.Do(ctx, http.MethodPost, VerifyStepPath, req, &out)
	return out, err
}

// Du calls POST /v1/du, hands every progress line to progress (may be nil) and returns the
// report.
func (c *Client) Du(ctx context.Context, req DuRequest, progress func(DuEvent)) (DuReport, error) {
	var rep *DuReport
	err := c.Stream(ctx, http.MethodPost, DuPath, req, func(line []byte) error {
		var ev DuEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("du: decode: %w", err)
		}
		if ev.Error != "" {
			return fmt.Errorf("du: %s", ev.Error)
		}
		if ev.Done {
			rep = ev.Report
		} else if progress != nil {
			progress(ev)
		}
		return nil
	})
	if err != nil {
		return DuReport{}, err
	}
	if rep == nil {
		return DuReport{}, fmt.Errorf("du: the daemon ended the stream without a report")
	}
	return *rep, nil
}

// Quotas calls GET /v1/quota.
func (c *Client) Quotas(ctx context.Context) ([]QuotaStatus, error) {
	var out []QuotaStatus
	err := c.Do(ctx, http.MethodGet, QuotaPath, nil, &out)
	return out, err
}

// QuotaSet calls POST /v1/quota/set.
func (c *Client) QuotaSet(ctx context.Context, req QuotaSetRequest) (QuotaStatus, error) {
	var out QuotaStatus
	err := c.Do(ctx, http.MethodPost, QuotaSetPath, req, &out)
	return out, err
}

// QuotaRm calls POST /v1/quota/rm.
func (c *Client) QuotaRm(ctx context.Context, req QuotaRmRequest) error {
	return c.Do(ctx, http.MethodPost, QuotaRmPath, req, nil)
}

// ShareSpace calls GET /v1/share/space.
func (c *Client) ShareSpace(ctx context.Context) (ShareSpace, error) {
	var out ShareSpace
	err := c.Do(ctx, http.MethodGet, ShareSpacePath, nil, &out)
	return out, err
}

// GCStatus calls GET /v1/gc/status.
func (c *Client) GCStatus(ctx context.Context) (GCStatus, error) {
	var out GCStatus
	err := c.Do(ctx, http.MethodGet, GCStatusPath, nil, &out)
	return out, err
}
