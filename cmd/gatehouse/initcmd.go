package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"gatehouse/apt/pgp"
	"gatehouse/bastion/record"
)

//go:embed templates/gatehouse.toml
var configTemplate string

// renderConfig fills the commented configuration template. configs/gatehouse.toml
// is this rendering for the default paths (a test keeps them identical).
func renderConfig(configPath, stateDir string) (string, error) {
	t, err := template.New("config").Parse(configTemplate)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	// ConfigDir is where the operator's own files (the user CA) go, beside
	// the configuration: check-config then finds them where init said.
	err = t.Execute(&b, struct{ Config, ConfigDir, StateDir string }{configPath, filepath.Dir(configPath), stateDir})
	return b.String(), err
}

func newInitCmd(g *globals) *cobra.Command {
	var stateDir string
	c := &cobra.Command{
		Use:   "init",
		Short: "Write a commented config and create the appliance's keys in a state directory",
		Long: `Create the state directory (0700) and the appliance's keys, each only if it
is missing (init never overwrites a key): the bastion's SSH host key, the
upstream CA that signs per-session certificates for recorded targets, the
host CA, the recording signing key and the OpenPGP archive signing key. Write
a fully commented configuration file if none exists. Then print the public
halves and the exact lines to put on targets, clients and isolated hosts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInit(g, stateDir)
		},
	}
	c.Flags().StringVar(&stateDir, "state-dir", defaultStateDir, "state directory to create")
	return c
}

func runInit(g *globals, stateDir string) error {
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	if err := os.Chmod(stateDir, 0o700); err != nil {
		return err
	}
	for _, sub := range []string{"mirrors", "recordings"} {
		if err := os.MkdirAll(filepath.Join(stateDir, sub), 0o700); err != nil {
			return err
		}
	}
	out := g.stdout
	created := func(what, path string, isNew bool) {
		state := "kept existing"
		if isNew {
			state = "created"
		}
		fmt.Fprintf(out, "%-26s %s (%s)\n", what, path, state)
	}

	hostKey, isNew, err := ensureSSHKey(filepath.Join(stateDir, "ssh_host_ed25519_key"), "gatehouse-bastion-host")
	if err != nil {
		return err
	}
	created("bastion SSH host key", filepath.Join(stateDir, "ssh_host_ed25519_key"), isNew)
	upCA, isNew, err := ensureSSHKey(filepath.Join(stateDir, "upstream_ca"), "gatehouse-upstream-ca")
	if err != nil {
		return err
	}
	created("upstream CA", filepath.Join(stateDir, "upstream_ca"), isNew)
	hostCA, isNew, err := ensureSSHKey(filepath.Join(stateDir, "host_ca"), "gatehouse-host-ca")
	if err != nil {
		return err
	}
	created("host CA", filepath.Join(stateDir, "host_ca"), isNew)

	recPath := filepath.Join(stateDir, "recording_key")
	recNew := false
	if err := record.GenerateSigningKey(recPath); err == nil {
		recNew = true
	} else if !errors.Is(err, fs.ErrExist) {
		return err
	}
	rec, err := record.LoadSigningKey(recPath)
	if err != nil {
		return err
	}
	created("recording signing key", recPath, recNew)

	archPath := filepath.Join(stateDir, "archive_signing_key")
	arch, archNew, err := ensureArchiveKey(archPath, "ed25519")
	if err != nil {
		return err
	}
	created("archive signing key", archPath, archNew)
	archPub := filepath.Join(stateDir, "archive-keyring.gpg")
	if pub, err := arch.PublicKey(false); err == nil {
		if err := os.WriteFile(archPub, pub, 0o644); err != nil {
			return err
		}
	}

	cfgNew := false
	if _, err := os.Stat(g.configPath); errors.Is(err, fs.ErrNotExist) {
		text, err := renderConfig(g.configPath, stateDir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(g.configPath), 0o755); err != nil {
			return err
		}
		if err := writeNewFile(g.configPath, []byte(text), 0o640); err != nil {
			return fmt.Errorf("writing config: %w", err)
		}
		cfgNew = true
	}
	created("configuration", g.configPath, cfgNew)

	pubLine := func(s ssh.Signer) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) }
	fmt.Fprintf(out, `
Next steps
----------
Bastion host key fingerprint: %s

On every recorded target host (it trusts only gatehouse's upstream CA, never
your user CA, so nobody can skip the bastion):
  echo '%s' > /etc/ssh/gatehouse_upstream_ca.pub
  echo 'TrustedUserCAKeys /etc/ssh/gatehouse_upstream_ca.pub' >> /etc/ssh/sshd_config

On admin laptops (~/.ssh/known_hosts), to trust the host certificates the
bastion presents for recorded targets:
  @cert-authority * %s

Isolated hosts using a filtered (re-signed) mirror: install the archive key
  %s  (or: gatehouse keys export-archive-key > /usr/share/keyrings/gatehouse.gpg)
and use
  deb [signed-by=/usr/share/keyrings/gatehouse.gpg] http://GATEHOUSE:8080/MIRROR SUITE main
Verbatim mirrors keep the upstream's own keyring as signed-by.

Recording manifests verify with stock OpenSSH; allowed_signers line:
  %s
Edit %s (add [[mirror]] tables, [[bastion.rule]] tables and your user CA),
then: gatehouse --config %s check-config
`, ssh.FingerprintSHA256(hostKey.PublicKey()), pubLine(upCA), pubLine(hostCA), archPub,
		strings.TrimSpace(record.AllowedSigners(rec.PublicKey())), g.configPath, g.configPath)
	return nil
}

// ensureArchiveKey loads the OpenPGP archive key at path or creates it.
func ensureArchiveKey(path, algo string) (*pgp.SigningKey, bool, error) {
	if _, err := os.Stat(path); err == nil {
		k, err := pgp.LoadSigningKey(path)
		return k, false, err
	}
	k, err := pgp.GenerateSigningKey("gatehouse archive signing key", "gatehouse@localhost", algo, time.Now())
	if err != nil {
		return nil, false, err
	}
	if err := pgp.WriteSigningKey(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

func newKeysCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Manage the appliance's OpenPGP archive signing key",
	}
	var algo string
	initKey := &cobra.Command{
		Use:   "init-archive-key",
		Short: "Create the archive signing key ([signing] key) if it is missing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := archiveKeyPath(g)
			if err != nil {
				return err
			}
			switch algo {
			case "ed25519", "rsa4096", "rsa3072":
			default:
				return usageErrorf("--type %q: use ed25519 (default), rsa3072 or rsa4096", algo)
			}
			k, isNew, err := ensureArchiveKey(path, algo)
			if err != nil {
				return err
			}
			state := "exists, kept"
			if isNew {
				state = "created"
			}
			fmt.Fprintf(g.stdout, "%s: %s, fingerprint %s\n", path, state, k.Fingerprint())
			return nil
		},
	}
	initKey.Flags().StringVar(&algo, "type", "ed25519", "key type: ed25519, rsa3072 or rsa4096")
	var armor bool
	export := &cobra.Command{
		Use:   "export-archive-key",
		Short: "Print the archive public key for clients' Signed-By (binary; --armor for text)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := archiveKeyPath(g)
			if err != nil {
				return err
			}
			k, err := pgp.LoadSigningKey(path)
			if err != nil {
				return err
			}
			pub, err := k.PublicKey(armor)
			if err != nil {
				return err
			}
			_, err = g.stdout.Write(pub)
			return err
		},
	}
	export.Flags().BoolVar(&armor, "armor", false, "ASCII-armored output")
	c.AddCommand(initKey, export)
	return c
}

// archiveKeyPath is [signing] key, or its default under state_dir.
func archiveKeyPath(g *globals) (string, error) {
	cfg, err := loadConfig(g.configPath)
	if err != nil {
		return "", err
	}
	if cfg.Signing.Key != "" {
		return cfg.Signing.Key, nil
	}
	return filepath.Join(cfg.StateDir, "archive_signing_key"), nil
}
