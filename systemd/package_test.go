package systemd

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebPackage builds the .deb with the repo's build-deb.sh and checks it
// with the real dpkg-deb and apt-get (simulated install: nothing changes).
func TestDebPackage(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "apt-get", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	out := t.TempDir()
	b, err := exec.Command("../build-deb.sh", "0.0.1~test", out).CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	deb := strings.TrimSpace(string(b[strings.LastIndexByte(strings.TrimSpace(string(b)), '\n')+1:]))
	if filepath.Dir(deb) != out {
		t.Fatalf("unexpected output %q", b)
	}
	info, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version").CombinedOutput()
	if err != nil || !strings.Contains(string(info), "Package: gatehouse") || !strings.Contains(string(info), "Version: 0.0.1~test") {
		t.Fatalf("dpkg-deb --field: %v\n%s", err, info)
	}
	contents, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"./usr/bin/gatehouse", "./lib/systemd/system/gatehouse.service", "./lib/systemd/system/gatehouse-sync.timer",
		"./usr/lib/sysusers.d/gatehouse.conf", "./usr/lib/tmpfiles.d/gatehouse.conf", "./etc/gatehouse/gatehouse.toml"} {
		if !strings.Contains(string(contents), want) {
			t.Errorf("package lacks %s", want)
		}
	}
	if !strings.Contains(string(contents), "root/root") {
		t.Errorf("files are not owned by root:\n%s", contents)
	}
	sim, err := exec.Command("apt-get", "install", "-s", "-o", "Debug::NoLocking=1", deb).CombinedOutput()
	if err != nil || !strings.Contains(string(sim), "Inst gatehouse") {
		t.Fatalf("apt-get install -s %s: %v\n%s", deb, err, sim)
	}
}
