package mirror

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/apttest"
	"gatehouse/apt/compress"
	"gatehouse/mirror/store"
)

// TestSyncRefusesTampering: each way an upstream (or someone in between)
// can lie is refused with ErrRefused, and the published mirror stays byte
// for byte as it was, and the accepted Date does not move.
func TestSyncRefusesTampering(t *testing.T) {
	newVersion := func(t *testing.T, up *upstream) {
		t.Helper()
		if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, up *upstream, first time.Time)
		want   string // in the error
	}{
		{"pool deb byte flipped", func(t *testing.T, up *upstream, _ time.Time) {
			if err := up.repo.Rebuild(testSuite("1.0-1", apttest.Package{Name: "newpkg", Version: "1.0", Arch: "amd64", Size: 2000})); err != nil {
				t.Fatal(err)
			}
			up.srv.SetFault(up.repo.PoolPath("newpkg", "1.0", "amd64"), apttest.Fault{FlipByte: 700})
		}, "newpkg"},
		{"Packages.xz byte flipped", func(t *testing.T, up *upstream, _ time.Time) {
			newVersion(t, up)
			for _, p := range indexURLs(t, up, "main/binary-amd64/Packages.xz") {
				up.srv.SetFault(p, apttest.Fault{FlipByte: 40})
			}
		}, "Packages.xz"},
		{"Packages rewritten with an extra package, Release untouched", func(t *testing.T, up *upstream, _ time.Time) {
			newVersion(t, up)
			extra := "\nPackage: evil\nVersion: 6.6.6\nArchitecture: amd64\nFilename: pool/main/e/evil/evil_6.6.6_amd64.deb\nSize: 4\nSHA256: " + strings.Repeat("ab", 32) + "\n"
			for _, suf := range []string{"", ".gz", ".xz"} {
				rel := "main/binary-amd64/Packages" + suf
				plain, err := os.ReadFile(filepath.Join(up.repo.Dir, "dists/stable/main/binary-amd64/Packages"))
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				w, err := compress.Create(&buf, rel)
				if err != nil {
					t.Fatal(err)
				}
				w.Write(append(plain, extra...))
				w.Close()
				for _, p := range indexURLs(t, up, rel) {
					if err := os.WriteFile(filepath.Join(up.repo.Dir, p), buf.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}, "Packages"},
		{"Release text changed without re-signing", func(t *testing.T, up *upstream, _ time.Time) {
			newVersion(t, up)
			p := filepath.Join(up.repo.Dir, "dists/stable/InRelease")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b2 := bytes.Replace(b, []byte("Codename: lagoon"), []byte("Codename: lagoom"), 1)
			if bytes.Equal(b, b2) {
				t.Fatal("InRelease has no Codename line to change")
			}
			os.WriteFile(p, b2, 0o644)
		}, "bad signature"},
		{"signed by a key not in the keyring", func(t *testing.T, up *upstream, _ time.Time) {
			newVersion(t, up)
			rel, err := os.ReadFile(filepath.Join(up.repo.Dir, "dists/stable/Release"))
			if err != nil {
				t.Fatal(err)
			}
			signed, err := apttest.NewKey(t, "ed25519").ClearSign(rel, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(up.repo.Dir, "dists/stable/InRelease"), signed, 0o644)
		}, "none in keyring"},
		{"expired Valid-Until", func(t *testing.T, up *upstream, _ time.Time) {
			s := testSuite("1.1-1")
			s.ValidUntil = time.Now().Add(-time.Hour)
			if err := up.repo.Rebuild(s); err != nil {
				t.Fatal(err)
			}
		}, "Valid-Until"},
		{"Date older than the published one", func(t *testing.T, up *upstream, first time.Time) {
			s := testSuite("1.1-1")
			s.Date = first.Add(-24 * time.Hour)
			if err := up.repo.Rebuild(s); err != nil {
				t.Fatal(err)
			}
		}, "older than last accepted"},
		{"same Date, different content", func(t *testing.T, up *upstream, first time.Time) {
			s := testSuite("1.1-1")
			s.Date = first
			if err := up.repo.Rebuild(s); err != nil {
				t.Fatal(err)
			}
		}, "same Date"},
		{"Date in the future", func(t *testing.T, up *upstream, _ time.Time) {
			s := testSuite("1.1-1")
			s.Date = time.Now().Add(2 * time.Hour)
			if err := up.repo.Rebuild(s); err != nil {
				t.Fatal(err)
			}
		}, "future"},
		{"another suite's Release", func(t *testing.T, up *upstream, _ time.Time) {
			for _, f := range []string{"InRelease", "Release", "Release.gpg"} {
				b, err := os.ReadFile(filepath.Join(up.repo.Dir, "dists/testing", f))
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(up.repo.Dir, "dists/stable", f), b, 0o644)
			}
		}, "suite mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, testSuite("1.0-1"), otherSuite())
			state := t.TempDir()
			cfg := up.config()
			rep := mustSync(t, state, cfg)
			first := rep.Suites[0].Date
			before := publishedTree(t, state)

			tc.tamper(t, up, first)
			rep, err := Sync(context.Background(), state, cfg, testOptions(t))
			if !errors.Is(err, ErrRefused) || rep.Result != ResultRefused {
				t.Fatalf("sync after tampering: result %q, err %v; want refused", rep.Result, err)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			checkUnchanged(t, before, publishedTree(t, state))
			st, _ := store.Open(StoreRoot(state), testMirror)
			s, err := st.ReadState()
			if err != nil {
				t.Fatal(err)
			}
			if !s.Suites["stable"].Date.Equal(first) || s.LastSync == nil || s.LastSync.Result != ResultRefused {
				t.Errorf("state after refusal: date %v (want %v), last sync %+v", s.Suites["stable"].Date, first, s.LastSync)
			}
			if snaps, _ := st.Snapshots(); len(snaps) != 1 {
				t.Errorf("refused sync left %d snapshots", len(snaps))
			}
		})
	}
}

// indexURLs returns the archive paths at which a client or mirror can get
// the suite's current index rel: its canonical name and its by-hash name.
func indexURLs(t *testing.T, up *upstream, rel string) []string {
	t.Helper()
	canon := "dists/stable/" + rel
	h := sha256File(t, filepath.Join(up.repo.Dir, canon))
	return []string{canon, "dists/stable/" + apt.ByHashPath(rel, apt.AlgoSHA256, h)}
}
