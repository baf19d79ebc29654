package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gatehouse/apt/pgp"
	"gatehouse/mirror/fetch"
)

// SuiteCheck is what CheckUpstream found for one configured suite.
type SuiteCheck struct {
	Suite string `json:"suite"`
	// SignedBy are the fingerprints of the keys whose good signatures
	// made the Release acceptable.
	SignedBy []string `json:"signed_by,omitempty"`
	// MissingComponents and MissingArchitectures are configured ones the
	// upstream's Release does not list (a typo such as "mian", or a
	// component the archive does not carry).
	MissingComponents    []string `json:"missing_components,omitempty"`
	MissingArchitectures []string `json:"missing_architectures,omitempty"`
	// Err is set when the Release could not be fetched or was refused
	// (errors.Is(Err, ErrRefused): bad or missing signature, wrong
	// suite, expired); the fields above are then empty.
	Err error `json:"-"`
}

// CheckUpstream fetches the Release of every suite of cfg from upstream,
// verifies it with cfg.Keyring exactly as Sync does (APT's signature rule,
// Suite/Codename, Date, Valid-Until), and reports the configured components
// and architectures the Release does not list. It writes nothing: it is
// `gatehouse check-config --online`, run before the first sync so that a
// missing suite, a misspelled component or the wrong keyring is caught
// before it bites. The error is for a keyring that cannot be loaded or a
// mirror without url; per-suite failures are in SuiteCheck.Err.
func CheckUpstream(ctx context.Context, cfg Config, opt Options) ([]SuiteCheck, error) {
	cfg.Defaults()
	// The release step of a sync refuses a missing component or
	// architecture outright; here each one is reported on its own line
	// (MissingComponents, MissingArchitectures) instead.
	cfg.AllowMissing = true
	if cfg.URL == "" {
		return nil, fmt.Errorf("mirror %s: url is not set, so there is no upstream to check", cfg.Name)
	}
	kr, err := pgp.LoadKeyring(cfg.Keyring)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: keyring: %w", cfg.Name, err)
	}
	fc := opt.Fetch
	if fc.Concurrency == 0 {
		fc.Concurrency = 1
	}
	r := &run{cfg: cfg, opt: Options{Now: opt.Now, Log: opt.Log}, log: opt.logger().With("mirror", cfg.Name),
		now: opt.clock()(), kr: kr, rep: &Report{Mirror: cfg.Name}, base: strings.TrimRight(cfg.URL, "/")}
	r.client = fetch.New(fc, r.log)
	defer r.client.CloseIdleConnections()
	var out []SuiteCheck
	for _, name := range cfg.Suites {
		sc := SuiteCheck{Suite: name}
		// With no published snapshot (curID empty) fetchRelease asks
		// unconditionally and verifies what it gets.
		sr, err := r.fetchRelease(ctx, name)
		if err != nil {
			if errors.Is(err, fetch.ErrNotFound) {
				err = fmt.Errorf("mirror %s: suite %s does not exist upstream (no InRelease or Release under %s): %w",
					cfg.Name, name, r.baseOf(name)+"/"+remoteDir(name), err)
			}
			sc.Err = err
			out = append(out, sc)
			continue
		}
		sc.SignedBy = sr.signedBy
		rel := sr.rel
		if len(rel.Components) > 0 {
			for _, c := range cfg.Components {
				if !rel.HasComponent(c) {
					sc.MissingComponents = append(sc.MissingComponents, c)
				}
			}
		}
		if len(rel.Architectures) > 0 {
			for _, a := range cfg.Architectures {
				if !slices.Contains(rel.Architectures, a) {
					sc.MissingArchitectures = append(sc.MissingArchitectures, a)
				}
			}
		}
		out = append(out, sc)
	}
	return out, nil
}
