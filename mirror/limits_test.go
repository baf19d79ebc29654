package mirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// hugeIndex writes a signed suite "huge" whose one Packages.gz lists n
// unique stanzas (pool files that do not exist upstream, so the pool
// phase fails at its first request), plus the names given in extra. It
// returns the config of a mirror of it.
func hugeIndex(t *testing.T, n int, size int64, extra ...string) (Config, *apttest.Server) {
	t.Helper()
	return hugeSuite(t, []int{n}, size, extra...)
}

// hugeSuite is hugeIndex with one component per element of counts: "main"
// lists counts[0] stanzas (and extra), "compN" counts[N], all distinct.
func hugeSuite(t *testing.T, counts []int, size int64, extra ...string) (Config, *apttest.Server) {
	t.Helper()
	dir := t.TempDir()
	key := apttest.NewKey(t, "ed25519")
	now := time.Now().UTC()
	var comps []string
	var sums strings.Builder
	for ci, n := range counts {
		comp := "main"
		if ci > 0 {
			comp = fmt.Sprintf("comp%d", ci)
		}
		comps = append(comps, comp)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		stanza := func(name, filename string) {
			h := sha256.Sum256([]byte(filename))
			fmt.Fprintf(zw, "Package: %s\nVersion: 1\nArchitecture: amd64\nFilename: %s\nSize: %d\nSHA256: %s\n\n", name, filename, size, hex.EncodeToString(h[:]))
		}
		if ci == 0 {
			for _, fn := range extra {
				stanza("extra", fn)
			}
		}
		for i := range n {
			name := fmt.Sprintf("p%d%07d", ci, i)
			if ci == 0 {
				name = fmt.Sprintf("p%07d", i)
			}
			stanza(name, fmt.Sprintf("pool/%s/p/%s/%s_1_amd64.deb", comp, name, name))
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		rel := comp + "/binary-amd64/Packages.gz"
		p := filepath.Join(dir, "dists/huge", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(buf.Bytes())
		fmt.Fprintf(&sums, " %s %d %s\n", hex.EncodeToString(h[:]), buf.Len(), rel)
	}
	release := fmt.Sprintf("Origin: example\nSuite: huge\nCodename: huge\nDate: %s\nArchitectures: amd64\nComponents: %s\nSHA256:\n%s",
		now.Add(-time.Minute).Format(time.RFC1123), strings.Join(comps, " "), sums.String())
	signed, err := key.ClearSign([]byte(release), now.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dists/huge/InRelease"), signed, 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey(false)
	if err != nil {
		t.Fatal(err)
	}
	kr := filepath.Join(dir, "keyring.gpg")
	if err := os.WriteFile(kr, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := apttest.Serve(t, dir)
	cfg := Config{Name: testMirror, URL: srv.URL, Suites: []string{"huge"}, Components: comps,
		Architectures: []string{"amd64"}, Keyring: kr, Concurrency: 4, Translations: []string{}}
	cfg.Defaults()
	return cfg, srv
}

func poolRequests(srv *apttest.Server) int {
	n := 0
	for _, r := range srv.Requests() {
		if strings.HasPrefix(r, "pool/") {
			n++
		}
	}
	return n
}

// dirsUnder counts the directories below dir.
func dirsUnder(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			n++
		}
		return nil
	})
	return n
}

// peakHeap runs fn and returns the largest live heap seen while it ran.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak uint64
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			v := read()
			mu.Lock()
			peak = max(peak, v)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	fn()
	close(done)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// TestHugeIndexMemoryAndFirst404: a signed index of many unique stanzas
// whose pool files upstream does not have. The sync's memory grows by a few
// dozen bytes per stanza (a census of hashes; the entries themselves are
// streamed), and after the first 404 the pool phase starts no download and
// creates no directory.
func TestHugeIndexMemoryAndFirst404(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a large index")
	}
	const n = 10000
	run := func(n int) (uint64, *apttest.Server, string) {
		cfg, srv := hugeIndex(t, n, 1000)
		state := t.TempDir()
		var err error
		peak := peakHeap(func() { _, err = Sync(context.Background(), state, cfg, testOptions(t)) })
		if err == nil || !errors.Is(err, fs.ErrNotExist) && !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "not found") {
			t.Logf("sync error: %v", err)
		}
		if err == nil {
			t.Fatal("sync of an index naming missing files succeeded")
		}
		return peak, srv, state
	}
	small, _, _ := run(n)
	big, srv, state := run(10 * n)
	perStanza := (float64(big) - float64(small)) / float64(9*n)
	t.Logf("peak heap: %d stanzas %.1f MiB, %d stanzas %.1f MiB: %.0f bytes per stanza", n, float64(small)/(1<<20), 10*n, float64(big)/(1<<20), perStanza)
	if perStanza > 150 {
		t.Errorf("memory grows by %.0f bytes per stanza; the entries must be streamed, not kept", perStanza)
	}
	// The first pool request failed; at most the other workers' files were
	// already under way.
	cfg, _ := hugeIndex(t, 0, 1)
	if got := poolRequests(srv); got > cfg.Concurrency+1 {
		t.Errorf("the pool phase made %d requests after the first 404, want at most %d", got, cfg.Concurrency+1)
	}
	mdir := filepath.Join(StoreRoot(state), testMirror)
	if d := dirsUnder(t, filepath.Join(mdir, store.PoolDir)); d != 0 {
		t.Errorf("a failed sync left %d directories in pool/", d)
	}
	if d := dirsUnder(t, filepath.Join(mdir, store.ObjectsDir)); d > cfg.Concurrency+1 {
		t.Errorf("a failed sync created %d object directories for %d requests", d, poolRequests(srv))
	}
}

// TestMaxPackagesAndPoolBytes: an index over max_packages, or a pool over
// max_pool_bytes, is refused (exit 3) before any pool file is requested.
func TestMaxPackagesAndPoolBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"max_packages", func(c *Config) { c.MaxPackages = 40 }, "max_packages"},
		{"max_pool_bytes", func(c *Config) { c.MaxPoolBytes = 10 << 10 }, "max_pool_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, srv := hugeIndex(t, 50, 1000)
			tc.set(&cfg)
			state := t.TempDir()
			rep, err := Sync(context.Background(), state, cfg, testOptions(t))
			if !errors.Is(err, ErrRefused) || rep.Result != ResultRefused || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("sync over %s: %q, %v", tc.name, rep.Result, err)
			}
			t.Logf("error: %v", err)
			if n := poolRequests(srv); n != 0 {
				t.Errorf("%d pool files requested", n)
			}
			if _, _, err := store.ResolveCurrent(StoreRoot(state), testMirror); !errors.Is(err, store.ErrNoCurrent) {
				t.Errorf("something was published: %v", err)
			}
		})
	}
	// A filtered mirror refuses the same index with the same error, and
	// caps the universe it holds in memory (distinct packages over all
	// indexes) by max_packages too: 2 x 30 stanzas pass the per-index
	// cap of 40 and fail the universe's.
	for _, tc := range []struct {
		name   string
		counts []int
		want   string
	}{
		{"filtered max_packages", []int{50}, "has more than 40 entries (max_packages)"},
		{"filtered universe", []int{30, 30}, "more than 40 distinct packages (max_packages)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, srv := hugeSuite(t, tc.counts, 1000)
			cfg.MaxPackages = 40
			cfg.Mode, cfg.Include = ModeFiltered, []string{"p0000001"}
			opt := testOptions(t)
			opt.Signing, _, _ = archiveKey(t)
			state := t.TempDir()
			rep, err := Sync(context.Background(), state, cfg, opt)
			if !errors.Is(err, ErrRefused) || rep.Result != ResultRefused || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("filtered sync over max_packages: %q, %v", rep.Result, err)
			}
			t.Logf("error: %v", err)
			if n := poolRequests(srv); n != 0 {
				t.Errorf("%d pool files requested", n)
			}
			if _, _, err := store.ResolveCurrent(StoreRoot(state), testMirror); !errors.Is(err, store.ErrNoCurrent) {
				t.Errorf("something was published: %v", err)
			}
		})
	}
	if _, err := ParseSize("10GiB/s"); err == nil {
		t.Error("ParseSize accepted a rate")
	}
	if n, err := ParseSize("2TiB"); err != nil || n != 2<<40 {
		t.Errorf("ParseSize(2TiB) = %d, %v", n, err)
	}
	var sz Size
	if err := sz.UnmarshalText([]byte("lots")); err == nil || !strings.Contains(err.Error(), "invalid size") {
		t.Errorf("max_pool_bytes = \"lots\": %v", err)
	}
}

// TestTempPrefixRefused: a Filename with an element starting with the
// store's temporary prefix is an unsafe path, refused like "..".
func TestTempPrefixRefused(t *testing.T) {
	for _, fn := range []string{"pool/main/" + store.TempPrefix + "x/a_1_amd64.deb", "pool/main/a/" + store.TempPrefix + "a_1_amd64.deb"} {
		cfg, srv := hugeIndex(t, 3, 100, fn)
		state := t.TempDir()
		rep, err := Sync(context.Background(), state, cfg, testOptions(t))
		if !errors.Is(err, ErrRefused) || !errors.Is(err, apt.ErrUnsafePath) || rep.Result != ResultRefused {
			t.Errorf("Filename %s: %q, %v", fn, rep.Result, err)
		}
		if n := poolRequests(srv); n != 0 {
			t.Errorf("Filename %s: %d pool files requested", fn, n)
		}
	}
	if err := checkPoolName("main/binary-amd64/" + store.TempPrefix + "Packages"); !errors.Is(err, apt.ErrUnsafePath) {
		t.Errorf("Release path with the temporary prefix: %v", err)
	}
}
