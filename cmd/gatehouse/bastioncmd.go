package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"gatehouse/bastion"
)

func newBastionCmd(g *globals) *cobra.Command {
	var listen string
	c := &cobra.Command{
		Use:   "bastion",
		Short: "Run the certificate-only SSH bastion",
		Long: `Run the SSH bastion configured in [bastion]: only OpenSSH user certificates
from user_ca_keys are accepted, and each principal may open direct-tcpip
(ssh -J / ssh -W) channels only to the destinations its [[bastion.rule]]
tables name. Every decision goes to the hash-chained audit log.

SIGHUP reloads CA keys, the revocation list and the rules without dropping
live sessions (sessions whose certificate is now revoked are closed).
SIGINT/SIGTERM close connections with a message and exit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadBastionConfig(g)
			if err != nil {
				return err
			}
			if listen != "" {
				cfg.Listen = listen
			}
			return runBastion(cmd.Context(), g, cfg)
		},
	}
	c.Flags().StringVar(&listen, "listen", "", "address to listen on (overrides [bastion] listen)")
	c.AddCommand(newCheckCertCmd(g))
	return c
}

func loadBastionConfig(g *globals) (*bastion.Config, error) {
	fc, err := loadServiceConfig(g)
	if err != nil {
		return nil, err
	}
	if fc.Bastion == nil {
		return nil, usageErrorf("%s has no [bastion] table: add one (see configs/gatehouse.toml)", g.configPath)
	}
	return fc.Bastion, nil
}

func runBastion(ctx context.Context, g *globals, cfg *bastion.Config) error {
	srv, err := bastion.New(*cfg, g.log, time.Now)
	if err != nil {
		return usageErrorf("bastion: %v", err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return usageErrorf("bastion: cannot listen on %s: %v (set [bastion] listen to a free address)", cfg.Listen, err)
	}
	go reloadOnHUP(ctx, g, srv, cfg)
	g.log.Info("bastion listening", "addr", ln.Addr().String())
	return srv.Serve(ctx, ln)
}

func newCheckCertCmd(g *globals) *cobra.Command {
	var login, source string
	c := &cobra.Command{
		Use:   "check-cert FILE",
		Short: "Explain, line by line, whether a certificate would be accepted and by which rule",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadBastionConfig(g)
			if err != nil {
				return err
			}
			srv, err := bastion.New(*cfg, g.log, time.Now)
			if err != nil {
				return usageErrorf("bastion: %v", err)
			}
			defer srv.Close()
			report, ok := srv.CheckCert(args[0], login, source)
			if g.json {
				if err := writeJSON(g.stdout, map[string]any{"certificate": args[0], "accepted": ok, "report": report}); err != nil {
					return err
				}
			} else {
				for _, l := range report {
					fmt.Fprintln(g.stdout, l)
				}
			}
			if !ok {
				return &refusedError{fmt.Errorf("certificate %s would be refused", args[0])}
			}
			return nil
		},
	}
	c.Flags().StringVar(&login, "login", "", "login name the client would send (default: the first principal)")
	c.Flags().StringVar(&source, "source", "", "client source address (default 127.0.0.1)")
	return c
}
