package bastion

import (
	"fmt"
	"gatehouse/bastion/recupload"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"gatehouse/apt"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
	"gatehouse/bastion/upstream"
)

// Duration is a time.Duration that decodes from TOML strings such as "24h"
// or "90s", so operators never write nanoseconds.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string ("24h", "2m", "30s") or whole
// days ("7d") with apt.ParseDuration, the parser the [[mirror]] and
// [signing] tables use too, so every table accepts the same forms.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := apt.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText renders the duration as UnmarshalText accepts it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults for the [bastion] table. The limits bound an unauthenticated
// flood, not admins: authenticated connections are never counted, and the
// per-source cap is small (as OpenSSH's PerSourceMaxStartups) so that a
// handful of source addresses cannot fill the global cap and lock every
// admin out. A load generator that opens many logins at once from one
// address needs max_unauthenticated_per_source raised.
const (
	DefaultListen                      = "0.0.0.0:2222"
	DefaultMaxCertLifetime             = 24 * time.Hour
	DefaultClockSkew                   = 2 * time.Minute
	DefaultHandshakeTimeout            = 30 * time.Second
	DefaultMaxUnauthenticated          = 2000
	DefaultMaxUnauthenticatedPerSource = 10
	DefaultPenaltyFailures             = 20
	DefaultPenaltyWindow               = time.Minute
	DefaultPenalty                     = time.Minute
	DefaultDialTimeout                 = 10 * time.Second
	DefaultMinFreeSpace                = ByteSize(1 << 30)
	DefaultMaxCommandBytes             = ByteSize(upstream.DefaultMaxCommandBytes)
	DefaultCheckpointInterval          = 10 * time.Second
)

// Config is the [bastion] table of the configuration file. Zero values mean
// "use the default" (see Defaults); the TOML key names are part of the
// operator interface and must not change.
type Config struct {
	// Listen is the TCP address the bastion listens on (default 0.0.0.0:2222).
	Listen string `toml:"listen"`
	// HostKeys are OpenSSH private host key files (mode 0600).
	HostKeys []string `toml:"host_keys"`
	// HostCertificates are optional OpenSSH host certificates (*-cert.pub)
	// for the keys in HostKeys; clients that trust the host CA via
	// @cert-authority then need no known_hosts entry per bastion.
	HostCertificates []string `toml:"host_certificates"`
	// UserCAKeys is an authorized_keys-style file listing the user CA keys.
	UserCAKeys string `toml:"user_ca_keys"`
	// RevokedKeys is an OpenSSH KRL or a plain key/serial list; optional.
	// It is re-read when it changes.
	RevokedKeys string `toml:"revoked_keys"`
	// MaxCertLifetime bounds ValidBefore-ValidAfter (default 24h).
	MaxCertLifetime Duration `toml:"max_cert_lifetime"`
	// ClockSkew is tolerated on ValidAfter only (default 2m).
	ClockSkew Duration `toml:"clock_skew"`
	// AuditLog is the hash-chained JSON-lines audit log.
	AuditLog string `toml:"audit_log"`
	// Rules say which principals may reach which destinations.
	Rules []policy.Rule `toml:"rule"`

	// HandshakeTimeout bounds the time from TCP accept to successful
	// authentication, like OpenSSH's LoginGraceTime (default 30s).
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// MaxUnauthenticated caps connections that have not authenticated yet,
	// over all sources, like OpenSSH's MaxStartups (default 2000). Further
	// connections are closed at once. Admission is fair: a source holding
	// no unauthenticated connection is admitted while the cap is not
	// reached, while sources that already hold some are dropped at random
	// from half the cap on and always from three quarters on (MaxStartups'
	// start:rate:full as 50%:30%:75%), keeping room for fresh sources.
	MaxUnauthenticated int `toml:"max_unauthenticated"`
	// MaxUnauthenticatedPerSource caps unauthenticated connections from one
	// source, like PerSourceMaxStartups (default 10). A source is an IPv4
	// address or an IPv6 /64, since one host usually holds a whole /64.
	MaxUnauthenticatedPerSource int `toml:"max_unauthenticated_per_source"`
	// PenaltyFailures is how many connections one source may end without
	// authenticating (authentication failed, handshake failed or timed
	// out, or simply closed) within PenaltyWindow before it is refused for
	// Penalty, like PerSourcePenalties (default 20; a negative value
	// disables penalties).
	PenaltyFailures int `toml:"penalty_failures"`
	// PenaltyWindow is the window in which failures are counted (default
	// 1m). It is also the aggregation period of the audit log's "preauth"
	// event: at most one line per source per window summarises what that
	// source did before authenticating.
	PenaltyWindow Duration `toml:"penalty_window"`
	// Penalty is how long a penalised source is refused (default 1m).
	Penalty Duration `toml:"penalty"`
	// DialTimeout bounds connecting to a jump destination (default 10s).
	DialTimeout Duration `toml:"dial_timeout"`
	// IdleTimeout closes recorded sessions without user input for this long
	// (0: never). Jump channels are end-to-end encrypted, so the bastion
	// cannot tell keystrokes from keepalives there: it applies only to the
	// recording proxy.
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxSession closes any connection this long after authentication
	// (0: no limit besides the certificate's own expiry).
	MaxSession Duration `toml:"max_session"`
	// DNSServer, host:port, receives the bastion's DNS queries for jump
	// and proxy destinations instead of the servers in /etc/resolv.conf
	// (empty: the system resolver). Its address is never shown to clients.
	DNSServer string `toml:"dns_server"`
	// ProxyProtocolFrom lists the load balancers (addresses or CIDR
	// prefixes) whose connections must start with a PROXY protocol v1 or
	// v2 header; the header's source address then stands for the client everywhere
	// (source-address, limits and penalties, audit, recordings). A
	// connection from any other address that sends a header is refused.
	// Empty (the default): no balancer, every header is refused.
	ProxyProtocolFrom []string `toml:"proxy_protocol_from"`

	// Recording proxy (rules' proxy destinations). All optional until a
	// rule names a proxy destination.

	// UpstreamCAKey is the private key (0600) of the upstream CA that mints
	// one certificate per proxied session; targets trust only its .pub
	// (TrustedUserCAKeys), never the user CA, so nobody skips the bastion.
	UpstreamCAKey string `toml:"upstream_ca_key"`
	// UpstreamKnownHosts pins the targets' host keys (known_hosts format,
	// @cert-authority lines allowed).
	UpstreamKnownHosts string `toml:"upstream_known_hosts"`
	// HostCAKey signs the host certificates the bastion presents when it
	// terminates SSH for a proxied destination.
	HostCAKey string `toml:"host_ca_key"`
	// RecordingsDir holds one directory per recorded connection.
	RecordingsDir string `toml:"recordings_dir"`
	// RecordingKey signs recording manifests (SSHSIG, namespace
	// "gatehouse-recording"); its .pub verifies them.
	RecordingKey string `toml:"recording_key"`
	// RecordInput also records what the admin sends on shell and exec
	// channels (keystrokes, including passwords typed at a prompt that
	// does not echo, and stdin piped to a command) as "i" events in the
	// .cast; the .ttyrec holds output only. Off, only the output, the
	// commands and the environment are recorded.
	RecordInput bool `toml:"record_input"`
	// AcceptEnv lists the environment variables a proxied session may
	// pass to the target, as names or patterns with * and ? (OpenSSH's
	// AcceptEnv syntax; default ["LANG", "LC_*", "TERM"]; [] passes none).
	// Each passed name and value is recorded, refused ones as refused:
	// a value can carry a command (eval "$LC_X"). SIGHUP applies it to
	// session channels opened afterwards, as MaxCommandBytes and
	// SFTPExtensions.
	AcceptEnv []string `toml:"accept_env"`
	// MaxCommandBytes bounds an exec command and an env value in a
	// proxied session (default "64KiB", at most "255KiB"); longer ones are
	// refused with a message on the admin's stderr. Each command is
	// recorded in full, so this bounds one recording event.
	MaxCommandBytes ByteSize `toml:"max_command_bytes"`
	// SFTPExtensions are SFTP extensions relayed besides the ones the
	// auditor parses (posix-rename, hardlink, fsync, lsetstat, statvfs,
	// fstatvfs, copy-data, home-directory, expand-path, limits,
	// users-groups-by-id); they are recorded by name and size only. Any
	// other extension is answered "unsupported" without reaching the
	// target.
	SFTPExtensions []string `toml:"sftp_extensions"`
	// MinFreeSpace refuses new recorded sessions below this much free disk
	// space in RecordingsDir, e.g. "1GiB" (default 1GiB).
	MinFreeSpace ByteSize `toml:"min_free_space"`

	// RecordingsUpload names a [[publish_target]] that every recording
	// is uploaded to once sealed, with the recordings index, so that
	// `gatehouse recordings verify --remote NAME` can check them there.
	RecordingsUpload string `toml:"recordings_upload"`
	// RecordingsTarget is RecordingsUpload resolved with its credentials
	// by the command line; not from the file.
	RecordingsTarget *recupload.Target `toml:"-"`

	// CheckpointInterval is how often the audit log and the recordings
	// index get a checkpoint signed with RecordingKey when lines were
	// added (default 10s); one is also written at shutdown. Without a
	// recording_key there are no checkpoints.
	CheckpointInterval Duration `toml:"checkpoint_interval"`

	// KexAlgorithms, Ciphers, MACs and HostKeyAlgorithms replace the
	// hardened default algorithm lists (algos.go) to admit older clients;
	// every name must be one the bastion implements safely
	// (WiderAlgorithms).
	KexAlgorithms     []string `toml:"kex_algorithms"`
	Ciphers           []string `toml:"ciphers"`
	MACs              []string `toml:"macs"`
	HostKeyAlgorithms []string `toml:"host_key_algorithms"`
}

// ByteSize is a size that decodes from TOML strings like "512MiB", "1GiB"
// or a plain number of bytes.
type ByteSize int64

// UnmarshalText parses sizes with optional KiB/MiB/GiB/TiB (or KB/MB/GB/TB,
// decimal) suffixes.
func (b *ByteSize) UnmarshalText(t []byte) error {
	s := strings.TrimSpace(string(t))
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q: write it like \"1GiB\", \"512MiB\" or a number of bytes", t)
	}
	*b = ByteSize(n * mult)
	return nil
}

// MarshalText renders the size in bytes.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(b), 10)), nil }

// Defaults fills in zero values with the documented defaults.
func (c *Config) Defaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.MaxCertLifetime.Duration == 0 {
		c.MaxCertLifetime.Duration = DefaultMaxCertLifetime
	}
	if c.ClockSkew.Duration == 0 {
		c.ClockSkew.Duration = DefaultClockSkew
	}
	if c.HandshakeTimeout.Duration == 0 {
		c.HandshakeTimeout.Duration = DefaultHandshakeTimeout
	}
	if c.MaxUnauthenticated == 0 {
		c.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if c.MaxUnauthenticatedPerSource == 0 {
		c.MaxUnauthenticatedPerSource = DefaultMaxUnauthenticatedPerSource
	}
	if c.PenaltyFailures == 0 {
		c.PenaltyFailures = DefaultPenaltyFailures
	}
	if c.PenaltyWindow.Duration == 0 {
		c.PenaltyWindow.Duration = DefaultPenaltyWindow
	}
	if c.Penalty.Duration == 0 {
		c.Penalty.Duration = DefaultPenalty
	}
	if c.DialTimeout.Duration == 0 {
		c.DialTimeout.Duration = DefaultDialTimeout
	}
	if c.MinFreeSpace == 0 {
		c.MinFreeSpace = DefaultMinFreeSpace
	}
	if c.AcceptEnv == nil {
		c.AcceptEnv = slices.Clone(upstream.DefaultAcceptEnv)
	}
	if c.MaxCommandBytes == 0 {
		c.MaxCommandBytes = DefaultMaxCommandBytes
	}
	if c.CheckpointInterval.Duration == 0 {
		c.CheckpointInterval.Duration = DefaultCheckpointInterval
	}
}

// Validate reports the first invalid setting, naming its key in the
// [bastion] table. Call Defaults first.
func (c *Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("[bastion] %s: %s", key, fmt.Sprintf(format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen", "%q is not host:port (example: \"0.0.0.0:2222\")", c.Listen)
	}
	if len(c.HostKeys) == 0 {
		return bad("host_keys", "at least one host key file is required ('gatehouse init' creates one)")
	}
	if len(c.HostCertificates) > len(c.HostKeys) {
		return bad("host_certificates", "%d certificates for %d host keys", len(c.HostCertificates), len(c.HostKeys))
	}
	if c.UserCAKeys == "" {
		return bad("user_ca_keys", "required: the file with the user CA public key(s)")
	}
	if c.AuditLog == "" {
		return bad("audit_log", "required: where the hash-chained audit log is written")
	}
	if c.MaxCertLifetime.Duration < 0 {
		return bad("max_cert_lifetime", "must be positive")
	}
	if c.ClockSkew.Duration < 0 || c.ClockSkew.Duration > time.Hour {
		return bad("clock_skew", "%v is outside 0..1h", c.ClockSkew.Duration)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"handshake_timeout", c.HandshakeTimeout.Duration},
		{"penalty_window", c.PenaltyWindow.Duration},
		{"penalty", c.Penalty.Duration},
		{"dial_timeout", c.DialTimeout.Duration},
	} {
		if d.v <= 0 {
			return bad(d.key, "must be positive, got %v", d.v)
		}
	}
	if c.IdleTimeout.Duration < 0 {
		return bad("idle_timeout", "must not be negative")
	}
	if c.MaxSession.Duration < 0 {
		return bad("max_session", "must not be negative")
	}
	if c.CheckpointInterval.Duration < 0 {
		return bad("checkpoint_interval", "must be positive, got %v", c.CheckpointInterval.Duration)
	}
	if err := c.checkAlgorithms(); err != nil {
		return err
	}
	if c.DNSServer != "" {
		if _, _, err := net.SplitHostPort(c.DNSServer); err != nil {
			return bad("dns_server", "%q is not host:port (example: \"10.0.0.53:53\")", c.DNSServer)
		}
	}
	for _, e := range c.ProxyProtocolFrom {
		if _, err := parseProxyFrom(e); err != nil {
			return bad("proxy_protocol_from", "%s", sanitize(err.Error()))
		}
	}
	if c.MaxUnauthenticated < 0 {
		return bad("max_unauthenticated", "must not be negative")
	}
	if c.MaxUnauthenticatedPerSource < 0 {
		return bad("max_unauthenticated_per_source", "must not be negative")
	}
	for _, p := range c.AcceptEnv {
		if err := upstream.ValidEnvPattern(p); err != nil {
			return bad("accept_env", "pattern %q: %v", sanitize(p), err)
		}
	}
	if c.MaxCommandBytes < 1 || c.MaxCommandBytes > upstream.MaxCommandLimit {
		return bad("max_command_bytes", "%d bytes is outside 1..%d (\"255KiB\"): x/crypto drops a packet over 256 KiB with the connection, before the bastion could tell the admin why", c.MaxCommandBytes, upstream.MaxCommandLimit)
	}
	for _, e := range c.SFTPExtensions {
		if e == "" || len(e) > 200 || record.Sanitize(e, 0) != e || strings.ContainsAny(e, " \t") {
			return bad("sftp_extensions", "%q is not an extension name (like \"name@example.org\")", sanitize(e))
		}
	}
	if _, err := policy.New(c.Rules); err != nil {
		return fmt.Errorf("[[bastion.rule]]: %w", err)
	}
	if c.ProxyEnabled() {
		for _, k := range []struct{ key, v, what string }{
			{"upstream_ca_key", c.UpstreamCAKey, "the private key of the CA the targets trust (TrustedUserCAKeys)"},
			{"upstream_known_hosts", c.UpstreamKnownHosts, "the known_hosts file pinning the targets' host keys"},
			{"host_ca_key", c.HostCAKey, "the private key of the CA that certifies the bastion as each proxied host"},
			{"recordings_dir", c.RecordingsDir, "where session recordings are written"},
			{"recording_key", c.RecordingKey, "the private key that signs recording manifests"},
		} {
			if k.v == "" {
				return bad(k.key, "required because a [[bastion.rule]] has proxy destinations: %s", k.what)
			}
		}
	}
	return nil
}

// ProxyEnabled reports whether any rule names a recorded-proxy
// destination, which makes the recording settings mandatory.
func (c *Config) ProxyEnabled() bool {
	for _, r := range c.Rules {
		if len(r.Proxy) > 0 {
			return true
		}
	}
	return false
}
