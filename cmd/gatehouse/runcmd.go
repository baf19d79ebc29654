package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gatehouse/bastion"
	"gatehouse/cmd/gatehouse/metrics"
	"gatehouse/mirror"
	"gatehouse/mirror/serve"
)

func newRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run serve, the bastion and scheduled mirror syncs in one process",
		Long: `Run the HTTP mirror server, the SSH bastion (when [bastion] is configured)
and each mirror's sync schedule (schedule = "hourly", "daily" or a duration
like "30m") in one process, as gatehouse.service does.

Readiness is reported to systemd (sd_notify READY=1) once both listeners are
up. SIGHUP reloads the bastion's settings (naming each one that needs a restart),
CA keys and revocation list. SIGTERM
or SIGINT stop new work, let in-flight syncs stop cleanly (the published
mirror stays as it was), and close SSH sessions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadServiceConfig(g)
			if err != nil {
				return err
			}
			return runAll(cmd.Context(), g, cfg)
		},
	}
}

// scheduleInterval parses a mirror's schedule; 0 means "on demand only".
func scheduleInterval(s string) (time.Duration, error) {
	switch strings.TrimSpace(s) {
	case "":
		return 0, nil
	case "hourly":
		return time.Hour, nil
	case "daily":
		return 24 * time.Hour, nil
	case "weekly":
		return 7 * 24 * time.Hour, nil
	}
	var d mirror.Duration
	if err := d.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("schedule %q: use \"hourly\", \"daily\", \"weekly\" or a duration like \"30m\"", s)
	}
	if d.Duration < time.Minute {
		return 0, fmt.Errorf("schedule %q: syncing more often than once a minute only burdens the upstream", s)
	}
	return d.Duration, nil
}

func runAll(ctx context.Context, g *globals, cfg *fileConfig) error {
	intervals := map[string]time.Duration{}
	for _, m := range cfg.Mirror {
		iv, err := scheduleInterval(m.Schedule)
		if err != nil {
			return usageErrorf("[[mirror]] %s: %v", m.Name, err)
		}
		intervals[m.Name] = iv
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	errc := make(chan error, 3)

	// serve
	names := make([]string, len(cfg.Mirror))
	for i, m := range cfg.Mirror {
		names[i] = m.Name
	}
	h, m, err := newStatusSite(cfg, serve.NewHandler(mirror.StoreRoot(cfg.StateDir), names, g.log), cfg.Bastion != nil, g.log)
	if err != nil {
		return usageErrorf("serve: %v", err)
	}
	sopt, err := serveOptions(cfg, cfg.Bastion != nil, g, m)
	if err != nil {
		return err
	}
	sln, err := net.Listen("tcp", cfg.Serve.Addr())
	if err != nil {
		return usageErrorf("serve: cannot listen on %s: %v", cfg.Serve.Addr(), err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := serve.Serve(ctx, sln, h, sopt); err != nil {
			errc <- err
		}
		if ctx.Err() != nil {
			g.log.Info("shutdown: HTTP server stopped")
		}
	}()
	g.log.Info("serving mirrors", "addr", sln.Addr().String())

	// bastion
	if cfg.Bastion != nil {
		if err := cfg.resolveRecordingsTarget(); err != nil {
			return err
		}
		srv, err := bastion.New(*cfg.Bastion, g.log, time.Now)
		if err != nil {
			cancel()
			wg.Wait()
			return usageErrorf("bastion: %v", err)
		}
		defer srv.Close()
		srv.SetObserver(h.ObserveBastion)
		bln, err := net.Listen("tcp", cfg.Bastion.Listen)
		if err != nil {
			cancel()
			wg.Wait()
			return usageErrorf("bastion: cannot listen on %s: %v", cfg.Bastion.Listen, err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, bln); err != nil {
				errc <- err
			}
			if ctx.Err() != nil {
				g.log.Info("shutdown: bastion stopped (live sessions were told and closed)")
			}
		}()
		go func() {
			defer wg.Done()
			reloadOnHUP(ctx, g, srv, cfg.Bastion)
		}()
		g.log.Info("bastion listening", "addr", bln.Addr().String())
	}

	// schedules
	for _, mc := range cfg.Mirror {
		if intervals[mc.Name] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			syncLoop(ctx, g, cfg, mc, intervals[mc.Name], m)
		}()
	}

	if err := sdNotify("READY=1\nSTATUS=serving"); err != nil {
		g.log.Warn("sd_notify failed", "err", err)
	}
	var runErr error
	select {
	case <-ctx.Done():
		g.log.Info("shutdown: signal received; stopping scheduled syncs, the bastion and the HTTP server")
	case runErr = <-errc:
		g.log.Error("shutdown: a component failed; stopping the others", "err", runErr)
	}
	sdNotify("STOPPING=1")
	cancel()
	// Each component logs its own step; wait for them all.
	wg.Wait()
	g.log.Info("shutdown: complete; every component has stopped")
	return runErr
}

// syncLoop syncs one mirror every interval, starting after a random part of
// the first interval (at most 5 minutes) so appliances and mirrors don't
// all hit upstreams at once.
func syncLoop(ctx context.Context, g *globals, cfg *fileConfig, m mirror.Config, every time.Duration, met *metrics.Metrics) {
	first := time.Duration(rand.Int64N(int64(min(every, 5*time.Minute))))
	t := time.NewTimer(first)
	defer t.Stop()
	g.log.Info("sync scheduled", "mirror", m.Name, "every", every, "next", time.Now().Add(first).Round(time.Second).Format(time.RFC3339))
	for {
		select {
		case <-ctx.Done():
			g.log.Info("shutdown: schedule stopped", "mirror", m.Name)
			return
		case <-t.C:
		}
		g.log.Info("scheduled sync starting", "mirror", m.Name)
		rep, err := mirror.Sync(ctx, cfg.StateDir, m, mirror.Options{Log: g.log, Now: time.Now, Signing: cfg.Signing, HookEnv: os.Environ(), PublishTargets: cfg.publishTargetsFor(g)})
		met.ObserveSync(m.Name, rep, err)
		switch {
		case errors.Is(err, context.Canceled):
			g.log.Info("sync stopped by shutdown; the published mirror is unchanged", "mirror", m.Name)
			return
		case errors.Is(err, mirror.ErrPostPublish):
			g.log.Error("scheduled sync published, but post_publish failed", "mirror", m.Name, "snapshot", rep.Snapshot, "err", err)
		case err != nil:
			g.logSyncError("scheduled sync failed", m.Name, err)
		default:
			g.log.Info("scheduled sync done", "mirror", m.Name, "result", rep.Result, "snapshot", rep.Snapshot)
		}
		t.Reset(every)
		g.log.Info("next scheduled sync", "mirror", m.Name, "next", time.Now().Add(every).Round(time.Second).Format(time.RFC3339))
	}
}

// reloadOnHUP applies the reloaded [bastion] table and re-reads the trust
// material on SIGHUP. Every setting the bastion can change live is applied
// and named, and what changed in the rules is logged (cfg is the
// configuration it started with); each changed setting that needs a
// restart is named in a warning, so an operator never believes a change is
// in force when it is not.
func reloadOnHUP(ctx context.Context, g *globals, srv *bastion.Server, cfg *bastion.Config) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rules := cfg.Rules
	g.log.Debug("reload: SIGHUP re-reads the bastion's rules, CA keys and revocation list")
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		g.log.Info("reload: SIGHUP received; re-reading the [bastion] rules, CA keys and revocation list", "config", g.configPath)
		sdNotify("RELOADING=1")
		ruleChange := "unchanged"
		if nc, err := loadBastionConfig(g); err != nil {
			g.log.Error("reload: config not reloaded; keeping the previous settings", "err", err)
			ruleChange = "kept (config not reloaded)"
		} else if applied, restart, err := srv.Apply(*nc); err != nil {
			g.log.Error("reload: config not applied; keeping the previous settings", "err", err)
			ruleChange = "kept (config not applied)"
		} else {
			if len(applied) > 0 {
				g.log.Info("reload: applied [bastion] settings", "settings", strings.Join(applied, ", "))
			}
			for _, k := range restart {
				g.log.Warn("reload: [bastion] setting changed but takes effect only after a restart", "setting", k)
			}
			if !reflect.DeepEqual(rules, nc.Rules) {
				ruleChange = fmt.Sprintf("changed: %d rules before, %d now", len(rules), len(nc.Rules))
				rules = nc.Rules
			}
		}
		if err := srv.Reload(); err != nil {
			g.log.Error("reload failed; keeping the previous CA keys and revocations", "err", err, "rules", ruleChange)
		} else {
			g.log.Info("reloaded bastion rules, CA keys and revocations", "rules", ruleChange)
		}
		sdNotify("READY=1")
	}
}

// sdNotify sends a state to systemd's notification socket, if there is one
// (Type=notify units); without NOTIFY_SOCKET it does nothing.
func sdNotify(state string) error {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return nil
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
