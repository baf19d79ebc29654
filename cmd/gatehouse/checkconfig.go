package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"gatehouse/apt/pgp"
	"gatehouse/mirror"
)

// serviceUser is the account whose view of file owners and modes
// check-config takes: the services run as it, so a key it cannot read
// fails at start, and a key others can read is a leak.
type serviceUser struct {
	name   string
	uid    int
	groups map[int]bool
}

// defaultServiceUser is the account the Debian package's sysusers.d file
// creates and the systemd units run as.
const defaultServiceUser = "gatehouse"

func lookupServiceUser(asMe bool) (serviceUser, string, error) {
	var u *user.User
	var err error
	note := ""
	if !asMe {
		u, err = user.Lookup(defaultServiceUser)
		if err != nil {
			note = fmt.Sprintf("note: there is no user %q (the package's sysusers.d file creates it); checking owners and modes as the invoking user instead, as --as-me does", defaultServiceUser)
		}
	}
	if u == nil {
		if u, err = user.LookupId(strconv.Itoa(os.Geteuid())); err != nil {
			u = &user.User{Username: strconv.Itoa(os.Geteuid()), Uid: strconv.Itoa(os.Geteuid()), Gid: strconv.Itoa(os.Getegid())}
		}
	}
	su := serviceUser{name: u.Username, groups: map[int]bool{}}
	su.uid, _ = strconv.Atoi(u.Uid)
	if gid, err := strconv.Atoi(u.Gid); err == nil {
		su.groups[gid] = true
	}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				su.groups[n] = true
			}
		}
	}
	return su, note, nil
}

// may reports whether su may access st with permission bits bit (4 read,
// 2 write, 1 execute), by the owner/group/other rule (root may all).
func (su serviceUser) may(st fs.FileInfo, bit fs.FileMode) bool {
	if su.uid == 0 {
		return true
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := st.Mode().Perm()
	switch {
	case int(sys.Uid) == su.uid:
		return perm&(bit<<6) != 0
	case su.groups[int(sys.Gid)]:
		return perm&(bit<<3) != 0
	}
	return perm&bit != 0
}

func ownerOf(st fs.FileInfo) int {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(sys.Uid)
	}
	return -1
}

// checkProblem is one line of check-config's verdict.
type checkProblem struct {
	At      string `json:"at"` // file:line of the key in the configuration
	Message string `json:"message"`
	// Refused marks a signature or key check that failed (exit 3), as
	// opposed to a configuration error (exit 2).
	Refused bool `json:"refused,omitempty"`
}

type configChecker struct {
	cfg      *fileConfig
	user     serviceUser
	problems []checkProblem
	info     []string
}

func (c *configChecker) at(key string) string {
	return fmt.Sprintf("%s:%d", c.cfg.path, c.cfg.pos.line(key))
}

func (c *configChecker) fail(key string, refused bool, format string, args ...any) {
	c.problems = append(c.problems, checkProblem{At: c.at(key), Message: fmt.Sprintf(format, args...), Refused: refused})
}

// file checks that path (named by key) exists and the service user can
// read it; for a private key also that it is theirs and nobody else's. It
// returns false when the file is unusable (already reported).
func (c *configChecker) file(key, what, path string, private bool) bool {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.fail(key, false, "%s %s does not exist; fix: create it or correct the path", what, path)
		return false
	}
	if err != nil {
		c.fail(key, false, "%s %s: %v", what, path, err)
		return false
	}
	if !st.Mode().IsRegular() {
		c.fail(key, false, "%s %s is not a regular file; fix: point %s at the file itself", what, path, key[strings.LastIndexByte(key, '.')+1:])
		return false
	}
	if !c.user.may(st, 4) {
		c.fail(key, false, "%s %s (mode %04o, uid %d) is not readable by user %s, which the service runs as; fix: chown %s %s", what, path, st.Mode().Perm(), ownerOf(st), c.user.name, c.user.name, path)
		return false
	}
	if private {
		// The services refuse such a key too, so it is not parsed.
		if st.Mode().Perm()&0o077 != 0 {
			c.fail(key, false, "private key %s has mode %04o: other users may read it; fix: chmod 600 %s", path, st.Mode().Perm(), path)
			return false
		}
		if o := ownerOf(st); o >= 0 && o != c.user.uid {
			c.fail(key, false, "private key %s is owned by uid %d, not by user %s (uid %d), which the service runs as; fix: chown %s %s", path, o, c.user.name, c.user.uid, c.user.name, path)
			return false
		}
	} else if st.Mode().Perm()&0o022 != 0 {
		c.fail(key, false, "%s %s has mode %04o: other users may change it; fix: chmod go-w %s", what, path, st.Mode().Perm(), path)
	}
	return true
}

// dir checks a directory the service writes to: it may not exist yet
// (created on first use) but then its parent must be writable by the user.
func (c *configChecker) dir(key, what, path string) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(path)
		pst, perr := os.Stat(parent)
		if perr != nil || !pst.IsDir() || !c.user.may(pst, 2|1) {
			c.fail(key, false, "%s %s does not exist and user %s cannot create it in %s; fix: mkdir -p %s && chown %s %s", what, path, c.user.name, parent, path, c.user.name, path)
		}
		return
	}
	if err != nil {
		c.fail(key, false, "%s %s: %v", what, path, err)
		return
	}
	if !st.IsDir() {
		c.fail(key, false, "%s %s is not a directory; fix: correct the path", what, path)
		return
	}
	if o := ownerOf(st); o >= 0 && o != c.user.uid {
		c.fail(key, false, "%s %s is owned by uid %d, not by user %s (uid %d), which the service runs as; fix: chown -R %s %s", what, path, o, c.user.name, c.user.uid, c.user.name, path)
	} else if !c.user.may(st, 2|1) {
		c.fail(key, false, "%s %s (mode %04o) is not writable by user %s; fix: chmod u+rwx %s", what, path, st.Mode().Perm(), c.user.name, path)
	}
	if st.Mode().Perm()&0o022 != 0 {
		c.fail(key, false, "%s %s has mode %04o: other users may change it; fix: chmod go-w %s", what, path, st.Mode().Perm(), path)
	}
}

func (c *configChecker) keyring(key, what, path string) *pgp.Keyring {
	if !c.file(key, what, path, false) {
		return nil
	}
	kr, err := pgp.LoadKeyring(path)
	if errors.Is(err, fs.ErrPermission) {
		c.fail(key, false, "%s %s cannot be read by the invoking user (%v); fix: run check-config as root or as user %s", what, path, err, c.user.name)
		return nil
	}
	if err != nil {
		c.fail(key, true, "%s %s cannot be used: %v; fix: use the binary .gpg or armored .asc keyring the upstream publishes (apt's Signed-By file)", what, path, err)
		return nil
	}
	fprs := kr.Fingerprints()
	if len(fprs) == 0 {
		c.fail(key, true, "%s %s holds no usable public key; fix: use the upstream's keyring", what, path)
		return nil
	}
	c.info = append(c.info, fmt.Sprintf("%s %s: %s", what, path, strings.Join(fprs, ", ")))
	return kr
}

func (c *configChecker) sshPrivate(key, what, path string) {
	if path == "" || !c.file(key, what, path, true) {
		return
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		c.fail(key, false, "%s %s cannot be read by the invoking user (%v); fix: run check-config as root or as user %s", what, path, err, c.user.name)
		return
	}
	if err == nil {
		var s ssh.Signer
		if s, err = ssh.ParsePrivateKey(data); err == nil {
			c.info = append(c.info, fmt.Sprintf("%s %s: %s %s", what, path, s.PublicKey().Type(), ssh.FingerprintSHA256(s.PublicKey())))
			return
		}
	}
	c.fail(key, true, "%s %s cannot be used: %v; fix: it must be an unencrypted OpenSSH private key (ssh-keygen -t ed25519 -N '' -f %s)", what, path, err, path)
}

// sshPublic checks a file of authorized_keys-style lines (or certificates,
// cert set): every non-comment line must parse, and there must be one.
func (c *configChecker) sshPublic(key, what, path string, cert bool) {
	if path == "" || !c.file(key, what, path, false) {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		c.fail(key, false, "%s %s: %v", what, path, err)
		return
	}
	n := 0
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			c.fail(key, true, "%s %s line %d cannot be parsed: %v; fix: one OpenSSH public key per line, as ssh-keygen writes them", what, path, i+1, err)
			return
		}
		if _, isCert := pk.(*ssh.Certificate); cert && !isCert {
			c.fail(key, true, "%s %s line %d is a public key, not a certificate; fix: name the *-cert.pub file ssh-keygen -s wrote", what, path, i+1)
			return
		}
		c.info = append(c.info, fmt.Sprintf("%s %s: %s %s", what, path, pk.Type(), ssh.FingerprintSHA256(pk)))
		n++
	}
	if n == 0 {
		c.fail(key, true, "%s %s holds no key; fix: add the CA's public key (its .pub file)", what, path)
	}
}

// checkOffline checks every file the configuration names.
func (c *configChecker) checkOffline(configPath string) {
	if st, err := os.Stat(configPath); err == nil && st.Mode().Perm()&0o022 != 0 {
		c.problems = append(c.problems, checkProblem{At: configPath + ":1", Message: fmt.Sprintf("configuration file has mode %04o: other users may change it (and point a mirror at their own keyring); fix: chmod go-w %s", st.Mode().Perm(), configPath)})
	}
	c.dir("state_dir", "state directory", c.cfg.StateDir)
	for i, m := range c.cfg.Mirror {
		c.keyring(fmt.Sprintf("mirror[%d].keyring", i), fmt.Sprintf("mirror %s: keyring", m.Name), m.Keyring)
		if len(m.PostPublish) > 0 {
			// Run by the service after every publish: it must be there,
			// executable by the service user, and changeable by nobody else.
			key := fmt.Sprintf("mirror[%d].post_publish", i)
			cmd := m.PostPublish[0]
			if c.file(key, fmt.Sprintf("mirror %s: post_publish command", m.Name), cmd, false) {
				// Even root runs only a file with some execute bit.
				if st, err := os.Stat(cmd); err == nil && (!c.user.may(st, 1) || st.Mode().Perm()&0o111 == 0) {
					c.fail(key, false, "mirror %s: post_publish command %s (mode %04o) is not executable by user %s, which the service runs as; fix: chmod +x %s", m.Name, cmd, st.Mode().Perm(), c.user.name, cmd)
				}
			}
		}
	}
	if k := c.cfg.Signing.Key; k != "" && c.file("signing.key", "[signing] key", k, true) {
		if sk, err := pgp.LoadSigningKey(k); errors.Is(err, fs.ErrPermission) {
			c.fail("signing.key", false, "[signing] key %s cannot be read by the invoking user (%v); fix: run check-config as root or as user %s", k, err, c.user.name)
		} else if err != nil {
			c.fail("signing.key", true, "[signing] key %s cannot be used: %v; fix: create one with 'gatehouse keys init-archive-key'", k, err)
		} else {
			c.info = append(c.info, fmt.Sprintf("[signing] key %s: %s", k, sk.Fingerprint()))
		}
	}
	for _, k := range c.cfg.Import.TrustedKeys {
		c.keyring("import.trusted_keys", "[import] trusted key", k)
	}
	b := c.cfg.Bastion
	if b == nil {
		return
	}
	for _, k := range b.HostKeys {
		c.sshPrivate("bastion.host_keys", "[bastion] host key", k)
	}
	for _, k := range b.HostCertificates {
		c.sshPublic("bastion.host_certificates", "[bastion] host certificate", k, true)
	}
	c.sshPublic("bastion.user_ca_keys", "[bastion] user_ca_keys", b.UserCAKeys, false)
	if b.RevokedKeys != "" {
		c.file("bastion.revoked_keys", "[bastion] revoked_keys", b.RevokedKeys, false)
	}
	c.sshPrivate("bastion.upstream_ca_key", "[bastion] upstream_ca_key", b.UpstreamCAKey)
	c.sshPrivate("bastion.host_ca_key", "[bastion] host_ca_key", b.HostCAKey)
	c.sshPrivate("bastion.recording_key", "[bastion] recording_key", b.RecordingKey)
	if b.UpstreamKnownHosts != "" {
		c.file("bastion.upstream_known_hosts", "[bastion] upstream_known_hosts", b.UpstreamKnownHosts, false)
	}
	if b.RecordingsDir != "" {
		c.dir("bastion.recordings_dir", "[bastion] recordings_dir", b.RecordingsDir)
	}
	if b.AuditLog != "" {
		c.dir("bastion.audit_log", "directory of [bastion] audit_log", filepath.Dir(b.AuditLog))
	}
}

// checkOnline fetches and verifies each mirror's Release and checks its
// suites, components and architectures against it.
func (c *configChecker) checkOnline(ctx context.Context, g *globals) {
	for i, m := range c.cfg.Mirror {
		if m.URL == "" {
			continue // filled by `mirror import`; nothing upstream to check
		}
		if _, err := os.Stat(m.Keyring); err != nil {
			continue // reported offline
		}
		res, err := mirror.CheckUpstream(ctx, m, mirror.Options{Log: g.log})
		if err != nil {
			continue // the keyring problem is reported offline
		}
		for _, sc := range res {
			suiteKey := fmt.Sprintf("mirror[%d].suites", i)
			if sc.Err != nil {
				refused := errors.Is(sc.Err, mirror.ErrRefused)
				fix := "fix: correct the suite name or url"
				if refused {
					fix = "fix: set keyring to the file the upstream's Release is signed with (apt's Signed-By), and check url"
					suiteKey = fmt.Sprintf("mirror[%d].keyring", i)
				}
				c.fail(suiteKey, refused, "%v; %s", sc.Err, fix)
				continue
			}
			c.info = append(c.info, fmt.Sprintf("mirror %s: suite %s: Release signed by %s", m.Name, sc.Suite, strings.Join(sc.SignedBy, ", ")))
			for _, comp := range sc.MissingComponents {
				c.fail(fmt.Sprintf("mirror[%d].components", i), false, "mirror %s: suite %s has no component %q upstream; fix: correct components (the Release lists what exists)", m.Name, sc.Suite, comp)
			}
			for _, a := range sc.MissingArchitectures {
				c.fail(fmt.Sprintf("mirror[%d].architectures", i), false, "mirror %s: suite %s has no architecture %q upstream; fix: correct architectures (the Release lists what exists)", m.Name, sc.Suite, a)
			}
		}
	}
}

// newCheckConfigCmd validates the configuration file and changes nothing
// (like "nginx -t"): operators run it before a reload, and with --online
// before the first sync.
func newCheckConfigCmd(g *globals) *cobra.Command {
	var online, asMe bool
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Validate the configuration file and every file it names (changes nothing)",
		Long: `Validate the configuration file and every file it names, and change nothing.

Parses every keyring (printing its fingerprints), private key, CA and
certificate file, and checks the owner and mode of every path the services
need, as the user "gatehouse" the package's systemd units run as (or, with
--as-me, as the invoking user). With --online it also fetches each mirror's
InRelease, verifies it with the configured keyring, and checks that every
configured suite, component and architecture exists upstream.

Each problem is one line: the configuration file and line of the key, what
is wrong, and the fix. Exit 0 when all is well, 2 for a configuration error,
3 when a signature or key check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(g.configPath)
			if err != nil {
				return err
			}
			su, note, _ := lookupServiceUser(asMe)
			c := &configChecker{cfg: cfg, user: su}
			c.checkOffline(g.configPath)
			if online {
				c.checkOnline(cmd.Context(), g)
			}
			refused := false
			for _, p := range c.problems {
				refused = refused || p.Refused
			}
			if g.json {
				if err := writeJSON(g.stdout, map[string]any{"config": g.configPath, "ok": len(c.problems) == 0, "mirrors": len(cfg.Mirror),
					"user": su.name, "keys": c.info, "problems": c.problems}); err != nil {
					return err
				}
			} else {
				if note != "" {
					fmt.Fprintln(g.stderr, note)
				}
				for _, l := range c.info {
					fmt.Fprintln(g.stdout, l)
				}
				for _, p := range c.problems {
					fmt.Fprintf(g.stderr, "%s: %s\n", p.At, p.Message)
				}
			}
			switch {
			case refused:
				return &refusedError{fmt.Errorf("%s: %d problems, a key or signature check among them", g.configPath, len(c.problems))}
			case len(c.problems) > 0:
				return usageErrorf("%s: %d problems", g.configPath, len(c.problems))
			}
			if !g.json {
				_, err = fmt.Fprintf(g.stdout, "%s: OK (%d mirrors, checked as user %s%s)\n", g.configPath, len(cfg.Mirror), su.name, map[bool]string{true: ", upstreams online", false: ""}[online])
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&online, "online", false, "also fetch and verify each mirror's InRelease and check suites, components and architectures upstream")
	cmd.Flags().BoolVar(&asMe, "as-me", false, "check owners and modes against the invoking user instead of the service user \""+defaultServiceUser+"\"")
	return cmd
}
