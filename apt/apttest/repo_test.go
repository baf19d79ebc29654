package apttest

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// graphPackages is a small dependency graph: an alternative, a virtual
// package, a versioned dependency, Pre-Depends and an arch-all package.
func graphPackages(ver string, arches ...string) []Package {
	var ps []Package
	for _, a := range arches {
		ps = append(ps,
			Package{Name: "hello", Version: ver, Arch: a, Depends: "libgreet1 (>= 1.0), greeting-data | hello-data", Recommends: "hello-doc", Size: 3000},
			Package{Name: "libgreet1", Source: "libgreet", Version: "1.2-1", Arch: a, Provides: "libgreet", MultiArch: "same", Section: "libs"},
			Package{Name: "tool", Version: "0.9", Arch: a, PreDepends: "hello-data", Depends: "libgreet"},
		)
	}
	return append(ps,
		Package{Name: "hello-data", Source: "hello", Version: ver, Arch: "all", Files: map[string]string{"usr/share/hello/greeting.txt": "hello, world\n"},
			Description: "data for hello\nA long description\n.\nwith an empty line."},
		Package{Name: "hello-doc", Source: "hello", Version: ver, Arch: "all", Priority: "extra"},
	)
}

func twoSuites() []Suite {
	stable := Suite{
		Name: "stable", Codename: "lagoon", Components: []string{"main", "contrib"},
		Architectures: []string{"amd64", "arm64", "all"}, Sources: true, ByHash: true,
		Translations: true, Contents: true, Origin: "Example", Label: "Example", Version: "12.1",
		Compressions:      []string{"", ".gz", ".xz", ".zst"},
		ValidUntil:        time.Now().Add(7 * 24 * time.Hour),
		ExtraReleaseFiles: []string{"main/debian-installer/binary-amd64/Packages.gz"},
		Packages: map[string][]Package{
			"main":    graphPackages("1.0-1", "amd64", "arm64"),
			"contrib": {{Name: "extra-tool", Version: "2:3.1-2", Arch: "amd64", Depends: "hello (>= 1.0)"}},
		},
	}
	testing := Suite{
		Name: "testing", Codename: "tide", Components: []string{"main", "contrib"},
		Architectures: []string{"amd64", "arm64"}, Sources: true, ByHash: true,
		NotAutomatic: true, ButAutomaticUpgrades: true, NoMD5: true, SHA512: true,
		Packages: map[string][]Package{"main": graphPackages("1.1-1", "amd64", "arm64")},
	}
	return []Suite{stable, testing}
}

func TestBuildRealPeers(t *testing.T) {
	key := NewKey(t, "ed25519")
	dir := t.TempDir()
	start := time.Now()
	repo, err := Build(dir, key, twoSuites()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built 2 suites in %v", time.Since(start))

	t.Run("dpkg-deb", func(t *testing.T) {
		var debs []string
		filepath.WalkDir(filepath.Join(dir, "pool"), func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".deb") {
				debs = append(debs, p)
			}
			return err
		})
		if len(debs) != 13 {
			t.Errorf("pool has %d .debs, want 13: %v", len(debs), debs)
		}
		for _, d := range debs {
			out, err := tool(t, "dpkg-deb", "-I", d)
			if err != nil {
				t.Fatalf("dpkg-deb -I %s: %v\n%s", d, err, out)
			}
			name, rest, _ := strings.Cut(filepath.Base(d), "_")
			ver, _, _ := strings.Cut(rest, "_")
			if !strings.Contains(out, " Package: "+name+"\n") || !strings.Contains(out, " Version: ") || !strings.Contains(out, ver) {
				t.Errorf("dpkg-deb -I %s: control does not name %s %s:\n%s", d, name, ver, out)
			}
		}
		out, err := tool(t, "dpkg-deb", "-c", filepath.Join(dir, repo.PoolPath("hello-data", "1.0-1", "all")))
		if err != nil || !strings.Contains(out, "./usr/share/hello/greeting.txt") || !strings.Contains(out, "root/root") {
			t.Errorf("dpkg-deb -c hello-data: %v\n%s", err, out)
		}
	})

	t.Run("signatures", func(t *testing.T) {
		for _, s := range []string{"stable", "testing"} {
			sd := filepath.Join(dir, "dists", s)
			if out, err := tool(t, "gpgv", "--keyring", repo.KeyringPath, filepath.Join(sd, "InRelease")); err != nil {
				t.Errorf("gpgv InRelease: %v\n%s", err, out)
			}
			if out, err := tool(t, "gpgv", "--keyring", repo.KeyringPath, filepath.Join(sd, "Release.gpg"), filepath.Join(sd, "Release")); err != nil {
				t.Errorf("gpgv Release.gpg: %v\n%s", err, out)
			}
			if out, err := tool(t, "sqv", "--keyring", repo.KeyringPath, filepath.Join(sd, "Release.gpg"), filepath.Join(sd, "Release")); err != nil {
				t.Errorf("sqv Release.gpg: %v\n%s", err, out)
			}
			// InRelease must carry exactly the Release text.
			if in := readFile(t, filepath.Join(sd, "InRelease")); !bytes.Contains(in, readFile(t, filepath.Join(sd, "Release"))) {
				t.Errorf("%s: InRelease does not contain Release", s)
			}
		}
		// The check can fail: a changed Release no longer verifies.
		tampered := filepath.Join(t.TempDir(), "Release")
		b := readFile(t, filepath.Join(dir, "dists/stable/Release"))
		b[10] ^= 1
		os.WriteFile(tampered, b, 0o644)
		if out, err := tool(t, "gpgv", "--keyring", repo.KeyringPath, filepath.Join(dir, "dists/stable/Release.gpg"), tampered); err == nil {
			t.Errorf("gpgv accepted a tampered Release:\n%s", out)
		}
	})

	t.Run("consistency", func(t *testing.T) {
		rel := checkRelease(t, filepath.Join(dir, "dists/stable"), twoSuites()[0].ExtraReleaseFiles)
		for f, want := range map[string]string{"Suite": "stable", "Codename": "lagoon", "Acquire-By-Hash": "yes",
			"Architectures": "amd64 arm64 all", "Components": "main contrib", "No-Support-for-Architecture-all": "Packages", "Version": "12.1"} {
			if got := rel.Value(f); got != want {
				t.Errorf("stable Release %s = %q, want %q", f, got, want)
			}
		}
		if _, ok := rel.Get("Valid-Until"); !ok {
			t.Error("stable Release has no Valid-Until")
		}
		rt := checkRelease(t, filepath.Join(dir, "dists/testing"), nil)
		if _, ok := rt.Get("MD5Sum"); ok {
			t.Error("NoMD5 suite has MD5Sum")
		}
		if rt.Value("NotAutomatic") != "yes" || rt.Value("ButAutomaticUpgrades") != "yes" || rt.Value("SHA512") == "" {
			t.Errorf("testing Release lacks NotAutomatic/ButAutomaticUpgrades/SHA512:\n%v", rt.Fields)
		}
		idx := checkIndexes(t, dir, filepath.Join(dir, "dists/stable"))
		names := func(p string) []string {
			var n []string
			for _, st := range idx[p] {
				n = append(n, st.Value("Package")+"/"+st.Value("Architecture"))
			}
			return n
		}
		if got := names("main/binary-amd64/Packages"); !slices.Equal(got, []string{"hello/amd64", "hello-data/all", "hello-doc/all", "libgreet1/amd64", "tool/amd64"}) {
			t.Errorf("main amd64 Packages = %v", got)
		}
		if got := names("main/binary-all/Packages"); !slices.Equal(got, []string{"hello-data/all", "hello-doc/all"}) {
			t.Errorf("main all Packages = %v", got)
		}
		if st := idx["main/binary-amd64/Packages"][0]; st.Value("Description-md5") == "" || strings.Contains(st.Value("Description"), "\n") {
			t.Errorf("with Translations, Packages wants a short Description and Description-md5: %v", st.Fields)
		}
		if st := idx["contrib/binary-amd64/Packages"][0]; st.Value("Filename") != "pool/contrib/e/extra-tool/extra-tool_3.1-2_amd64.deb" {
			t.Errorf("epoch version Filename = %q", st.Value("Filename"))
		}
		tr := readFile(t, filepath.Join(dir, "dists/stable/main/i18n/Translation-en"))
		if !bytes.Contains(tr, []byte("Description-en: data for hello\n A long description\n .\n with an empty line.\n")) {
			t.Errorf("Translation-en lacks the long description:\n%s", tr)
		}
		checkIndexes(t, dir, filepath.Join(dir, "dists/testing"))
	})

	t.Run("apt", func(t *testing.T) {
		srv := Serve(t, dir)
		sources := repo.SourcesLine(srv.URL, "stable", "main", "contrib") + "\n" +
			strings.Replace(repo.SourcesLine(srv.URL, "stable", "main"), "deb ", "deb-src ", 1)
		apt := AptClient(t, sources)
		if out, err := apt.Update(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// Acquire-By-Hash: apt fetched indexes by digest, so the copies
		// are where Release says and verified by apt.
		if reqs := strings.Join(srv.Requests(), "\n"); !strings.Contains(reqs, "/by-hash/SHA256/") {
			t.Errorf("apt made no by-hash request:\n%s", reqs)
		}
		if out, err := apt.InstallDownloadOnly("extra-tool", "tool"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got, _ := filepath.Glob(filepath.Join(apt.ArchivesDir(), "*.deb"))
		var base []string
		for _, g := range got {
			base = append(base, filepath.Base(g))
		}
		want := []string{"extra-tool_2%3a3.1-2_amd64.deb", "hello-data_1.0-1_all.deb", "hello-doc_1.0-1_all.deb", "hello_1.0-1_amd64.deb", "libgreet1_1.2-1_amd64.deb", "tool_0.9_amd64.deb"}
		if !slices.Equal(base, want) {
			t.Errorf("apt fetched %v, want %v", base, want)
		}
		for _, g := range got {
			name, rest, _ := strings.Cut(strings.ReplaceAll(filepath.Base(g), "%3a", ":"), "_")
			ver, arch, _ := strings.Cut(strings.TrimSuffix(rest, ".deb"), "_")
			if !bytes.Equal(readFile(t, g), readFile(t, filepath.Join(dir, repo.PoolPath(name, ver, arch)))) {
				t.Errorf("%s differs from the pool file", g)
			}
		}
		// Sources: apt verifies the .dsc and tarball digests it fetches.
		src := t.TempDir()
		cmdOut, err := apt.RunIn(src, "source", "--download-only", "hello")
		if err != nil {
			t.Fatalf("apt-get source: %v\n%s", err, cmdOut)
		}
		if _, err := os.Stat(filepath.Join(src, "hello_1.0-1.dsc")); err != nil {
			t.Errorf("apt-get source fetched no .dsc: %v\n%s", err, cmdOut)
		}
		// A flipped byte in a .deb is caught by apt: the fault reaches
		// the client, and the client fails.
		apt2 := AptClient(t, repo.SourcesLine(srv.URL, "stable", "main"))
		if out, err := apt2.Update(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		srv.SetFault(repo.PoolPath("libgreet1", "1.2-1", "amd64"), Fault{FlipByte: 100})
		if out, err := apt2.InstallDownloadOnly("libgreet1"); err == nil || !strings.Contains(out, "Hash Sum mismatch") {
			t.Errorf("apt accepted a corrupted .deb (err %v):\n%s", err, out)
		}
		srv.SetFault("dists/stable/InRelease", Fault{Status: 500})
		if out, err := apt2.Update(); err == nil || !strings.Contains(out, "500") {
			t.Errorf("apt update succeeded with InRelease failing (err %v):\n%s", err, out)
		}
	})
}

func TestRebuild(t *testing.T) {
	key := NewKey(t, "ed25519")
	dir := t.TempDir()
	s := Suite{Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"}, ByHash: true,
		Packages: map[string][]Package{"main": {{Name: "hello", Version: "1.0", Arch: "amd64"}, {Name: "gone", Version: "1", Arch: "amd64"}}}}
	repo, err := Build(dir, key, s)
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(t, dir)
	apt := AptClient(t, repo.SourcesLine(srv.URL, "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	date1 := checkRelease(t, filepath.Join(dir, "dists/stable"), nil).Value("Date")
	oldPackages := readFile(t, filepath.Join(dir, "dists/stable/main/binary-amd64/Packages.xz"))
	goneDeb := readFile(t, filepath.Join(dir, repo.PoolPath("gone", "1", "amd64")))

	s.Packages = map[string][]Package{"main": {{Name: "hello", Version: "2.0", Arch: "amd64"}}}
	if err := repo.Rebuild(s); err != nil {
		t.Fatal(err)
	}
	rel := checkRelease(t, filepath.Join(dir, "dists/stable"), nil)
	d1, _ := time.Parse(time.RFC1123, date1)
	d2, err := time.Parse(time.RFC1123, rel.Value("Date"))
	if err != nil || !d2.After(d1) {
		t.Errorf("Date did not move forward: %q then %q (%v)", date1, rel.Value("Date"), err)
	}
	// Old pool files stay, byte for byte; the old index stays by hash.
	if !bytes.Equal(goneDeb, readFile(t, filepath.Join(dir, "pool/main/g/gone/gone_1_amd64.deb"))) {
		t.Error("rebuild changed or removed an old pool file")
	}
	if _, err := os.Stat(filepath.Join(dir, "dists/stable/main/binary-amd64/by-hash/SHA256", sha256hex(oldPackages))); err != nil {
		t.Errorf("old by-hash generation removed: %v", err)
	}
	if out, err := apt.Update(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello"); err != nil || !strings.Contains(out, "hello amd64 2.0") {
		t.Fatalf("want hello 2.0: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("gone"); err == nil {
		t.Errorf("removed package still installable:\n%s", out)
	}
	// Valid-Until in the past: the real apt refuses the Release.
	s.ValidUntil = time.Now().Add(-time.Hour)
	if err := repo.Rebuild(s); err != nil {
		t.Fatal(err)
	}
	if out, err := apt.Update(); err == nil || !strings.Contains(out, "expired") {
		t.Errorf("apt accepted an expired Release (err %v):\n%s", err, out)
	}
	s.ValidUntil = time.Time{}
	// A Date given explicitly is used as is (for replay tests).
	s.Date = d1.Add(-time.Hour)
	if err := repo.Rebuild(s); err != nil {
		t.Fatal(err)
	}
	if got := checkRelease(t, filepath.Join(dir, "dists/stable"), nil).Value("Date"); got != s.Date.UTC().Format("Mon, 02 Jan 2006 15:04:05 UTC") {
		t.Errorf("explicit Date: got %q", got)
	}
}

func TestFlat(t *testing.T) {
	key := NewKey(t, "rsa3072")
	dir := t.TempDir()
	repo, err := BuildFlat(dir, key, []Package{
		{Name: "app", Version: "1.0", Arch: "amd64", Depends: "app-data"},
		{Name: "app-data", Version: "1.0", Arch: "all"},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkRelease(t, dir, nil)
	ps := paragraphs(t, "Packages", readFile(t, filepath.Join(dir, "Packages")))
	if len(ps) != 2 || ps[0].Value("Filename") != "app_1.0_amd64.deb" {
		t.Fatalf("flat Packages: %v", ps)
	}
	if out, err := tool(t, "gpgv", "--keyring", repo.KeyringPath, filepath.Join(dir, "InRelease")); err != nil {
		t.Errorf("gpgv: %v\n%s", err, out)
	}
	srv := Serve(t, dir)
	apt := AptClient(t, repo.SourcesLine(srv.URL, ""))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Isolation: apt read only the private sources list.
	lists, _ := os.ReadDir(apt.ListsDir())
	for _, e := range lists {
		if !e.IsDir() && e.Name() != "lock" && !strings.HasPrefix(e.Name(), "127.0.0.1:") {
			t.Errorf("apt fetched lists from elsewhere: %s", e.Name())
		}
	}
	if out, err := apt.InstallDownloadOnly("app"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(apt.ArchivesDir(), "app-data_1.0_all.deb")); err != nil {
		t.Error(err)
	}
	if err := repo.Rebuild(Suite{Name: "x"}); err == nil {
		t.Error("Rebuild of a flat repository succeeded")
	}
}

func TestSynthetic(t *testing.T) {
	key := NewKey(t, "ed25519")
	dir := t.TempDir()
	repo, err := BuildSynthetic(dir, key, 300, 100, 400)
	if err != nil {
		t.Fatal(err)
	}
	checkRelease(t, filepath.Join(dir, "dists/synthetic"), nil)
	idx := checkIndexes(t, dir, filepath.Join(dir, "dists/synthetic"))
	first := idx["main/binary-amd64/Packages"]
	if len(first) != 300 {
		t.Fatalf("%d packages", len(first))
	}
	for _, st := range first {
		fi, err := os.Stat(filepath.Join(dir, st.Value("Filename")))
		if err != nil || fi.Size() < 100 || fi.Size() > 400 {
			t.Fatalf("%s: size %v, %v", st.Value("Filename"), fi, err)
		}
	}
	if err := repo.UpdateSynthetic(6); err != nil {
		t.Fatal(err)
	}
	second := checkIndexes(t, dir, filepath.Join(dir, "dists/synthetic"))["main/binary-amd64/Packages"]
	changed := 0
	for i := range second {
		if second[i].Value("Filename") != first[i].Value("Filename") {
			changed++
		}
	}
	if changed != 6 || second[0].Value("Version") != "1.0-1+u1" {
		t.Errorf("%d filenames changed (want 6); first version %q", changed, second[0].Value("Version"))
	}
	checkRelease(t, filepath.Join(dir, "dists/synthetic"), nil)
}

func TestBadInput(t *testing.T) {
	key := NewKey(t, "ed25519")
	for name, s := range map[string]Suite{
		"no components":  {Name: "s", Architectures: []string{"amd64"}},
		"bad arch":       {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {{Name: "a", Version: "1", Arch: "arm64"}}}},
		"unknown comp":   {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"non-free": {{Name: "a", Version: "1", Arch: "amd64"}}}},
		"slash in name":  {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {{Name: "a/../b", Version: "1", Arch: "amd64"}}}},
		"escaping file":  {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {{Name: "a", Version: "1", Arch: "amd64", Files: map[string]string{"../x": ""}}}}},
		"bad version":    {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {{Name: "a", Version: "not a version!", Arch: "amd64"}}}},
		"dpkg rejects":   {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {{Name: "a", Version: "1.0@x", Arch: "amd64"}}}},
		"compression":    {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Compressions: []string{".bz2"}},
		"suite escaping": {Name: "../s", Components: []string{"main"}, Architectures: []string{"amd64"}},
		"two contents": {Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"}, Packages: map[string][]Package{"main": {
			{Name: "a", Version: "1", Arch: "amd64"}, {Name: "a", Version: "1", Arch: "amd64", Size: 99}}}},
	} {
		if _, err := Build(t.TempDir(), key, s); err == nil {
			t.Errorf("%s: Build succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestConcurrentBuilds builds the same packages into two repositories at
// once: the cache and the parallel builder must give identical files.
func TestConcurrentBuilds(t *testing.T) {
	key := NewKey(t, "ed25519")
	var wg sync.WaitGroup
	dirs := []string{t.TempDir(), t.TempDir()}
	errs := make([]error, 2)
	for i := range dirs {
		wg.Go(func() {
			_, errs[i] = Build(dirs[i], key, Suite{Name: "s", Components: []string{"main"}, Architectures: []string{"amd64"},
				Packages: map[string][]Package{"main": graphPackages("9.0", "amd64")}})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a := readFile(t, filepath.Join(dirs[0], "dists/s/main/binary-amd64/Packages"))
	b := readFile(t, filepath.Join(dirs[1], "dists/s/main/binary-amd64/Packages"))
	if !bytes.Equal(a, b) {
		t.Error("same packages built twice give different Packages (non-deterministic .debs?)")
	}
}

func TestTamperHelpers(t *testing.T) {
	key, other := NewKey(t, "ed25519"), NewKey(t, "ed25519")
	dir := t.TempDir()
	repo, err := Build(dir, key, Suite{Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]Package{"main": {{Name: "a", Version: "1", Arch: "amd64"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Resign("stable", other); err != nil {
		t.Fatal(err)
	}
	otherRing := filepath.Join(t.TempDir(), "other.gpg")
	pub, _ := other.PublicKey(false)
	os.WriteFile(otherRing, pub, 0o644)
	in := repo.Path("dists/stable/InRelease")
	if out, err := tool(t, "gpgv", "--keyring", repo.KeyringPath, in); err == nil {
		t.Errorf("re-signed InRelease still verifies with the old key:\n%s", out)
	}
	if out, err := tool(t, "gpgv", "--keyring", otherRing, in); err != nil {
		t.Errorf("re-signed InRelease: %v\n%s", err, out)
	}
	if repo.Key != key {
		t.Error("Resign changed the repository key")
	}
	deb := repo.PoolPath("a", "1", "amd64")
	before := readFile(t, repo.Path(deb))
	if err := repo.FlipByte(deb, 3); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, repo.Path(deb))
	if before[3] != ^after[3] || !bytes.Equal(before[4:], after[4:]) {
		t.Error("FlipByte did not flip exactly byte 3")
	}
	if err := repo.FlipByte(deb, int64(len(before))); err == nil {
		t.Error("FlipByte beyond the end succeeded")
	}
}
