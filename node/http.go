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
func (n *Node) startHTTP() error {
	hl, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return configErr("HTTPAddr", n.cfg.HTTPAddr, err)
	}
	n.httpAddr = hl.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
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
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		})
	} else {
		srv := n.srv
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
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
		mux.Handle("/", n.acl.protect(web.New(web.Config{Source: src, Logger: n.log.With("role", "web"), Context: n.runCtx})))
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if cfg := n.httpTLSConfig(); cfg != nil { // HTTPS with the node's certificate
		hs.TLSConfig = cfg
		hl = tls.NewListener(hl, cfg)
	}
	n.serveWG.Add(1)
	go func() { defer n.serveWG.Done(); _ = hs.Serve(hl) }()
	n.onStop(func() error { _ = hs.Close(); return nil })
	return nil
}
