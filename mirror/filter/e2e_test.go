package filter

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/apttest"
	"gatehouse/apt/compress"
	"gatehouse/apt/pgp"
)

// upstreamRepo builds an apttest repository of apttest.DependencyGraph plus
// an unrelated package, with translations and by-hash.
func upstreamRepo(t *testing.T, date, validUntil time.Time) *apttest.Repo {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed")
	}
	pkgs := append(apttest.DependencyGraph("amd64"),
		apttest.Package{Name: "unrelated", Version: "1.0", Arch: "amd64", Description: "not selected\n long text"})
	repo, err := apttest.Build(t.TempDir(), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Codename: "gh", Origin: "Example", Label: "Example Label", Version: "12.4",
		Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": pkgs},
		ByHash:   true, Translations: true, Date: date, ValidUntil: validUntil,
	})
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// filtered is a re-signed filtered mirror on disk.
type filtered struct {
	dir     string // archive root: dists/ and pool/
	keyring string // binary public key of the appliance, for Signed-By
	res     *Result
}

// buildFiltered does what the mirror's filtered sync does with verified
// upstream files: read the suite's Packages into a Universe, resolve,
// write indexes and Translation, sign the Release with the appliance key
// at now, and link the selected pool files.
func buildFiltered(t *testing.T, repo *apttest.Repo, spec Spec, now time.Time, validFor time.Duration) filtered {
	t.Helper()
	inrel, err := os.ReadFile(repo.Path("dists/stable/InRelease"))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := pgp.LoadKeyring(repo.KeyringPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _, err := pgp.VerifyClearsigned(inrel, kr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	up, err := apt.ParseRelease(body)
	if err != nil {
		t.Fatal(err)
	}
	u := NewUniverse()
	f, err := os.Open(repo.Path("dists/stable/main/binary-amd64/Packages"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr := apt.NewPackagesReader(f, "Packages")
	for {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Add("stable", "main", p); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Resolve(u, spec)
	if err != nil {
		t.Fatal(err)
	}

	out := filtered{dir: t.TempDir(), res: res}
	suiteDir := filepath.Join(out.dir, "dists", "stable")
	ix := Indexes{Suite: "stable", Components: []string{"main"}, Architectures: []string{"amd64"}, Compressions: []string{".gz", ".xz", ".bz2"}}
	files, err := WriteIndexes(osDir(suiteDir), res, ix)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := os.Open(repo.Path("dists/stable/main/i18n/Translation-en"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tfiles, err := WriteTranslation(osDir(suiteDir), res, ix, "main", "Translation-en", tr)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pgp.GenerateSigningKey("Gatehouse test archive", "archive@example.org", pgp.AlgoEd25519, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	err = WriteRelease(osDir(suiteDir), ReleaseInfo{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"},
		Files: append(files, tfiles...), Now: now, ValidFor: validFor}, key)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := res.PoolFiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, fe := range pool {
		dst := filepath.Join(out.dir, fe.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(repo.Path(fe.Path), dst); err != nil {
			t.Fatal(err)
		}
	}
	pub, err := key.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	out.keyring = filepath.Join(t.TempDir(), "appliance.gpg")
	if err := os.WriteFile(out.keyring, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func (f filtered) sourcesLine(url string) string {
	return "deb [signed-by=" + f.keyring + "] " + url + " stable main"
}

var graphSpec = Spec{Include: []string{"app", "alt-user"}, WithDependencies: true, Architectures: []string{"amd64"}}

// TestFilteredMirrorWithApt serves a filtered, re-signed mirror of the
// apttest dependency graph and installs from it with the real apt-get,
// checks the signatures with the real gpgv and sqv, and checks that a
// package outside the selection is not offered.
func TestFilteredMirrorWithApt(t *testing.T) {
	repo := upstreamRepo(t, time.Time{}, time.Time{})
	now := time.Now()
	f := buildFiltered(t, repo, graphSpec, now, 30*24*time.Hour)
	want := []string{"alt-user=1:amd64", "app=2.0-1:amd64", "init-system-helpers=1.65:all", "libc-lite=2.36-9:amd64",
		"libfoo1=1.3-1:amd64", "postfix-lite=3.7-1:amd64", "python3=3.11.2-1:amd64"}
	if got := names(f.res); !slices.Equal(got, want) || len(f.res.Unsatisfied) != 0 {
		t.Fatalf("selection %v, problems %v; want %v", got, f.res.Unsatisfied, want)
	}
	suiteDir := filepath.Join(f.dir, "dists", "stable")

	for _, tool := range [][]string{
		{"gpgv", "--keyring", f.keyring, filepath.Join(suiteDir, "InRelease")},
		{"gpgv", "--keyring", f.keyring, filepath.Join(suiteDir, "Release.gpg"), filepath.Join(suiteDir, "Release")},
		{"sqv", "--keyring", f.keyring, filepath.Join(suiteDir, "Release.gpg"), filepath.Join(suiteDir, "Release")},
	} {
		if _, err := exec.LookPath(tool[0]); err != nil {
			t.Skipf("%s not installed", tool[0])
		}
		if out, err := exec.Command(tool[0], tool[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%v: %v\n%s", tool, err, out)
		}
	}
	// Negative control: the upstream's key does not verify the re-signed file.
	if out, err := exec.Command("sqv", "--keyring", repo.KeyringPath, filepath.Join(suiteDir, "Release.gpg"), filepath.Join(suiteDir, "Release")).CombinedOutput(); err == nil {
		t.Errorf("sqv accepted the re-signed Release with the upstream key:\n%s", out)
	}

	rel, err := os.ReadFile(filepath.Join(suiteDir, "Release"))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := pgp.LoadKeyring(f.keyring)
	if err != nil {
		t.Fatal(err)
	}
	inrel, err := os.ReadFile(filepath.Join(suiteDir, "InRelease"))
	if err != nil {
		t.Fatal(err)
	}
	if body, _, err := pgp.VerifyClearsigned(inrel, kr, time.Now()); err != nil || !bytes.Equal(body, rel) {
		t.Errorf("InRelease does not carry the Release text (%v):\n%s", err, body)
	}
	for _, line := range []string{"Origin: Example\n", "Label: Example Label\n", "Suite: stable\n", "Codename: gh\n", "Version: 12.4\n",
		"Acquire-By-Hash: yes\n", "Date: " + apt.FormatDate(now) + "\n", "Valid-Until: " + apt.FormatDate(now.Add(30*24*time.Hour)) + "\n",
		" main/binary-amd64/Packages.xz\n", " main/i18n/Translation-en.gz\n"} {
		if !strings.Contains(string(rel), line) {
			t.Errorf("Release lacks %q:\n%s", line, rel)
		}
	}

	tr, err := os.ReadFile(filepath.Join(suiteDir, "main/i18n/Translation-en"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tr), "Package: app\n") || strings.Contains(string(tr), "Package: unrelated\n") || strings.Contains(string(tr), "Package: broken\n") {
		t.Errorf("Translation-en keeps the wrong packages:\n%s", tr)
	}

	srv := apttest.Serve(t, f.dir)
	client := apttest.AptClient(t, f.sourcesLine(srv.URL))
	client.Options = append(client.Options, "Acquire::Languages=en")
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if got, _ := filepath.Glob(filepath.Join(client.ListsDir(), "*Translation-en")); len(got) != 1 {
		t.Errorf("apt did not fetch the filtered Translation-en: %v", got)
	}
	if !slices.ContainsFunc(srv.Requests(), func(p string) bool { return strings.Contains(p, "/by-hash/SHA256/") }) {
		t.Errorf("apt did not use by-hash: %v", srv.Requests())
	}
	if out, err := client.InstallDownloadOnly("app", "alt-user"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(client.ArchivesDir(), "*.deb"))
	if len(debs) != len(want) {
		t.Errorf("apt fetched %d .debs, want %d: %v", len(debs), len(want), debs)
	}
	for _, name := range []string{"unrelated", "app-doc", "broken"} {
		out, err := client.Run("install", "-s", name)
		// app-doc is named by app's Recommends, so apt knows the name.
		if err == nil || !strings.Contains(out, "Unable to locate package "+name) && !strings.Contains(out, "Package '"+name+"' has no installation candidate") {
			t.Errorf("%s is installable from the filtered mirror (%v):\n%s", name, err, out)
		}
	}
}

// TestFilteredMirrorWithRecommends: with WithRecommends the mirror also
// carries app's Recommends, and the real apt (which installs Recommends by
// default) fetches it.
func TestFilteredMirrorWithRecommends(t *testing.T) {
	repo := upstreamRepo(t, time.Time{}, time.Time{})
	spec := graphSpec
	spec.Include, spec.WithRecommends = []string{"app"}, true
	f := buildFiltered(t, repo, spec, time.Now(), 24*time.Hour)
	if !slices.Contains(names(f.res), "app-doc=2.0-1:all") {
		t.Fatalf("app-doc not selected: %v", names(f.res))
	}
	srv := apttest.Serve(t, f.dir)
	client := apttest.AptClient(t, f.sourcesLine(srv.URL))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(client.ArchivesDir(), "app-doc_2.0-1_all.deb")); err != nil {
		t.Errorf("apt did not fetch the recommended app-doc: %v", err)
	}
}

// TestFilteredMirrorReportsBrokenDependencies resolves the graph's two
// unsatisfiable packages and checks what is reported.
func TestFilteredMirrorReportsBrokenDependencies(t *testing.T) {
	repo := upstreamRepo(t, time.Time{}, time.Time{})
	spec := graphSpec
	spec.Include = []string{"app", "broken", "needs-newer"}
	f := buildFiltered(t, repo, spec, time.Now(), 24*time.Hour)
	var got []string
	for _, p := range f.res.Unsatisfied {
		got = append(got, p.String())
	}
	want := []string{
		"broken 1 amd64: Depends: missing-dep: no package is named or provides missing-dep (selected by the include patterns)",
		"needs-newer 1 amd64: Depends: libfoo1 (>= 2.0): libfoo1 (>= 2.0): libfoo1 has only version 1.1-1, 1.3-1 (selected by the include patterns)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFilteredMirrorOutlivesUpstreamValidUntil: the upstream Release
// expired three days ago, so apt refuses it; re-signed with the
// appliance's clock set ten days back and valid for thirty, the same
// content is accepted.
func TestFilteredMirrorOutlivesUpstreamValidUntil(t *testing.T) {
	now := time.Now()
	repo := upstreamRepo(t, now.Add(-10*24*time.Hour), now.Add(-3*24*time.Hour))

	up := apttest.Serve(t, repo.Dir)
	client := apttest.AptClient(t, repo.SourcesLine(up.URL, "stable", "main"))
	out, err := client.Update()
	if err == nil || !strings.Contains(out, "expired") {
		t.Fatalf("apt accepted the expired upstream Release (%v):\n%s", err, out)
	}

	f := buildFiltered(t, repo, graphSpec, now.Add(-10*24*time.Hour), 30*24*time.Hour)
	srv := apttest.Serve(t, f.dir)
	client = apttest.AptClient(t, f.sourcesLine(srv.URL))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update of the re-signed mirror: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
}

// TestWriteIndexes reads back every variant WriteIndexes wrote and checks
// sizes, hashes, by-hash copies and that every stanza is the upstream's.
func TestWriteIndexes(t *testing.T) {
	u := universe(t,
		pkg{name: "a", ver: "1", dep: "b", suite: "s", comp: "main"},
		pkg{name: "b", ver: "1", arch: "all", suite: "s", comp: "contrib"},
		pkg{name: "c", ver: "1", suite: "other", comp: "main"},
		pkg{name: "d", ver: "1", arch: "arm64", suite: "s", comp: "main"},
	)
	res := resolve(t, u, Spec{Include: []string{"a", "c", "d"}, WithDependencies: true, Architectures: []string{"amd64", "arm64"}})
	dir := t.TempDir()
	ix := Indexes{Suite: "s", Components: []string{"main", "contrib"}, Architectures: []string{"amd64", "arm64", "all"}, Compressions: []string{".zst", ".lzma"}}
	files, err := WriteIndexes(osDir(dir), res, ix)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"main/binary-amd64":    {"a"},
		"main/binary-arm64":    {"d"},
		"main/binary-all":      nil,
		"contrib/binary-amd64": {"b"},
		"contrib/binary-arm64": {"b"},
		"contrib/binary-all":   {"b"},
	}
	if len(files) != len(want)*4 {
		t.Fatalf("%d files, want %d", len(files), len(want)*4)
	}
	for _, fe := range files {
		data, err := os.ReadFile(filepath.Join(dir, fe.Path))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != fe.Size {
			t.Errorf("%s: size %d, listed %d", fe.Path, len(data), fe.Size)
		}
		byHash, err := os.ReadFile(filepath.Join(dir, apt.ByHashPath(fe.Path, apt.AlgoSHA256, fe.SHA256)))
		if err != nil || !bytes.Equal(byHash, data) {
			t.Errorf("%s: by-hash copy: %v", fe.Path, err)
		}
		zr, err := compress.Open(bytes.NewReader(data), fe.Path)
		if err != nil {
			t.Fatal(err)
		}
		pr := apt.NewPackagesReader(zr, fe.Path)
		var got []string
		for {
			p, err := pr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", fe.Path, err)
			}
			got = append(got, p.Name)
			e := u.byName[p.Name][0]
			if text := e.Stanza(); !strings.Contains(string(mustDecompress(t, data, fe.Path)), text+"\n") {
				t.Errorf("%s: stanza of %s not kept verbatim", fe.Path, p.Name)
			}
		}
		dirName := filepath.Dir(fe.Path)
		if w, ok := want[dirName]; !ok || !slices.Equal(got, w) {
			t.Errorf("%s lists %v, want %v", fe.Path, got, w)
		}
	}
	if _, err := WriteIndexes(osDir(dir), res, ix); err == nil {
		t.Error("WriteIndexes replaced existing files")
	}
	for _, bad := range []Indexes{{}, {Suite: "s", Components: []string{"../x"}, Architectures: []string{"amd64"}}} {
		if _, err := WriteIndexes(osDir(t.TempDir()), res, bad); err == nil {
			t.Errorf("WriteIndexes accepted %+v", bad)
		}
	}
}

func TestPoolFiles(t *testing.T) {
	a := pkg{name: "a", ver: "1"}.stanza()
	b := strings.Replace(pkg{name: "b", ver: "1"}.stanza(), "pool/main/b_1_amd64.deb", "pool/main/a_1_amd64.deb", 1)
	u := NewUniverse()
	if err := addText(u, "s", "main", a+"\n"+b+"\n"+pkg{name: "c", ver: "1", arch: "all"}.stanza()); err != nil {
		t.Fatal(err)
	}
	if err := addText(u, "s2", "main", pkg{name: "c", ver: "1", arch: "all"}.stanza()); err != nil {
		t.Fatal(err)
	}
	res := resolve(t, u, Spec{Include: []string{"a", "c"}})
	files, err := res.PoolFiles()
	if err != nil || len(files) != 2 || files[0].Path != "pool/main/a_1_amd64.deb" || files[1].Path != "pool/main/c_1_all.deb" {
		t.Errorf("PoolFiles = %+v, %v", files, err)
	}
	res = resolve(t, u, Spec{Include: []string{"a", "b"}})
	if files, err := res.PoolFiles(); err == nil {
		t.Errorf("PoolFiles accepted one path with two hashes: %+v", files)
	}
}

func mustDecompress(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	zr, err := compress.Open(bytes.NewReader(data), name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReleaseBody(t *testing.T) {
	up, err := apt.ParseRelease([]byte("Origin: O\nLabel: L\nSuite: s\nCodename: c\nVersion: 1\nDate: Sat, 10 Jun 2023 08:52:18 UTC\n" +
		"Valid-Until: Sat, 17 Jun 2023 08:52:18 UTC\nNotAutomatic: yes\nButAutomaticUpgrades: yes\nSigned-By: 0123456789ABCDEF0123456789ABCDEF01234567\n" +
		"Changelogs: https://example.org/changelogs\nArchitectures: amd64 arm64 i386\nComponents: main contrib\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	files := []apt.FileEntry{{Path: "main/b", Size: 2, SHA256: strings.Repeat("b", 64)}, {Path: "main/a", Size: 1, SHA256: strings.Repeat("a", 64), MD5Sum: strings.Repeat("1", 32)}}
	body, err := ReleaseBody(ReleaseInfo{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}, Files: files, Now: now, ValidFor: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := "Origin: O\nLabel: L\nSuite: s\nVersion: 1\nCodename: c\nDate: Fri, 02 Jan 2026 03:04:05 UTC\nValid-Until: Sun, 04 Jan 2026 03:04:05 UTC\n" +
		"NotAutomatic: yes\nButAutomaticUpgrades: yes\nAcquire-By-Hash: yes\nArchitectures: amd64\nComponents: main\n" +
		"MD5Sum:\n 11111111111111111111111111111111        1 main/a\n" +
		"SHA256:\n " + strings.Repeat("a", 64) + "        1 main/a\n " + strings.Repeat("b", 64) + "        2 main/b\n"
	if string(body) != want {
		t.Errorf("Release body:\n%s\nwant:\n%s", body, want)
	}
	back, err := apt.ParseRelease(body)
	if err != nil {
		t.Fatal(err)
	}
	if !back.ValidUntil.Equal(now.Add(48*time.Hour)) || len(back.SignedBy) != 0 || len(back.Files) != 2 {
		t.Errorf("parsed back: %+v", back)
	}
	for _, bad := range []ReleaseInfo{
		{Architectures: []string{"amd64"}, Components: []string{"main"}, Now: now},
		{Upstream: up, Components: []string{"main"}, Now: now},
		{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}},
		{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}, Now: now, ValidFor: -1},
		{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}, Now: now, Files: []apt.FileEntry{{Path: "../x", SHA256: "aa"}}},
		{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}, Now: now, Files: []apt.FileEntry{{Path: "x", MD5Sum: "aa"}}},
		{Upstream: up, Architectures: []string{"amd64"}, Components: []string{"main"}, Now: now, Files: []apt.FileEntry{files[0], files[0]}},
	} {
		if _, err := ReleaseBody(bad); err == nil {
			t.Errorf("ReleaseBody accepted %+v", bad)
		}
	}
}
