// Package systemd holds gatehouse's systemd units; its tests check them with
// the real systemd-analyze so hardening cannot silently regress, and build
// the Debian package (package_test.go) and check what it installs.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` score allowed for a
// unit that binds no privileged port (issue 8: ≤ 1.5; Debian's ssh.service is 9.6).
const maxExposure = 1.5

func TestUnitsSecurityExposure(t *testing.T) {
	checkExposure(t, ".")
}

// checkExposure rates every .service in dir with `systemd-analyze security
// --offline` and fails any above maxExposure.
func checkExposure(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	units, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil || len(units) < 4 {
		t.Fatalf("only %d units in %s: %v", len(units), dir, err)
	}
	re := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, u := range units {
		abs, err := filepath.Abs(u)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", abs).CombinedOutput()
		m := re.FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no exposure level in output:\n%s", u, out)
		}
		score, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: exposure %.1f", u, score)
		if score > maxExposure {
			t.Errorf("%s: exposure %.1f > %.1f: restore the hardening directives", u, score, maxExposure)
		}
	}
}

func TestUnitsVerify(t *testing.T) {
	// verify checks that ExecStart exists; point it at a stand-in executable.
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatehouse")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	verifyUnits(t, ".", bin, "")
}

// verifyUnits runs `systemd-analyze verify` on the gatehouse units in dir,
// with /usr/bin/gatehouse in ExecStart replaced by bin (verify insists that
// it exists), and fails on any complaint. With manDir set, verify also
// checks that the man pages named in Documentation= exist there; the pages
// exist only in the package, so the source tree's units skip that.
func verifyUnits(t *testing.T, dir, bin, manDir string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	tmp := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(dir, "gatehouse*"))
	var paths []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(tmp, filepath.Base(f))
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(data), "/usr/bin/gatehouse", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if len(paths) < 5 {
		t.Fatalf("only %d unit files in %s", len(paths), dir)
	}
	args := []string{"verify", "--man=no"}
	if manDir != "" {
		args = []string{"verify", "--man=yes"}
	}
	cmd := exec.Command("systemd-analyze", append(args, paths...)...)
	cmd.Env = append(os.Environ(), "MANPATH="+manDir)
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitsConflict: the all-in-one gatehouse.service and the split units
// would bind the same ports and run the same syncs, so each side names the
// other in Conflicts= (issue 13).
func TestUnitsConflict(t *testing.T) {
	checkConflicts(t, ".")
}

func checkConflicts(t *testing.T, dir string) {
	t.Helper()
	split := []string{"gatehouse-serve.service", "gatehouse-bastion.service", "gatehouse-sync.timer"}
	if got := conflicts(t, filepath.Join(dir, "gatehouse.service")); !sameSet(got, split) {
		t.Errorf("gatehouse.service Conflicts=%v, want %v", got, split)
	}
	for _, u := range split {
		if got := conflicts(t, filepath.Join(dir, u)); !slices.Equal(got, []string{"gatehouse.service"}) {
			t.Errorf("%s Conflicts=%v, want [gatehouse.service]", u, got)
		}
	}
	if got := conflicts(t, filepath.Join(dir, "gatehouse-sync.service")); len(got) != 0 {
		t.Errorf("gatehouse-sync.service Conflicts=%v: a sync started by hand must not stop the appliance", got)
	}
}

// conflicts returns the units a unit file lists in Conflicts=.
func conflicts(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Conflicts="); ok {
			out = append(out, strings.Fields(v)...)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
