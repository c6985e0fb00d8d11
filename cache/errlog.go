package cache

// The error log: cache-side errors counted and kept for Stats, each
// condition logged once until it recovers.

import (
	"sync"
	"time"
)

// errorLog keeps the last cache-side error for Stats and the conditions
// that have been logged.
type errorLog struct {
	mu     sync.Mutex
	last   string    // GUARDED_BY(mu)
	lastAt time.Time // GUARDED_BY(mu)
	// INVARIANT: a condition is in conds from its first error until it
	// recovers; it is logged when it enters and when it leaves, never in
	// between.
	conds map[string]bool // GUARDED_BY(mu)
}

// noteError records a cache-side error. Each condition is logged once until
// it recovers (noteRecovered), however many reads hit it.
func (s *Store) noteError(cond string, err error) {
	s.c.errors.Add(1)
	s.errs.mu.Lock()
	s.errs.last = err.Error()
	s.errs.lastAt = time.Now()
	first := !s.errs.conds[cond]
	s.errs.conds[cond] = true
	s.errs.mu.Unlock()
	if first {
		s.log.Warn("cache degraded; reads are served from the origin", "condition", cond, "err", err)
	}
}

func (s *Store) noteRecovered(cond string) {
	s.errs.mu.Lock()
	was := s.errs.conds[cond]
	delete(s.errs.conds, cond)
	s.errs.mu.Unlock()
	if was {
		s.log.Info("cache recovered", "condition", cond)
	}
}
