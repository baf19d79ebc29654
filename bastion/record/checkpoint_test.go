package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// checkpointedLogs opens an audit log and an index that checkpoint into
// each other, as the bastion does.
func checkpointedLogs(t *testing.T, dir string, interval time.Duration) (audit, index *Audit, signerPath string) {
	t.Helper()
	signer, keyPath := genKey(t, dir)
	var err error
	if audit, err = OpenAudit(filepath.Join(dir, "audit.jsonl"), nil); err != nil {
		t.Fatal(err)
	}
	if index, err = OpenAudit(filepath.Join(dir, "recs", IndexName), nil); err != nil {
		t.Fatal(err)
	}
	if err := audit.EnableCheckpoints(signer, "audit", index, interval); err != nil {
		t.Fatal(err)
	}
	if err := index.EnableCheckpoints(signer, "index", audit, interval); err != nil {
		t.Fatal(err)
	}
	return audit, index, keyPath
}

func parseLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range readLines(t, path) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestCheckpointSSHKeygenRecipe: the README's one-line recipe extracts a
// checkpoint that stock ssh-keygen -Y verify accepts, and refuses once
// the signed text is altered.
func TestCheckpointSSHKeygenRecipe(t *testing.T) {
	for _, tool := range []string{"ssh-keygen", "jq", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	audit, index, keyPath := checkpointedLogs(t, dir, 0)
	for i := 0; i < 5; i++ {
		audit.logMap("auth", map[string]any{"i": i})
	}
	index.logMap("recording.start", map[string]any{"id": "r1"})
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	if err := index.Close(); err != nil {
		t.Fatal(err)
	}
	pubData, _ := os.ReadFile(keyPath + ".pub")
	pub := mustParsePub(t, pubData)
	allowed := filepath.Join(dir, "allowed_signers")
	os.WriteFile(allowed, []byte(AllowedSigners(pub)), 0o644)
	for _, log := range []string{filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "recs", IndexName)} {
		lines := parseLines(t, log)
		last := lines[len(lines)-1]
		if last["event"] != CheckpointEvent {
			t.Fatalf("%s: last line is %v, want the Close checkpoint", log, last["event"])
		}
		n := int(last["seq"].(float64))
		// The README recipe, verbatim but for N and the file names.
		recipe := fmt.Sprintf(`cd %q && jq -r --argjson n %d 'select(.seq==$n).sig' %q > cp.sig && jq -j --argjson n %d 'select(.seq==$n).signed' %q | ssh-keygen -Y verify -f allowed_signers -I gatehouse -n gatehouse-audit -s cp.sig`,
			dir, n, log, n, log)
		out, err := exec.Command("bash", "-c", recipe).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Good \"gatehouse-audit\" signature for gatehouse") {
			t.Fatalf("recipe on %s: %v\n%s", log, err, out)
		}
		// The signed text names the line count and head before it.
		want := fmt.Sprintf("lines=%d head=%s ", n-1, last["prev"])
		if !strings.Contains(last["signed"].(string), want) {
			t.Errorf("signed text %q lacks %q", last["signed"], want)
		}
		bad := fmt.Sprintf(`cd %q && jq -j --argjson n %d 'select(.seq==$n).signed' %q | sed 's/lines=/lines=1/' | ssh-keygen -Y verify -f allowed_signers -I gatehouse -n gatehouse-audit -s cp.sig`, dir, n, log)
		if out, err := exec.Command("bash", "-c", bad).CombinedOutput(); err == nil {
			t.Fatalf("ssh-keygen accepted an altered checkpoint text:\n%s", out)
		}
	}
	// Both logs verify, with each other's checkpoints, and nothing unsealed.
	rep, err := VerifyEvidence(filepath.Join(dir, "recs"), filepath.Join(dir, "audit.jsonl"), pub)
	if err != nil {
		t.Fatal(err)
	}
	// r1 has no proxy.start and no directory: exactly those problems.
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "no proxy.start") || len(rep.Notes) != 0 {
		t.Errorf("problems %q, notes %q", rep.Problems, rep.Notes)
	}
	if len(rep.Recordings) != 1 || rep.Recordings[0].Err == nil || !strings.Contains(rep.Recordings[0].Err.Error(), "deleted") {
		t.Errorf("recordings: %+v", rep.Recordings)
	}
}

// TestCheckpointUncleanStop: lines a crash left after the last checkpoint
// are sealed at the next start by a checkpoint that says so, and verify
// reports unsealed lines as a note, not a failure.
func TestCheckpointUncleanStop(t *testing.T) {
	dir := t.TempDir()
	signer, keyPath := genKey(t, dir)
	pub := mustParsePub(t, must(os.ReadFile(keyPath+".pub")))
	path := filepath.Join(dir, "audit.jsonl")
	a, _ := OpenAudit(path, nil)
	a.EnableCheckpoints(signer, "audit", nil, 0)
	a.logMap("auth", map[string]any{"i": 1})
	a.Close() // line 1: the new log's checkpoint, line 3: Close's
	// A run that crashes: lines without their final checkpoint. (An Audit
	// without a key writes the same lines; a killed process never runs
	// Close.)
	a, _ = OpenAudit(path, nil)
	for i := 0; i < 3; i++ {
		a.logMap("auth", map[string]any{"i": i})
	}
	a.Close()
	verify := func() *EvidenceReport {
		rep, err := VerifyEvidence("", path, pub)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := verify()
	if len(rep.Problems) != 0 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "last 3 line(s) come after the last checkpoint (line 3)") {
		t.Fatalf("after a crash: problems %q notes %q", rep.Problems, rep.Notes)
	}
	a, _ = OpenAudit(path, nil)
	if err := a.EnableCheckpoints(signer, "audit", nil, 0); err != nil {
		t.Fatal(err)
	}
	a.Close()
	lines := parseLines(t, path)
	if len(lines) != 7 || lines[6]["unsealed"] != float64(3) || !strings.Contains(lines[6]["reason"].(string), "unclean stop") {
		t.Fatalf("start-up seal: %v", lines[len(lines)-1])
	}
	rep = verify()
	if len(rep.Problems) != 0 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "sealed 3 line(s) at start-up: unclean stop") {
		t.Fatalf("after sealing: problems %q notes %q", rep.Problems, rep.Notes)
	}
}

// TestCheckpointPeriodic: a checkpoint every interval while lines are
// added, none while nothing changes.
func TestCheckpointPeriodic(t *testing.T) {
	dir := t.TempDir()
	audit, index, _ := checkpointedLogs(t, dir, 50*time.Millisecond)
	audit.logMap("auth", map[string]any{"i": 1})
	path := filepath.Join(dir, "audit.jsonl")
	deadline := time.Now().Add(10 * time.Second)
	for len(readLines(t, path)) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no periodic checkpoint")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(readLines(t, path)); n != 3 {
		t.Errorf("%d lines after an idle period, want 3 (no checkpoint without a change)", n)
	}
	audit.Close()
	index.Close()
	if n := len(readLines(t, path)); n != 3 {
		t.Errorf("%d lines after Close, want 3", n)
	}
}

// TestCheckpointTamper: each forgery of a checkpoint is a problem.
func TestCheckpointTamper(t *testing.T) {
	dir := t.TempDir()
	signer, keyPath := genKey(t, dir)
	pub := mustParsePub(t, must(os.ReadFile(keyPath+".pub")))
	path := filepath.Join(dir, "audit.jsonl")
	a, _ := OpenAudit(path, nil)
	a.EnableCheckpoints(signer, "audit", nil, 0)
	for i := 0; i < 3; i++ {
		a.logMap("auth", map[string]any{"i": i})
	}
	a.Close()
	orig, _ := os.ReadFile(path)
	other, _ := genKey(t, t.TempDir())
	cases := map[string]func() []byte{
		// Re-hash everything without the key: the old checkpoint no longer
		// matches the chain before it.
		"rehashed": func() []byte { return rechain(t, bytes.Replace(orig, []byte(`"i":1`), []byte(`"i":7`), 1)) },
		// Drop the checkpoints and re-hash: no checkpoint at all.
		"dropped": func() []byte {
			var keep [][]byte
			for _, l := range bytes.SplitAfter(orig, []byte("\n")) {
				if !bytes.Contains(l, []byte(`"event":"checkpoint"`)) {
					keep = append(keep, l)
				}
			}
			return rechain(t, bytes.Join(keep, nil))
		},
		// A checkpoint signed by another key.
		"other key": func() []byte {
			p2 := filepath.Join(t.TempDir(), "a.jsonl")
			b, _ := OpenAudit(p2, nil)
			b.EnableCheckpoints(other, "audit", nil, 0)
			for i := 0; i < 3; i++ {
				b.logMap("auth", map[string]any{"i": i})
			}
			b.Close()
			return must(os.ReadFile(p2))
		},
		// A checkpoint copied in as if it sealed the index.
		"log name": func() []byte {
			return rechain(t, bytes.Replace(orig, []byte(`"log":"audit"`), []byte(`"log":"index"`), 1))
		},
	}
	for name, mk := range cases {
		os.WriteFile(path, mk(), 0o600)
		rep, err := VerifyEvidence("", path, pub)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Problems) == 0 {
			t.Errorf("%s: verified; notes %q", name, rep.Notes)
		}
		// The chain-only check of the old VerifyAudit passes: only the
		// checkpoint shows the forgery.
		if name == "rehashed" || name == "dropped" {
			if _, err := VerifyAudit(bytes.NewReader(must(os.ReadFile(path)))); err != nil {
				t.Errorf("%s: chain should be intact (re-hashed): %v", name, err)
			}
		}
	}
}

// rechain recomputes seq and prev of every line: what someone without the
// key can do after editing or deleting lines.
func rechain(t *testing.T, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := zeroHash
	seq := 0
	for _, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		seq++
		i := bytes.LastIndex(l, []byte(`,"prev":"`))
		line := fmt.Sprintf(`%s,"prev":"%s","seq":%d}`, l[:i], prev, seq)
		out.WriteString(line + "\n")
		prev = sha256Hex([]byte(line))
	}
	return out.Bytes()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func mustParsePub(t *testing.T, b []byte) ssh.PublicKey {
	t.Helper()
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestAuditServiceLog: with SetLogger every line, checkpoints included, is
// also a structured service-log entry (the copy shipped off the box).
func TestAuditServiceLog(t *testing.T) {
	dir := t.TempDir()
	signer, _ := genKey(t, dir)
	var buf bytes.Buffer
	a, err := OpenAudit(filepath.Join(dir, "audit.jsonl"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetLogger(slog.New(slog.NewJSONHandler(&buf, nil)), "audit")
	a.EnableCheckpoints(signer, "audit", nil, 0)
	a.logMap("auth", map[string]any{"result": "refused", "login": "root"})
	a.Close()
	var got []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got = append(got, m)
	}
	// The new log's checkpoint of nothing, the event, the Close checkpoint.
	if len(got) != 3 || got[1]["msg"] != "audit event" || got[1]["event"] != "auth" || got[1]["login"] != "root" ||
		got[1]["seq"] != float64(2) || got[1]["log"] != "audit" {
		t.Fatalf("service log: %v", got)
	}
	if got[2]["event"] != CheckpointEvent || !strings.HasPrefix(got[2]["signed"].(string), "gatehouse-audit checkpoint v1 log=audit lines=2 ") || got[2]["sig"] == "" {
		t.Fatalf("checkpoint on the service log: %v", got[2])
	}
}

// TestCheckpointRemovedTail: a tail of lines after the last checkpoint
// that spans far longer than the checkpoint interval is a problem: a
// running bastion would have sealed it, so its checkpoints were removed
// (someone kept the new log's first checkpoint and rewrote the rest).
func TestCheckpointRemovedTail(t *testing.T) {
	dir := t.TempDir()
	signer, keyPath := genKey(t, dir)
	pub := mustParsePub(t, must(os.ReadFile(keyPath+".pub")))
	path := filepath.Join(dir, "audit.jsonl")
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Minute); return now }
	a, _ := OpenAudit(path, clock)
	a.EnableCheckpoints(signer, "audit", nil, 10*time.Second)
	for i := 0; i < 3; i++ {
		a.logMap("auth", map[string]any{"i": i})
	}
	a.Close()
	lines := bytes.SplitAfter(must(os.ReadFile(path)), []byte("\n"))
	os.WriteFile(path, bytes.Join(lines[:len(lines)-2], nil), 0o600) // the Close checkpoint removed
	rep, err := VerifyEvidence("", path, pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "span 2m0s, but checkpoints are written every 10s") {
		t.Fatalf("problems %q notes %q", rep.Problems, rep.Notes)
	}
	// Within the interval it is what a crash leaves: a note.
	now = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	clock = func() time.Time { now = now.Add(time.Second); return now }
	os.Remove(path)
	a, _ = OpenAudit(path, clock)
	a.EnableCheckpoints(signer, "audit", nil, 10*time.Second)
	for i := 0; i < 3; i++ {
		a.logMap("auth", map[string]any{"i": i})
	}
	a.Close()
	lines = bytes.SplitAfter(must(os.ReadFile(path)), []byte("\n"))
	os.WriteFile(path, bytes.Join(lines[:len(lines)-2], nil), 0o600)
	if rep, _ := VerifyEvidence("", path, pub); len(rep.Problems) != 0 || len(rep.Notes) != 1 {
		t.Fatalf("crash-like tail: problems %q notes %q", rep.Problems, rep.Notes)
	}
}
