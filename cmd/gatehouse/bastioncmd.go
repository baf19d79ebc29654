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

SIGHUP reloads CA keys, the revocation list, the rules and every other
setting that can change live, without dropping live sessions (sessions whose
certificate is now revoked are closed); it names each changed setting that
only takes effect after a restart.
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
	if err := fc.resolveRecordingsTarget(); err != nil {
		return nil, err
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
	var u bastion.CertUse
	var jump, proxy bool
	c := &cobra.Command{
		Use:   "check-cert FILE",
		Short: "Explain, step by step, whether the bastion would accept a certificate for a use",
		Long: `Decide, with the live bastion's own decision functions, whether the OpenSSH
user certificate in FILE would be accepted, and explain every step: each
certificate check, the rule and entry that allow the destination, and a
missing permit-port-forwarding (jumps) or permit-pty (interactive recorded
sessions).

Say the intended use with --to HOST:PORT and --jump (ssh -J to a jump
destination; --login is the bastion login, a principal) or --proxy (a
recorded session; --login is the login on the target), plus --pty for an
interactive terminal. --login user@host[:port] alone is the recording
proxy's login@host@bastion form. Without --to, it lists what the
certificate can do under each rule.

It reads the same configuration, CA keys, revocation list and rules as
the bastion, opens no audit log and writes nothing, so it runs beside a
live bastion. Exit 0 if accepted, 3 if refused (or, without --to, if the
certificate can do nothing), 2 for a configuration or usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if jump && proxy {
				return usageErrorf("--jump and --proxy exclude each other")
			}
			if (jump || proxy) && u.To == "" {
				return usageErrorf("--jump and --proxy need --to HOST:PORT")
			}
			if jump {
				u.Mode = "jump"
			}
			if proxy {
				u.Mode = "proxy"
			}
			cfg, err := loadBastionConfig(g)
			if err != nil {
				return err
			}
			srv, err := bastion.NewCheckOnly(*cfg, g.log, time.Now)
			if err != nil {
				return usageErrorf("bastion: %v", err)
			}
			report, ok := srv.CheckCertUse(args[0], u)
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
	c.Flags().StringVar(&u.Login, "login", "", "login name the client would send: a principal for --jump (default the first), the target login for --proxy, or user@host[:port]")
	c.Flags().StringVar(&u.To, "to", "", "destination HOST:PORT (default: list what the certificate can do)")
	c.Flags().BoolVar(&jump, "jump", false, "decide an ssh -J jump to --to")
	c.Flags().BoolVar(&proxy, "proxy", false, "decide a recorded session to --to as --login")
	c.Flags().BoolVar(&u.PTY, "pty", false, "ask for an interactive terminal")
	c.Flags().StringVar(&u.Source, "source", "", "client source address (default 127.0.0.1)")
	return c
}
