package mirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/fetch"
	"gatehouse/mirror/serve"
	"gatehouse/mirror/store"
)

const testMirror = "up"

// testPackages is a small dependency closure with an arch-all package.
func testPackages(ver string) []apttest.Package {
	return []apttest.Package{
		{Name: "hello", Version: ver, Arch: "amd64", Depends: "libgreet1 (>= 1.0), hello-data", Size: 3000},
		{Name: "libgreet1", Source: "libgreet", Version: "1.2-1", Arch: "amd64", MultiArch: "same", Section: "libs"},
		{Name: "hello-data", Source: "hello", Version: ver, Arch: "all"},
	}
}

func testSuite(ver string, extra ...apttest.Package) apttest.Suite {
	return apttest.Suite{
		Name: "stable", Codename: "lagoon", Components: []string{"main"},
		Architectures: []string{"amd64"}, ByHash: true, Translations: true, Sources: true, Contents: true,
		Packages: map[string][]apttest.Package{"main": append(testPackages(ver), extra...)},
	}
}

// otherSuite is a second suite "testing" (codename "tide"). It shares no
// source package version with testSuite: apttest builds the files of a
// source package once per suite, concurrently, and two builds of the same
// one race (one hashes the file while the other is still writing it).
func otherSuite() apttest.Suite {
	s := testSuite("2.0-1")
	s.Name, s.Codename = "testing", "tide"
	pk := s.Packages["main"]
	for i := range pk {
		if pk[i].Name == "libgreet1" {
			pk[i].Version = "1.3-1"
		}
	}
	return s
}

// upstream is a test archive served on loopback.
type upstream struct {
	repo *apttest.Repo
	srv  *apttest.Server
}

func newUpstream(t *testing.T, suites ...apttest.Suite) *upstream {
	t.Helper()
	if len(suites) == 0 {
		suites = []apttest.Suite{testSuite("1.0-1")}
	}
	dir := t.TempDir()
	repo, err := apttest.Build(dir, apttest.NewKey(t, "ed25519"), suites...)
	if err != nil {
		t.Fatal(err)
	}
	return &upstream{repo: repo, srv: apttest.Serve(t, dir)}
}

func (u *upstream) config() Config {
	c := Config{Name: testMirror, URL: u.srv.URL, Suites: []string{"stable"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: u.repo.KeyringPath, Sources: true, Concurrency: 4}
	c.Defaults()
	return c
}

func testOptions(t *testing.T) Options {
	return Options{
		Log:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Fetch: fetch.Config{Retries: 1, RetryWait: 10 * time.Millisecond, Timeout: 10 * time.Second},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func mustSync(t *testing.T, state string, cfg Config) *Report {
	t.Helper()
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}

// serveMirror serves the state directory's mirrors like `gatehouse serve`.
func serveMirror(t *testing.T, state string) string {
	t.Helper()
	srv := httptest.NewServer(serve.NewHandler(StoreRoot(state), []string{testMirror}, nil))
	t.Cleanup(srv.Close)
	return srv.URL + "/" + testMirror
}

// publishedTree hashes what clients of the mirror can see: the snapshot
// "current" names (with its ID) and every pool file.
func publishedTree(t *testing.T, state string) map[string]string {
	t.Helper()
	root := filepath.Join(StoreRoot(state), testMirror)
	id, dir, err := store.ResolveCurrent(StoreRoot(state), testMirror)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{"current": id}
	for _, base := range []string{dir, filepath.Join(root, store.PoolDir)} {
		err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), store.TempPrefix) {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			h := sha256.Sum256(b)
			out[rel] = hex.EncodeToString(h[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// checkUnchanged fails unless every published file is as before. New pool
// files are allowed: a refused sync may have fetched verified ones, and no
// published index names them.
func checkUnchanged(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("published file %s changed (%q -> %q)", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && !strings.HasPrefix(k, store.PoolDir+"/") {
			t.Errorf("published tree gained %s", k)
		}
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
