package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cohort-dev/cohort/node"
)

// reloadACLOnSIGHUP reloads the coordinator's ACL tokens file on every SIGHUP until ctx
// ends; a file that no longer validates is logged and the tokens in force stay.
func reloadACLOnSIGHUP(ctx context.Context, n *node.Node) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			_ = n.ReloadACLTokens() // logged by the node
		}
	}()
}
