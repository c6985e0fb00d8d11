package sched

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// stepDownLocked drops the state: this scheduler no longer leads (or a commit failed and what
// it holds may not be the replicated state). It is rebuilt from the FSM when it leads again.
func (s *Scheduler) stepDownLocked(why string) {
	if s.rep == nil {
		return
	}
	if s.leading {
		s.log.Warn("scheduler: no longer acting as the group's leader", "why", why)
	}
	s.leading = false
	s.resetLocked(nil, nil)
	s.wakeAllLocked()
	select {
	case s.regain <- struct{}{}:
	default:
	}
}

// watchLeadership takes over when this member becomes the leader, and steps down when it
// stops being one.
func (s *Scheduler) watchLeadership() {
	defer s.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.rep.notify:
		case <-s.regain:
		case <-t.C:
		}
		leader := s.rep.IsLeader()
		s.mu.Lock()
		leading := s.leading
		if !leader && leading {
			s.stepDownLocked("lost leadership")
		}
		s.mu.Unlock()
		if leader && !leading {
			s.takeOver()
		}
	}
}

// takeOver starts acting as the leader: once every committed command is applied (a barrier),
// the state is rebuilt from the FSM. Placement waits a heartbeat round, so that the nodes
// report their tasks first. A task the old leader assigned is assigned in that state (the
// assignment was committed before it was handed out), and is never assigned again.
func (s *Scheduler) takeOver() {
	if err := s.rep.r.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
		s.log.Warn("scheduler: leader barrier", "err", err)
		return
	}
	if s.fsm.isLegacy() {
		if srv, err := s.rep.Members(); err == nil && len(srv) == 1 {
			tasks, nodes := s.fsm.state()
			if _, err := s.rep.apply([]Command{{ID: newCommandID(), Op: OpLoad, Tasks: tasks, Nodes: nodes}}, time.Minute); err != nil {
				s.log.Warn("scheduler: put the store's earlier state in the log", "err", err)
				return
			}
			s.log.Info("scheduler: the store's state from before replication is now in the log", "tasks", len(tasks), "nodes", len(nodes))
		} else {
			s.log.Warn("scheduler: this store has state from before replication, but the group has several members: " +
				"it is not carried over (start the old scheduler alone first, then add members)")
		}
	}
	s.rep.fixSelfAddress()
	tasks, nodes := s.fsm.state()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || !s.rep.IsLeader() {
		return
	}
	s.resetLocked(nodes, tasks)
	s.leading = true
	s.pushGen = max(s.pushGen+1, uint64(time.Now().UnixNano()))
	s.pushBase = s.pushGen
	clear(s.nodeGen)
	s.readyAt = s.cfg.Now().Add(s.cfg.Heartbeat + 500*time.Millisecond)
	s.log.Info("scheduler: leading the group", "tasks", len(s.tasks), "queued", len(s.queue), "nodes", len(s.nodes),
		"placing_in", s.cfg.Heartbeat+500*time.Millisecond)
	s.kick()
}

// Leading reports whether this scheduler acts as the leader now (always without a Replica).
func (s *Scheduler) Leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leading
}

// Replica is the scheduler's group member (nil when not replicated).
func (s *Scheduler) Replica() *Replica { return s.rep }

// commitLocked commits cmds through the state machine and returns its answers. A failure means
// this scheduler is not (or no longer) the leader, or its state and the FSM's differ: it steps
// down and the caller's change is void.
func (s *Scheduler) commitLocked(cmds ...Command) ([]ApplyResult, error) {
	for i := range cmds {
		if cmds[i].ID == "" {
			cmds[i].ID = newCommandID()
		}
	}
	var res []ApplyResult
	if s.rep == nil {
		for _, c := range cmds {
			b, err := json.Marshal(c) // the FSM keeps its own copy, as through the log
			if err != nil {
				return nil, err
			}
			var cc Command
			if err := json.Unmarshal(b, &cc); err != nil {
				return nil, err
			}
			res = append(res, s.fsm.apply(0, cc))
		}
	} else {
		var err error
		if res, err = s.rep.apply(cmds, s.cfg.ApplyTimeout); err != nil {
			s.stepDownLocked("commit: " + err.Error())
			return res, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
	}
	for i, r := range res {
		if r.Err != "" && !r.Dup {
			s.log.Error("scheduler: command refused by the state machine", "op", cmds[i].Op, "err", r.Err)
			if s.rep != nil {
				s.stepDownLocked("state differs from the replicated state")
				return res, fmt.Errorf("%w: %s", ErrNotLeader, r.Err)
			}
			return res, errors.New(r.Err)
		}
	}
	return res, nil
}
