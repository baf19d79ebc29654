package bastion

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/policy"
	"gatehouse/bastion/record"
)

// TestProxyEnds: recorded sessions end on idle timeout, on revocation and
// when the recording cannot be written, each with the reason in the audit
// log and a message to the admin.
func TestProxyEnds(t *testing.T) {
	e := newProxyEnv(t)

	t.Run("idle-timeout", func(t *testing.T) {
		t.Parallel()
		b := newProxyBastion(t, e, func(c *Config) { c.IdleTimeout.Duration = 2 * time.Second })
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		began := time.Now()
		r := sshtest.StartSSH(t, "-F", cfg, "web1", "sleep", "40").Wait()
		if r.Exit == 0 || time.Since(began) > 20*time.Second {
			t.Fatalf("idle session not closed: %s", r)
		}
		if !strings.Contains(r.Stderr, "gatehouse: session closed: idle timeout") {
			t.Errorf("admin not told why: %s", r)
		}
		_, end := b.recordingOf(t, id)
		if !strings.Contains(end.str("reason"), "idle timeout") {
			t.Errorf("proxy.end reason %q", end.str("reason"))
		}

		// login@host@bastion: the whole connection ends, conn.end says why.
		key, cert, id = b.admin(t)
		login := e.sshd.User + "@" + e.target() + "@127.0.0.1"
		r = sshtest.StartSSH(t, append(sshtest.ClientOptions(b.known+"-I", key.Priv, cert), "-p", strconv.Itoa(b.port), login, "sleep", "40")...).Wait()
		if r.Exit == 0 || !strings.Contains(r.Stderr, "idle timeout") {
			t.Fatalf("idle session not closed with a message: %s", r)
		}
		ce := b.waitEvent(t, "conn.end", map[string]string{"key_id": id})
		if !strings.Contains(ce.str("reason"), "idle timeout") {
			t.Errorf("conn.end reason %q", ce.str("reason"))
		}
		dir, _ := b.recordingOf(t, id)
		m, _, err := record.ReadManifest(dir)
		if err != nil || !strings.Contains(m.Closed, "idle timeout") {
			t.Errorf("manifest close reason: %v %+v", err, m)
		}
	})

	t.Run("max-session", func(t *testing.T) {
		t.Parallel()
		b := newProxyBastion(t, e, func(c *Config) { c.MaxSession.Duration = 2 * time.Second })
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		r := sshtest.StartSSH(t, "-F", cfg, "web1", "sleep", "40").Wait()
		if r.Exit == 0 || !strings.Contains(r.Stderr, "gatehouse: session closed: max_session reached") {
			t.Fatalf("session outlived max_session or was not told: %s", r)
		}
		_, end := b.recordingOf(t, id)
		if end.str("reason") != "max_session reached" {
			t.Errorf("proxy.end reason %q", end.str("reason"))
		}
	})

	t.Run("revoked", func(t *testing.T) {
		t.Parallel()
		krl := &fixture{dir: t.TempDir(), ca: sharedKeys(t).ca}
		krl.krl = filepath.Join(krl.dir, "revoked.krl")
		krl.writeKRL(t, "serial: 666")
		b := newProxyBastion(t, e, func(c *Config) { c.RevokedKeys = krl.krl })
		key, cert, id := b.admin(t, "-z", "4242")
		cfg := b.proxyConfig(t, key, cert)
		started := filepath.Join(b.dir, "started")
		p := sshtest.StartSSH(t, "-F", cfg, "web1", "touch "+started+"; sleep 40")
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(started); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("remote command did not start: %v", b.events(t))
			}
		}
		krl.writeKRL(t, "serial: 666", "serial: 4242")
		if err := b.srv.Reload(); err != nil {
			t.Fatal(err)
		}
		r := p.Wait()
		if r.Exit == 0 || !strings.Contains(r.Stderr, "gatehouse: session closed: certificate no longer valid: revoked") {
			t.Fatalf("session of a revoked certificate survived or was not told: %s", r)
		}
		_, end := b.recordingOf(t, id)
		if !strings.Contains(end.str("reason"), "revoked") {
			t.Errorf("proxy.end reason %q", end.str("reason"))
		}
	})

	t.Run("recording-disk-full", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() != 0 {
			t.Skip("mounting a tmpfs needs root (CI runs as root)")
		}
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v\n%s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
		b := newProxyBastion(t, e, func(c *Config) {
			c.RecordingsDir = filepath.Join(mnt, "rec")
			c.MinFreeSpace = 16 << 10
		})
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		r := sshtest.StartSSH(t, "-F", cfg, "web1", "head -c 3000000 /dev/urandom | base64; sleep 30").Wait()
		if r.Exit == 0 || len(r.Stdout) >= 4000000 {
			t.Fatalf("session survived a full recordings disk: exit %d, %d bytes", r.Exit, len(r.Stdout))
		}
		if !strings.Contains(r.Stderr, "gatehouse: session closed: the recording cannot be written") {
			t.Errorf("admin not told why: %s", r.Stderr)
		}
		fe := b.waitEvent(t, "recording.failed", map[string]string{"key_id": id})
		if !strings.Contains(fe.str("reason"), "no space") {
			t.Errorf("recording.failed reason %q", fe.str("reason"))
		}
		dir, _ := b.recordingOf(t, id)
		m, _, err := record.ReadManifest(dir)
		if err != nil {
			out, _ := exec.Command("ls", "-la", dir, mnt).CombinedOutput()
			t.Fatalf("no manifest after the failure: %v\n%s", err, out)
		}
		if !m.Failed {
			t.Errorf("manifest does not say failed: %+v", m)
		}
		if err := record.Verify(dir, b.env.recPub); err != nil {
			t.Errorf("what the manifest claims does not verify: %v", err)
		}
		claimed := int64(0)
		for _, f := range m.Files {
			if f.Name == "ch00.ttyrec" {
				claimed = f.Size
			}
		}
		if got := ttyrecPayload(t, filepath.Join(dir, "ch00.ttyrec")); int64(len(got)) > claimed || !strings.HasPrefix(r.Stdout, string(got)) {
			t.Errorf("ttyrec holds %d bytes, manifest claims a %d-byte file, client got %d", len(got), claimed, len(r.Stdout))
		}
	})
}

// TestProxyStartup: a recording left open by a crash is sealed (failed,
// signed) at start-up; a recorded session is refused below min_free_space.
func TestProxyStartup(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) { c.MinFreeSpace = 1 << 60 })
	key, cert, id := b.admin(t)
	cfg := b.proxyConfig(t, key, cert)
	r := sshtest.SSH(t, "-F", cfg, "web1", "true")
	if r.Exit == 0 || !strings.Contains(r.Stderr, "recording cannot be written") {
		t.Fatalf("session below min_free_space not refused with a message: %s", r)
	}
	b.waitEvent(t, "recording.failed", map[string]string{"key_id": id, "phase": "start"})

	// A recording directory without manifest, as a crash leaves it.
	open := filepath.Join(b.recDir, "crashed-1")
	if err := os.MkdirAll(open, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(open, record.MetaFile), []byte(`{"id":"crashed-1"}`))
	writeFile(t, filepath.Join(open, "ch00.ttyrec"), []byte("partial"))
	notRec := filepath.Join(b.recDir, "lost+found")
	if err := os.MkdirAll(notRec, 0o700); err != nil {
		t.Fatal(err)
	}
	b.stop(t)
	b2cfg := b.cfg
	b2 := newProxyBastion(t, e, func(c *Config) {
		*c = b2cfg
		c.AuditLog = filepath.Join(t.TempDir(), "audit2.jsonl")
	})
	m, _, err := record.ReadManifest(open)
	if err != nil || !m.Failed || !strings.Contains(m.Failure, sealReason) {
		t.Fatalf("crashed recording not sealed: %v %+v", err, m)
	}
	if err := record.Verify(open, e.recPub); err != nil {
		t.Errorf("sealed recording does not verify: %v", err)
	}
	b2.auditPath = b2.cfg.AuditLog
	b2.waitEvent(t, "recording.sealed", map[string]string{"recording": "crashed-1"})
	index, err := os.ReadFile(filepath.Join(b.recDir, record.IndexName))
	if err != nil || !strings.Contains(string(index), `"final":"`+m.Final+`"`) || !strings.Contains(string(index), `"id":"crashed-1"`) {
		t.Errorf("the sealed recording's final hash is not in the index (err %v):\n%s", err, index)
	}
	if _, err := os.Stat(filepath.Join(notRec, record.ManifestName)); err == nil {
		t.Errorf("a directory without meta.json was sealed")
	}

	// Private keys others can read are refused.
	for _, k := range []struct {
		key string
		set func(c *Config, path string)
	}{
		{"upstream_ca_key", func(c *Config, p string) { c.UpstreamCAKey = p }},
		{"host_ca_key", func(c *Config, p string) { c.HostCAKey = p }},
		{"recording_key", func(c *Config, p string) { c.RecordingKey = p }},
	} {
		loose := filepath.Join(t.TempDir(), "loose_key")
		writeFile(t, loose, catFiles(t, e.upCA.Priv))
		if err := os.Chmod(loose, 0o640); err != nil {
			t.Fatal(err)
		}
		c := b2cfg
		c.AuditLog = filepath.Join(t.TempDir(), "audit.jsonl")
		k.set(&c, loose)
		if _, err := New(c, nil, nil); err == nil || !strings.Contains(err.Error(), k.key) || !strings.Contains(err.Error(), "group") {
			t.Errorf("%s readable by group: %v", k.key, err)
		}
	}
}

func ruleProxy() policy.Rule {
	return policy.Rule{Principals: []string{"admin"}, Proxy: []string{"10.0.0.1:22"}, Logins: []string{"root"}}
}

// TestProxyConfig: proxy rules need every recording setting.
func TestProxyConfig(t *testing.T) {
	base := Config{HostKeys: []string{"k"}, UserCAKeys: "ca", AuditLog: "a", Rules: nil}
	base.Defaults()
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	full := base
	full.Rules = append(full.Rules, ruleProxy())
	full.UpstreamCAKey, full.UpstreamKnownHosts, full.HostCAKey, full.RecordingsDir, full.RecordingKey = "u", "k", "h", "r", "rk"
	if err := full.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"upstream_ca_key", "upstream_known_hosts", "host_ca_key", "recordings_dir", "recording_key"} {
		c := full
		switch k {
		case "upstream_ca_key":
			c.UpstreamCAKey = ""
		case "upstream_known_hosts":
			c.UpstreamKnownHosts = ""
		case "host_ca_key":
			c.HostCAKey = ""
		case "recordings_dir":
			c.RecordingsDir = ""
		case "recording_key":
			c.RecordingKey = ""
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("without %s: %v", k, err)
		}
	}
}
