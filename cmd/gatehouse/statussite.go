package main

import (
	"log/slog"
	"net/http"
	"net/netip"

	"gatehouse/cmd/gatehouse/metrics"
	"gatehouse/cmd/gatehouse/statuspage"
)

// statusConfig is the [status] table; statuspage.Config owns its meaning
// and documents its keys.
type statusConfig statuspage.Config

// prefixes parses sessions_from (see statuspage.Config.Prefixes).
func (c statusConfig) prefixes() ([]netip.Prefix, error) { return statuspage.Config(c).Prefixes() }

// newStatusSite returns the HTTP surface that serve and run share (see
// package statuspage; demo.Run builds the same from its own settings) for
// cfg: the metrics of cfg's mirrors,
// and recordings_dir and recording_key from cfg.Bastion, which may be nil.
// live says that a bastion runs in this process: pass the site's
// ObserveBastion to its bastion.Server.SetObserver so that the page lists
// active sessions (and the metrics count its events). The error names a
// bad sessions_from entry.
func newStatusSite(cfg *fileConfig, mirrors http.Handler, live bool, log *slog.Logger) (*statuspage.Site, *metrics.Metrics, error) {
	m := metrics.New(cfg.StateDir, cfg.Mirror, log)
	o := statuspage.Options{Status: statuspage.Config(cfg.Status), Live: live, Log: log}
	if b := cfg.Bastion; b != nil {
		o.RecordingsDir, o.RecordingKey = b.RecordingsDir, b.RecordingKey
	}
	site, err := statuspage.New(o, m, mirrors)
	if err != nil {
		return nil, nil, err
	}
	return site, m, nil
}
