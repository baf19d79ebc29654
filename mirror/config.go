// Package mirror syncs signed APT repositories from upstream into a local,
// atomically published mirror: it orchestrates fetching (mirror/fetch),
// verification (apt, apt/pgp), storage and publication (mirror/store).
package mirror

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"gatehouse/apt"
	"gatehouse/mirror/fetch"
)

// Config is one [[mirror]] table of the configuration file. The TOML names
// are part of the operator interface and must not change.
type Config struct {
	// Name identifies the mirror; it is served at http://HOST:PORT/<Name>/.
	Name string `toml:"name"`
	// URL is the archive root upstream (the directory holding dists/ and
	// pool/). Only Sync needs it: a mirror filled by `mirror import` on an
	// appliance without a line out has none.
	URL string `toml:"url"`
	// Suites to mirror, e.g. ["bookworm", "bookworm-updates"]. A suite ending
	// in "/" names a flat repository directory below URL ("./" for URL
	// itself), exactly as the suite of a "deb URL dir/" sources line; a
	// mirror's suites are all flat or none, and flat ones take no
	// components.
	Suites []string `toml:"suites"`
	// SuiteURLs gives the archive root of suites that are not below URL,
	// e.g. {"bookworm-security" = "http://example.org/debian-security"}:
	// Debian publishes security updates in a separate archive, and a
	// filtered mirror must resolve them together with the base suite.
	// Pool files are fetched from the root of a suite that lists them.
	SuiteURLs map[string]string `toml:"suite_urls"`
	// Components to mirror, e.g. ["main", "contrib"]. Empty for flat repositories.
	Components []string `toml:"components"`
	// Architectures to mirror; "all" is always implied.
	Architectures []string `toml:"architectures"`
	// Keyring is the OpenPGP keyring (binary .gpg or armored .asc, exactly
	// what apt's Signed-By takes) that the upstream's Release must be signed
	// by. There is no default: without a keyring there is no sync.
	Keyring string `toml:"keyring"`
	// Sources also mirrors source packages.
	Sources bool `toml:"sources"`
	// Installer also mirrors the debian-installer indexes and their .udeb
	// pool files, which only installers need (apt clients never fetch them;
	// some upstream mirrors do not carry them). Off by default.
	Installer bool `toml:"installer"`
	// Translations lists the Translation-<lang> files to mirror (default ["en"]).
	Translations []string `toml:"translations"`
	// Concurrency bounds parallel downloads (default 8).
	Concurrency int `toml:"concurrency"`
	// RateLimit caps download bandwidth, e.g. "20MiB" per second; "" = none.
	RateLimit string `toml:"rate_limit"`
	// KeepSnapshots is how many published snapshots are retained (default 3),
	// which is also how many by-hash generations clients may still hold.
	KeepSnapshots int `toml:"keep_snapshots"`
	// MaxDeleteFraction is GC's wipe protection: refuse to delete more than
	// this fraction of the pool in one run (default 0.5).
	MaxDeleteFraction float64 `toml:"max_delete_fraction"`
	// TolerateMissing lets a sync publish even when a pool file listed in
	// Packages is missing upstream (404). Off by default: such a sync fails.
	TolerateMissing bool `toml:"tolerate_missing"`
	// AllowMissing lets a sync publish when the upstream's Release does not
	// list a configured component or architecture (it is left out, with a
	// warning). Off by default: a typo such as "mian" would otherwise
	// publish a mirror without the packages the operator meant, so such a
	// sync fails with ErrConfig and publishes nothing.
	AllowMissing bool `toml:"allow_missing"`
	// Schedule is when `gatehouse run` syncs this mirror ("hourly", "daily",
	// or a Go duration like "30m"); "" = only on demand.
	Schedule string `toml:"schedule"`
	// MaxFutureSkew is how far in the future an upstream Date may lie (default 10m).
	MaxFutureSkew Duration `toml:"max_future_skew"`
	// RedirectHosts lists hosts ("cdn.example.org", "cdn.example.org:8080")
	// that the upstream may redirect to besides the scheme, host and port
	// of url (or of a suite's suite_urls entry) as written. Redirects never
	// go from https to http, nor to a loopback, link-local or private
	// address unless the configured url is at one (see mirror/fetch).
	RedirectHosts []string `toml:"redirect_hosts"`
	// LowSpeedLimit and LowSpeedTime have curl's meaning: a download that
	// receives less than LowSpeedLimit bytes per second for LowSpeedTime is
	// aborted and retried like a stall (defaults "1KiB" and "60s").
	LowSpeedLimit Size     `toml:"low_speed_limit"`
	LowSpeedTime  Duration `toml:"low_speed_time"`
	// MaxSyncDuration bounds a whole sync (default 6h): one that runs
	// longer fails, publishes nothing, frees the lock and names the
	// transfer that was slow.
	MaxSyncDuration Duration `toml:"max_sync_duration"`

	// MaxPackages caps the stanzas of one Packages or Sources index (default
	// DefaultMaxPackages); an index with more is refused (exit 3), since a
	// signed index can otherwise make a sync use any amount of memory,
	// time and inodes. A filtered mirror also refuses more distinct
	// packages than this over all its indexes, since it keeps them all in
	// memory (filter.Universe, about 1.3 KB each) to resolve the selection.
	MaxPackages int `toml:"max_packages"`
	// MaxPoolBytes caps the total size of the pool files one snapshot
	// names, written like rate_limit ("500GiB"); 0 (unset) = no limit. A
	// sync whose indexes name more is refused (exit 3) before it downloads
	// any pool file.
	MaxPoolBytes Size `toml:"max_pool_bytes"`

	// Publish is PublishAuto (the default: each sync that builds a new
	// snapshot publishes it) or PublishManual: a sync builds, verifies and
	// keeps the new snapshot (servable at /NAME/snapshots/ID/ for canary
	// hosts) and `gatehouse mirror publish` makes it live.
	Publish string `toml:"publish"`
	// PostPublish is the argv of a command run after each publish (a
	// sync's, `mirror publish`, `mirror rollback`, an import), without a shell, with
	// GATEHOUSE_MIRROR, GATEHOUSE_SNAPSHOT, GATEHOUSE_SNAPSHOT_DIR and
	// GATEHOUSE_MIRROR_ROOT in its environment (see hook.go). Its failure
	// is logged and recorded, never un-publishes.
	PostPublish []string `toml:"post_publish"`
	// PostPublishTimeout bounds PostPublish (default 10m); on expiry its
	// whole process group is killed.
	PostPublishTimeout Duration `toml:"post_publish_timeout"`

	// Mode is ModeVerbatim (the default: the upstream's signed files as
	// they are) or ModeFiltered: only the packages Include selects (and
	// their dependencies), in regenerated indexes under Releases re-signed
	// with the appliance's [signing] key and its own Valid-Until.
	Mode string `toml:"mode"`
	// Include and Exclude select packages in filtered mode: package name
	// globs ("python3-*"), "priority:NAME" or "section:NAME" (see
	// filter.Spec).
	Include []string `toml:"include"`
	Exclude []string `toml:"exclude"`
	// WithDependencies adds the Depends and Pre-Depends closure of the
	// selection, across all suites of the mirror.
	WithDependencies bool `toml:"with_dependencies"`
	// WithRecommends also follows Recommends (with WithDependencies).
	WithRecommends bool `toml:"with_recommends"`
	// PublishTo names [[publish_target]] entries (object storage) that
	// every publish of this mirror is uploaded to (see upload.go).
	PublishTo []string `toml:"publish_to"`
}

// Values of Config.Publish.
const (
	PublishAuto   = "auto"
	PublishManual = "manual"
)

// ErrConfig is wrapped by sync errors that come from a configuration that
// does not fit the upstream (a component or architecture its Release does
// not list) rather than from the network or verification; the command line
// maps it to exit code 2. Nothing is published.
var ErrConfig = errors.New("configuration does not match the upstream")

// Duration is a time.Duration that decodes from TOML strings like "10m".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string, plus whole days ("30d"), with
// apt.ParseDuration: the one parser of both halves' configuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := apt.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Size is a number of bytes written like rate_limit: "1KiB", "500k",
// "20MiB", "2TiB", or a plain number (ParseSize).
type Size int64

// UnmarshalText parses a size; a bad one is a configuration error that the
// TOML decoder reports with file and line.
func (s *Size) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		// What MarshalText writes for 0 (unset), so a Config survives a
		// JSON round trip (the kill tests hand one to a child process).
		*s = 0
		return nil
	}
	n, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// MarshalText formats the size as a plain number of bytes, and 0 (unset)
// as "".
func (s Size) MarshalText() ([]byte, error) {
	if s == 0 {
		return nil, nil
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// SigningConfig is the [signing] table: the appliance's own OpenPGP archive
// key, used to re-sign filtered mirrors and to sign export bundles.
type SigningConfig struct {
	// Key is the armored OpenPGP secret key (0600), created by
	// `gatehouse keys init-archive-key` or `gatehouse init`.
	Key string `toml:"key"`
	// ValidFor is the Valid-Until period written into re-signed Releases
	// (default 30d).
	ValidFor Duration `toml:"valid_for"`
}

// ImportConfig is the [import] table of an inner (receiving) appliance.
type ImportConfig struct {
	// TrustedKeys are OpenPGP public keys (files) whose bundles are accepted.
	TrustedKeys []string `toml:"trusted_keys"`
}

// MarshalText formats the duration the way UnmarshalText reads it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Defaults fills unset optional fields with their documented defaults.
func (c *Config) Defaults() {
	if c.Concurrency == 0 {
		c.Concurrency = 8
	}
	if c.KeepSnapshots == 0 {
		c.KeepSnapshots = 3
	}
	if c.MaxDeleteFraction == 0 {
		c.MaxDeleteFraction = 0.5
	}
	if c.Translations == nil {
		c.Translations = []string{"en"}
	}
	if c.MaxFutureSkew.Duration == 0 {
		c.MaxFutureSkew.Duration = 10 * time.Minute
	}
	if c.Mode == "" {
		c.Mode = ModeVerbatim
	}
	if c.Publish == "" {
		c.Publish = PublishAuto
	}
	if c.PostPublishTimeout.Duration == 0 {
		c.PostPublishTimeout.Duration = 10 * time.Minute
	}
	if c.LowSpeedLimit == 0 {
		c.LowSpeedLimit = 1 << 10
	}
	if c.LowSpeedTime.Duration == 0 {
		c.LowSpeedTime.Duration = 60 * time.Second
	}
	if c.MaxSyncDuration.Duration == 0 {
		c.MaxSyncDuration.Duration = 6 * time.Hour
	}

	if c.MaxPackages == 0 {
		c.MaxPackages = DefaultMaxPackages
	}
}

// DefaultMaxPackages is max_packages when unset: several times Debian's
// largest index (about 70,000 stanzas).
const DefaultMaxPackages = 1_000_000

// Validate reports the first problem with c, naming the offending key so the
// operator can fix the configuration file.
func (c *Config) Validate() error {
	where := fmt.Sprintf("[[mirror]] name=%q", c.Name)
	switch {
	case !validName.MatchString(c.Name):
		return fmt.Errorf("%s: name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", where)
	case c.URL == "" && c.Schedule != "":
		return fmt.Errorf("%s: schedule is set but url is not: a scheduled sync needs the archive root holding dists/ and pool/", where)
	case len(c.Suites) == 0:
		return fmt.Errorf("%s: suites is required, e.g. suites = [\"bookworm\"]", where)
	case c.Keyring == "":
		return errors.New(where + ": keyring is required: name the upstream's OpenPGP keyring, as apt's Signed-By does")
	case c.Concurrency < 1 || c.Concurrency > 64:
		return fmt.Errorf("%s: concurrency must be between 1 and 64, got %d", where, c.Concurrency)
	case c.KeepSnapshots < 1:
		return fmt.Errorf("%s: keep_snapshots must be at least 1, got %d", where, c.KeepSnapshots)
	case c.MaxDeleteFraction <= 0 || c.MaxDeleteFraction > 1:
		return fmt.Errorf("%s: max_delete_fraction must be in (0, 1], got %g", where, c.MaxDeleteFraction)
	case c.Publish != PublishAuto && c.Publish != PublishManual:
		return fmt.Errorf("%s: publish must be \"auto\" or \"manual\", got %q", where, c.Publish)
	case len(c.PostPublish) > 0 && !filepath.IsAbs(c.PostPublish[0]):
		return fmt.Errorf("%s: post_publish: the command %q must be an absolute path (it runs without a shell and without PATH lookup), e.g. [\"/usr/share/gatehouse/push-replicas\", \"rsync://replica.example.org/gatehouse\"]", where, c.PostPublish[0])
	case c.PostPublishTimeout.Duration < time.Second:
		return fmt.Errorf("%s: post_publish_timeout must be at least 1s, got %s", where, c.PostPublishTimeout.Duration)
	case c.Mode != ModeVerbatim && c.Mode != ModeFiltered:
		return fmt.Errorf("%s: mode must be \"verbatim\" or \"filtered\", got %q", where, c.Mode)
	case c.Mode == ModeFiltered && len(c.Include) == 0:
		return fmt.Errorf("%s: mode = \"filtered\" needs include, e.g. include = [\"openssh-server\", \"priority:required\"]", where)
	case c.Mode == ModeFiltered && c.Installer:
		return fmt.Errorf("%s: a filtered mirror carries no debian-installer indexes: set installer to false, or use mode = \"verbatim\"", where)
	case c.Mode == ModeFiltered && len(c.Architectures) == 0:
		return fmt.Errorf("%s: a filtered mirror needs architectures, e.g. [\"amd64\"], to resolve dependencies for", where)
	case c.Mode == ModeVerbatim && (len(c.Include) > 0 || len(c.Exclude) > 0 || c.WithDependencies || c.WithRecommends):
		return fmt.Errorf("%s: include, exclude, with_dependencies and with_recommends apply to mode = \"filtered\" only; set the mode or remove them", where)
	case c.WithRecommends && !c.WithDependencies:
		return fmt.Errorf("%s: with_recommends needs with_dependencies = true", where)
	case c.LowSpeedLimit < 1:
		return fmt.Errorf("%s: low_speed_limit must be at least 1 byte per second, got %d", where, c.LowSpeedLimit)
	case c.LowSpeedTime.Duration < time.Second:
		return fmt.Errorf("%s: low_speed_time must be at least 1s, got %s", where, c.LowSpeedTime.Duration)
	case c.MaxSyncDuration.Duration < time.Second:
		return fmt.Errorf("%s: max_sync_duration must be at least 1s, got %s", where, c.MaxSyncDuration.Duration)
	case c.MaxPackages < 0:
		return fmt.Errorf("%s: max_packages must be positive, got %d", where, c.MaxPackages)
	case c.MaxPoolBytes < 0:
		return fmt.Errorf("%s: max_pool_bytes must not be negative, got %d", where, c.MaxPoolBytes)
	}
	for _, h := range c.RedirectHosts {
		if err := fetch.ParseRedirectHost(h); err != nil {
			return fmt.Errorf("%s: redirect_hosts: %w", where, err)
		}
	}
	flat := 0
	for _, s := range c.Suites {
		if isFlat(s) {
			flat++
		}
	}
	switch {
	case flat > 0 && flat < len(c.Suites):
		return fmt.Errorf("%s: suites mixes flat repository directories (ending in \"/\") with dists/ suites; use one [[mirror]] for each kind", where)
	case flat > 0 && len(c.Components) > 0:
		return fmt.Errorf("%s: a flat repository (suite ending in \"/\") has no components: remove components, as its sources line has none", where)
	case flat > 0 && c.Mode == ModeFiltered:
		return fmt.Errorf("%s: mode = \"filtered\" needs a repository with dists/; mirror a flat repository verbatim", where)
	}
	for s, u := range c.SuiteURLs {
		if !slices.Contains(c.Suites, s) {
			return fmt.Errorf("%s: suite_urls names %q, which is not in suites", where, s)
		}
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("%s: suite_urls: %q for suite %q is not an http(s) URL of an archive root", where, u, s)
		}
	}
	for _, a := range c.Architectures {
		if a == "" || a == "all" {
			return fmt.Errorf("%s: architectures: %q is not allowed (\"all\" is implied)", where, a)
		}
	}
	return nil
}

// StoreRoot is the directory under the state directory that holds every
// mirror's store (mirror/store.Open(StoreRoot(stateDir), name)). Sync writes
// there and `gatehouse serve` serves from there.
func StoreRoot(stateDir string) string { return filepath.Join(stateDir, "mirrors") }
