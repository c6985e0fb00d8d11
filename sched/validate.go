package sched

import "fmt"

// RootTaskRefused is the message of a submit refused because the task would run as root.
const RootTaskRefused = "tasks run as a user: submit with --uid USER " +
	"(root's tasks are refused unless the nodes allow them: --allow-root-tasks)"

// checkSubmit refuses, at submit, a task that every node would refuse to run, with what to do
// instead; Submit calls it once the task's shape and fit are checked.
func (s *Scheduler) checkSubmit(spec TaskSpec) error {
	if spec.Uid == 0 && s.cfg.RefuseRootTasks {
		return fmt.Errorf("submit: %w: %s", ErrBadRequest, RootTaskRefused)
	}
	return nil
}
