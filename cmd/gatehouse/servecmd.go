package main

import (
	"net"

	"github.com/spf13/cobra"

	"gatehouse/cmd/gatehouse/metrics"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

func newServeCmd(g *globals) *cobra.Command {
	var listen string
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve published mirrors over HTTP to apt clients",
		Long: `Serve every configured mirror's published snapshot read-only over HTTP:
http://LISTEN/<mirror>/dists/... and /<mirror>/pool/... for apt clients:

  deb [signed-by=/usr/share/keyrings/KEYRING.gpg] http://gatehouse:8080/<mirror> <suite> <components>

Also serves a read-only status page at / and Prometheus metrics at /metrics.
Clients inside [status] sessions_from also see the bastion's recorded
sessions there and can replay them in the browser.
Stops gracefully on SIGINT/SIGTERM (requests in flight finish).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadServiceConfig(g)
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Serve.Listen = listen
			}
			return runServe(cmd, g, cfg)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "address to listen on (overrides [serve] listen; default "+serve.DefaultListen+")")
	return c
}

func runServe(cmd *cobra.Command, g *globals, cfg *fileConfig) error {
	names := make([]string, len(cfg.Mirror))
	for i, m := range cfg.Mirror {
		names[i] = m.Name
	}
	addr := cfg.Serve.Addr()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usageErrorf("serve: cannot listen on %s: %v (set [serve] listen to a free address)", addr, err)
	}
	g.log.Info("serving mirrors", "addr", ln.Addr().String(), "mirrors", names, "root", mirror.StoreRoot(cfg.StateDir))
	// The bastion, if any, runs in another process: the page lists its
	// recordings but cannot know its active sessions.
	h, m, err := newStatusSite(cfg, serve.NewHandler(mirror.StoreRoot(cfg.StateDir), names, g.log), false, g.log)
	if err != nil {
		ln.Close()
		return usageErrorf("serve: %v", err)
	}
	opt, err := serveOptions(cfg, false, g, m)
	if err != nil {
		ln.Close()
		return err
	}
	return serve.Serve(cmd.Context(), ln, h, opt)
}

// serveOptions turns [serve] into serve.Options. Under `gatehouse run` with
// a bastion (withBastion), the default max_conns leaves the bastion half of
// the descriptor budget: its connections hold descriptors from the same
// limit (one per unauthenticated client, two or more per session), and a
// flood of HTTP clients must not make SSH logins fail with EMFILE, nor the
// other way round. The limits are logged, so an operator sees what the
// defaults came to.
func serveOptions(cfg *fileConfig, withBastion bool, g *globals, m *metrics.Metrics) (serve.Options, error) {
	sc := cfg.Serve
	opt := serve.Options{
		Log:               g.log,
		MaxConns:          sc.MaxConns,
		MaxConnsPerSource: sc.MaxConnsPerSource,
		MinSendTime:       sc.MinSendTime.Duration,
		IdleTimeout:       sc.IdleTimeout.Duration,
	}
	if sc.MinSendRate != "" {
		rate, err := mirror.ParseRate(sc.MinSendRate)
		if err != nil {
			return opt, usageErrorf("[serve] min_send_rate: %v", err)
		}
		opt.MinSendRate = rate
	}
	fds := serve.FDLimit()
	if opt.MaxConns == 0 {
		reserve := 0
		if withBastion {
			reserve = fds * 3 / 4 / 2
		}
		opt.MaxConns = serve.DefaultMaxConns(fds, reserve)
	}
	if m != nil {
		opt.Refused = m.ObserveRefused
	}
	if opt.MaxConnsPerSource == 0 {
		opt.MaxConnsPerSource = serve.DefaultMaxConnsPerSource
	}
	g.log.Info("serve limits", "max_conns", opt.MaxConns, "max_conns_per_source", opt.MaxConnsPerSource, "fd_limit", fds)
	return opt, nil
}
