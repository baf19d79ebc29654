package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/record"
)

// targetName is the name the admin types for the target; known_hosts and
// host certificates use it, while the dial goes to 127.0.0.1.
const targetName = "target.example.org"

// env is a real sshd target trusting only a fresh upstream CA, and a
// Dialer for it.
type env struct {
	dir    string
	ca     *sshtest.CA
	sshd   *sshtest.SSHD
	known  string
	dialer *Dialer
}

// newEnv starts the target. extra lines go to its sshd_config.
func newEnv(t testing.TB, extra ...string) *env {
	t.Helper()
	sshtest.Require(t, "sshd", "ssh-keygen")
	dir := t.TempDir()
	ca := sshtest.NewCA(t, dir, "ed25519")
	lines := append([]string{
		"AcceptEnv LANG LC_* FOO",
		"Subsystem sftp internal-sftp",
	}, extra...)
	sshd := sshtest.StartSSHD(t, sshtest.SSHDOptions{TrustedUserCAKeys: ca.Pub, Extra: lines})
	e := &env{dir: dir, ca: ca, sshd: sshd, known: filepath.Join(dir, "known_hosts")}
	e.writeKnownHosts(t, fmt.Sprintf("[%s]:%d %s", targetName, sshd.Port, readFile(t, sshd.HostKey.Pub)))
	e.dialer = e.newDialer(t, Config{})
	return e
}

// newDialer returns a Dialer with the env's CA and known_hosts and the
// non-zero fields of cfg.
func (e *env) newDialer(t testing.TB, cfg Config) *Dialer {
	t.Helper()
	cfg.CAKey = loadSigner(t, e.ca.Priv)
	if cfg.KnownHosts == "" {
		cfg.KnownHosts = e.known
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *env) writeKnownHosts(t testing.TB, lines ...string) {
	t.Helper()
	if err := os.WriteFile(e.known, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) target() Target {
	return Target{Host: targetName, IP: netip.MustParseAddr("127.0.0.1"), Port: uint16(e.sshd.Port), Login: e.sshd.User}
}

var testWho = Who{Principal: "alice", KeyID: "alice@example.org laptop", SessionID: "s-test-1", Serial: 42, Source: "192.0.2.7:50000"}

func (e *env) dial(t testing.TB) (*ssh.Client, *MintedCert) {
	t.Helper()
	c, mc, err := e.dialer.Dial(context.Background(), e.target(), testWho)
	if err != nil {
		t.Fatalf("dial: %v\nsshd log:\n%s", err, e.sshd.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c, mc
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func loadSigner(t testing.TB, path string) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEd25519Signer(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// front is an in-process SSH server standing in for the bastion where it
// terminates SSH: every session channel is dialled upstream with the
// env's Dialer and handed to Relay.
type front struct {
	addr    string
	port    int
	key     sshtest.Key // admin key for the real ssh client
	signer  ssh.Signer  // the same key for in-process clients
	results chan error  // one per relayed channel
	conns   sync.WaitGroup
}

type frontOptions struct {
	rec     *record.Recording
	relay   RelayOptions
	hostKey ssh.Signer      // nil: a fresh ed25519 key
	ctx     context.Context // for Relay; nil: ended when the test ends
}

func startFront(t testing.TB, e *env, o frontOptions) *front {
	t.Helper()
	key := sshtest.UserKey(t, t.TempDir(), "ed25519")
	signer := loadSigner(t, key.Priv)
	hk := o.hostKey
	if hk == nil {
		hk = newEd25519Signer(t)
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), signer.PublicKey().Marshal()) {
				return &ssh.Permissions{}, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hk)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &front{addr: ln.Addr().String(), port: ln.Addr().(*net.TCPAddr).Port, key: key, signer: signer, results: make(chan error, 16)}
	t.Cleanup(func() {
		cancel()
		ln.Close()
		f.conns.Wait()
	})
	go func() {
		chanN := 0
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go func() {
				defer f.conns.Done()
				defer nc.Close()
				conn, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				defer conn.Close()
				go ssh.DiscardRequests(reqs)
				var up *ssh.Client
				var relays sync.WaitGroup
				for nch := range chans {
					if nch.ChannelType() != "session" {
						nch.Reject(ssh.UnknownChannelType, "only sessions")
						continue
					}
					if up == nil {
						up, _, err = e.dialer.Dial(ctx, e.target(), testWho)
						if err != nil {
							nch.Reject(ssh.ConnectionFailed, err.Error())
							f.results <- err
							continue
						}
					}
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					n := chanN
					chanN++
					relays.Add(1)
					go func() {
						defer relays.Done()
						rctx := ctx
						if o.ctx != nil {
							rctx = o.ctx
						}
						f.results <- Relay(rctx, ch, creqs, up, o.rec, n, o.relay)
					}()
				}
				relays.Wait()
				if up != nil {
					up.Close()
				}
			}()
		}
	}()
	return f
}

// client opens an in-process SSH connection to the front.
func (f *front) client(t testing.TB) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
		User:            "admin",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // the front is the test's own server
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// result waits for the next relayed channel to end.
func (f *front) result(t testing.TB) error {
	t.Helper()
	select {
	case err := <-f.results:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not finish within 30s")
		return nil
	}
}

// newRecording starts a recording signed with a fresh key; it returns the
// recording and the allowed_signers file for ssh-keygen -Y verify.
func newRecording(t testing.TB, recordInput bool) (*record.Recording, string) {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "recording_key")
	if err := record.GenerateSigningKey(keyPath); err != nil {
		t.Fatal(err)
	}
	key, err := record.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(record.AllowedSigners(key.PublicKey())), 0o644); err != nil {
		t.Fatal(err)
	}
	rec, err := record.NewRecording(record.RecorderConfig{
		Dir: filepath.Join(dir, "recordings"), RecordInput: recordInput, SigningKey: key,
		FlushInterval: 100 * time.Millisecond,
	}, "sess1", record.Meta{User: "root", Principal: "alice", Target: targetName + ":22", TargetLogin: "root"})
	if err != nil {
		t.Fatal(err)
	}
	return rec, allowed
}

// verifyManifest runs the real ssh-keygen -Y verify on a closed recording.
func verifyManifest(t testing.TB, rec *record.Recording, allowed string) {
	t.Helper()
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "gatehouse",
		"-n", record.RecordingNamespace, "-s", filepath.Join(rec.Dir(), record.SignatureName))
	f, err := os.Open(filepath.Join(rec.Dir(), record.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify: %v\n%s", err, out)
	}
}

// ttyrecBytes concatenates the frames of a ttyrec file.
func ttyrecBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(b) > 0 {
		if len(b) < 12 {
			t.Fatalf("%s: truncated frame header", path)
		}
		n := binary.LittleEndian.Uint32(b[8:12])
		if uint64(n) > uint64(len(b)-12) {
			t.Fatalf("%s: frame of %d bytes overruns the file", path, n)
		}
		out = append(out, b[12:12+n]...)
		b = b[12+n:]
	}
	return out
}

// events returns the events.jsonl lines of kind.
func events(t testing.TB, rec *record.Recording, kind string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(rec.Dir(), record.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"event":`+strconv.Quote(kind)) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// readUntil reads r until the output contains want or the limit passes.
func readUntil(t testing.TB, r io.Reader, want string) string {
	t.Helper()
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if strings.Contains(got.String(), want) || err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("did not see %q", want)
	}
	return got.String()
}
