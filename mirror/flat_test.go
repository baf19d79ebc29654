package mirror

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gatehouse/apt/apttest"
)

// TestFlatRepository: flat repositories ("deb URI dir/"), at the archive
// root and in a subdirectory, are mirrored verbatim; real apt-get installs
// from the served mirror with the upstream's key; an update is picked up,
// verify checks the tree, a tampered upstream index is refused with the
// tree unchanged, and a bundle carries the mirror to another appliance.
func TestFlatRepository(t *testing.T) {
	for _, tc := range []struct{ name, suite, sub string }{{"root", "./", ""}, {"slash", "/", ""}, {"subdir", "x86_64/", "x86_64"}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			key := apttest.NewKey(t, "ed25519")
			repo, err := apttest.BuildFlatIn(dir, tc.sub, key, []apttest.Package{
				{Name: "tool", Version: "1.0", Arch: "amd64", Depends: "tool-data"},
				{Name: "tool-data", Version: "1.0", Arch: "all"},
			})
			if err != nil {
				t.Fatal(err)
			}
			srv := apttest.Serve(t, dir)
			state := t.TempDir()
			cfg := Config{Name: testMirror, URL: srv.URL, Suites: []string{tc.suite}, Architectures: []string{"amd64"}, Keyring: repo.KeyringPath}
			cfg.Defaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if rep := mustSync(t, state, cfg); rep.Result != ResultPublished || rep.FilesFetched < 3 {
				t.Fatalf("first sync: %+v", rep)
			}
			line := "deb [signed-by=" + repo.KeyringPath + "] " + serveMirror(t, state) + "/ " + tc.suite + "\n"
			client := apttest.AptClient(t, line)
			if out, err := client.Update(); err != nil {
				t.Fatalf("apt-get update: %v\n%s", err, out)
			}
			if out, err := client.InstallDownloadOnly("tool"); err != nil || !strings.Contains(out, "tool-data") {
				t.Fatalf("apt-get install: %v\n%s", err, out)
			}

			if err := repo.RebuildFlat([]apttest.Package{
				{Name: "tool", Version: "1.1", Arch: "amd64", Depends: "tool-data"},
				{Name: "tool-data", Version: "1.0", Arch: "all"},
			}); err != nil {
				t.Fatal(err)
			}
			if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
				t.Fatalf("sync after the update: %+v", rep)
			}
			if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
				t.Fatalf("sync without change: %+v", rep)
			}
			if out, err := client.Update(); err != nil {
				t.Fatalf("apt-get update after the upstream changed: %v\n%s", err, out)
			}
			if out, err := client.InstallDownloadOnly("tool"); err != nil || !strings.Contains(out, "1.1") {
				t.Fatalf("apt-get install of the update: %v\n%s", err, out)
			}
			if problems, err := Verify(context.Background(), state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
				t.Fatalf("verify: %v %q", err, problems)
			}

			// An index edited upstream without the key is refused.
			before := publishedTree(t, state)
			pk := filepath.Join(dir, tc.sub, "Packages")
			b, err := os.ReadFile(pk)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pk, append(b, []byte("\nPackage: evil\nVersion: 1\nArchitecture: all\nFilename: evil.deb\nSize: 1\nSHA256: "+strings.Repeat("a", 64)+"\n")...), 0o644); err != nil {
				t.Fatal(err)
			}
			rel := filepath.Join(dir, tc.sub, "Release")
			rb, _ := os.ReadFile(rel)
			os.WriteFile(rel, append(rb, ' '), 0o644) // any change of the signed text
			// Re-signed by the upstream key, but the Packages hash in it
			// is the old one: the edited index is refused.
			if err := repo.Resign("", key); err != nil {
				t.Fatal(err)
			}
			_, err = Sync(context.Background(), state, cfg, testOptions(t))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("tampered flat index: %v", err)
			}
			checkUnchanged(t, before, publishedTree(t, state))

			// Across an air gap: export, import into a second appliance
			// that trusts the exporter, serve, real apt.
			k := apttest.NewKey(t, "ed25519")
			bundlePath := filepath.Join(t.TempDir(), "flat.bundle")
			if _, err := Export(context.Background(), state, []Config{cfg}, bundlePath, "", k, 0, testOptions(t)); err != nil {
				t.Fatalf("export of a flat mirror: %v", err)
			}
			inner := t.TempDir()
			in := cfg
			in.URL = ""
			agImport(t, inner, in, bundlePath, agKeyring(t, k))
			client2 := apttest.AptClient(t, "deb [signed-by="+repo.KeyringPath+"] "+serveMirror(t, inner)+"/ "+tc.suite+"\n")
			if out, err := client2.Update(); err != nil {
				t.Fatalf("apt-get update from the imported flat mirror: %v\n%s", err, out)
			}
			if out, err := client2.InstallDownloadOnly("tool"); err != nil || !strings.Contains(out, "1.1") {
				t.Fatalf("apt-get install from the imported flat mirror: %v\n%s", err, out)
			}
		})
	}
}

// TestFlatConfig: flat and dists/ suites do not mix, and flat ones take no
// components and no filtering.
func TestFlatConfig(t *testing.T) {
	for _, c := range []Config{
		{Name: "a", Suites: []string{"./", "stable"}, Keyring: "k"},
		{Name: "a", Suites: []string{"./"}, Components: []string{"main"}, Keyring: "k"},
		{Name: "a", Suites: []string{"./"}, Keyring: "k", Mode: ModeFiltered, Include: []string{"x"}, Architectures: []string{"amd64"}},
	} {
		c.Defaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "flat") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
