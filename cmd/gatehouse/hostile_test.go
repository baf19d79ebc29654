package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
)

// TestHostileUpstreamLeaksNothing drives the CLI against a hostile
// upstream and reads every place an operator (or anyone who can load the
// status page) sees a sync's outcome: `mirror sync`'s output and log,
// `mirror status` (text and --json), state.json and serve's status page at
// /. None may hold a byte of what the hostile side served:
//   - an InRelease redirected to an internal service on 127.0.0.2 is
//     refused without a request reaching it (exit 1);
//   - an InRelease that is an internal page, not a signed message, is
//     refused by verification (exit 3);
//   - a sync that outlives max_sync_duration fails (exit 1) and names the
//     slow file.
func TestHostileUpstreamLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	key := apttest.NewKey(t, "ed25519")
	repo, err := apttest.Build(filepath.Join(dir, "up"), key, apttest.Suite{
		Name: "stable", Codename: "hostile", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {{Name: "a", Version: "1.0", Arch: "amd64"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, repo.Dir)
	internal := apttest.ServeMarker(t, "127.0.0.2:0")
	h := apttest.ServeHostile(t, srv.URL)
	state := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "gh.toml")
	c := fmt.Sprintf("state_dir = %q\n[serve]\nlisten = %q\n\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\nmax_sync_duration = \"2s\"\n",
		state, freePort(t), h.URL, repo.KeyringPath)
	if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
		t.Fatal(err)
	}
	base := startServe(t, conf)

	for _, tc := range []struct {
		name  string
		setup func()
		exit  int
		says  string
	}{
		{"redirect to 127.0.0.2", func() { h.Redirect("dists/stable/InRelease", internal.URL) }, exitFailure, "redirect to " + internal.URL + "/dists/stable/InRelease refused"},
		{"not a signed message", func() { h.Body("dists/stable/InRelease", apttest.BodyWithMarker()) }, exitRefused, "not a signed message"},
		{"max_sync_duration", func() { h.Trickle("dists/stable/InRelease", 20, 100*time.Millisecond) }, exitFailure, "max_sync_duration (2s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.Clear()
			tc.setup()
			code, out, errs := ghRun(t, "--config", conf, "mirror", "sync")
			if code != tc.exit || !strings.Contains(out+errs, tc.says) {
				t.Fatalf("sync: exit %d (want %d), output does not say %q:\n%s\n%s", code, tc.exit, tc.says, out, errs)
			}
			places := map[string]string{"sync output": out + errs}
			_, places["mirror status"], _ = ghRun(t, "--config", conf, "mirror", "status")
			_, places["mirror status --json"], _ = ghRun(t, "--config", conf, "--json", "mirror", "status")
			b, err := os.ReadFile(filepath.Join(state, "mirrors", "up", "state.json"))
			if err != nil {
				t.Fatal(err)
			}
			places["state.json"] = string(b)
			time.Sleep(2100 * time.Millisecond) // the page caches mirror status for 2s
			_, places["status page"], _ = status(t, base+"/")
			for where, text := range places {
				if strings.Contains(text, apttest.Marker) {
					t.Errorf("%s holds bytes the hostile side served:\n%s", where, text)
				}
			}
			if !strings.Contains(places["mirror status"], "error:") || !strings.Contains(places["status page"], "failed") && !strings.Contains(places["status page"], "refused") {
				t.Errorf("the failure is not shown:\n%s\n%s", places["mirror status"], places["status page"])
			}
		})
	}
	if internal.Hits() != 0 {
		t.Errorf("the internal service got %d requests", internal.Hits())
	}
}
