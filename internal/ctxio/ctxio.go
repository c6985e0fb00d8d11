// Package ctxio stops long copies when their context ends: io.Copy knows nothing of contexts.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r read only while ctx is live: after ctx ends, Read returns ctx's error.
func Reader(ctx context.Context, r io.Reader) io.Reader { return reader{ctx, r} }

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
