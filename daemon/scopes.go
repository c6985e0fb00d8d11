package daemon

import (
	"io/fs"

	"github.com/eddy-cluster/eddy/runtime"
)

// taskScopes puts the configuration of tasks' scopes and of root's tasks into the task
// runtime's: the share's directory names, the user directories' mode, the container mount
// points, and the scratch directory (defaultScratch unless ScratchDir is set).
func (c *Config) taskScopes(rcfg *runtime.Config, defaultScratch string) {
	rcfg.Layout = runtime.Layout{
		SharedData:   c.SharedDataDir,
		Users:        c.UsersDir,
		Jobs:         c.JobsDir,
		UserDirMode:  fs.FileMode(c.UserDirMode) & fs.ModePerm,
		SharedMount:  c.SharedMount,
		UserMount:    c.UserMount,
		JobMount:     c.JobMount,
		ScratchMount: c.ScratchMount,
	}.WithDefaults()
	rcfg.ScratchDir = c.ScratchDir
	if rcfg.ScratchDir == "" {
		rcfg.ScratchDir = defaultScratch
	}
	rcfg.AllowRoot = c.AllowRootTasks
}
