package filter

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/apttest"
	"gatehouse/apt/pgp"
)

// TestBookwormSelectionInstallsWithApt resolves the 50-package selection
// over the real bookworm, bookworm-updates and bookworm-security main
// amd64 indexes (apt's own copies in /var/lib/apt/lists, verified here
// against the Debian archive keys), publishes the filtered suites, and
// asks the real apt-get to install all 50 packages (simulated, as the pool
// files are not at hand) from them alone: the closure must be complete for
// apt's resolver on real data. It skips where those lists are absent.
func TestBookwormSelectionInstallsWithApt(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 63k packages")
	}
	suites := []struct{ name, keyring string }{
		{"bookworm", "debian-archive-bookworm-automatic.gpg"},
		{"bookworm-updates", "debian-archive-bookworm-automatic.gpg"},
		{"bookworm-security", "debian-archive-bookworm-security-automatic.gpg"},
	}
	u := NewUniverse()
	ups := map[string]*apt.Release{}
	for _, s := range suites {
		file := listsPackages(t, s.name)
		keyring := filepath.Join("/usr/share/keyrings", s.keyring)
		if _, err := os.Stat(keyring); err != nil {
			t.Skipf("Debian archive keyring absent: %v", err)
		}
		kr, err := pgp.LoadKeyring(keyring)
		if err != nil {
			t.Fatal(err)
		}
		inrel, err := os.ReadFile(strings.TrimSuffix(file, "main_binary-amd64_Packages.lz4") + "InRelease")
		if err != nil {
			t.Fatal(err)
		}
		body, _, err := pgp.VerifyClearsigned(inrel, kr, time.Now())
		if err != nil {
			t.Fatalf("%s InRelease: %v", s.name, err)
		}
		if ups[s.name], err = apt.ParseRelease(body); err != nil {
			t.Fatal(err)
		}
		addLists(t, u, s.name, file)
	}
	res, err := Resolve(u, Spec{Include: bookwormSelection, WithDependencies: true, Architectures: []string{"amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unsatisfied) != 0 {
		t.Fatalf("unsatisfied: %v", res.Unsatisfied)
	}

	now := time.Now()
	key, err := pgp.GenerateSigningKey("Gatehouse test archive", "archive@example.org", pgp.AlgoEd25519, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, s := range suites {
		suiteDir := filepath.Join(root, "dists", s.name)
		ix := Indexes{Suite: s.name, Components: []string{"main"}, Architectures: []string{"amd64"}}
		files, err := WriteIndexes(osDir(suiteDir), res, ix)
		if err != nil {
			t.Fatal(err)
		}
		err = WriteRelease(osDir(suiteDir), ReleaseInfo{Upstream: ups[s.name], Architectures: []string{"amd64"}, Components: []string{"main"},
			Files: files, Now: now, ValidFor: 30 * 24 * time.Hour}, key)
		if err != nil {
			t.Fatal(err)
		}
	}
	pub, err := key.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	keyring := filepath.Join(t.TempDir(), "appliance.gpg")
	if err := os.WriteFile(keyring, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, root)
	var lines []string
	for _, s := range suites {
		lines = append(lines, "deb [signed-by="+keyring+"] "+srv.URL+" "+s.name+" main")
	}
	client := apttest.AptClient(t, strings.Join(lines, "\n"))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	args := append([]string{"install", "-s", "--no-install-recommends"}, bookwormSelection...)
	out, err := client.Run(args...)
	if err != nil {
		t.Fatalf("apt-get install -s of the selection from the filtered mirror: %v\n%s", err, out)
	}
	// Every package apt installs must be one the selection chose, at the
	// same version; the selection may carry more (alternatives apt did not
	// need).
	selected := map[string]bool{}
	for _, e := range res.Selected {
		selected[e.Name+" "+e.Version] = true
	}
	inst := regexp.MustCompile(`(?m)^Inst (\S+) \((\S+) `).FindAllStringSubmatch(out, -1)
	for _, m := range inst {
		if !selected[m[1]+" "+m[2]] {
			t.Errorf("apt installs %s %s, which the selection does not carry at that version", m[1], m[2])
		}
	}
	t.Logf("selected %d entries (%d from the security and updates suites); apt installs %d packages",
		len(res.Selected), countIn(res, "bookworm-security")+countIn(res, "bookworm-updates"), len(inst))
	if len(inst) < len(bookwormSelection) {
		t.Errorf("apt installs only %d packages:\n%s", len(inst), out)
	}
}

func countIn(res *Result, suite string) int {
	n := 0
	for _, e := range res.Selected {
		if e.In(suite, "main") {
			n++
		}
	}
	return n
}
