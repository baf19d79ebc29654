package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

const goodConfig = `state_dir = "/tmp/gh"

[[mirror]]
name = "debian"
url = "http://example.org/debian"
suites = ["bookworm"]
components = ["main"]
architectures = ["amd64"]
keyring = "/usr/share/keyrings/example.gpg"
`

func TestParseConfigAcceptsDocumentedKeys(t *testing.T) {
	c, err := parseConfig("gh.toml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Mirror) != 1 || c.Mirror[0].Name != "debian" || c.Mirror[0].Concurrency != 8 {
		t.Fatalf("decoded %+v", c.Mirror)
	}
}

func TestParseConfigRejectsUnknownKeyWithLine(t *testing.T) {
	bad := strings.Replace(goodConfig, "components =", "componets =", 1)
	_, err := parseConfig("gh.toml", []byte(bad))
	if err == nil {
		t.Fatal("misspelled key accepted")
	}
	if !strings.Contains(err.Error(), `gh.toml:7: unknown key "mirror.componets"`) {
		t.Fatalf("error does not name file, line and key: %v", err)
	}
	if exitCode(err) != exitUsage {
		t.Fatalf("exit code %d, want %d", exitCode(err), exitUsage)
	}
}

func TestParseConfigRejectsSyntaxErrorWithLine(t *testing.T) {
	_, err := parseConfig("gh.toml", []byte("state_dir = \"/x\"\n[[mirror]\n"))
	if err == nil || !strings.Contains(err.Error(), "gh.toml:") {
		t.Fatalf("want error naming gh.toml and a line, got %v", err)
	}
}

func TestParseConfigValidatesMirror(t *testing.T) {
	for name, edit := range map[string][2]string{
		"no keyring":   {`keyring = "/usr/share/keyrings/example.gpg"`, ``},
		"bad name":     {`name = "debian"`, `name = "../etc"`},
		"arch all":     {`architectures = ["amd64"]`, `architectures = ["all"]`},
		"duplicate":    {`keyring = "/usr/share/keyrings/example.gpg"`, "keyring = \"/k\"\n" + goodConfig[strings.Index(goodConfig, "[[mirror]]"):]},
		"bad duration": {`keyring = "/usr/share/keyrings/example.gpg"`, "keyring = \"/k\"\nmax_future_skew = \"ten\""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig("gh.toml", []byte(strings.Replace(goodConfig, edit[0], edit[1], 1)))
			if err == nil || exitCode(err) != exitUsage {
				t.Fatalf("want usage error, got %v", err)
			}
		})
	}
}

func TestCheckConfigCommand(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gh.toml")
	// check-config loads the keyring, so it must be a real one.
	pub, _ := apttest.NewKey(t, "ed25519").PublicKey(false)
	kr := filepath.Join(dir, "example.gpg")
	if err := os.WriteFile(kr, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	// Its own state_dir: check-config inspects it, and /tmp/gh may be anything.
	conf := strings.Replace(goodConfig, "/usr/share/keyrings/example.gpg", kr, 1)
	conf = strings.Replace(conf, `"/tmp/gh"`, strconv.Quote(filepath.Join(dir, "state")), 1)
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"check-config", "--config", p}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "OK (1 mirrors") {
		t.Fatalf("output %q", out.String())
	}
	t.Setenv("GATEHOUSE_CONFIG", filepath.Join(dir, "missing.toml"))
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"check-config"}, &out, &errb); code != exitUsage {
		t.Fatalf("missing config: exit %d", code)
	}
	if !strings.Contains(errb.String(), "missing.toml does not exist") {
		t.Fatalf("GATEHOUSE_CONFIG not honoured: %s", errb.String())
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--log-level", "loud", "version"}, &out, &errb); code != exitUsage {
		t.Fatalf("bad log level: exit %d", code)
	}
	if code := run(context.Background(), []string{"no-such-command"}, &out, &errb); code != exitUsage {
		t.Fatalf("unknown command: exit %d", code)
	}
}

// TestDurationsSameFormsEverywhere: "30d" worked in [signing] and was
// refused in [bastion]; every table now takes the same forms (one parser,
// apt.ParseDuration).
func TestDurationsSameFormsEverywhere(t *testing.T) {
	conf := goodConfig + "max_future_skew = \"1d\"\n\n[signing]\nvalid_for = \"30d\"\n\n[bastion]\nhost_keys = [\"/k\"]\nuser_ca_keys = \"/ca.pub\"\naudit_log = \"/a.jsonl\"\nmax_cert_lifetime = \"2d\"\nmax_session = \"1d\"\nidle_timeout = \"90m\"\n"
	c, err := parseConfig("gh.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	day := 24 * time.Hour
	if c.Mirror[0].MaxFutureSkew.Duration != day || c.Signing.ValidFor.Duration != 30*day ||
		c.Bastion.MaxCertLifetime.Duration != 2*day || c.Bastion.MaxSession.Duration != day || c.Bastion.IdleTimeout.Duration != 90*time.Minute {
		t.Fatalf("decoded %v %v %v %v %v", c.Mirror[0].MaxFutureSkew, c.Signing.ValidFor, c.Bastion.MaxCertLifetime, c.Bastion.MaxSession, c.Bastion.IdleTimeout)
	}
	_, err = parseConfig("gh.toml", []byte(strings.Replace(conf, `max_session = "1d"`, `max_session = "1 day"`, 1)))
	if err == nil || !strings.Contains(err.Error(), `invalid duration "1 day": use a number with a unit, like "90s", "10m", "24h" or "30d"`) {
		t.Fatalf("bad duration in [bastion]: %v", err)
	}
}

// TestParseConfigFetchLimits: the fetch limits of [[mirror]] decode with
// their defaults, and bad values are usage errors; syntax errors in them
// name the file and line.
func TestParseConfigFetchLimits(t *testing.T) {
	c, err := parseConfig("gh.toml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Mirror[0]
	if m.LowSpeedLimit != 1024 || m.LowSpeedTime.Duration != time.Minute || m.MaxSyncDuration.Duration != 6*time.Hour || m.RedirectHosts != nil {
		t.Errorf("defaults: %+v", m)
	}
	set := goodConfig + "low_speed_limit = \"2KiB\"\nlow_speed_time = \"5s\"\nmax_sync_duration = \"30m\"\nredirect_hosts = [\"cdn.example.org\", \"cdn2.example.org:8080\"]\n"
	if c, err = parseConfig("gh.toml", []byte(set)); err != nil {
		t.Fatal(err)
	}
	if m := c.Mirror[0]; m.LowSpeedLimit != 2048 || m.LowSpeedTime.Duration != 5*time.Second || m.MaxSyncDuration.Duration != 30*time.Minute || len(m.RedirectHosts) != 2 {
		t.Errorf("set: %+v", m)
	}
	for bad, want := range map[string]string{
		"low_speed_limit = \"fast\"":                     "gh.toml:10: invalid size",
		"low_speed_limit = \"0\"":                        "gh.toml:10: invalid size",
		"low_speed_time = \"soon\"":                      "gh.toml:10: invalid duration",
		"low_speed_time = \"10ms\"":                      "low_speed_time must be at least 1s",
		"max_sync_duration = \"-1h\"":                    "max_sync_duration must be at least 1s",
		"redirect_hosts = [\"https://cdn.example.org\"]": "redirect_hosts",
		"redirect_hosts = [\"*.example.org\"]":           "redirect_hosts",
	} {
		_, err := parseConfig("gh.toml", []byte(goodConfig+bad+"\n"))
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a usage error with %q", bad, err, want)
		}
	}
}

// TestParseConfigServeLimits: the [serve] limits decode, and bad values are
// usage errors naming the key.
func TestParseConfigServeLimits(t *testing.T) {
	good := goodConfig + "\n[serve]\nlisten = \"127.0.0.1:0\"\nmax_conns = 500\nmax_conns_per_source = 10\nmin_send_rate = \"2KiB\"\nmin_send_time = \"20s\"\nidle_timeout = \"90s\"\n"
	c, err := parseConfig("gh.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Serve
	if s.MaxConns != 500 || s.MaxConnsPerSource != 10 || s.MinSendRate != "2KiB" || s.MinSendTime.Duration != 20*time.Second || s.IdleTimeout.Duration != 90*time.Second {
		t.Fatalf("decoded %+v", s)
	}
	for _, c := range []struct{ from, to, msg string }{
		{`min_send_rate = "2KiB"`, `min_send_rate = "fast"`, "min_send_rate"},
		{`max_conns = 500`, `max_conns = -1`, "max_conns"},
		{`max_conns_per_source = 10`, `max_conns_per_source = 501`, "larger than max_conns"},
		{`min_send_time = "20s"`, `min_send_time = "soon"`, "soon"},
		{`idle_timeout = "90s"`, `idle_timeout = "-1s"`, `invalid duration "-1s"`},
	} {
		_, err := parseConfig("gh.toml", []byte(strings.Replace(good, c.from, c.to, 1)))
		if err == nil || exitCode(err) != exitUsage || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v; want a usage error mentioning %q", c.to, err, c.msg)
		}
	}
}
