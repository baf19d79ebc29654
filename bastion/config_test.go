package bastion

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/policy"
)

func TestConfigDecodeAndValidate(t *testing.T) {
	const doc = `
listen = "0.0.0.0:2222"
host_keys = ["/var/lib/gatehouse/ssh_host_ed25519_key"]
host_certificates = []
user_ca_keys = "/etc/gatehouse/user_ca.pub"
revoked_keys = "/etc/gatehouse/revoked.krl"
max_cert_lifetime = "24h"
clock_skew = "2m"
audit_log = "/var/lib/gatehouse/audit.jsonl"
handshake_timeout = "20s"

[[rule]]
principals = ["admin"]
jump = ["127.0.0.1:2223", "10.20.0.0/16:22", "db1.internal:5432"]
`
	var c Config
	md, err := toml.Decode(doc, &c)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("undecoded keys: %v", und)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxCertLifetime.Duration != 24*time.Hour || c.ClockSkew.Duration != 2*time.Minute ||
		c.HandshakeTimeout.Duration != 20*time.Second || c.DialTimeout.Duration != DefaultDialTimeout {
		t.Errorf("durations: %+v", c)
	}
	if len(c.Rules) != 1 || c.Rules[0].Jump[2] != "db1.internal:5432" {
		t.Errorf("rules: %+v", c.Rules)
	}

	if c.MaxCommandBytes != 64<<10 || strings.Join(c.AcceptEnv, " ") != "LANG LC_* TERM" {
		t.Errorf("proxy defaults: max_command_bytes %d, accept_env %q", c.MaxCommandBytes, c.AcceptEnv)
	}
	// An explicit empty list passes no environment at all.
	var none Config
	if _, err := toml.Decode("accept_env = []\nmax_command_bytes = \"255KiB\"\nsftp_extensions = [\"x@example.org\"]", &none); err != nil {
		t.Fatal(err)
	}
	none.Defaults()
	if none.AcceptEnv == nil || len(none.AcceptEnv) != 0 || none.MaxCommandBytes != 255<<10 {
		t.Errorf("accept_env = [] decoded as %#v, max_command_bytes %d", none.AcceptEnv, none.MaxCommandBytes)
	}

	if _, err := toml.Decode(`max_cert_lifetime = "1 day"`, &c); err == nil || !strings.Contains(err.Error(), "24h") {
		t.Errorf("bad duration: %v", err)
	}

	base := func() Config {
		c := Config{HostKeys: []string{"k"}, UserCAKeys: "ca", AuditLog: "a"}
		c.Defaults()
		return c
	}
	for _, tc := range []struct {
		key string
		mut func(*Config)
	}{
		{"listen", func(c *Config) { c.Listen = "2222" }},
		{"host_keys", func(c *Config) { c.HostKeys = nil }},
		{"host_certificates", func(c *Config) { c.HostCertificates = []string{"a", "b"} }},
		{"user_ca_keys", func(c *Config) { c.UserCAKeys = "" }},
		{"audit_log", func(c *Config) { c.AuditLog = "" }},
		{"clock_skew", func(c *Config) { c.ClockSkew.Duration = 2 * time.Hour }},
		{"handshake_timeout", func(c *Config) { c.HandshakeTimeout.Duration = -time.Second }},
		{"max_session", func(c *Config) { c.MaxSession.Duration = -time.Second }},
		{"bastion.rule", func(c *Config) { c.Rules = []policy.Rule{{Principals: []string{"a"}, Jump: []string{"nonsense"}}} }},
		{"accept_env", func(c *Config) { c.AcceptEnv = []string{"LD_PRELOAD=x"} }},
		{"accept_env", func(c *Config) { c.AcceptEnv = []string{""} }},
		{"max_command_bytes", func(c *Config) { c.MaxCommandBytes = 256 << 10 }},
		{"max_command_bytes", func(c *Config) { c.MaxCommandBytes = -1 }},
		{"sftp_extensions", func(c *Config) { c.SFTPExtensions = []string{"bad\x00name"} }},
		{"sftp_extensions", func(c *Config) { c.SFTPExtensions = []string{""} }},
	} {
		c := base()
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v does not name the key", tc.key, err)
		}
	}
}

// TestHostKeys: a group-readable host key is refused with the fix in the
// message; a host certificate is presented and verifies against the host CA
// with the real client and no known_hosts entry for the bastion.
func TestHostKeys(t *testing.T) {
	sshtest.Require(t, "ssh-keygen")
	dir := t.TempDir()
	hk := sshtest.UserKey(t, dir, "ed25519")
	if err := os.Chmod(hk.Priv, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := loadHostSigners([]string{hk.Priv}, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+hk.Priv) {
		t.Fatalf("group-readable host key: %v", err)
	}
	os.Chmod(hk.Priv, 0o600)
	other := sshtest.UserKey(t, dir, "ed25519")
	hostCA := sshtest.NewCA(t, dir, "ed25519")
	wrongCert := hostCA.Sign(t, other.Pub, "-h", "-n", "127.0.0.1")
	if _, err := loadHostSigners([]string{hk.Priv}, []string{wrongCert}); err == nil || !strings.Contains(err.Error(), "not among host_keys") {
		t.Fatalf("certificate for another key: %v", err)
	}

	var hostCert string
	f := newFixture(t, func(f *fixture, c *Config) {
		hostCert = hostCA.Sign(t, hk.Pub, "-h", "-n", "127.0.0.1", "-V", "-1m:+1h")
		c.HostKeys = []string{hk.Priv}
		c.HostCertificates = []string{hostCert}
	})
	hcaPub, err := os.ReadFile(hostCA.Pub)
	if err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts_ca")
	writeFile(t, known, []byte("@cert-authority [127.0.0.1]:"+strconv.Itoa(f.port)+" "+string(hcaPub)))
	key, cert, _ := f.userCert(t, f.ca, "-n", "admin", "-V", "-1m:+1h")
	args := sshtest.ClientOptions(known, key.Priv, cert)
	args = append(args, "-o", "StrictHostKeyChecking=yes", "-p", strconv.Itoa(f.port), "admin@127.0.0.1", "true")
	r := sshtest.SSH(t, args...)
	if strings.Contains(r.Stderr, "Host key verification failed") || !strings.Contains(r.Stderr, "offers no shell") {
		t.Fatalf("host certificate not accepted by the client: %s", r)
	}
}
