package sched

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestSubmitRefusesRootWhenNodesDo(t *testing.T) {
	s, err := NewScheduler(SchedulerConfig{Store: NewMemStore(), Manual: true, LocalityWait: -1, RefuseRootTasks: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Register(context.Background(), NodeRecord{Name: "a", Total: Resources{Cores: 4, MemBytes: 8 << 30}}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Submit(context.Background(), TaskSpec{Command: []string{"true"}})
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "--uid USER") || strings.Contains(err.Error(), "AllowRoot") {
		t.Fatalf("root's task: %v", err)
	}
	if _, err := s.Submit(context.Background(), TaskSpec{Command: []string{"true"}, Uid: 1000, Gid: 1000}); err != nil {
		t.Fatalf("a user's task: %v", err)
	}
}
