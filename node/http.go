package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cohort-dev/cohort/web"
)

// startHTTP serves the node's HTTP endpoints on Config.HTTPAddr:
//   - /metrics: the node's registry;
//   - /healthz: with a coordinator, 200 once a leader is known (503 before); without,
//     200 while the process serves HTTP (a liveness probe);
//   - /readyz: 200 when Ready (the coordinator knows a leader and every node agent has
//     registered), 503 before that or while shutting down (a readiness probe);
//   - / with a coordinator: the dashboard, behind a read-token login when ACLs are on.
//
// Every route has an access rule (httpRouteRules, enforced by httpGate): over HTTPS the
// dashboard takes a client certificate of the cluster as its credential.
func (n *Node) startHTTP() error {
	hl, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return configErr("HTTPAddr", n.cfg.HTTPAddr, err)
	}
	n.httpAddr = hl.Addr().String()
	tlsCfg := n.httpTLSConfig()
	mux := newHTTPRoutes()
	gate := &httpGate{routes: mux, log: n.log.With("role", "http"), tls: tlsCfg != nil}
	mux.handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.handleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !n.Ready() {
			msg := "not registered with a coordinator"
			if n.srv != nil && n.srv.LeaderAddr() == "" {
				msg = "no leader"
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if n.srv == nil {
		mux.handleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		})
	} else {
		srv := n.srv
		mux.handleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if srv.LeaderAddr() == "" {
				http.Error(w, "no leader", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		// The dashboard reads the cluster through this coordinator's own gRPC API.
		conn, err := dial([]string{n.grpcAddr}, n.coordinatorCreds(), n.acl.dashboardToken(n.cfg.Coordinator.NodeID))
		if err != nil {
			_ = hl.Close()
			return fmt.Errorf("dashboard: %w", err)
		}
		n.onStop(conn.Close)
		src := newWebSource(conn)
		src.stale = n.acl != nil // its minted token is valid on this coordinator only
		src.store = n.store      // epochs and checkpoints, which the API does not serve
		gate.dashboard = web.New(web.Config{Source: src, Logger: n.log.With("role", "web"), Context: n.runCtx})
		gate.login = n.acl.protect(gate.dashboard)
		gate.aclsOn = n.acl != nil
		gate.revoked = func(id string) bool {
			rec, err := srv.State().TokenByID(nil, id)
			return err == nil && rec != nil && rec.Revoked
		}
		mux.handle("GET /static/", gate.login)
		if gate.aclsOn {
			mux.handle("GET /login", gate.login)
			mux.handle("POST /login", gate.login)
			mux.handle("/logout", gate.login)
		}
		mux.handle("/", gate.login) // the gate serves gate.dashboard itself to a certificate it admits
	}
	n.httpRoutes = mux
	hs := &http.Server{Handler: gate, ReadHeaderTimeout: 10 * time.Second}
	if tlsCfg != nil { // HTTPS with the node's certificate
		hs.TLSConfig = tlsCfg
		hl = tls.NewListener(hl, tlsCfg)
	}
	n.serveWG.Add(1)
	go func() { defer n.serveWG.Done(); _ = hs.Serve(hl) }()
	n.onStop(func() error { _ = hs.Close(); return nil })
	return nil
}
