package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/mirror/store"
)

// TestRealAptClient publishes a small repository through mirror/store and
// lets the real apt-get update from the server and download a package with
// a private configuration (nothing on the machine changes). The repository
// is unsigned ([trusted=yes]): signatures are the mirror's business, this
// test is about HTTP. A second update must be answered with 304s.
func TestRealAptClient(t *testing.T) {
	aptGet, err := exec.LookPath("apt-get")
	if err != nil {
		t.Skip("apt-get not installed")
	}
	dpkgDeb, err := exec.LookPath("dpkg-deb")
	if err != nil {
		t.Skip("dpkg-deb not installed")
	}
	tmp := t.TempDir()

	// A real .deb.
	pkgDir := filepath.Join(tmp, "build", "DEBIAN")
	os.MkdirAll(pkgDir, 0o755)
	control := "Package: gatehouse-hello\nVersion: 1.0+b1\nArchitecture: all\nMaintainer: Test <test@example.org>\nDescription: test package\n"
	if err := os.WriteFile(filepath.Join(pkgDir, "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	debPath := filepath.Join(tmp, "hello.deb")
	if out, err := exec.Command(dpkgDeb, "--root-owner-group", "--build", filepath.Join(tmp, "build"), debPath).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	deb, err := os.ReadFile(debPath)
	if err != nil {
		t.Fatal(err)
	}

	// Publish it: pool file, then a snapshot with Packages and Release.
	root := filepath.Join(tmp, "state")
	st, err := store.Open(root, "debian")
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	poolRel := "main/g/gatehouse-hello/gatehouse-hello_1.0+b1_all.deb"
	pp, _ := st.PoolPath(poolRel)
	os.MkdirAll(filepath.Dir(pp), 0o755)
	if err := os.WriteFile(pp, deb, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }
	packages := fmt.Sprintf("%sFilename: pool/%s\nSize: %d\nSHA256: %s\n\n", control, poolRel, len(deb), sum(deb))
	release := fmt.Sprintf("Origin: Example\nLabel: Example\nSuite: stable\nCodename: stable\nDate: %s\nArchitectures: amd64\nComponents: main\nSHA256:\n %s %d main/binary-amd64/Packages\n",
		time.Now().UTC().Format(time.RFC1123), sum([]byte(packages)), len(packages))
	sn, err := st.NewSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	for rel, content := range map[string]string{
		"dists/stable/Release":                    release,
		"dists/stable/main/binary-amd64/Packages": packages,
	} {
		p, err := sn.Path(rel)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}

	var logBuf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logBuf}, nil))
	srv := (&fixture{root: root}).server(t, log)

	// Private apt configuration.
	a := filepath.Join(tmp, "apt")
	for _, d := range []string{"etc/sources.list.d", "etc/trusted.gpg.d", "etc/apt.conf.d", "etc/preferences.d", "state/lists/partial", "cache/archives/partial", "log"} {
		os.MkdirAll(filepath.Join(a, d), 0o755)
	}
	os.WriteFile(filepath.Join(a, "state/status"), nil, 0o644)
	os.WriteFile(filepath.Join(a, "etc/sources.list"), []byte("deb [trusted=yes] "+srv.URL+"/debian stable main\n"), 0o644)
	conf := fmt.Sprintf(`Dir::Etc "%[1]s/etc";
Dir::Etc::sourcelist "%[1]s/etc/sources.list";
Dir::Etc::sourceparts "%[1]s/etc/sources.list.d";
Dir::Etc::trustedparts "%[1]s/etc/trusted.gpg.d";
Dir::Etc::parts "%[1]s/etc/apt.conf.d";
Dir::Etc::preferencesparts "%[1]s/etc/preferences.d";
Dir::State "%[1]s/state";
Dir::State::status "%[1]s/state/status";
Dir::Cache "%[1]s/cache";
Dir::Log "%[1]s/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::http::Proxy "DIRECT";
APT::Sandbox::User "root";
`, a)
	confPath := filepath.Join(a, "apt.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	apt := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(aptGet, append([]string{"-c", confPath, "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "APT_CONFIG="+confPath, "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("apt-get %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := apt("update")
	if strings.Contains(out, "Err:") || strings.Contains(out, "Hash Sum mismatch") {
		t.Fatalf("apt-get update reported errors:\n%s", out)
	}
	// A partial download from an earlier attempt, stamped with the pool
	// file's mtime as apt stamps its downloads: apt resumes it with Range
	// and If-Range, and the server must answer 206 with the tail.
	partial := filepath.Join(a, "cache/archives/partial/gatehouse-hello_1.0+b1_all.deb")
	if err := os.WriteFile(partial, deb[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	pfi, _ := os.Stat(pp)
	os.Chtimes(partial, pfi.ModTime(), pfi.ModTime())
	out = apt("install", "--download-only", "-y", "gatehouse-hello")
	got, err := os.ReadFile(filepath.Join(a, "cache/archives/gatehouse-hello_1.0+b1_all.deb"))
	if err != nil {
		t.Fatalf("apt did not download the package: %v\n%s", err, out)
	}
	if !bytes.Equal(got, deb) {
		t.Fatal("the .deb apt downloaded differs from the pool file")
	}
	mu.Lock()
	if !strings.Contains(logBuf.String(), "status=206") {
		t.Errorf("apt did not resume the partial download with a range request:\n%s", logBuf.String())
	}
	mu.Unlock()
	// Unchanged repository: apt revalidates and the server answers 304.
	out = apt("update")
	if !strings.Contains(out, "Hit:") {
		t.Errorf("second apt-get update did not hit its cache:\n%s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logBuf.String(), "status=304") {
		t.Errorf("no 304 in the access log of a repeated update:\n%s", logBuf.String())
	}
}
