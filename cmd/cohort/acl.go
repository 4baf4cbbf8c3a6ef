package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/state"
	"github.com/cohort-dev/cohort/web"
)

// maxTokensFileBytes bounds an ACL tokens file.
const maxTokensFileBytes = 4 << 20

// loadTokensFile reads and validates an ACL tokens file; errors name the file, line
// and field.
func loadTokensFile(path string) ([]api.Token, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--acl-tokens-file: %w", err)
	}
	if st.Size() > maxTokensFileBytes {
		return nil, fmt.Errorf("--acl-tokens-file %s: %d bytes, at most %d", path, st.Size(), maxTokensFileBytes)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--acl-tokens-file: %w", err)
	}
	tokens, err := api.ParseTokens(raw)
	if err != nil {
		return nil, fmt.Errorf("--acl-tokens-file %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		slog.Warn("the ACL tokens file is readable by other users; chmod 600 it (or list secret_sha256 only)", "file", path)
	}
	return tokens, nil
}

// coordinatorACL is a coordinator's access control: nil when ACLs are off.
type coordinatorACL struct {
	acl  *api.ACL
	path string
	log  *slog.Logger
}

// newCoordinatorACL builds the ACL over tokens (already loaded from path) for the
// coordinator whose state is read through stateOf; it returns nil when path is empty.
func newCoordinatorACL(path string, tokens []api.Token, stateOf func() *state.Store, logger *slog.Logger) *coordinatorACL {
	if path == "" {
		logger.Warn("ACLs are off: anyone who reaches the gRPC API may submit, cancel and administer; " +
			"start every coordinator with --acl-tokens-file to require tokens")
		return nil
	}
	logger.Info("ACLs are on", "file", path, "tokens", len(tokens))
	return &coordinatorACL{
		acl:  api.NewACL(api.ACLConfig{Tokens: tokens, ParseSpec: parseSpecTemplate, State: stateOf, Logger: logger}),
		path: path, log: logger,
	}
}

// reloadOnSIGHUP reloads the tokens file on every SIGHUP until ctx ends; a file that no
// longer validates is logged and the tokens in force stay.
func (c *coordinatorACL) reloadOnSIGHUP(ctx context.Context) {
	if c == nil {
		return
	}
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
			tokens, err := loadTokensFile(c.path)
			if err != nil {
				c.log.Error("ACL tokens not reloaded; the previous tokens stay in force", "err", err)
				continue
			}
			c.acl.SetTokens(tokens)
			c.log.Info("ACL tokens reloaded", "file", c.path, "tokens", len(tokens))
		}
	}()
}

// dashboardToken mints the read token the dashboard's own gRPC client uses ("" when ACLs
// are off). It lives only in this process, so only this coordinator accepts it: the
// dashboard reads this coordinator's replicated state (stale reads) rather than having
// its reads forwarded to a leader that does not know the token.
func (c *coordinatorACL) dashboardToken(nodeID string) string {
	if c == nil {
		return ""
	}
	return c.acl.Mint("dashboard@"+nodeID, api.RoleRead)
}

// serverOptions are the gRPC server options enforcing the ACL (none when off).
func (c *coordinatorACL) serverOptions() []grpc.ServerOption {
	if c == nil {
		return nil
	}
	return c.acl.ServerOptions()
}

// protect wraps the dashboard handler with a read-token login when ACLs are on.
func (c *coordinatorACL) protect(h http.Handler) http.Handler {
	if c == nil {
		return h
	}
	return web.RequireToken(h, web.AuthConfig{
		Check: func(secret string) error {
			_, err := c.acl.Check(secret, api.RoleRead)
			return err
		},
		Logger: c.log,
	})
}
