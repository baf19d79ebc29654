package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion"
	"gatehouse/bastion/record"
	"gatehouse/cmd/gatehouse/internal/sshkeys"
)

// minFreeSpace replaces the 1 GiB default of min_free_space: the demo
// records a few kilobytes and must run in a small temporary directory.
const minFreeSpace = bastion.ByteSize(16 << 20)

// recording is the demo's recording proxy: its keys and files in the
// bastion directory, the recorded target, and the recordings the bastion
// has closed.
type recording struct {
	dir             string // recordings_dir
	keyPath         string // recording_key; keyPath+".pub" verifies manifests
	pub             ssh.PublicKey
	allowedSigners  string // for ssh-keygen -Y verify
	upCA, hostCAKey string
	knownHosts      string // upstream_known_hosts: pins the recorded target
	hostCA          ssh.PublicKey
	target          *Target
	ended           chan string // recording IDs, as proxy.end reports them

	mu       sync.Mutex
	verified string // the last recording check verified
}

// newRecording creates (or reuses, with --dir) the upstream CA, the
// host CA and the recording key in bdir (0600), and starts listening with
// the recorded target, which trusts the upstream CA alone.
func newRecording(bdir string, log *slog.Logger) (*recording, error) {
	rp := &recording{
		dir:            filepath.Join(bdir, "recordings"),
		keyPath:        filepath.Join(bdir, "recording_key"),
		allowedSigners: filepath.Join(bdir, "allowed_signers"),
		upCA:           filepath.Join(bdir, "upstream_ca"),
		hostCAKey:      filepath.Join(bdir, "host_ca"),
		knownHosts:     filepath.Join(bdir, "upstream_known_hosts"),
		ended:          make(chan string, 16),
	}
	upCA, _, err := sshkeys.Ensure(rp.upCA, "gatehouse-demo-upstream-ca")
	if err != nil {
		return nil, fmt.Errorf("demo upstream CA: %w", err)
	}
	hostCA, _, err := sshkeys.Ensure(rp.hostCAKey, "gatehouse-demo-host-ca")
	if err != nil {
		return nil, fmt.Errorf("demo host CA: %w", err)
	}
	rp.hostCA = hostCA.PublicKey()
	recKey, _, err := sshkeys.Ensure(rp.keyPath, "gatehouse-recording")
	if err != nil {
		return nil, fmt.Errorf("demo recording key: %w", err)
	}
	rp.pub = recKey.PublicKey()
	tkey, _, err := sshkeys.Ensure(filepath.Join(bdir, "recorded_target_host_key"), "gatehouse-demo-recorded-target")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(rp.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(rp.allowedSigners, []byte(record.AllowedSigners(rp.pub)), 0o644); err != nil {
		return nil, err
	}
	if rp.target, err = NewTarget(tkey, upCA.PublicKey(), log); err != nil {
		return nil, err
	}
	h, p, _ := net.SplitHostPort(rp.target.Addr())
	known := fmt.Sprintf("[%s]:%s %s", h, p, ssh.MarshalAuthorizedKey(tkey.PublicKey()))
	if err := os.WriteFile(rp.knownHosts, []byte(known), 0o644); err != nil {
		rp.target.Close()
		return nil, err
	}
	return rp, nil
}

// configure sets the bastion's recording proxy settings.
func (rp *recording) configure(c *bastion.Config) {
	c.UpstreamCAKey = rp.upCA
	c.UpstreamKnownHosts = rp.knownHosts
	c.HostCAKey = rp.hostCAKey
	c.RecordingsDir = rp.dir
	c.RecordingKey = rp.keyPath
	c.RecordInput = true
	c.MinFreeSpace = minFreeSpace
}

// observe is the bastion's audit observer: it passes on the recording of
// every proxy.end, written after the recording is sealed.
func (rp *recording) observe(ev record.Event) {
	end, ok := ev.(record.ProxyEnd)
	if !ok {
		return
	}
	if id := end.Recording; id != "" {
		select {
		case rp.ended <- id:
		default: // nobody is waiting: only --check reads these
		}
	}
}

// check waits for the recording of the session just made and verifies its
// hash chain and manifest signature with the recording key.
func (rp *recording) check(ctx context.Context, w io.Writer) bool {
	var id string
	select {
	case id = <-rp.ended:
	case <-time.After(10 * time.Second):
		fmt.Fprintf(w, "  ✗  recording: the bastion did not close a recording within 10 s (see %s)\n", rp.dir)
		return false
	case <-ctx.Done():
		return false
	}
	dir := filepath.Join(rp.dir, id)
	if err := record.Verify(dir, rp.pub); err != nil {
		fmt.Fprintf(w, "  ✗  recording: %s does not verify:\n%s\n", dir, Indent(err.Error()))
		return false
	}
	rp.mu.Lock()
	rp.verified = id
	rp.mu.Unlock()
	fmt.Fprintf(w, "  ✓  recording: %s (signature ok)\n", dir)
	return true
}

// exampleID names a recording for the printed commands: the one check
// verified, or a placeholder.
func (rp *recording) exampleID() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.verified == "" {
		return "ID"
	}
	return rp.verified
}
