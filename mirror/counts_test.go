package mirror

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gatehouse/apt/apttest"
)

// suiteCounts returns the package counts Status shows for suite.
func suiteCounts(t *testing.T, state string, cfg Config, suite string) []IndexCount {
	t.Helper()
	st, err := Status(state, cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Suites {
		if s.Suite == suite {
			return s.Packages
		}
	}
	t.Fatalf("status has no suite %s: %+v", suite, st.Suites)
	return nil
}

// TestPackageCounts: the package counts Status shows per suite are those
// of the published snapshot, recorded when it was made: after a sync (as
// many as the served Packages and Sources hold), after a sync that adds a
// package, after a rollback (the older snapshot's counts), after an
// unchanged sync (kept), and on an appliance that imported the mirror
// from an air-gap bundle.
func TestPackageCounts(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	first := mustSync(t, state, cfg)
	want := []IndexCount{
		{Component: "main", Architecture: "amd64", Index: "main/binary-amd64/Packages", Packages: 3},
		{Component: "main", Architecture: "source", Index: "main/source/Sources", Packages: 2},
	}
	got := suiteCounts(t, state, cfg, "stable")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("counts after the first sync (-want +got):\n%s", diff)
	}
	// The oracle: what the published index really holds.
	if n := len(servedPackages(t, state, "dists/stable/main/binary-amd64/Packages.gz")); n != got[0].Packages {
		t.Errorf("the served Packages holds %d packages, status says %d", n, got[0].Packages)
	}
	if TotalPackages(got) != 3 {
		t.Errorf("TotalPackages = %d, want 3 (sources left out)", TotalPackages(got))
	}

	if err := up.repo.Rebuild(testSuite("1.1-1", apttest.Package{Name: "extra", Version: "1.0-1", Arch: "amd64"})); err != nil {
		t.Fatal(err)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Fatalf("second sync: %+v", rep)
	}
	if got := suiteCounts(t, state, cfg, "stable"); got[0].Packages != 4 || got[1].Packages != 3 {
		t.Errorf("counts after adding a package: %+v, want 4 binary and 3 source", got)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultCurrent {
		t.Fatalf("third sync: %+v", rep)
	}
	if got := suiteCounts(t, state, cfg, "stable"); got[0].Packages != 4 {
		t.Errorf("counts after an unchanged sync: %+v, want 4 binary", got)
	}
	if err := Rollback(state, cfg, first.Snapshot); err != nil {
		t.Fatal(err)
	}
	if got := suiteCounts(t, state, cfg, "stable"); got[0].Packages != 3 {
		t.Errorf("counts after rollback to the first snapshot: %+v, want 3 binary", got)
	}

	// Air gap: the importing appliance counts what it imported.
	_, acfg, stateA, stateB, _, _, _ := agPair(t)
	if a, b := suiteCounts(t, stateA, acfg, "stable"), suiteCounts(t, stateB, acfg, "stable"); len(b) == 0 || !cmp.Equal(a, b) {
		t.Errorf("imported counts %+v, exporter's %+v", b, a)
	}
}

// TestPackageCountsFiltered: a filtered mirror counts the packages it
// publishes (its selection), not the upstream's.
func TestPackageCountsFiltered(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	up := filteredUpstream(t, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	state := t.TempDir()
	cfg := filteredConfig(up)
	signing, _, _ := archiveKey(t)
	opt := testOptions(t)
	opt.Signing = signing
	mustSyncOpt(t, state, cfg, opt)
	served := servedPackages(t, state, "dists/stable/main/binary-amd64/Packages.xz")
	got := suiteCounts(t, state, cfg, "stable")
	if len(got) == 0 || got[0].Index != "main/binary-amd64/Packages" || got[0].Packages != len(served) {
		t.Errorf("filtered counts %+v; the served Packages holds %d", got, len(served))
	}
}
