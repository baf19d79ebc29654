package bundle

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"gatehouse/apt/pgp"
)

// benchFixture is a mirror-like data set: mostly incompressible packages,
// many small text files, one large plain index.
func benchFixture(b *testing.B) (Source, int64) {
	root := b.TempDir()
	snap := filepath.Join(root, "snapshots", "20261101T120000Z")
	pool := filepath.Join(root, "pool")
	src := Source{Name: "up", SnapshotID: "20261101T120000Z", SnapshotDir: snap, PoolDir: pool, Suites: []string{"stable"}, PoolSHA256: map[string]string{}}
	var total int64
	add := func(base, rel string, data []byte) {
		putFile(b, filepath.Join(base, filepath.FromSlash(rel)), data)
		total += int64(len(data))
	}
	add(snap, "dists/stable/main/binary-amd64/Packages", text(6<<20))
	add(snap, "dists/stable/main/binary-amd64/Packages.xz", randBytes(1<<20))
	add(snap, "dists/stable/InRelease", text(4000))
	for i := range 96 {
		rel := filepath.ToSlash(filepath.Join("main", "p", "pkg", "pkg"+itoa(i)+"_1.0_amd64.deb"))
		add(pool, rel, randBytes(1<<20))
		src.PoolFiles = append(src.PoolFiles, rel)
	}
	for i := range 400 {
		rel := filepath.ToSlash(filepath.Join("main", "p", "pkg", "pkg"+itoa(i)+"_1.0.dsc"))
		add(pool, rel, text(4096))
		src.PoolFiles = append(src.PoolFiles, rel)
	}
	// The exporter knows pool hashes from the indexes (mirror.Export).
	for _, rel := range src.PoolFiles {
		sum, _, err := hashFile(filepath.Join(pool, rel))
		if err != nil {
			b.Fatal(err)
		}
		src.PoolSHA256[rel] = sum
	}
	return src, total
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
}

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// BenchmarkExportVsTar measures bundle export (ExportStream to a file,
// including SHA-256 of every file and zstd where it helps) and import
// (Open, Verify, Extract with hashing and rename) against `tar -c | zstd`
// and `zstd -d | tar -x` of the same files, in the same run, alternating
// so both see the same page cache. Throughput is of the files' bytes, from
// the fastest of the b.N runs of each.
func BenchmarkExportVsTar(b *testing.B) {
	for _, tool := range []string{"tar", "zstd", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	src, total := benchFixture(b)
	key, err := pgp.GenerateSigningKey("bench", "bench@example.org", "ed25519", time.Now().Add(-time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	kr := keyring(b, key)
	work := b.TempDir()
	out := filepath.Join(work, "bundle.tar")
	ref := filepath.Join(work, "ref.tar.zst")
	x1, x2 := filepath.Join(work, "x1"), filepath.Join(work, "x2")
	root := filepath.Dir(filepath.Dir(src.SnapshotDir))
	// Best of N for each: the shared machine's load swings far more than
	// the difference being measured, and the fastest run is the one least
	// disturbed by it.
	best := func(cur *time.Duration, d time.Duration) {
		if *cur == 0 || d < *cur {
			*cur = d
		}
	}
	var exp, tarz, imp, untar time.Duration
	b.ResetTimer()
	for range b.N {
		os.Remove(out)
		os.Remove(ref)
		os.RemoveAll(x1)
		os.RemoveAll(x2)
		t0 := time.Now()
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ExportStream(context.Background(), f, []Source{src}, ExportOptions{Key: key}); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		run(b, "sh", "-c", `tar -C "$1" -cf - snapshots pool | zstd -q -o "$2"`, "sh", root, ref)
		t2 := time.Now()
		rd, err := Open(out)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rd.Verify(kr, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := rd.Extract(context.Background(), func(f File) (Dest, error) {
			return toPath(filepath.Join(x1, filepath.FromSlash(f.Path))), nil
		}); err != nil {
			b.Fatal(err)
		}
		rd.Close()
		t3 := time.Now()
		if err := os.Mkdir(x2, 0o755); err != nil {
			b.Fatal(err)
		}
		run(b, "sh", "-c", `zstd -q -d -c "$1" | tar -C "$2" -xf -`, "sh", ref, x2)
		t4 := time.Now()
		best(&exp, t1.Sub(t0))
		best(&tarz, t2.Sub(t1))
		best(&imp, t3.Sub(t2))
		best(&untar, t4.Sub(t3))
	}
	b.StopTimer()
	mbs := func(d time.Duration) float64 { return float64(total) / d.Seconds() / 1e6 }
	b.ReportMetric(mbs(exp), "export-MB/s")
	b.ReportMetric(mbs(tarz), "tar|zstd-MB/s")
	b.ReportMetric(mbs(exp)/mbs(tarz), "export/tar-ratio")
	b.ReportMetric(mbs(imp), "import-MB/s")
	b.ReportMetric(mbs(untar), "zstd-d|tar-x-MB/s")
	b.ReportMetric(mbs(imp)/mbs(untar), "import/untar-ratio")
	if fi, err := os.Stat(out); err == nil {
		if fr, err := os.Stat(ref); err == nil {
			b.ReportMetric(float64(fi.Size())/float64(fr.Size()), "size-ratio")
		}
	}
}
