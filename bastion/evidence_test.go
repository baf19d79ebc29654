package bastion

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/record"
)

// TestDeletionDetected (issue 12, finding 4): after real recorded ssh
// sessions, cutting the audit log's tail, deleting the last recording with
// its index lines, and deleting everything and re-hashing without the key
// each pass the chain-only checks (what `recordings verify --all --audit`
// ran before checkpoints: exit 0) and fail VerifyEvidence (exit 3).
func TestDeletionDetected(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, nil)
	var ids []string
	for i := 0; i < 2; i++ {
		key, cert, id := b.admin(t)
		cmd := exec.Command("ssh", "-F", b.proxyConfig(t, key, cert), "web1", fmt.Sprintf("echo session-%d", i))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ssh: %v\n%s", err, out)
		}
		dir, _ := b.recordingOf(t, id)
		ids = append(ids, filepath.Base(dir))
	}
	b.stop(t)

	verify := func(root, audit string) *record.EvidenceReport {
		t.Helper()
		rep, err := record.VerifyEvidence(root, audit, e.recPub)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.Recordings {
			if r.Err != nil {
				rep.Problems = append(rep.Problems, r.ID+": "+r.Err.Error())
			}
		}
		return rep
	}
	// oldCheck is the verification before checkpoints: the two chains and
	// the recordings against the index.
	oldCheck := func(root, audit string) error {
		if _, err := record.VerifyAudit(bytes.NewReader(readFile(t, audit))); err != nil {
			return err
		}
		res, err := record.VerifyAll(root, e.recPub)
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Err != nil {
				return r.Err
			}
		}
		return nil
	}
	rep := verify(b.recDir, b.auditPath)
	if len(rep.Problems) != 0 || len(rep.Notes) != 0 {
		t.Fatalf("intact evidence: problems %q notes %q", rep.Problems, rep.Notes)
	}
	if n := len(rep.Audit.Checkpoints); n == 0 {
		t.Fatal("no checkpoint in the audit log after a shutdown")
	}
	// The audit events are on the service log too (testWriter): checked
	// in the unit tests; here every line has a checkpoint after it.

	scenario := func(name string, tamper func(root, audit string), want string) {
		t.Run(name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "recordings")
			audit := filepath.Join(t.TempDir(), "audit.jsonl")
			if out, err := exec.Command("cp", "-a", b.recDir, root).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			writeFile(t, audit, readFile(t, b.auditPath))
			tamper(root, audit)
			if err := oldCheck(root, audit); err != nil {
				t.Errorf("the chain-only check already fails (%v); the scenario does not reproduce finding 4", err)
			}
			rep := verify(root, audit)
			if !strings.Contains(strings.Join(rep.Problems, "\n"), want) {
				t.Errorf("want a problem with %q, got %q (notes %q)", want, rep.Problems, rep.Notes)
			}
		})
	}
	scenario("cut tail", func(root, audit string) {
		lines := bytes.SplitAfter(readFile(t, audit), []byte("\n"))
		writeFile(t, audit, bytes.Join(lines[:len(lines)-4], nil))
	}, "its tail was cut")
	scenario("last recording and its index lines deleted", func(root, audit string) {
		last := ids[len(ids)-1]
		os.RemoveAll(filepath.Join(root, last))
		idx := filepath.Join(root, record.IndexName)
		// Whoever deletes lines re-hashes the rest; the checkpoints after
		// the deleted lines no longer match and go too.
		var keep [][]byte
		cut := false
		for _, l := range bytes.SplitAfter(readFile(t, idx), []byte("\n")) {
			switch {
			case len(l) == 0:
			case bytes.Contains(l, []byte(`"id":"`+last+`"`)):
				cut = true
			case cut && bytes.Contains(l, []byte(`"event":"checkpoint"`)):
			default:
				keep = append(keep, l)
			}
		}
		writeFile(t, idx, rehash(t, keep))
	}, "which the recordings index does not list")
	scenario("everything deleted and re-hashed", func(root, audit string) {
		ents, _ := os.ReadDir(root)
		for _, en := range ents {
			os.RemoveAll(filepath.Join(root, en.Name()))
		}
		writeFile(t, filepath.Join(root, record.IndexName), nil)
		var keep [][]byte
		for _, l := range bytes.SplitAfter(readFile(t, audit), []byte("\n")) {
			if len(l) > 0 && !bytes.Contains(l, []byte(`"event":"proxy.`)) && !bytes.Contains(l, []byte(`"event":"checkpoint"`)) {
				keep = append(keep, l)
			}
		}
		writeFile(t, audit, rehash(t, keep))
	}, "no checkpoint")
}

// rehash recomputes every line's seq and prev, as someone without the key
// can after deleting lines.
func rehash(t *testing.T, lines [][]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	prev := strings.Repeat("0", 64)
	for i, l := range lines {
		l = bytes.TrimSuffix(l, []byte("\n"))
		j := bytes.LastIndex(l, []byte(`,"prev":"`))
		line := fmt.Sprintf(`%s,"prev":"%s","seq":%d}`, l[:j], prev, i+1)
		out.WriteString(line + "\n")
		sum := sha256.Sum256([]byte(line))
		prev = hex.EncodeToString(sum[:])
	}
	return out.Bytes()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUncleanStopSealed: the files a crashed bastion leaves (copied while
// it runs, before any periodic or shutdown checkpoint) are sealed by the
// next start with a checkpoint that says so; they then verify, with a note.
func TestUncleanStopSealed(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) { c.CheckpointInterval.Duration = time.Hour })
	key, cert, id := b.admin(t)
	if out, err := exec.Command("ssh", "-F", b.proxyConfig(t, key, cert), "web1", "echo crash").CombinedOutput(); err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	b.recordingOf(t, id)
	crashed := t.TempDir()
	recs, audit := filepath.Join(crashed, "recordings"), filepath.Join(crashed, "audit.jsonl")
	if out, err := exec.Command("cp", "-a", b.recDir, recs).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	writeFile(t, audit, readFile(t, b.auditPath))
	if rep, err := record.VerifyEvidence(recs, audit, e.recPub); err != nil || len(rep.Problems) != 0 ||
		!strings.Contains(strings.Join(rep.Notes, "\n"), "come after the last checkpoint (line 1)") {
		t.Fatalf("crashed state: %v %+v", err, rep)
	}
	b2 := newProxyBastion(t, e, func(c *Config) { c.AuditLog, c.RecordingsDir = audit, recs })
	b2.stop(t)
	rep, err := record.VerifyEvidence(recs, audit, e.recPub)
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(rep.Notes, "\n")
	if len(rep.Problems) != 0 || !strings.Contains(notes, "audit log line") || !strings.Contains(notes, "at start-up: unclean stop") {
		t.Fatalf("after the restart: problems %q notes %q", rep.Problems, rep.Notes)
	}
}
