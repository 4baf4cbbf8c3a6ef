package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"google.golang.org/grpc"

	"github.com/cohort-dev/cohort/coordinator/api"
	"github.com/cohort-dev/cohort/coordinator/state"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/web"
)

// maxTokensFileBytes bounds an ACL tokens file.
const maxTokensFileBytes = 4 << 20

// loadTokensFile reads and validates an ACL tokens file; errors name the file, line
// and field.
func loadTokensFile(path string, log *slog.Logger) ([]api.Token, error) {
	const field = "Coordinator.ACLTokensFile"
	st, err := os.Stat(path)
	if err != nil {
		return nil, configErr(field, "", err)
	}
	if st.Size() > maxTokensFileBytes {
		return nil, configErr(field, path, fmt.Errorf("%d bytes, at most %d", st.Size(), maxTokensFileBytes))
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr(field, "", err)
	}
	tokens, err := api.ParseTokens(raw)
	if err != nil {
		return nil, configErr(field, path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		log.Warn("the ACL tokens file is readable by other users; chmod 600 it (or list secret_sha256 only)", "file", path)
	}
	return tokens, nil
}

// nodeACL is a coordinator's access control; nil when ACLs are off (every method
// accepts a nil receiver).
type nodeACL struct {
	acl  *api.ACL
	path string
	log  *slog.Logger
}

// newNodeACL builds the ACL over tokens (already loaded from path) for the coordinator
// whose state is read through stateOf.
func newNodeACL(path string, tokens []api.Token, parse func([]byte) (*cohortv1.Job, error), stateOf func() *state.Store, log *slog.Logger) *nodeACL {
	log.Info("ACLs are on", "file", path, "tokens", len(tokens))
	return &nodeACL{
		acl:  api.NewACL(api.ACLConfig{Tokens: tokens, ParseSpec: parse, SearchNamespace: searchNamespace, State: stateOf, Logger: log}),
		path: path, log: log,
	}
}

// ReloadACLTokens reads Coordinator.ACLTokensFile again and puts its tokens in force
// (cmd/ calls it on SIGHUP). A file that no longer validates is logged and returned,
// and the tokens in force stay.
func (n *Node) ReloadACLTokens() error {
	c := n.acl
	if c == nil {
		return errors.New("node: ACLs are off")
	}
	tokens, err := loadTokensFile(c.path, c.log)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			err = ce.Err
		}
		c.log.Error("ACL tokens not reloaded; the previous tokens stay in force", "file", c.path, "err", err)
		return err
	}
	c.acl.SetTokens(tokens)
	c.log.Info("ACL tokens reloaded", "file", c.path, "tokens", len(tokens))
	return nil
}

// dashboardToken mints the read token the dashboard's own gRPC client uses ("" when ACLs
// are off). It lives only in this process, so only this coordinator accepts it: the
// dashboard reads this coordinator's replicated state (stale reads) rather than having
// its reads forwarded to a leader that does not know the token.
func (c *nodeACL) dashboardToken(nodeID string) string {
	if c == nil {
		return ""
	}
	return c.acl.Mint("dashboard@"+nodeID, api.RoleRead)
}

// agentToken mints the agent token a node agent of this process presents to this
// coordinator ("" when ACLs are off); like the dashboard's, only this coordinator
// accepts it.
func (c *nodeACL) agentToken(nodeID string) string {
	if c == nil {
		return ""
	}
	return c.acl.Mint("agent@"+nodeID, api.RoleAgent)
}

// serverOptions are the gRPC server options enforcing the ACL (none when off).
func (c *nodeACL) serverOptions() []grpc.ServerOption {
	if c == nil {
		return nil
	}
	return c.acl.ServerOptions()
}

// protect wraps the dashboard handler with a read-token login when ACLs are on.
func (c *nodeACL) protect(h http.Handler) http.Handler {
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
