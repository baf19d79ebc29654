// Package rectest holds fixtures that the tests of cmd/gatehouse and of its
// status page package share: signed recordings written with the bastion's
// own recorder, and a GET that reports redirects instead of following
// them. Tests only: the binary never links it (deps_test checks that it
// links no testing package).
package rectest

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gatehouse/bastion/record"
)

// ReplayMarker is output recorded in the good test session; only a player
// that fetched and played the cast can put it into a page's DOM.
const ReplayMarker = "replayed-7f3a"

// Recordings writes, with the bastion's own recorder, a signed recording
// (good) whose channel 0 prints ReplayMarker and a second one (bad) whose
// cast is then edited, so it no longer verifies. It returns the recordings
// dir, the recording key's path and the two ids.
func Recordings(t testing.TB, dir string) (recDir, key, good, bad string) {
	t.Helper()
	recDir, key = filepath.Join(dir, "recordings"), filepath.Join(dir, "recording_key")
	if err := record.GenerateSigningKey(key); err != nil {
		t.Fatal(err)
	}
	signer, err := record.LoadSigningKey(key)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	good, bad = "20261123T101500Z-good", "20261123T090000Z-edited"
	for i, id := range []string{good, bad} {
		t0 := start.Add(-time.Duration(i) * 75 * time.Minute)
		clock := t0
		now := func() time.Time { clock = clock.Add(300 * time.Millisecond); return clock }
		rec, err := record.NewRecording(record.RecorderConfig{Dir: recDir, SigningKey: signer, Now: now}, id, record.Meta{
			User: "root@db1.example.org", Principal: "alice", KeyID: "alice@example.org", Source: "192.0.2.7:50122",
			Target: "db1.example.org:22", TargetLogin: "root", Start: t0,
		})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := rec.Channel(0, "session", "xterm-256color", 80, 24)
		if err != nil {
			t.Fatal(err)
		}
		for _, out := range []string{"root@db1:~# ", "echo " + ReplayMarker + "\r\n", ReplayMarker + "\r\n", "root@db1:~# exit\r\n"} {
			if err := ch.Output([]byte(out)); err != nil {
				t.Fatal(err)
			}
		}
		if err := rec.Close("client closed"); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(recDir, bad, "ch00.cast"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("[9.9, \"o\", \"inserted afterwards\"]\n")
	f.Close()
	return recDir, key, good, bad
}

// noRedirect is a client that reports redirects instead of following them,
// so a path the mux would "clean" shows its own status.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Get sends a GET with the header pairs given and returns the status,
// body and headers, without following redirects.
func Get(t testing.TB, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}
