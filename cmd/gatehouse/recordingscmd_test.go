package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/record"
)

// TestRecordingsListShowsDurations: each sealed recording shows how long
// the session lasted (from its manifest), one still running says "open".
func TestRecordingsListShowsDurations(t *testing.T) {
	dir := t.TempDir()
	recDir, key, good, _ := testRecordings(t, dir)
	signer, err := record.LoadSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC)
	open, err := record.NewRecording(record.RecorderConfig{Dir: recDir, SigningKey: signer, Now: func() time.Time { return start }}, "20261123T110000Z-open",
		record.Meta{Principal: "bob", Target: "db2.example.org:22", TargetLogin: "root", Start: start})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close("test over")

	code, out, errs := ghRun(t, "recordings", "list", "--dir", recDir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "20261123T110000Z-open  2026-11-23T11:00:00Z  open     bob") ||
		!strings.HasPrefix(lines[1], good+"  2026-11-23T10:15:00Z  2s       alice") {
		t.Fatalf("list output:\n%s", out)
	}
	code, out, _ = ghRun(t, "--json", "recordings", "list", "--dir", recDir)
	var rows []struct {
		ID       string  `json:"id"`
		Duration string  `json:"duration"`
		Seconds  float64 `json:"duration_seconds"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 3 || rows[1].ID != good || rows[1].Duration != "2s" || rows[1].Seconds != 2 {
		t.Fatalf("--json: exit %d %s -> %+v", code, out, rows)
	}
}

// TestRecordingsVerifyEvidence: `recordings verify --all --audit` exits 0
// for intact evidence (lines after the last checkpoint are a note), and 3,
// not 1, for a cut audit tail and for a missing index.
func TestRecordingsVerifyEvidence(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "recording_key")
	if err := record.GenerateSigningKey(keyPath); err != nil {
		t.Fatal(err)
	}
	signer, err := record.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "recordings")
	auditPath := filepath.Join(dir, "audit.jsonl")
	audit, err := record.OpenAudit(auditPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	index, err := record.OpenAudit(filepath.Join(root, record.IndexName), nil)
	if err != nil {
		t.Fatal(err)
	}
	audit.EnableCheckpoints(signer, "audit", index, 0)
	index.EnableCheckpoints(signer, "index", audit, 0)
	for _, id := range []string{"c1-1", "c2-1"} {
		rec, err := record.NewRecording(record.RecorderConfig{Dir: root, SigningKey: signer, Index: index}, id,
			record.Meta{User: "root", Principal: "admin", Start: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		audit.Log(record.ProxyStart{ProxySession: record.ProxySession{Recording: id}})
		if err := rec.Close("done"); err != nil {
			t.Fatal(err)
		}
		audit.Log(record.ProxyEnd{ProxySession: record.ProxySession{Recording: id}})
	}
	if err := audit.Close(); err != nil {
		t.Fatal(err)
	}
	if err := index.Close(); err != nil {
		t.Fatal(err)
	}
	args := []string{"recordings", "verify", "--dir", root, "--key", keyPath + ".pub", "--all", "--audit", auditPath}
	if code, out, errs := ghRun(t, args...); code != 0 || !strings.Contains(out, "audit log: OK, 6 lines, hash chain intact, 2 signed checkpoint(s)") {
		t.Fatalf("intact: exit %d\n%s%s", code, out, errs)
	}
	// A line after the last checkpoint (the bastion is running) is a note.
	a2, _ := record.OpenAudit(auditPath, nil)
	a2.Log(record.AuthAccepted{Result: "accepted"})
	a2.Close()
	if code, out, errs := ghRun(t, args...); code != 0 || !strings.Contains(out, "note: audit log: the last 1 line(s) come after the last checkpoint") {
		t.Fatalf("unsealed line: exit %d\n%s%s", code, out, errs)
	}
	// Cut the tail: the index's last checkpoint names more audit lines.
	b, _ := os.ReadFile(auditPath)
	lines := bytes.SplitAfter(b, []byte("\n"))
	os.WriteFile(auditPath, bytes.Join(lines[:len(lines)-4], nil), 0o600)
	if code, out, errs := ghRun(t, args...); code != 3 || !strings.Contains(out, "its tail was cut") {
		t.Fatalf("cut tail: exit %d, want 3\n%s%s", code, out, errs)
	}
	os.WriteFile(auditPath, b, 0o600)
	// A missing index is a refusal (3), not a failure to run (1).
	os.Remove(filepath.Join(root, record.IndexName))
	if code, out, errs := ghRun(t, args...); code != 3 || !strings.Contains(out, "index") {
		t.Fatalf("missing index: exit %d, want 3\n%s%s", code, out, errs)
	}
}
