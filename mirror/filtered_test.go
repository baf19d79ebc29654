package mirror

import (
	"bytes"
	"context"
	"errors"
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
	"gatehouse/mirror/store"
)

// filteredUpstream is a two-suite archive: "stable" holds apttest's
// dependency graph plus packages no selection wants, "stable-updates" a
// newer "app" whose dependencies stay in stable.
func filteredUpstream(t *testing.T, date, validUntil time.Time, mods ...func(*apttest.Suite)) *upstream {
	t.Helper()
	graph := apttest.DependencyGraph("amd64")
	graph = append(graph,
		apttest.Package{Name: "unrelated", Version: "1.0-1", Arch: "amd64"},
		apttest.Package{Name: "app-tools-dbg", Source: "app-tools", Version: "1.0-1", Arch: "amd64"},
		apttest.Package{Name: "app-tools", Version: "1.0-1", Arch: "amd64", Depends: "libc-lite"})
	stable := apttest.Suite{Name: "stable", Codename: "lagoon", Components: []string{"main"}, Architectures: []string{"amd64", "all"},
		ByHash: true, Translations: true, Contents: true, Date: date, ValidUntil: validUntil,
		Origin: "Example", Label: "Example", Version: "12.4",
		Packages: map[string][]apttest.Package{"main": graph}}
	updates := apttest.Suite{Name: "stable-updates", Codename: "lagoon-updates", Components: []string{"main"}, Architectures: []string{"amd64"},
		ByHash: true, Date: date, ValidUntil: validUntil, Origin: "Example", Label: "Example Updates",
		NotAutomatic: true, ButAutomaticUpgrades: true, Compressions: []string{".xz", ".zst"},
		Packages: map[string][]apttest.Package{"main": {{Name: "app", Version: "2.1-1", Arch: "amd64",
			PreDepends: "init-system-helpers (>= 1.50)", Depends: "libfoo1 (>= 1.3), mail-transport-agent | postfix-lite, python3:any"}}}}
	for _, m := range mods {
		m(&stable)
		m(&updates)
	}
	return newUpstream(t, stable, updates)
}

// archiveKey writes a fresh appliance archive key (0600) and its public
// part, and returns [signing] pointing at it and the public keyring path.
func archiveKey(t *testing.T) (SigningConfig, string, *pgp.SigningKey) {
	t.Helper()
	dir := t.TempDir()
	k := apttest.NewKey(t, "ed25519")
	keyPath := filepath.Join(dir, "archive_signing_key")
	if err := pgp.WriteSigningKey(keyPath, k); err != nil {
		t.Fatal(err)
	}
	pub, err := k.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "archive-key.gpg")
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return SigningConfig{Key: keyPath}, pubPath, k
}

func filteredConfig(up *upstream) Config {
	c := up.config()
	c.Suites = []string{"stable", "stable-updates"}
	c.Sources = false
	c.Mode = ModeFiltered
	c.Include = []string{"app", "alt-user", "app-tools*", "priority:required"}
	c.Exclude = []string{"*-dbg"}
	c.WithDependencies = true
	return c
}

// servedIndex returns the decompressed content of a published index.
func servedIndex(t *testing.T, state, rel string) io.Reader {
	t.Helper()
	_, dir, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rd, err := compress.Open(f, rel)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// servedPackages lists "name version arch" of a published Packages file.
func servedPackages(t *testing.T, state, rel string) []string {
	t.Helper()
	pr := apt.NewPackagesReader(servedIndex(t, state, rel), rel)
	var out []string
	for {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Name+" "+p.Version+" "+p.Architecture)
	}
	slices.Sort(out)
	return out
}

func filteredSources(mirrorURL, pubPath string) string {
	return "deb [signed-by=" + pubPath + "] " + mirrorURL + " stable main\n" +
		"deb [signed-by=" + pubPath + "] " + mirrorURL + " stable-updates main\n"
}

// TestFilteredSync: a filtered mirror of a two-suite upstream carries
// exactly the dependency closure of its selection (newest app from the
// updates suite, its dependencies from the base suite), re-signed with the
// appliance key that real gpgv, sqv and apt-get accept; an unchanged
// upstream is "current"; a selection that cannot be installed is refused
// with the published tree unchanged.
func TestFilteredSync(t *testing.T) {
	now := time.Now()
	up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	state := t.TempDir()
	signing, pubPath, _ := archiveKey(t)
	cfg := filteredConfig(up)
	opt := testOptions(t)
	opt.Signing = signing

	rep, err := Sync(context.Background(), state, cfg, opt)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if rep.Result != ResultPublished {
		t.Fatalf("report %+v", rep)
	}
	stable := servedPackages(t, state, "dists/stable/main/binary-amd64/Packages.xz")
	want := []string{"alt-user 1 amd64", "app-tools 1.0-1 amd64", "init-system-helpers 1.65 all", "libc-lite 2.36-9 amd64",
		"libfoo1 1.3-1 amd64", "postfix-lite 3.7-1 amd64", "python3 3.11.2-1 amd64"}
	if !slices.Equal(stable, want) {
		t.Errorf("stable carries\n%q\nwant\n%q", stable, want)
	}
	if got := servedPackages(t, state, "dists/stable-updates/main/binary-amd64/Packages.zst"); !slices.Equal(got, []string{"app 2.1-1 amd64"}) {
		t.Errorf("stable-updates carries %q", got)
	}
	// Like the upstream (No-Support-for-Architecture-all: Packages), the
	// mirror lists "all" packages in binary-amd64 only.
	if _, dir, err := store.ResolveCurrent(StoreRoot(state), testMirror); err != nil {
		t.Fatal(err)
	} else if _, err := os.Stat(filepath.Join(dir, "dists", "stable", "main", "binary-all")); err == nil {
		t.Error("the mirror writes binary-all indexes apt does not read")
	}
	// The pool holds the selection only.
	poolDir := filepath.Join(StoreRoot(state), testMirror, store.PoolDir)
	var pool []string
	filepath.WalkDir(poolDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			pool = append(pool, filepath.Base(p))
		}
		return err
	})
	if len(pool) != len(want)+1 || slices.ContainsFunc(pool, func(s string) bool {
		return strings.HasPrefix(s, "unrelated_") || strings.Contains(s, "-dbg_") || strings.HasPrefix(s, "app_2.0")
	}) {
		t.Errorf("pool holds %q", pool)
	}

	// The re-signed Release: upstream fields kept, own Date and
	// Valid-Until, accepted by the real gpgv and sqv with the appliance
	// key, and not with the upstream's.
	_, snap, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	upd := filepath.Join(snap, "dists", "stable-updates")
	relText, err := os.ReadFile(filepath.Join(upd, "Release"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Origin: Example\n", "Label: Example Updates\n", "Codename: lagoon-updates\n", "NotAutomatic: yes\n", "ButAutomaticUpgrades: yes\n", "Valid-Until: "} {
		if !bytes.Contains(relText, []byte(f)) {
			t.Errorf("re-signed Release lacks %q:\n%s", f, relText)
		}
	}
	for _, c := range [][]string{
		{"gpgv", "--keyring", pubPath, filepath.Join(upd, "InRelease")},
		{"sqv", "--keyring", pubPath, filepath.Join(upd, "Release.gpg"), filepath.Join(upd, "Release")},
	} {
		if _, err := exec.LookPath(c[0]); err != nil {
			t.Fatalf("%s not installed", c[0])
		}
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s refused the re-signed Release: %v\n%s", c[0], err, out)
		}
	}
	if out, err := exec.Command("gpgv", "--keyring", up.repo.KeyringPath, filepath.Join(upd, "InRelease")).CombinedOutput(); err == nil {
		t.Errorf("gpgv accepted the re-signed InRelease with the upstream key:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(snap, "dists", "stable", "main", "Contents-amd64.gz")); err == nil {
		t.Error("the filtered mirror publishes the upstream's Contents, which lists packages it does not carry")
	}

	// Real apt with the exported key as signed-by.
	mirrorURL := serveMirror(t, state)
	client := apttest.AptClient(t, filteredSources(mirrorURL, pubPath))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app", "alt-user", "app-tools"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(client.ArchivesDir(), "*.deb"))
	if len(debs) != len(want)+1 || !slices.ContainsFunc(debs, func(p string) bool { return strings.HasPrefix(filepath.Base(p), "app_2.1-1_") }) {
		t.Errorf("apt downloaded %q", debs)
	}
	if out, err := client.InstallDownloadOnly("unrelated"); err == nil {
		t.Errorf("apt found a package the selection left out:\n%s", out)
	}

	if problems, err := Verify(context.Background(), state, cfg, opt); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %q", err, problems)
	}
	rep, err = Sync(context.Background(), state, cfg, opt)
	if err != nil || rep.Result != ResultCurrent || rep.FilesFetched > 2 {
		t.Fatalf("second sync: %v %+v", err, rep)
	}
	st, err := Status(state, cfg, time.Now())
	if err != nil || len(st.Suites) != 2 || time.Until(st.Suites[0].ValidUntil) < 29*24*time.Hour {
		t.Errorf("status shows the upstream's Valid-Until, not the re-signed one: %v %+v", err, st)
	}

	// Verify notices a damaged filtered index.
	before := publishedTree(t, state)
	idx := filepath.Join(snap, "dists", "stable", "main", "binary-amd64", "Packages")
	b, _ := os.ReadFile(idx)
	os.Remove(idx) // by-hash copies are hard links: break the link, then write
	os.WriteFile(idx, append(b, '\n'), 0o644)
	if problems, _ := Verify(context.Background(), state, cfg, opt); len(problems) == 0 {
		t.Error("verify found nothing wrong with a changed filtered index")
	}
	os.Remove(idx)
	os.WriteFile(idx, b, 0o644)

	// A selection that cannot be installed publishes nothing.
	bad := cfg
	bad.Include = []string{"app", "broken"}
	rep, err = Sync(context.Background(), state, bad, opt)
	if err == nil || !strings.Contains(err.Error(), "missing-dep") || !strings.Contains(err.Error(), "nothing was published") {
		t.Fatalf("unsatisfiable selection: %v %+v", err, rep)
	}
	checkUnchanged(t, before, publishedTree(t, state))

	// Without the key, a filtered sync says what to do.
	noKey := opt
	noKey.Signing = SigningConfig{}
	if _, err := Sync(context.Background(), state, cfg, noKey); err == nil || !strings.Contains(err.Error(), "init-archive-key") {
		t.Errorf("sync without [signing] key: %v", err)
	}
}

// TestFilteredOutlivesUpstream: a filtered mirror synced while the
// upstream's Release was valid stays valid for real apt (real clock) after
// the upstream's Valid-Until has passed, while apt pointed at the upstream
// itself refuses it as expired. A later re-sign of an expired upstream is
// refused, and a quiet upstream without Valid-Until is re-signed before
// the mirror's own Valid-Until comes near, without downloading anything.
func TestFilteredOutlivesUpstream(t *testing.T) {
	real := time.Now()
	syncTime := real.Add(-8 * 24 * time.Hour)
	up := filteredUpstream(t, real.Add(-9*24*time.Hour), real.Add(-2*24*time.Hour))
	state := t.TempDir()
	signing, pubPath, _ := archiveKey(t)
	cfg := filteredConfig(up)
	opt := testOptions(t)
	opt.Signing = signing
	opt.Now = func() time.Time { return syncTime }
	if _, err := Sync(context.Background(), state, cfg, opt); err != nil {
		t.Fatalf("sync at the fake time: %v", err)
	}

	direct := apttest.AptClient(t, filteredSources(up.srv.URL, up.repo.KeyringPath))
	if out, err := direct.Update(); err == nil || !strings.Contains(out, "expired") {
		t.Fatalf("apt accepted the upstream's expired Release (the test proves nothing): %v\n%s", err, out)
	}
	client := apttest.AptClient(t, filteredSources(serveMirror(t, state), pubPath))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update of the re-signed mirror after the upstream expired: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app"); err != nil {
		t.Fatalf("apt-get install: %v\n%s", err, out)
	}

	// 18 days after the sync, the mirror's own Valid-Until (30 days) is
	// less than half a period away: a re-sign is due, but the upstream's
	// Release has expired, so it is refused and nothing changes.
	before := publishedTree(t, state)
	opt.Now = func() time.Time { return syncTime.Add(18 * 24 * time.Hour) }
	_, err := Sync(context.Background(), state, cfg, opt)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("re-sign of an expired upstream: %v", err)
	}
	checkUnchanged(t, before, publishedTree(t, state))
}

// TestFilteredResign: an upstream without Valid-Until that does not change
// is re-signed once the mirror's own Valid-Until is under half a period
// away, with no pool downloads; the new Release carries a later
// Valid-Until and apt still installs from it.
func TestFilteredResign(t *testing.T) {
	real := time.Now()
	up := filteredUpstream(t, real.Add(-30*24*time.Hour), time.Time{})
	state := t.TempDir()
	signing, pubPath, _ := archiveKey(t)
	cfg := filteredConfig(up)
	opt := testOptions(t)
	opt.Signing = signing
	opt.Signing.ValidFor.Duration = 10 * 24 * time.Hour
	opt.Now = func() time.Time { return real.Add(-20 * 24 * time.Hour) }
	mustSyncOpt(t, state, cfg, opt)
	st, _ := Status(state, cfg, real)
	if len(st.Warnings) == 0 {
		t.Errorf("status does not warn about the mirror's own expired Valid-Until: %+v", st)
	}
	opt.Now = func() time.Time { return real.Add(-16 * 24 * time.Hour) }
	if rep := mustSyncOpt(t, state, cfg, opt); rep.Result != ResultCurrent {
		t.Fatalf("4 of 10 days: want current, got %+v", rep)
	}
	opt.Now = time.Now
	rep := mustSyncOpt(t, state, cfg, opt)
	if rep.Result != ResultPublished || rep.FilesFetched != 0 {
		t.Fatalf("re-sign: want published without downloads, got %+v", rep)
	}
	client := apttest.AptClient(t, filteredSources(serveMirror(t, state), pubPath))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update after the re-sign: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app"); err != nil {
		t.Fatalf("apt-get install: %v\n%s", err, out)
	}
}

func mustSyncOpt(t *testing.T, state string, cfg Config, opt Options) *Report {
	t.Helper()
	rep, err := Sync(context.Background(), state, cfg, opt)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}

// TestFilteredAirgap: a filtered mirror exported from one appliance and
// imported on another (configured verbatim, trusting the first's archive
// key) serves real apt; an import configured as filtered is refused.
func TestFilteredAirgap(t *testing.T) {
	ctx := context.Background()
	up := filteredUpstream(t, time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour))
	outer, inner := t.TempDir(), t.TempDir()
	signing, pubPath, key := archiveKey(t)
	cfg := filteredConfig(up)
	opt := testOptions(t)
	opt.Signing = signing
	mustSyncOpt(t, outer, cfg, opt)
	b := filepath.Join(t.TempDir(), "ops.bundle")
	if _, err := Export(ctx, outer, []Config{cfg}, b, "", key, 0, opt); err != nil {
		t.Fatal(err)
	}
	trusted, err := pgp.LoadKeyring(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(ctx, inner, []Config{cfg}, b, trusted, testOptions(t)); err == nil || !strings.Contains(err.Error(), "verbatim") {
		t.Fatalf("import into a filtered configuration: %v", err)
	}
	in := Config{Name: cfg.Name, Suites: cfg.Suites, Components: cfg.Components, Architectures: cfg.Architectures, Keyring: pubPath}
	in.Defaults()
	agImport(t, inner, in, b, trusted)
	client := apttest.AptClient(t, filteredSources(serveMirror(t, inner), pubPath))
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update of the imported filtered mirror: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app", "alt-user"); err != nil {
		t.Fatalf("apt-get install: %v\n%s", err, out)
	}
	// The upstream's own indexes stay on the outer appliance.
	if _, dir, err := store.ResolveCurrent(StoreRoot(inner), testMirror); err != nil {
		t.Fatal(err)
	} else if _, err := os.Stat(filepath.Join(dir, upstreamDir)); err == nil {
		t.Error("the bundle carried the upstream's indexes")
	}
}

// TestFilteredSuiteURLs: a suite from another archive root (as Debian's
// security suite is) joins the closure: the newer python3 and the new
// library it needs come from the second archive, apt installs from the
// one mirror, and a verbatim mirror can use suite_urls as well.
func TestFilteredSuiteURLs(t *testing.T) {
	now := time.Now()
	up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	secDir := t.TempDir()
	_, err := apttest.Build(secDir, up.repo.Key, apttest.Suite{Name: "stable-security", Codename: "lagoon-security",
		Components: []string{"main"}, Architectures: []string{"amd64"}, ByHash: true,
		Packages: map[string][]apttest.Package{"main": {
			{Name: "python3", Version: "3.11.2-1+sec1", Arch: "amd64", MultiArch: "allowed", Depends: "libc-lite, libsec1"},
			{Name: "libsec1", Source: "libsec", Version: "1.0-1", Arch: "amd64"},
			{Name: "untouched", Version: "1", Arch: "amd64"}}}})
	if err != nil {
		t.Fatal(err)
	}
	sec := apttest.Serve(t, secDir)
	state := t.TempDir()
	signing, pubPath, _ := archiveKey(t)
	cfg := filteredConfig(up)
	cfg.Include = []string{"app"}
	cfg.Suites = append(cfg.Suites, "stable-security")
	cfg.SuiteURLs = map[string]string{"stable-security": sec.URL + "/"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	opt := testOptions(t)
	opt.Signing = signing
	mustSyncOpt(t, state, cfg, opt)
	if got := servedPackages(t, state, "dists/stable-security/main/binary-amd64/Packages.gz"); !slices.Equal(got, []string{"libsec1 1.0-1 amd64", "python3 3.11.2-1+sec1 amd64"}) {
		t.Errorf("stable-security carries %q", got)
	}
	client := apttest.AptClient(t, filteredSources(serveMirror(t, state), pubPath)+
		"deb [signed-by="+pubPath+"] "+serveMirror(t, state)+" stable-security main\n")
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := client.InstallDownloadOnly("app"); err != nil || !strings.Contains(out, "libsec1") {
		t.Fatalf("apt-get install: %v\n%s", err, out)
	}

	v := up.config()
	v.Name = "verbatim"
	v.Sources = false
	v.Suites = []string{"stable", "stable-security"}
	v.SuiteURLs = map[string]string{"stable-security": sec.URL}
	if rep, err := Sync(context.Background(), state, v, testOptions(t)); err != nil || rep.Result != ResultPublished {
		t.Fatalf("verbatim sync with suite_urls: %v %+v", err, rep)
	}
	bad := cfg
	bad.SuiteURLs = map[string]string{"oldstable": sec.URL}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "not in suites") {
		t.Errorf("suite_urls for an unlisted suite: %v", err)
	}
}

// TestDryRun: a dry run verifies and plans but changes nothing: for a
// filtered mirror it lists the closure and what it would download before
// anything is published; for a verbatim mirror after an upstream change
// it names only the new pool files, and the published tree, the pool and
// the recorded state stay as they were.
func TestDryRun(t *testing.T) {
	now := time.Now()
	up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	state := t.TempDir()
	signing, _, _ := archiveKey(t)
	cfg := filteredConfig(up)
	opt := testOptions(t)
	opt.Signing = signing
	opt.DryRun = true
	rep, err := Sync(context.Background(), state, cfg, opt)
	if err != nil || rep.Result != ResultDryRun || rep.Plan == nil {
		t.Fatalf("dry run: %v %+v", err, rep)
	}
	want := []string{"alt-user 1 amd64", "app 2.1-1 amd64", "app-tools 1.0-1 amd64", "init-system-helpers 1.65 all",
		"libc-lite 2.36-9 amd64", "libfoo1 1.3-1 amd64", "postfix-lite 3.7-1 amd64", "python3 3.11.2-1 amd64"}
	if p := rep.Plan; !slices.Equal(p.Selected, want) || p.PoolFiles != len(want) || p.FetchFiles != len(want) || p.PoolBytes == 0 || p.FetchBytes != p.PoolBytes {
		t.Errorf("plan %+v", p)
	}
	if _, _, err := store.ResolveCurrent(StoreRoot(state), testMirror); err == nil {
		t.Error("a dry run published a snapshot")
	}
	if st, err := Status(state, cfg, now); err != nil || st.LastSync != nil || st.PoolFiles != 0 {
		t.Errorf("a dry run left a trace: %v %+v", err, st)
	}

	v := up.config()
	v.Sources = false
	mustSync(t, state, v)
	before := publishedTree(t, state)
	beforeState := sha256File(t, filepath.Join(StoreRoot(state), testMirror, store.StateFile))
	s := up.repo.Suites()[0]
	s.Packages = map[string][]apttest.Package{"main": append(slices.Clone(s.Packages["main"]), apttest.Package{Name: "newcomer", Version: "1", Arch: "amd64"})}
	s.Date, s.ValidUntil = time.Time{}, time.Time{}
	if err := up.repo.Rebuild(s, up.repo.Suites()[1]); err != nil {
		t.Fatal(err)
	}
	vopt := testOptions(t)
	vopt.DryRun = true
	rep, err = Sync(context.Background(), state, v, vopt)
	if err != nil || rep.Result != ResultDryRun || rep.Plan == nil || rep.Plan.FetchFiles != 1 || rep.Plan.Selected != nil {
		t.Fatalf("verbatim dry run: %v %+v %+v", err, rep, rep.Plan)
	}
	checkUnchanged(t, before, publishedTree(t, state))
	if got := sha256File(t, filepath.Join(StoreRoot(state), testMirror, store.StateFile)); got != beforeState {
		t.Error("a dry run changed the recorded state")
	}
	if rep := mustSync(t, state, v); rep.Result != ResultPublished || rep.FilesFetched < 1 {
		t.Errorf("the real sync after the dry run: %+v", rep)
	}
}

// servedSources lists "name version" of a published Sources file.
func servedSources(t *testing.T, state, rel string) []string {
	t.Helper()
	sr := apt.NewSourcesReader(servedIndex(t, state, rel), rel)
	var out []string
	for {
		s, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s.Name+" "+s.Version)
	}
	slices.Sort(out)
	return out
}

// TestFilteredSources: with sources = true a filtered mirror also carries
// the source packages its binaries were built from, and nothing else;
// real apt-get source fetches them with the appliance key.
func TestFilteredSources(t *testing.T) {
	now := time.Now()
	up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour), func(s *apttest.Suite) { s.Sources = true })
	state := t.TempDir()
	signing, pubPath, _ := archiveKey(t)
	cfg := filteredConfig(up)
	cfg.Sources = true
	opt := testOptions(t)
	opt.Signing = signing
	rep := mustSyncOpt(t, state, cfg, opt)
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings: %q", rep.Warnings)
	}
	want := []string{"alt-user 1", "app-tools 1.0-1", "init-system-helpers 1.65", "libc-lite 2.36-9", "libfoo 1.3-1", "postfix-lite 3.7-1", "python3 3.11.2-1"}
	if got := servedSources(t, state, "dists/stable/main/source/Sources.xz"); !slices.Equal(got, want) {
		t.Errorf("stable Sources\n%q\nwant\n%q", got, want)
	}
	if got := servedSources(t, state, "dists/stable-updates/main/source/Sources.zst"); !slices.Equal(got, []string{"app 2.1-1"}) {
		t.Errorf("stable-updates Sources %q", got)
	}
	if problems, err := Verify(context.Background(), state, cfg, opt); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %q", err, problems)
	}
	mirrorURL := serveMirror(t, state)
	client := apttest.AptClient(t, filteredSources(mirrorURL, pubPath)+
		"deb-src [signed-by="+pubPath+"] "+mirrorURL+" stable main\n"+
		"deb-src [signed-by="+pubPath+"] "+mirrorURL+" stable-updates main\n")
	if out, err := client.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	work := t.TempDir()
	if out, err := client.RunIn(work, "source", "--download-only", "app", "libfoo"); err != nil {
		t.Fatalf("apt-get source: %v\n%s", err, out)
	}
	for _, f := range []string{"app_2.1-1.dsc", "libfoo_1.3-1.dsc"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("apt-get source did not fetch %s: %v", f, err)
		}
	}
	if out, err := client.RunIn(work, "source", "--download-only", "unrelated"); err == nil {
		t.Errorf("apt-get source found a source the selection left out:\n%s", out)
	}
}
