package daemon

import (
	"context"
	"fmt"
)

// startCluster joins or leads the cluster when a cluster flag is set
// (issue 5). Without one the daemon is a single node and this does nothing.
func (d *Daemon) startCluster(ctx context.Context) error {
	c := d.cfg
	if !c.Scheduler && c.Join == "" && c.Listen == "" {
		return nil
	}
	return fmt.Errorf("cluster mode (--scheduler, --join, --listen) is not available in this build yet")
}
