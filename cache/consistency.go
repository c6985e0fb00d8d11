package cache

import (
	"context"
	"fmt"
	"time"

	"github.com/eddy-cluster/eddy/origin"
)

// OpenFileChecked is OpenFile for attributes the origin gave at checkedAt,
// some time before this open: the dataset consistency mode of fusefs lets
// an open trust a check made within its TTL instead of asking the origin
// again. The entry's last check is not moved past checkedAt, so the
// revalidation of open files (Config.Revalidate) still counts from the
// origin's answer; a fingerprint other than the cached version's installs
// the version attr names, as OpenFile does. The reads that follow keep
// every guarantee of OpenFile's: chunks are keyed by the version's
// fingerprint, and a chunk fetched from an origin file that is no longer
// that version drops it and restarts the read on the new one.
func (s *Store) OpenFileChecked(ctx context.Context, name string, attr origin.Attr, checkedAt time.Time) (Handle, OpenResult, error) {
	name, err := cleanName(name)
	if err != nil {
		return nil, OpenResult{}, err
	}
	if !attr.IsRegular() || !s.Cacheable(name) {
		return nil, OpenResult{}, fmt.Errorf("cache: open %s: %w", name, ErrNotCacheable)
	}
	e, err := s.acquire(name)
	if err != nil {
		return nil, OpenResult{}, err
	}
	changed, err := e.validateAt(ctx, attr, checkedAt)
	if err != nil {
		e.unref()
		return nil, OpenResult{}, err
	}
	return newHandle(e), OpenResult{Changed: changed}, nil
}
