package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// text returns n bytes of deterministic Packages-like text: compressible like
// a real index, but not trivially.
func text(n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	words := []string{"lib", "python3", "data", "utils", "dev", "common", "tools", "doc",
		"perl", "ruby", "golang", "server", "client", "plugin", "fonts", "x11", "gtk", "qt"}
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		name := words[rng.IntN(len(words))] + "-" + words[rng.IntN(len(words))] + fmt.Sprint(rng.IntN(500))
		fmt.Fprintf(&b, "Package: %s\nVersion: %d.%d.%d-%d\nInstalled-Size: %d\n", name,
			rng.IntN(10), rng.IntN(30), rng.IntN(100), rng.IntN(5), rng.IntN(100000))
		fmt.Fprintf(&b, "Maintainer: Team %s <team@example.org>\nArchitecture: amd64\n", words[rng.IntN(len(words))])
		fmt.Fprintf(&b, "Depends: libc6 (>= 2.%d), %s\n", rng.IntN(40), words[rng.IntN(len(words))])
		fmt.Fprintf(&b, "Filename: pool/main/%c/%s/%s_%d_amd64.deb\nSize: %d\n", name[0], name, name, i, rng.IntN(1<<20))
		fmt.Fprintf(&b, "SHA256: %064x\n\n", rng.Uint64())
	}
	return b.Bytes()[:n]
}

func compressWith(t testing.TB, suffix string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := Create(&buf, "Packages"+suffix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(t testing.TB, suffix string, comp []byte) ([]byte, error) {
	t.Helper()
	rc, err := Open(bytes.NewReader(comp), "Packages"+suffix)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// tool runs a real compressor/decompressor with stdin, skipping when absent.
func tool(t testing.TB, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (Debian package: gzip, xz-utils, zstd or bzip2)", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return out
}

func TestSuffix(t *testing.T) {
	for name, want := range map[string]string{
		"Packages":                              "",
		"Packages.gz":                           ".gz",
		"dists/x/main/binary-amd64/Packages.xz": ".xz",
		"Contents-amd64.zst":                    ".zst",
		"Sources.bz2":                           ".bz2",
		"Packages.lzma":                         ".lzma",
		"Packages.lz4":                          "",
		"foo.tar":                               "",
		"by-hash/SHA256/abc":                    "",
		"a.gz/Packages":                         "",
	} {
		if got := Suffix(name); got != want {
			t.Errorf("Suffix(%q) = %q, want %q", name, got, want)
		}
	}
	if got := TrimSuffix("main/Packages.xz"); got != "main/Packages" {
		t.Errorf("TrimSuffix = %q", got)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, suffix := range WriteSuffixes {
		for _, n := range []int{0, 1, 4095, 300 << 10} {
			t.Run(fmt.Sprintf("%s/%d", suffix, n), func(t *testing.T) {
				data := text(n)
				got, err := readAll(t, suffix, compressWith(t, suffix, data))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("round trip changed %d bytes into %d", len(data), len(got))
				}
			})
		}
	}
}

// Our output must decompress with the reference tools.
func TestRealToolReadsOurs(t *testing.T) {
	data := text(256 << 10)
	for suffix, cmd := range map[string]string{GZ: "gzip", XZ: "xz", ZST: "zstd"} {
		t.Run(suffix, func(t *testing.T) {
			comp := compressWith(t, suffix, data)
			out := tool(t, comp, cmd, "-dc")
			if !bytes.Equal(out, data) {
				t.Fatalf("%s -dc of our %s output differs", cmd, suffix)
			}
			// The reference tool also checks integrity explicitly.
			tool(t, comp, cmd, "-t")
		})
	}
}

// The reference tools' output, at the settings archives use, must
// decompress with ours.
func TestWeReadRealTools(t *testing.T) {
	data := text(1 << 20)
	cases := []struct {
		suffix string
		cmd    string
		args   []string
	}{
		{GZ, "gzip", []string{"-9nc"}},
		{GZ, "gzip", []string{"-1c"}},
		{XZ, "xz", []string{"-6c"}},
		{XZ, "xz", []string{"-9ec"}},
		{XZ, "xz", []string{"-T2", "--block-size=100000", "-c"}}, // multi-block
		{XZ, "xz", []string{"-c", "--check=sha256"}},
		{ZST, "zstd", []string{"-19", "-c"}},
		{ZST, "zstd", []string{"--long=27", "-c"}},
		{ZST, "zstd", []string{"-3", "--no-check", "-c"}},
		{BZ2, "bzip2", []string{"-9c"}},
		{LZMA, "lzma", []string{"-c"}},
		{LZMA, "xz", []string{"--format=lzma", "-9c"}},
	}
	for _, c := range cases {
		t.Run(c.cmd+strings.Join(c.args, ""), func(t *testing.T) {
			comp := tool(t, data, c.cmd, c.args...)
			got, err := readAll(t, c.suffix, comp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
		})
	}
	// Concatenated members/streams are one file to the reference tools.
	for suffix, cmd := range map[string]string{GZ: "gzip", XZ: "xz", ZST: "zstd", BZ2: "bzip2"} {
		t.Run("concat"+suffix, func(t *testing.T) {
			a := tool(t, data[:1000], cmd, "-c")
			b := tool(t, data[1000:5000], cmd, "-c")
			got, err := readAll(t, suffix, append(a, b...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[:5000]) {
				t.Fatal("content differs")
			}
		})
	}
}

// Every proper prefix of a compressed stream is an error, never a short
// success; so is trailing garbage and (where the format has a check) a
// flipped byte.
func TestTruncatedAndCorrupt(t *testing.T) {
	data := text(100 << 10)
	streams := map[string][]byte{}
	for _, s := range WriteSuffixes[1:] {
		streams[s] = compressWith(t, s, data)
	}
	// The xz reader allocates the declared dictionary per open; a small one
	// keeps hundreds of opens fast under -race.
	streams[XZ] = smallXZ(t, data)
	if _, err := exec.LookPath("bzip2"); err == nil {
		streams[BZ2] = tool(t, data, "bzip2", "-c")
	}
	if _, err := exec.LookPath("lzma"); err == nil {
		streams[LZMA] = tool(t, data, "xz", "--format=lzma", "--lzma1=preset=1,dict=64KiB", "-c")
	}
	for suffix, comp := range streams {
		t.Run(suffix, func(t *testing.T) {
			// Every cut near the start and the end, a stride in between.
			for cut := 0; cut < len(comp); cut++ {
				if cut > 64 && cut < len(comp)-64 && cut%997 != 0 {
					continue
				}
				got, err := readAll(t, suffix, comp[:cut])
				if err == nil {
					t.Fatalf("cut at %d of %d: no error, got %d of %d bytes", cut, len(comp), len(got), len(data))
				}
			}
			if _, err := readAll(t, suffix, append(bytes.Clone(comp), "garbage!"...)); err == nil {
				t.Errorf("trailing garbage accepted")
			}
			if suffix == LZMA {
				return // .lzma has no checksum: integrity comes from Release hashes
			}
			for _, pos := range []int{len(comp) / 2, len(comp) - 5} {
				bad := bytes.Clone(comp)
				bad[pos] ^= 0x20
				got, err := readAll(t, suffix, bad)
				if err == nil && !bytes.Equal(got, data) {
					t.Errorf("flipped byte at %d: wrong content without error", pos)
				}
				if err == nil {
					t.Errorf("flipped byte at %d: no error", pos)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	for _, name := range []string{"P.gz", "P.xz", "P.zst", "P.bz2", "P.lzma"} {
		if _, err := readAll(t, "", nil); err != nil {
			t.Fatalf("empty plain: %v", err)
		}
		_, err := readAll(t, Suffix(name), nil)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s empty: err = %v, want unexpected EOF", name, err)
		}
		_, err = readAll(t, Suffix(name), []byte("Package: not compressed\n\n"))
		if err == nil {
			t.Errorf("%s of plain text: no error", name)
		} else if !strings.Contains(err.Error(), "Packages"+Suffix(name)) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := Open(strings.NewReader("x"), "Packages.lz4"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Open .lz4: %v", err)
	}
	for _, name := range []string{"Packages.bz2", "Packages.lzma", "Packages.lz4"} {
		if _, err := Create(io.Discard, name); !errors.Is(err, ErrUnsupported) {
			t.Errorf("Create %s: %v", name, err)
		}
	}
}

// Hostile headers asking for huge dictionaries are refused before allocation.
func TestHugeDictionaryRefused(t *testing.T) {
	small := []byte("hello\n")
	t.Run("xz", func(t *testing.T) {
		comp := tool(t, small, "xz", "-c", "--lzma2=dict=512MiB")
		if _, err := readAll(t, XZ, comp); err == nil || !strings.Contains(err.Error(), "dictionary") {
			t.Fatalf("512 MiB xz dictionary: err = %v", err)
		}
	})
	t.Run("lzma", func(t *testing.T) {
		comp := tool(t, small, "xz", "--format=lzma", "-c", "--lzma1=dict=512MiB")
		if _, err := readAll(t, LZMA, comp); err == nil {
			t.Fatal("512 MiB lzma dictionary accepted")
		}
	})
	t.Run("zstd", func(t *testing.T) {
		// Through a pipe the size is unknown, so the frame keeps its 1 GiB window.
		comp := tool(t, small, "zstd", "-c", "--long=30")
		if _, err := readAll(t, ZST, comp); err == nil {
			t.Fatal("1 GiB zstd window accepted")
		}
	})
}

func TestOpenLimit(t *testing.T) {
	data := text(100 << 10)
	for _, suffix := range WriteSuffixes {
		comp := compressWith(t, suffix, data)
		read := func(limit int64) ([]byte, error) {
			rc, err := OpenLimit(bytes.NewReader(comp), "Packages"+suffix, limit)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return io.ReadAll(rc)
		}
		if got, err := read(int64(len(data))); err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s at exact limit: %v", suffix, err)
		}
		if _, err := read(int64(len(data)) - 1); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s one byte over: err = %v", suffix, err)
		}
	}
	// A gzip bomb: 1 GiB of zeros as 1024 concatenated ~1 KiB members
	// (one file to gzip -d) stops at the limit.
	member := compressWith(t, GZ, make([]byte, 1<<20))
	bomb := bytes.Repeat(member, 1024)
	rc, err := OpenLimit(bytes.NewReader(bomb), "b.gz", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, ErrTooLarge) || n != 1<<20 {
		t.Fatalf("bomb: n=%d err=%v", n, err)
	}
}

// fuzzOpen decompresses arbitrary bytes under a limit: never a panic, never
// more than the limit, and a clean EOF only for a stream that re-encodes
// losslessly is not required (formats differ) — only safety is checked.
func fuzzOpen(f *testing.F, suffix string) {
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	data := text(3000)
	for _, s := range []string{GZ, XZ, ZST} {
		if s == suffix {
			f.Add(compressWith(f, s, data))
		}
	}
	switch suffix {
	case XZ:
		// A small dictionary keeps most mutants cheap to open: the xz
		// reader allocates the whole declared dictionary up front.
		f.Add(smallXZ(f, data))
	case BZ2:
		if _, err := exec.LookPath("bzip2"); err == nil {
			f.Add(tool(f, data, "bzip2", "-c"))
		}
	case LZMA:
		if _, err := exec.LookPath("lzma"); err == nil {
			f.Add(tool(f, data, "lzma", "-c"))
		}
	}
	const limit = 1 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := OpenLimit(bytes.NewReader(b), "F"+suffix, limit)
		if err != nil {
			return
		}
		defer rc.Close()
		n, _ := io.Copy(io.Discard, rc)
		if n > limit {
			t.Fatalf("read %d bytes past limit %d", n, limit)
		}
	})
}

func FuzzOpenGZ(f *testing.F)   { fuzzOpen(f, GZ) }
func FuzzOpenXZ(f *testing.F)   { fuzzOpen(f, XZ) }
func FuzzOpenZST(f *testing.F)  { fuzzOpen(f, ZST) }
func FuzzOpenBZ2(f *testing.F)  { fuzzOpen(f, BZ2) }
func FuzzOpenLZMA(f *testing.F) { fuzzOpen(f, LZMA) }

// benchText is ~50 MB of index text: the real bookworm main Packages when
// this machine has it (apt stores it lz4-compressed), else synthetic text.
func benchText(b *testing.B) []byte {
	const size = 50 << 20
	// The list file name starts with the machine's mirror host; glob it.
	matches, _ := filepath.Glob("/var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_Packages.lz4")
	if len(matches) > 0 {
		real := matches[0]
		if _, err := exec.LookPath("lz4"); err == nil {
			out, err := exec.Command("lz4", "-dc", real).Output()
			if err == nil && len(out) > size/2 {
				b.Logf("using %s (%d bytes)", real, min(len(out), size))
				return out[:min(len(out), size)]
			}
		}
	}
	return text(size)
}

// BenchmarkDecompress measures decompression throughput (MB/s of output) per
// format: go test -run='^$' -bench=Decompress -benchtime=3x ./apt/compress/
func BenchmarkDecompress(b *testing.B) {
	data := benchText(b)
	compressors := []struct {
		suffix string
		cmd    []string
	}{
		{Plain, []string{"cat"}},
		{GZ, []string{"gzip", "-9nc"}},
		{ZST, []string{"zstd", "-19", "-T2", "-c"}},
		{XZ, []string{"xz", "-6", "-T2", "-c"}},
		{BZ2, []string{"bzip2", "-9c"}},
		{LZMA, []string{"lzma", "-1c"}}, // -1: the default level takes minutes on 50 MB
	}
	for _, c := range compressors {
		b.Run(strings.TrimPrefix(c.suffix, ".")+"plain"[:5*btoi(c.suffix == "")], func(b *testing.B) {
			comp := tool(b, data, c.cmd[0], c.cmd[1:]...)
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rc, err := Open(bytes.NewReader(comp), "Packages"+c.suffix)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(data)) {
					b.Fatalf("n=%d err=%v", n, err)
				}
				rc.Close()
			}
			b.ReportMetric(float64(len(comp))/float64(len(data)), "ratio")
			// The reference tool decompressing the same bytes, for a ratio
			// that survives a noisy machine.
			if c.suffix != Plain {
				ref := 0 * time.Second
				for i := 0; i < 3; i++ {
					cmd := exec.Command(c.cmd[0], "-dc")
					cmd.Stdin = bytes.NewReader(comp)
					cmd.Stdout = io.Discard
					start := time.Now()
					if err := cmd.Run(); err != nil {
						b.Fatal(err)
					}
					ref += time.Since(start)
				}
				b.ReportMetric(float64(len(data))*3/ref.Seconds()/1e6, "ref-MB/s")
			}
		})
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// smallXZ compresses data as xz with a 64 KiB dictionary.
func smallXZ(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 1 << 16}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
