package systemd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDebPackage builds the .deb twice with the repo's build-deb.sh (which
// runs dpkg-buildpackage with debhelper) and checks the result with the real
// tools: both builds are byte-identical, lintian reports no error or warning,
// the package holds what debhelper should have put in (units, man pages,
// completions, copyright, changelog, md5sums, conffile, maintainer scripts
// through deb-systemd-helper), the units it installs pass systemd-analyze,
// and its binary prints the changelog's version.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package twice")
	}
	for _, tool := range []string{"dpkg-buildpackage", "dh", "dpkg-deb", "dpkg-parsechangelog", "lintian", "apt-get", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (test.sh installs it)", tool)
		}
	}
	// dpkg-buildpackage derives SOURCE_DATE_EPOCH from debian/changelog
	// when it is unset, as it is for an operator running build-deb.sh.
	t.Setenv("SOURCE_DATE_EPOCH", "")
	os.Unsetenv("SOURCE_DATE_EPOCH")

	var debs []string
	for i := 0; i < 2; i++ {
		debs = append(debs, buildDeb(t))
	}
	deb := debs[0]
	a, _ := os.ReadFile(debs[0])
	b, _ := os.ReadFile(debs[1])
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of the same tree differ (%d vs %d bytes): the package is not reproducible; compare them with diffoscope", len(a), len(b))
	}

	version := strings.TrimSpace(run(t, "dpkg-parsechangelog", "-l", "../debian/changelog", "-S", "Version"))
	info := run(t, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: gatehouse", "Version: " + version, " md5sums", " conffiles", " postinst", " prerm", " postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	contents := run(t, "dpkg-deb", "--contents", deb)
	if !regexp.MustCompile(`(?m)^drwxr-xr-x root/root +0 \S+ \S+ \./$`).MatchString(contents) {
		t.Errorf("the package's root directory is not drwxr-xr-x root/root:\n%s", contents)
	}
	for _, want := range []string{
		"./usr/bin/gatehouse",
		"./lib/systemd/system/gatehouse.service", "./lib/systemd/system/gatehouse-serve.service",
		"./lib/systemd/system/gatehouse-bastion.service", "./lib/systemd/system/gatehouse-sync.service",
		"./lib/systemd/system/gatehouse-sync.timer",
		"./usr/lib/sysusers.d/gatehouse.conf", "./usr/lib/tmpfiles.d/gatehouse.conf",
		"./etc/gatehouse/gatehouse.toml",
		"./usr/share/man/man1/gatehouse.1.gz", "./usr/share/man/man1/gatehouse-mirror-sync.1.gz",
		"./usr/share/man/man1/gatehouse-bastion-check-cert.1.gz",
		"./usr/share/bash-completion/completions/gatehouse", "./usr/share/zsh/vendor-completions/_gatehouse",
		"./usr/share/fish/vendor_completions.d/gatehouse.fish",
		"./usr/share/doc/gatehouse/copyright", "./usr/share/doc/gatehouse/changelog.gz",
	} {
		if !strings.Contains(contents, want+"\n") && !strings.Contains(contents, want+" ") {
			t.Errorf("package lacks %s", want)
		}
	}
	if strings.Contains(contents, "gen-docs") {
		t.Errorf("the hidden gen-docs command got a man page:\n%s", contents)
	}

	// lintian: no error and no warning (overrides are in
	// debian/gatehouse.lintian-overrides, each with its reason).
	lint, _ := exec.Command("lintian", "--no-tag-display-limit", deb).CombinedOutput()
	for _, line := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}

	x := t.TempDir()
	run(t, "dpkg-deb", "--extract", deb, x)
	run(t, "dpkg-deb", "--control", deb, filepath.Join(x, "DEBIAN"))
	bin := filepath.Join(x, "usr", "bin", "gatehouse")

	// The packaged binary says which package it is.
	if out := run(t, bin, "--version"); !strings.HasPrefix(out, "gatehouse "+version+" (go") {
		t.Errorf("packaged gatehouse --version = %q, want the changelog version %s", out, version)
	}
	if out := run(t, bin, "version"); !strings.HasPrefix(out, "gatehouse "+version+" (go") {
		t.Errorf("packaged gatehouse version = %q, want the changelog version %s", out, version)
	}

	// Maintainer scripts: debhelper's deb-systemd-helper/-invoke snippets,
	// sysusers before tmpfiles (the directories belong to the user), and
	// no unit enabled on installation (the appliance needs a config first).
	postinst := readFile(t, filepath.Join(x, "DEBIAN", "postinst"))
	for _, want := range []string{"deb-systemd-helper", "deb-systemd-invoke", "systemd-sysusers", "systemd-tmpfiles"} {
		if !strings.Contains(postinst, want) {
			t.Errorf("postinst does not call %s:\n%s", want, postinst)
		}
	}
	if i, j := strings.Index(postinst, "systemd-sysusers"), strings.Index(postinst, "systemd-tmpfiles"); i > j {
		t.Errorf("postinst runs systemd-tmpfiles before systemd-sysusers creates the user:\n%s", postinst)
	}
	if strings.Contains(postinst, "was-enabled defaults to true") {
		t.Errorf("postinst enables a unit on installation (dh_installsystemd without --no-enable):\n%s", postinst)
	}
	for _, u := range []string{"gatehouse.service", "gatehouse-serve.service", "gatehouse-bastion.service", "gatehouse-sync.timer"} {
		if !strings.Contains(postinst, "deb-systemd-helper debian-installed '"+u+"'") {
			t.Errorf("postinst lacks dh_installsystemd --no-enable's snippet for %s:\n%s", u, postinst)
		}
	}
	if regexp.MustCompile(`deb-systemd-invoke \$_dh_action .*'gatehouse-sync\.service'`).MatchString(postinst) {
		t.Errorf("postinst starts the one-shot sync on installation:\n%s", postinst)
	}
	for _, s := range []string{"prerm", "postrm"} {
		if body := readFile(t, filepath.Join(x, "DEBIAN", s)); !strings.Contains(body, "deb-systemd-") {
			t.Errorf("%s does not go through deb-systemd-helper/-invoke:\n%s", s, body)
		}
	}
	if got := readFile(t, filepath.Join(x, "DEBIAN", "conffiles")); !strings.Contains(got, "/etc/gatehouse/gatehouse.toml\n") {
		t.Errorf("conffiles = %q", got)
	}

	// debian/copyright names every Go module the binary links.
	copyright := readFile(t, filepath.Join(x, "usr", "share", "doc", "gatehouse", "copyright"))
	for _, line := range strings.Split(run(t, "go", "version", "-m", bin), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "dep" && !regexp.MustCompile(regexp.QuoteMeta(f[1])+`[\s,]`).MatchString(copyright) {
			t.Errorf("debian/copyright does not name %s, which the binary links", f[1])
		}
	}

	// The units as installed, checked with the real binary in ExecStart.
	units := filepath.Join(x, "lib", "systemd", "system")
	verifyUnits(t, units, bin, filepath.Join(x, "usr", "share", "man"))
	checkExposure(t, units)
	checkConflicts(t, units)

	sim, err := exec.Command("apt-get", "install", "-s", "-o", "Debug::NoLocking=1", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(sim), "Inst gatehouse") {
		t.Errorf("apt-get install -s %s: %v\n%s", deb, err, sim)
	}
}

// buildDeb runs build-deb.sh into a fresh directory and returns the .deb it
// printed.
func buildDeb(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	b, err := exec.Command("../build-deb.sh", out).CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	deb := lines[len(lines)-1]
	if filepath.Dir(deb) != out || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("build-deb.sh printed %q, want a .deb in %s", b, out)
	}
	return deb
}

// TestBuildDebUsage: the old build-deb.sh took a version argument; now the
// version comes from debian/changelog, and passing one is a usage error
// rather than a directory named "0.1.0".
func TestBuildDebUsage(t *testing.T) {
	out, err := exec.Command("../build-deb.sh", "0.1.0").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "debian/changelog") {
		t.Fatalf("build-deb.sh 0.1.0: %v\n%s", err, out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
