package apt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gatehouse/apt/deb822"
)

// clearsignedBody returns the signed text of a clearsigned OpenPGP message
// without checking anything; verification is apt/pgp's job. It exists so
// these tests can parse real InRelease files.
func clearsignedBody(t testing.TB, data []byte) []byte {
	t.Helper()
	const begin = "-----BEGIN PGP SIGNED MESSAGE-----\n"
	if !bytes.HasPrefix(data, []byte(begin)) {
		t.Fatalf("not a clearsigned message")
	}
	rest := data[len(begin):]
	i := bytes.Index(rest, []byte("\n\n"))
	j := bytes.Index(rest, []byte("\n-----BEGIN PGP SIGNATURE-----"))
	if i < 0 || j < i {
		t.Fatalf("malformed clearsigned message")
	}
	var out bytes.Buffer
	for line := range bytes.Lines(rest[i+2 : j+1]) {
		out.Write(bytes.TrimPrefix(line, []byte("- ")))
	}
	return out.Bytes()
}

func readInRelease(t testing.TB, path string) *Release {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRelease(clearsignedBody(t, data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}

func TestParseRealBookworm(t *testing.T) {
	r := readInRelease(t, "testdata/bookworm_InRelease")
	if r.Codename != "bookworm" || r.Origin != "Debian" || r.Label != "Debian" || r.Version != "12.15" {
		t.Errorf("identity fields: %+v", r)
	}
	for _, want := range []string{"bookworm", r.Suite} {
		if err := CheckSuite(r, want); err != nil {
			t.Errorf("CheckSuite(%q): %v", want, err)
		}
	}
	if err := CheckSuite(r, "trixie"); !errors.Is(err, ErrSuiteMismatch) {
		t.Errorf("CheckSuite(trixie) = %v", err)
	}
	if want := time.Date(2026, 7, 11, 10, 16, 37, 0, time.UTC); !r.Date.Equal(want) {
		t.Errorf("Date = %v, want %v", r.Date, want)
	}
	if !r.ValidUntil.IsZero() {
		t.Errorf("ValidUntil = %v, want zero (stable releases have none)", r.ValidUntil)
	}
	if !r.AcquireByHash || !r.NoSupportForArchAll || r.NotAutomatic || r.ButAutomaticUpgrades {
		t.Errorf("flags: by-hash %v, no-arch-all %v, notautomatic %v, butautomatic %v",
			r.AcquireByHash, r.NoSupportForArchAll, r.NotAutomatic, r.ButAutomaticUpgrades)
	}
	if diff := cmp.Diff([]string{"main", "contrib", "non-free-firmware", "non-free"}, r.Components); diff != "" {
		t.Errorf("Components: %s", diff)
	}
	if len(r.Architectures) != 10 || r.Architectures[0] != "all" {
		t.Errorf("Architectures = %v", r.Architectures)
	}
	if len(r.Files) < 700 {
		t.Fatalf("%d files, want the ~770 a bookworm Release lists", len(r.Files))
	}
	for i, f := range r.Files {
		if len(f.SHA256) != 64 || len(f.MD5Sum) != 32 || f.SHA1 != "" || f.SHA512 != "" {
			t.Fatalf("file %+v: want MD5Sum and SHA256 only", f)
		}
		if algo, h := f.StrongestHash(); algo != AlgoSHA256 || h != f.SHA256 {
			t.Fatalf("StrongestHash of %s = %s %s", f.Path, algo, h)
		}
		if i > 0 && r.Files[i-1].Path >= f.Path {
			t.Fatalf("Files not sorted at %s", f.Path)
		}
	}
	e, ok := r.File("main/binary-amd64/Packages.xz")
	if !ok || e.Size < 1e6 {
		t.Fatalf("File(main/binary-amd64/Packages.xz) = %+v, %v", e, ok)
	}
	if _, ok := r.File("main/binary-amd64/Packages.bz2"); ok {
		t.Errorf("File found an entry the Release does not list")
	}
	if r.Para.Value("Changelogs") == "" {
		t.Errorf("raw paragraph lost the unmodelled Changelogs field")
	}
}

func TestParseRealSecurity(t *testing.T) {
	r := readInRelease(t, "testdata/bookworm-security_InRelease")
	if r.Codename != "bookworm-security" {
		t.Errorf("Codename %q", r.Codename)
	}
	if r.ValidUntil.Sub(r.Date) != 7*24*time.Hour {
		t.Errorf("Valid-Until %v is not Date %v + 7 days", r.ValidUntil, r.Date)
	}
	if err := CheckValidUntil(r, r.Date.Add(time.Hour)); err != nil {
		t.Errorf("one hour after Date: %v", err)
	}
	if err := CheckValidUntil(r, r.ValidUntil.Add(time.Second)); !errors.Is(err, ErrExpired) {
		t.Errorf("after Valid-Until: %v, want ErrExpired", err)
	}
}

// TestRealPackagesHashMatchesRelease ties the parsers to reality: the
// Packages file apt downloaded must have the size and SHA256 that the
// Release apt downloaded with it lists for "main/binary-amd64/Packages".
func TestRealPackagesHashMatchesRelease(t *testing.T) {
	lists := "/var/lib/apt/lists"
	rels, _ := filepath.Glob(filepath.Join(lists, "*_dists_bookworm_InRelease"))
	if len(rels) == 0 {
		t.Skip("apt-get update has not fetched bookworm")
	}
	r := readInRelease(t, rels[0])
	data := realPackages(t, strings.TrimSuffix(rels[0], "InRelease")+"main_binary-amd64_Packages")
	e, ok := r.File("main/binary-amd64/Packages")
	if !ok {
		t.Fatal("Release does not list main/binary-amd64/Packages")
	}
	sum := sha256.Sum256(data)
	if e.Size != int64(len(data)) || e.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("Release says %d bytes %s; file has %d bytes %x", e.Size, e.SHA256, len(data), sum)
	}
}

// realPackages returns the decompressed contents of prefix, prefix.lz4,
// prefix.xz or prefix.gz (apt stores lists in one of these), or skips.
func realPackages(t testing.TB, prefix string) []byte {
	t.Helper()
	if data, err := os.ReadFile(prefix); err == nil {
		return data
	}
	for ext, tool := range map[string]string{".lz4": "lz4", ".xz": "xz", ".gz": "gzip", ".zst": "zstd"} {
		if _, err := os.Stat(prefix + ext); err != nil {
			continue
		}
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needs %s", prefix+ext, tool)
		}
		out, err := exec.Command(tool, "-dc", prefix+ext).Output()
		if err != nil {
			t.Fatalf("%s -dc %s: %v", tool, prefix+ext, err)
		}
		return out
	}
	t.Skipf("no %s[.lz4|.xz|.gz|.zst]", prefix)
	return nil
}

func TestIndexFilesReal(t *testing.T) {
	r := readInRelease(t, "testdata/bookworm_InRelease")
	paths := func(fs []FileEntry) map[string]bool {
		m := map[string]bool{}
		for _, f := range fs {
			m[f.Path] = true
		}
		return m
	}
	got := paths(r.IndexFiles([]string{"main", "not-a-component"}, []string{"amd64"}, false))
	for _, p := range []string{
		"main/binary-amd64/Packages.xz", "main/binary-amd64/Release",
		"main/debian-installer/binary-amd64/Packages.xz",
		"main/i18n/Translation-en.xz", "main/i18n/Translation-de.bz2",
		"main/dep11/Components-amd64.yml.gz", "main/dep11/icons-48x48.tar.gz",
		"main/Contents-amd64.gz", "main/Contents-udeb-amd64.gz",
	} {
		if !got[p] {
			t.Errorf("missing %s", p)
		}
	}
	// bookworm says "No-Support-for-Architecture-all: Packages": apt
	// reads the "all" packages from binary-amd64 and never fetches these.
	if !r.NoSupportForArchAll || r.WantsArchAll() {
		t.Error("bookworm's No-Support-for-Architecture-all was not understood")
	}
	for _, p := range []string{"main/binary-all/Packages.xz", "main/debian-installer/binary-all/Packages.xz", "main/Contents-all.gz"} {
		if got[p] {
			t.Errorf("includes %s, which apt does not fetch", p)
		}
	}
	for p := range got {
		switch {
		case !strings.HasPrefix(p, "main/"),
			strings.Contains(p, "arm64"), strings.Contains(p, "i386"), strings.Contains(p, "s390x"),
			strings.Contains(p, "source"), strings.Contains(p, "/installer-"):
			t.Errorf("unexpected %s", p)
		}
	}
	withSrc := paths(r.IndexFiles([]string{"main", "contrib"}, []string{"amd64", "arm64"}, true))
	for _, p := range []string{"main/source/Sources.xz", "main/Contents-source.gz", "contrib/binary-arm64/Packages.xz", "main/dep11/Components-arm64.yml.gz"} {
		if !withSrc[p] {
			t.Errorf("with sources and arm64: missing %s", p)
		}
	}
	if withSrc["main/binary-i386/Packages.xz"] || withSrc["non-free/binary-amd64/Packages.xz"] {
		t.Errorf("with sources: includes an unrequested architecture or component")
	}
}

func TestIndexFilesFlat(t *testing.T) {
	h := strings.Repeat("a", 64)
	r, err := ParseRelease([]byte("Origin: Example\nDate: Sat, 1 Jun 2024 00:00:00 UTC\nSHA256:\n " +
		h + " 10 Packages\n " + h + " 5 Packages.gz\n " + h + " 7 Sources.xz\n " + h + " 9 Translation-en\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range r.IndexFiles(nil, []string{"amd64"}, false) {
		got = append(got, f.Path)
	}
	if diff := cmp.Diff([]string{"Packages", "Packages.gz", "Translation-en"}, got); diff != "" {
		t.Errorf("flat IndexFiles (-want +got):\n%s", diff)
	}
	if n := len(r.IndexFiles(nil, nil, true)); n != 4 {
		t.Errorf("flat with sources: %d files, want 4", n)
	}
	if err := CheckSuite(r, "./"); err != nil {
		t.Errorf("flat CheckSuite: %v", err)
	}
}

const (
	md5a    = "0123456789abcdef0123456789abcdef"
	sha1a   = "0123456789abcdef0123456789abcdef01234567"
	sha256a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestParseRelease(t *testing.T) {
	in := "Origin: Example\nLabel: Ex\nSuite: stable\nCodename: alpha\nVersion: 1.0\n" +
		"Date: Sat, 1 Jun 2024 08:52:18 +0000\nValid-Until: Sat, 08 Jun 2024 08:52:18 GMT\n" +
		"NotAutomatic: yes\nButAutomaticUpgrades: yes\nAcquire-By-Hash: no\n" +
		"Signed-By: AAAA1111, BBBB2222 CCCC3333\nArchitectures: amd64 all\nComponents: main\nDescription: test\n" +
		"MD5Sum:\n " + md5a + " 10 main/binary-amd64/Packages\n" +
		"SHA1:\n " + sha1a + "  10 main/binary-amd64/Packages\n" +
		"SHA256:\n " + strings.ToUpper(sha256a) + " 10 main/binary-amd64/Packages\n " + sha256a + " 3 main/binary-all/Packages\n"
	r, err := ParseRelease([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []FileEntry{
		{Path: "main/binary-all/Packages", Size: 3, SHA256: sha256a},
		{Path: "main/binary-amd64/Packages", Size: 10, MD5Sum: md5a, SHA1: sha1a, SHA256: sha256a},
	}
	if diff := cmp.Diff(want, r.Files); diff != "" {
		t.Errorf("Files (-want +got):\n%s", diff)
	}
	if r.Suite != "stable" || r.Codename != "alpha" || !r.NotAutomatic || !r.ButAutomaticUpgrades || r.AcquireByHash || r.NoSupportForArchAll {
		t.Errorf("fields: %+v", r)
	}
	if diff := cmp.Diff([]string{"AAAA1111", "BBBB2222", "CCCC3333"}, r.SignedBy); diff != "" {
		t.Errorf("SignedBy: %s", diff)
	}
	if !r.Date.Equal(time.Date(2024, 6, 1, 8, 52, 18, 0, time.UTC)) || !r.ValidUntil.Equal(r.Date.Add(7*24*time.Hour)) {
		t.Errorf("Date %v ValidUntil %v", r.Date, r.ValidUntil)
	}
}

func TestParseReleaseErrors(t *testing.T) {
	tests := []struct{ name, in, msg string }{
		{"empty", "", "no fields"},
		{"two paragraphs", "Origin: a\n\nOrigin: b\n", "Release:3: a second paragraph"},
		{"bad date", "Origin: a\nDate: yesterday\n", "Release:2: field Date"},
		{"non-UTC zone", "Date: Sat, 1 Jun 2024 08:52:18 +0200\n", "time zone"},
		{"bad bool", "Acquire-By-Hash: maybe\n", "want yes or no"},
		{"bad arch-all", "No-Support-for-Architecture-all: Sources\n", "want \"Packages\""},
		{"short hash", "SHA256:\n abc 1 a\n", "want 64 hex digits"},
		{"non-hex hash", "MD5Sum:\n " + strings.Repeat("g", 32) + " 1 a\n", "not hexadecimal"},
		{"bad size", "SHA256:\n " + sha256a + " -1 a\n", "not a decimal number"},
		{"huge size", "SHA256:\n " + sha256a + " 99999999999999999999 a\n", "want 1 to 18"},
		{"missing column", "SHA256:\n " + sha256a + " 1\n", "want \"HASH SIZE PATH\""},
		{"extra column", "SHA256:\n " + sha256a + " 1 a b\n", "want \"HASH SIZE PATH\""},
		{"dot-dot path", "SHA256:\n " + sha256a + " 1 main/../../etc/passwd\n", "unsafe"},
		{"absolute path", "SHA256:\n " + sha256a + " 1 /etc/passwd\n", "unsafe"},
		{"non-canonical path", "SHA256:\n " + sha256a + " 1 ./Packages\n", "non-canonical"},
		{"value on first line", "SHA256: " + sha256a + " 1 a\n", "after the field name"},
		{"duplicate in list", "SHA256:\n " + sha256a + " 1 a\n " + sha256a + " 1 a\n", "Release:3: field SHA256: a listed twice"},
		{"size differs across lists", "MD5Sum:\n " + md5a + " 1 a\nSHA256:\n " + sha256a + " 2 a\n", "Release:4: field SHA256: a has size 2 here but 1"},
		{"deb822 error", "Origin: a\n bad\nnot a field\n", "Release:3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRelease([]byte(tc.in))
			if !errors.Is(err, ErrRelease) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want ErrRelease containing %q", err, tc.msg)
			}
		})
	}
}

func TestParseDate(t *testing.T) {
	good := map[string]time.Time{
		"Sat, 10 Jun 2023 08:52:18 UTC":   time.Date(2023, 6, 10, 8, 52, 18, 0, time.UTC),
		"Sat, 10 Jun 2023 08:52:18 GMT":   time.Date(2023, 6, 10, 8, 52, 18, 0, time.UTC),
		"Sat, 10 Jun 2023 08:52:18 Z":     time.Date(2023, 6, 10, 8, 52, 18, 0, time.UTC),
		"Sat, 10 Jun 2023 08:52:18 +0000": time.Date(2023, 6, 10, 8, 52, 18, 0, time.UTC),
		"Sat, 10 Jun 2023 08:52:18 -0000": time.Date(2023, 6, 10, 8, 52, 18, 0, time.UTC),
		"Thu, 1 Jun 2023 00:00:00 UTC":    time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC),
		"Thu,  01 Jun 2023 00:00:00 UTC":  time.Date(2023, 6, 1, 0, 0, 0, 0, time.UTC),
	}
	for s, want := range good {
		got, err := ParseDate(s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseDate(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{
		"", "10 Jun 2023 08:52:18 UTC", "Sat, 10 Jun 2023 08:52:18", "Sat, 10 Jun 2023 08:52:18 EST",
		"Sat, 10 Jun 2023 08:52:18 +0100", "Sat, 32 Jun 2023 08:52:18 UTC", "Sat, 10 Jux 2023 08:52:18 UTC",
		"Sat, 10 Jun 2023 25:52:18 UTC", "Saturday, 10 Jun 2023 08:52:18 UTC", "2023-06-10T08:52:18Z",
		"Sat, 10 Jun 2023 08:52:18 UTC extra",
	} {
		if got, err := ParseDate(s); err == nil {
			t.Errorf("ParseDate(%q) = %v, want error", s, got)
		}
	}
}

func TestStrongestHash(t *testing.T) {
	tests := []struct {
		e         FileEntry
		algo, hex string
	}{
		{FileEntry{MD5Sum: "m", SHA1: "1", SHA256: "2", SHA512: "5"}, AlgoSHA512, "5"},
		{FileEntry{MD5Sum: "m", SHA1: "1", SHA256: "2"}, AlgoSHA256, "2"},
		{FileEntry{MD5Sum: "m", SHA1: "1"}, AlgoSHA1, "1"},
		{FileEntry{MD5Sum: "m"}, AlgoMD5, "m"},
		{FileEntry{}, "", ""},
	}
	for _, tc := range tests {
		if a, h := tc.e.StrongestHash(); a != tc.algo || h != tc.hex {
			t.Errorf("%+v: got %s %s, want %s %s", tc.e, a, h, tc.algo, tc.hex)
		}
	}
}

func TestByHashPath(t *testing.T) {
	for _, tc := range []struct{ in, algo, want string }{
		{"main/binary-amd64/Packages.xz", AlgoSHA256, "main/binary-amd64/by-hash/SHA256/" + sha256a},
		{"Packages.gz", AlgoSHA256, "by-hash/SHA256/" + sha256a},
		{"main/i18n/Translation-en.bz2", AlgoMD5, "main/i18n/by-hash/MD5Sum/" + sha256a},
	} {
		if got := ByHashPath(tc.in, tc.algo, sha256a); got != tc.want {
			t.Errorf("ByHashPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatDate(t *testing.T) {
	tm := time.Date(2023, 6, 3, 8, 52, 18, 999, time.FixedZone("X", 3600))
	s := FormatDate(tm)
	if s != "Sat, 03 Jun 2023 07:52:18 UTC" {
		t.Fatalf("FormatDate = %q", s)
	}
	back, err := ParseDate(s)
	if err != nil || !back.Equal(tm.Truncate(time.Second)) {
		t.Fatalf("ParseDate(FormatDate) = %v, %v", back, err)
	}
}

// TestFileListValueRoundTrip rebuilds the real bookworm Release's hash lists
// with FileListValue and checks the text equals the archive's own and parses
// back to the same entries.
func TestFileListValueRoundTrip(t *testing.T) {
	r := readInRelease(t, "testdata/bookworm_InRelease")
	var files []FileEntry
	for _, algo := range []string{AlgoMD5, AlgoSHA256} {
		// The archive lists files in its own order; re-create it from Para.
		orig := r.Para.Value(algo)
		files = files[:0]
		for _, l := range strings.Split(orig, "\n")[1:] {
			e, _ := r.File(strings.Fields(l)[2])
			files = append(files, e)
		}
		if got := FileListValue(files, algo); got != orig {
			t.Errorf("%s list differs from the archive's", algo)
		}
	}
	if FileListValue(files, AlgoSHA512) != "" {
		t.Errorf("SHA512 list of files without SHA512 not empty")
	}
	p := *r.Para
	p.Fields = append([]deb822.Field(nil), p.Fields...)
	p.Set(AlgoSHA256, FileListValue(r.Files, AlgoSHA256))
	p.Delete(AlgoMD5)
	var buf bytes.Buffer
	w := deb822.NewWriter(&buf)
	if err := w.Write(&p); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	r2, err := ParseRelease(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Files) != len(r.Files) || r2.Files[0].SHA256 != r.Files[0].SHA256 || r2.Files[0].MD5Sum != "" {
		t.Errorf("rewritten Release parses to different files")
	}
}

// TestIndexFilesSecurityComponents: Debian's security archive lists its
// components as "updates/main" while its files are "main/..." and clients
// say "main"; apt accepts that, and so must the mirror.
func TestIndexFilesSecurityComponents(t *testing.T) {
	r := &Release{Components: []string{"updates/main", "updates/contrib"}, Architectures: []string{"amd64"},
		Files: []FileEntry{{Path: "main/binary-amd64/Packages.xz"}, {Path: "contrib/binary-amd64/Packages.xz"}, {Path: "non-free/binary-amd64/Packages.xz"}}}
	if !r.HasComponent("main") || !r.HasComponent("updates/main") || r.HasComponent("non-free") || r.HasComponent("ain") {
		t.Error("HasComponent disagrees with apt's reading of updates/COMPONENT")
	}
	got := r.IndexFiles([]string{"main"}, []string{"amd64"}, false)
	if len(got) != 1 || got[0].Path != "main/binary-amd64/Packages.xz" {
		t.Errorf("IndexFiles(main) = %v", got)
	}
}
