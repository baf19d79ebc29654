package mirror

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"gatehouse/apt/apttest"
	"gatehouse/apt/repobuild"
)

// extraPackages are n packages beside testSuite's, so that an incremental
// sync has many unchanged pool files.
func extraPackages(n int) []apttest.Package {
	out := make([]apttest.Package, n)
	for i := range out {
		out[i] = apttest.Package{Name: fmt.Sprintf("extra%02d", i), Version: "1", Arch: "amd64"}
	}
	return out
}

// poolPhase syncs and returns the report and the largest FilesTotal of the
// pool phase's progress events: the pool files the sync had to look at.
func poolPhase(t *testing.T, state string, cfg Config) (*Report, int) {
	t.Helper()
	var mu sync.Mutex
	total := 0
	opt := testOptions(t)
	opt.Progress = func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Phase == PhasePool {
			total = max(total, e.FilesTotal)
		}
	}
	return mustSyncOpt(t, state, cfg, opt), total
}

// poolGets counts the pool files requested since request number from.
func poolGets(up *upstream, from int) int {
	n := 0
	for _, r := range up.srv.Requests()[from:] {
		if strings.HasPrefix(r, "pool/") {
			n++
		}
	}
	return n
}

// TestIncrementalCostsWhatChanged: after the upstream changed a few
// packages, the sync's pool phase looks only at the new files; the paths
// the published snapshot already serves with the same content are taken
// as they are, without a stat. The result is complete (verify) and apt
// gets the new version.
func TestIncrementalCostsWhatChanged(t *testing.T) {
	up := newUpstream(t, testSuite("1.0-1", extraPackages(30)...))
	state := t.TempDir()
	cfg := up.config()
	rep1, total1 := poolPhase(t, state, cfg)
	if rep1.Result != ResultPublished || total1 < 30 {
		t.Fatalf("first sync: %+v, pool phase of %d files", rep1, total1)
	}
	if err := up.repo.Rebuild(testSuite("1.1-1", extraPackages(30)...)); err != nil {
		t.Fatal(err)
	}
	from := len(up.srv.Requests())
	rep2, total2 := poolPhase(t, state, cfg)
	fetched := poolGets(up, from)
	if rep2.Result != ResultPublished || fetched == 0 {
		t.Fatalf("second sync: %+v, %d pool files fetched", rep2, fetched)
	}
	if total2 != fetched {
		t.Errorf("the pool phase looked at %d files for %d new ones (of %d): unchanged files cost work", total2, fetched, total1)
	}
	if rep2.FilesReused < total1-fetched {
		t.Errorf("%d files reused, want at least %d", rep2.FilesReused, total1-fetched)
	}
	mustVerify(t, state, cfg)
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello=1.1-1", "extra07"); err != nil {
		t.Fatalf("apt-get install --download-only: %v\n%s", err, out)
	}
}

// TestIncrementalAfterOverride: a path the published snapshot serves from
// its override layer (the upstream rebuilt it under the same name) is not
// taken as unchanged: the next snapshot, after an unrelated change, still
// serves the rebuilt bytes.
func TestIncrementalAfterOverride(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	mustSync(t, state, cfg)
	h, err := repobuild.SameSizeVariant(context.Background(), helloPkg())
	if err != nil {
		t.Fatal(err)
	}
	if err := up.repo.RebuildChanged([]string{"hello_1.0-1_amd64"}, helloSuite(h)); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Fatalf("sync of the rebuilt hello: %+v", rep)
	}
	want := upstreamHello(t, up)
	if err := up.repo.Rebuild(helloSuite(h, extraPackages(1)...)); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Fatalf("sync after an unrelated change: %+v", rep)
	}
	mustVerify(t, state, cfg)
	if got := aptHello(t, up, serveMirror(t, state)); !slices.Equal(got, want) {
		t.Error("after an unrelated change, apt gets other bytes for the rebuilt hello than upstream serves")
	}
}

// TestIncrementalRetriesMissing: a pool file tolerated as missing upstream
// is fetched by the next sync that publishes, although its index entry did
// not change: a snapshot with missing files is not trusted to serve
// everything its indexes name.
func TestIncrementalRetriesMissing(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.TolerateMissing = true
	mustSync(t, state, cfg)
	gonePkg := apttest.Package{Name: "gone", Version: "1", Arch: "amd64"}
	if err := up.repo.Rebuild(testSuite("1.0-1", gonePkg)); err != nil {
		t.Fatal(err)
	}
	gone := up.repo.PoolPath("gone", "1", "amd64")
	up.srv.SetFault(gone, apttest.Fault{Status: 404})
	if rep := mustSync(t, state, cfg); !slices.Equal(rep.Missing, []string{gone}) {
		t.Fatalf("tolerated: %+v", rep)
	}
	up.srv.ClearFaults()
	if err := up.repo.Rebuild(testSuite("1.0-1", append([]apttest.Package{gonePkg}, extraPackages(1)...)...)); err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, state, cfg)
	if rep.Result != ResultPublished || len(rep.Missing) != 0 {
		t.Fatalf("sync after the file came back: %+v", rep)
	}
	mustVerify(t, state, cfg)
	if _, err := os.Stat(filepath.Join(StoreRoot(state), testMirror, filepath.FromSlash(gone))); err != nil {
		t.Errorf("the file that came back is not served: %v", err)
	}
}

// TestScanPoolFields: the scanner markPublished uses on published Packages
// files finds the same entries as the checking parser, with CRLF line
// ends, comments, continuation lines and a description line longer than
// its buffer.
func TestScanPoolFields(t *testing.T) {
	long := strings.Repeat("x", 300<<10)
	text := "# comment\r\nPackage: a\r\nVersion: 1\r\nArchitecture: amd64\r\nDescription: d\r\n " + long + "\r\n .\r\n" +
		"filename: ./pool/main/a/a_1_amd64.deb\r\nsize: 10\r\nSHA256: " + strings.Repeat("ab", 32) + "\r\n\r\n\r\n" +
		"Package: b\nVersion: 2\nArchitecture: all\nFilename: pool/main/b/b_2_all.deb\nSize: 20\nSHA512: " + strings.Repeat("cd", 64) + "\nDescription: " + long + "\n"
	dir := t.TempDir()
	p := filepath.Join(dir, "Packages")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var parsed, scanned []poolEntry
	if _, err := readIndex(p, "stable", "Packages", 0, func(e poolEntry, _ string) error {
		e.Filename, e.SHA256, e.SHA512 = strings.Clone(e.Filename), strings.Clone(e.SHA256), strings.Clone(e.SHA512)
		parsed = append(parsed, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := scanIndex(p, "stable", "Packages", func(e poolEntry, _ string) error {
		e.Filename, e.SHA256, e.SHA512 = strings.Clone(e.Filename), strings.Clone(e.SHA256), strings.Clone(e.SHA512)
		scanned = append(scanned, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(parsed) != 2 || !slices.Equal(parsed, scanned) {
		t.Errorf("parser: %+v\nscanner: %+v", parsed, scanned)
	}
	if err := os.WriteFile(p, []byte("Package: a\nFilename: pool/a.deb\nSize: ten\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := scanIndex(p, "stable", "Packages", func(poolEntry, string) error { return nil }); err == nil {
		t.Error("an unparsable Size was not an error")
	}
}
