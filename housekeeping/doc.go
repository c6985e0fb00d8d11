// Package housekeeping decides what `eddy gc` removes from the share and removes it: job
// directories (jobs/<task-id>) whose retention has passed since their task ended, log
// directories (logs/<task-id>) past theirs, and container environment versions beyond the
// newest few (by the rules of envs.Prune). Nothing a queued, assigned or running task uses is
// ever removed: its own job and log directories, any directory one of its inputs or its work
// directory lies in, and the environment version it runs. A task asks to keep its job
// directory with api.TaskSpec.KeepJobDir.
//
// The caller supplies the scheduler's tasks (Options.Tasks); a directory whose task the
// scheduler does not know is aged by its newest modification time.
//
// Periodic runs Run on a schedule for the scheduler (`eddy daemon --gc-every`): one run at a
// time, only while its scheduler leads the group. The daemon wires it; this package knows
// nothing of raft or of the API's routes.
package housekeeping
