package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/pgp"
)

var testNow = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newKey(t testing.TB) *pgp.SigningKey {
	t.Helper()
	k, err := pgp.GenerateSigningKey("bundle test", "bundle@example.org", "ed25519", testNow.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyring(t testing.TB, keys ...*pgp.SigningKey) *pgp.Keyring {
	t.Helper()
	var all []byte
	for _, k := range keys {
		b, err := k.PublicKey(false)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	kr, err := pgp.ReadKeyring(bytes.NewReader(all), "test keys")
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func putFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func text(n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "Package: pkg%d\nVersion: 1.%d\nDescription: a test package\n\n", i, i)
	}
	return buf.Bytes()[:n]
}

// fixture is a fake mirror: a snapshot with dists and a pool.
type fixture struct {
	src   Source
	files map[string][]byte // bundle path -> content
}

func newFixture(t testing.TB, name string, large bool) *fixture {
	t.Helper()
	root := t.TempDir()
	fx := &fixture{files: map[string][]byte{}}
	snap := filepath.Join(root, "snapshots", "20261101T120000Z")
	pool := filepath.Join(root, "pool")
	add := func(base, rel string, b []byte) {
		putFile(t, filepath.Join(base, filepath.FromSlash(rel)), b)
	}
	dists := map[string][]byte{
		"dists/stable/InRelease":                          text(900),
		"dists/stable/main/binary-amd64/Packages":         text(20000),
		"dists/stable/main/binary-amd64/Packages.xz":      randBytes(3000),
		"dists/stable/main/binary-amd64/by-hash/SHA256/a": randBytes(10),
		"dists/stable/main/i18n/Translation-en":           {},
	}
	if large {
		dists["dists/stable/main/Contents-amd64"] = text(smallFile + 12345)
	}
	for rel, b := range dists {
		add(snap, rel, b)
		fx.files[name+"/"+rel] = b
	}
	poolFiles := map[string][]byte{
		"main/h/hello/hello_1.0_amd64.deb": randBytes(70000),
		"main/h/hello/hello_1.0.dsc":       text(700),
		"main/h/hello/hello_1.0.tar.xz":    randBytes(5000),
		"main/r/rand/rand_1.0_all.bin":     randBytes(9000), // incompressible, not named so
	}
	for rel, b := range poolFiles {
		add(pool, rel, b)
		fx.files[name+"/pool/"+rel] = b
		fx.src.PoolFiles = append(fx.src.PoolFiles, rel)
	}
	slices.Sort(fx.src.PoolFiles)
	fx.src.Name, fx.src.SnapshotID, fx.src.SnapshotDir, fx.src.PoolDir = name, "20261101T120000Z", snap, pool
	fx.src.Suites = []string{"stable"}
	return fx
}

func opts(k *pgp.SigningKey) ExportOptions {
	return ExportOptions{Key: k, Now: func() time.Time { return testNow }}
}

// extractAll extracts into dir/<path> and returns the Reader's stats.
func extractAll(t testing.TB, bundlePath string, kr *pgp.Keyring, dir string) (Stats, error) {
	t.Helper()
	rd, err := Open(bundlePath)
	if err != nil {
		return Stats{}, err
	}
	defer rd.Close()
	if _, err := rd.Verify(kr, testNow); err != nil {
		return Stats{}, err
	}
	err = rd.Extract(context.Background(), func(f File) (Dest, error) {
		return toPath(filepath.Join(dir, filepath.FromSlash(f.Path))), nil
	})
	return rd.Stats(), err
}

func checkTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	got := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		got[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("extracted %d files, want %d", len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Errorf("%s: extracted content differs (%d bytes, want %d)", p, len(got[p]), len(b))
		}
	}
}

// TestRoundTrip exports in each form, and reads it back: every byte
// arrives, compressible files are stored compressed, packages are not, and
// the real tar lists the stream form.
func TestRoundTrip(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	fx := newFixture(t, "up", true)
	fx2 := newFixture(t, "second", false)
	for _, form := range []string{"file", "dir", "volumes"} {
		t.Run(form, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b")
			o := opts(k)
			switch form {
			case "dir":
				out += "/"
			case "volumes":
				o.VolumeSize = 64 << 10
			}
			man, err := Export(context.Background(), out, []Source{fx.src, fx2.src}, o)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{}
			for p, b := range fx.files {
				want[p] = b
			}
			for p, b := range fx2.files {
				want[p] = b
			}
			if len(man.Files) != len(want) || man.Key != k.Fingerprint() || len(man.Mirrors) != 2 {
				t.Fatalf("manifest: %d files (want %d), key %s, mirrors %+v", len(man.Files), len(want), man.Key, man.Mirrors)
			}
			open := out
			if form == "volumes" {
				vols, _ := filepath.Glob(out + ".*")
				if len(vols) < 3 {
					t.Fatalf("volumes: %q, want several", vols)
				}
				open = out + ".000"
			}
			dest := t.TempDir()
			st, err := extractAll(t, open, kr, dest)
			if err != nil {
				t.Fatal(err)
			}
			checkTree(t, dest, want)
			if st.Written != len(want) || st.Present != 0 {
				t.Errorf("stats %+v", st)
			}
			// Resume: everything is in place already.
			st, err = extractAll(t, open, kr, dest)
			if err != nil || st.Present != len(want) || st.Written != 0 {
				t.Errorf("second extract: %v %+v", err, st)
			}
			names := storedNames(t, form, out)
			for _, n := range []string{
				"_zstd/up/dists/stable/main/binary-amd64/Packages.zst",
				"_zstd/up/dists/stable/main/Contents-amd64.zst",
				"_zstd/up/pool/main/h/hello/hello_1.0.dsc.zst",
				"up/pool/main/h/hello/hello_1.0_amd64.deb",
				"up/pool/main/r/rand/rand_1.0_all.bin", // compression did not help
				"up/dists/stable/main/i18n/Translation-en",
			} {
				if !slices.Contains(names, n) {
					t.Errorf("stored names lack %s: %q", n, names)
				}
			}
		})
	}
}

// TestStandardTools: the stream form unpacks with the real tar, and a
// compressed entry with the real zstd, to the original bytes.
func TestStandardTools(t *testing.T) {
	for _, tool := range []string{"tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	k := newKey(t)
	fx := newFixture(t, "up", false)
	p := filepath.Join(t.TempDir(), "b.tar")
	mustExport(t, p, k, fx.src)
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", p, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v %s", err, out)
	}
	zst := filepath.Join(dir, "_zstd/up/dists/stable/main/binary-amd64/Packages.zst")
	if out, err := exec.Command("zstd", "-q", "-d", zst, "-o", filepath.Join(dir, "Packages")).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d: %v %s", err, out)
	}
	for got, want := range map[string]string{"Packages": "up/dists/stable/main/binary-amd64/Packages", "up/pool/main/h/hello/hello_1.0_amd64.deb": "up/pool/main/h/hello/hello_1.0_amd64.deb"} {
		b, err := os.ReadFile(filepath.Join(dir, got))
		if err != nil || !bytes.Equal(b, fx.files[want]) {
			t.Errorf("%s unpacked with the standard tools differs from %s (%v)", got, want, err)
		}
	}
}

// storedNames lists what a bundle stores, using the real tar for the
// stream forms.
func storedNames(t *testing.T, form, out string) []string {
	t.Helper()
	if form == "dir" {
		var names []string
		filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(out, p)
				names = append(names, filepath.ToSlash(rel))
			}
			return err
		})
		return names
	}
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("tar not installed")
	}
	var cmd *exec.Cmd
	if form == "volumes" {
		cmd = exec.Command("sh", "-c", `cat "$1".* | tar -tf -`, "sh", out)
	} else {
		cmd = exec.Command("tar", "-tf", out)
	}
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("tar -t: %v", err)
	}
	names := strings.Fields(string(b))
	if names[0] != ManifestName || names[1] != SignatureName {
		t.Errorf("tar lists %q first", names[:2])
	}
	return names
}

func mustExport(t *testing.T, dest string, k *pgp.SigningKey, srcs ...Source) {
	t.Helper()
	if _, err := Export(context.Background(), dest, srcs, opts(k)); err != nil {
		t.Fatal(err)
	}
}

// entryOffset returns where the data of a tar entry starts in file p.
func entryOffset(t *testing.T, p, name string) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no entry %s: %v", name, err)
		}
		if hdr.Name == name {
			off, _ := f.Seek(0, io.SeekCurrent)
			return off
		}
	}
}

func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestTamper: every kind of damage is refused with ErrInvalid, and the
// destination of the damaged file never receives it.
func TestTamper(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	fx := newFixture(t, "up", false)
	deb := "up/pool/main/h/hello/hello_1.0_amd64.deb"
	cases := []struct {
		name   string
		dir    bool
		tamper func(t *testing.T, p string)
		msg    string
	}{
		{"file flip pool byte", false, func(t *testing.T, p string) { flipByte(t, p, entryOffset(t, p, deb)+500) }, "SHA-256"},
		{"file flip compressed byte", false, func(t *testing.T, p string) {
			flipByte(t, p, entryOffset(t, p, "_zstd/up/dists/stable/main/binary-amd64/Packages.zst")+200)
		}, "up/dists/stable/main/binary-amd64/Packages"},
		{"file change manifest hash", false, func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			off := entryOffset(t, p, ManifestName)
			i := bytes.Index(b[off:], []byte(`"sha256": "`)) + len(`"sha256": "`)
			b[off+int64(i)] = "10"[b[off+int64(i)]&1] // another hex digit
			putFile(t, p, b)
		}, "not signed by a trusted key"},
		{"file flip signature byte", false, func(t *testing.T, p string) { flipByte(t, p, entryOffset(t, p, SignatureName)+30) }, "not signed by a trusted key"},
		{"file truncated", false, func(t *testing.T, p string) {
			if err := os.Truncate(p, entryOffset(t, p, deb)+100); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"dir flip pool byte", true, func(t *testing.T, p string) { flipByte(t, filepath.Join(p, deb), 1000) }, "SHA-256"},
		{"dir drop file", true, func(t *testing.T, p string) { os.Remove(filepath.Join(p, deb)) }, "missing"},
		{"dir extra file", true, func(t *testing.T, p string) { putFile(t, filepath.Join(p, "up/pool/evil.deb"), []byte("x")) }, "does not list"},
		{"dir stored twice", true, func(t *testing.T, p string) {
			putFile(t, filepath.Join(p, "up/dists/stable/main/binary-amd64/Packages"), []byte("x"))
		}, "stored twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "b")
			if c.dir {
				p += "/"
			}
			mustExport(t, p, k, fx.src)
			c.tamper(t, p)
			dest := t.TempDir()
			_, err := extractAll(t, p, kr, dest)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v; want ErrInvalid mentioning %q", err, c.msg)
			}
			if _, err := os.Stat(filepath.Join(dest, deb)); err == nil && c.name != "dir drop file" {
				if b, _ := os.ReadFile(filepath.Join(dest, deb)); !bytes.Equal(b, fx.files[deb]) {
					t.Error("damaged file was renamed into place")
				}
			}
			filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
				if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
					t.Errorf("temporary file left: %s", p)
				}
				return nil
			})
		})
	}
}

// TestUntrustedKey: a bundle signed by another key fails Verify, naming
// the signer's key ID.
func TestUntrustedKey(t *testing.T) {
	k, other := newKey(t), newKey(t)
	fx := newFixture(t, "up", false)
	p := filepath.Join(t.TempDir(), "b")
	mustExport(t, p, other, fx.src)
	rd, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	_, err = rd.Verify(keyring(t, k), testNow)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), other.Fingerprint()[24:]) {
		t.Fatalf("err = %v; want ErrInvalid naming key ID %s", err, other.Fingerprint()[24:])
	}
	if err := rd.Extract(context.Background(), func(File) (Dest, error) { return toPath(t.TempDir()), nil }); err == nil {
		t.Error("Extract ran without a successful Verify")
	}
}

// TestVolumes: a gap in the volume set is named; a missing last volume is
// a truncated bundle.
func TestVolumes(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	fx := newFixture(t, "up", false)
	base := filepath.Join(t.TempDir(), "b")
	o := opts(k)
	o.VolumeSize = MinVolumeSize * 4
	if _, err := Export(context.Background(), base, []Source{fx.src}, o); err != nil {
		t.Fatal(err)
	}
	vols, _ := filepath.Glob(base + ".*")
	if len(vols) < 4 {
		t.Fatalf("%d volumes", len(vols))
	}
	last := vols[len(vols)-1]
	lastData, _ := os.ReadFile(last)
	os.Remove(last)
	if _, err := extractAll(t, base, kr, t.TempDir()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "volume is missing") {
		t.Errorf("missing last volume: %v", err)
	}
	putFile(t, last, lastData)
	os.Remove(volumeName(base, 1))
	if _, err := Open(base + ".000"); err == nil || !strings.Contains(err.Error(), volumeName(base, 1)+" is missing") {
		t.Errorf("gap: %v", err)
	}
	if _, err := Export(context.Background(), base, []Source{fx.src}, o); err == nil {
		t.Error("export over existing volumes succeeded")
	}
}

// TestExportRefusesChangedFile: a pool file that does not match the hash
// the caller knows is not exported.
func TestExportRefusesChangedFile(t *testing.T) {
	k := newKey(t)
	fx := newFixture(t, "up", false)
	fx.src.PoolSHA256 = map[string]string{"main/h/hello/hello_1.0_amd64.deb": strings.Repeat("ab", 32)}
	p := filepath.Join(t.TempDir(), "b")
	_, err := Export(context.Background(), p, []Source{fx.src}, opts(k))
	if err == nil || !strings.Contains(err.Error(), "changed or is corrupt") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("a failed export left its file")
	}
	if es, _ := os.ReadDir(filepath.Dir(p)); len(es) != 0 {
		t.Errorf("a failed export left %v", es)
	}
}

// TestIncrementalSkips: Since leaves pool files out.
func TestIncrementalSkips(t *testing.T) {
	k := newKey(t)
	fx := newFixture(t, "up", false)
	fx.src.Since = map[string]bool{"main/h/hello/hello_1.0_amd64.deb": true}
	fx.src.SinceID = "20261001T000000Z"
	man, err := ExportStream(context.Background(), io.Discard, []Source{fx.src}, opts(k))
	if err != nil {
		t.Fatal(err)
	}
	pool := man.FilesOf("up", "pool")
	if len(pool) != 3 || slices.ContainsFunc(pool, func(f File) bool { return strings.HasSuffix(f.Path, ".deb") }) {
		t.Errorf("pool files %+v", pool)
	}
	if man.Mirrors[0].Since != fx.src.SinceID {
		t.Errorf("since %q", man.Mirrors[0].Since)
	}
}

func TestParseManifestRules(t *testing.T) {
	good := `{"format":1,"created":"2026-11-01T12:00:00Z","key":"AB","mirrors":[{"name":"up","snapshot":"x","suites":["stable"],"since":""}],` +
		`"files":[{"path":"up/dists/a","size":1,"sha256":"` + strings.Repeat("0", 64) + `"},{"path":"up/pool/b","size":0,"sha256":"` + strings.Repeat("1", 64) + `"}]}`
	if _, err := ParseManifest([]byte(good)); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for name, bad := range map[string]string{
		"format":   strings.Replace(good, `"format":1`, `"format":2`, 1),
		"escape":   strings.Replace(good, "up/pool/b", "up/pool/../../etc/passwd", 1),
		"area":     strings.Replace(good, "up/pool/b", "up/secret/b", 1),
		"mirror":   strings.Replace(good, "up/pool/b", "other/pool/b", 1),
		"unsorted": strings.Replace(good, "up/dists/a", "up/zzz", 1),
		"hash":     strings.Replace(good, strings.Repeat("0", 64), strings.Repeat("G", 64), 1),
		"size":     strings.Replace(good, `"size":1`, `"size":-1`, 1),
		"name":     strings.Replace(good, `"name":"up"`, `"name":"_zstd"`, 1),
		"unknown":  strings.Replace(good, `"key"`, `"extra":1,"key"`, 1),
		"trailing": good + "{}",
	} {
		if _, err := ParseManifest([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// TestExtractIgnore: files the caller leaves out are skipped (by seeking
// over them in the stream forms) and the files after them still arrive
// intact.
func TestExtractIgnore(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	fx := newFixture(t, "up", true)
	for _, vol := range []int64{0, MinVolumeSize * 3} {
		base := filepath.Join(t.TempDir(), "b")
		o := opts(k)
		o.VolumeSize = vol
		if _, err := Export(context.Background(), base, []Source{fx.src}, o); err != nil {
			t.Fatal(err)
		}
		if vol > 0 {
			base += ".000"
		}
		rd, err := Open(base)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rd.Verify(kr, testNow); err != nil {
			t.Fatal(err)
		}
		dest := t.TempDir()
		want := map[string][]byte{}
		err = rd.Extract(context.Background(), func(f File) (Dest, error) {
			if strings.HasSuffix(f.Path, ".deb") || strings.HasSuffix(f.Path, "Contents-amd64") {
				return nil, nil
			}
			want[f.Path] = fx.files[f.Path]
			return toPath(filepath.Join(dest, filepath.FromSlash(f.Path))), nil
		})
		rd.Close()
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, dest, want)
		if st := rd.Stats(); st.Ignored != 2 || st.Written != len(want) {
			t.Errorf("volume size %d: stats %+v", vol, st)
		}
	}
}

// TestDamageInPresentOrIgnoredEntry: the bytes of an entry whose
// destination already holds the right file, or which the caller leaves
// out, are verified all the same; one flipped byte there refuses the
// bundle (in the stream and directory forms, plain and compressed
// entries), and the file already in place is left as it was.
func TestDamageInPresentOrIgnoredEntry(t *testing.T) {
	k := newKey(t)
	kr := keyring(t, k)
	fx := newFixture(t, "up", false)
	deb := "up/pool/main/h/hello/hello_1.0_amd64.deb"
	pkgs := "up/dists/stable/main/binary-amd64/Packages"
	for _, c := range []struct {
		name string
		dir  bool
		file string // the damaged manifest entry
		flip func(t *testing.T, p string)
	}{
		{"file plain", false, deb, func(t *testing.T, p string) { flipByte(t, p, entryOffset(t, p, deb)+500) }},
		{"file compressed", false, pkgs, func(t *testing.T, p string) { flipByte(t, p, entryOffset(t, p, storedName(pkgs, true))+200) }},
		{"dir plain", true, deb, func(t *testing.T, p string) { flipByte(t, filepath.Join(p, deb), 1000) }},
	} {
		for _, mode := range []string{"present", "ignored"} {
			t.Run(c.name+" "+mode, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "b")
				if c.dir {
					p += "/"
				}
				mustExport(t, p, k, fx.src)
				dest := t.TempDir()
				// A first, undamaged import puts every file in place.
				if _, err := extractAll(t, p, kr, dest); err != nil {
					t.Fatal(err)
				}
				c.flip(t, p)
				rd, err := Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer rd.Close()
				if _, err := rd.Verify(kr, testNow); err != nil {
					t.Fatal(err)
				}
				err = rd.Extract(context.Background(), func(f File) (Dest, error) {
					if mode == "ignored" && f.Path == c.file {
						return nil, nil
					}
					return toPath(filepath.Join(dest, filepath.FromSlash(f.Path))), nil
				})
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.file) || !strings.Contains(err.Error(), "SHA-256") {
					t.Fatalf("err = %v; want ErrInvalid naming %s and its SHA-256", err, c.file)
				}
				checkTree(t, dest, fx.files)
			})
		}
	}
}

// fileDest is a Dest at a plain path, for these tests: a named temporary
// file beside path, renamed onto it by Commit. A mirror's import uses
// mirror/store.NewFile (mirror's air-gap tests run it).
type fileDest struct {
	path string
	f    *os.File
}

func toPath(p string) *fileDest { return &fileDest{path: p} }

func (d *fileDest) Name() string { return d.path }

func (d *fileDest) Open() (*os.File, error) { return os.Open(d.path) }

func (d *fileDest) Create() (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(d.path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(d.path), ".tmp-*")
	if err != nil {
		return nil, err
	}
	d.f = f
	return f, nil
}

func (d *fileDest) Commit() error {
	if err := d.f.Close(); err != nil {
		return err
	}
	return os.Rename(d.f.Name(), d.path)
}

func (d *fileDest) Discard() {
	if d.f != nil {
		d.f.Close()
		os.Remove(d.f.Name())
		d.f = nil
	}
}
