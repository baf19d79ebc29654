package main

import (
	"encoding/json"
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
