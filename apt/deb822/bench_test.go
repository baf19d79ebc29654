package deb822

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// synthStanza appends one Packages stanza shaped like a real bookworm entry:
// ~20 fields, long Depends, a folded Tag and a multi-line Description.
func synthStanza(b []byte, i int) []byte {
	name := fmt.Sprintf("pkg%05d-%s", i, strings.Repeat("x", i%13))
	b = fmt.Appendf(b, "Package: %s\nSource: src%05d (%d.%d-%d)\nVersion: 1:%d.%d.%d~rc%d-%d+deb12u%d\n",
		name, i/3, i%7, i%11, i%5, i%9, i%17, i%31, i%3, i%4, i%2)
	b = fmt.Appendf(b, "Installed-Size: %d\nMaintainer: Example Team <team-%d@example.org>\nArchitecture: amd64\nMulti-Arch: same\n", 100+i*7%90000, i%500)
	b = append(b, "Depends: libc6 (>= 2.34), libgcc-s1 (>= 3.0), libstdc++6 (>= 12), zlib1g (>= 1:1.2.0), libssl3 (>= 3.0.0), debconf (>= 0.5) | debconf-2.0\n"...)
	if i%3 == 0 {
		b = append(b, "Pre-Depends: dpkg (>= 1.15.6~)\nRecommends: ca-certificates\nBreaks: old-thing (<< 2.0)\n"...)
	}
	b = fmt.Appendf(b, "Description: example package number %d for benchmarks\n", i)
	b = fmt.Appendf(b, "Homepage: https://example.org/%s\nDescription-md5: %032x\n", name, i*7919)
	b = append(b, "Tag: devel::library, implemented-in::c, role::shared-lib,\n suite::debian, use::gameplaying\n"...)
	b = fmt.Appendf(b, "Section: libs\nPriority: optional\nFilename: pool/main/p/%s/%s_1.0-1_amd64.deb\nSize: %d\n", name, name, 1000+i*31)
	b = fmt.Appendf(b, "MD5sum: %032x\nSHA256: %064x\n\n", i*104729, i*1299709)
	return b
}

// synthLong is a stanza with a long multi-line description, as in the
// Translation files and some Packages files.
func synthLong(b []byte, i int) []byte {
	b = fmt.Appendf(b, "Package: long%05d\nVersion: 2.%d\nArchitecture: all\nDescription: a package with a long description\n", i, i)
	for j := range 12 {
		if j == 6 {
			b = append(b, " .\n"...)
			continue
		}
		b = fmt.Appendf(b, " Line %d of the extended description explains what this package does in detail.\n", j)
	}
	b = fmt.Appendf(b, "Filename: pool/main/l/long%05d_2.%d_all.deb\nSize: %d\nSHA256: %064x\n\n", i, i, 500+i, i)
	return b
}

// synthReader generates n stanzas on the fly, so that measuring the heap of a
// streaming pass does not count the input itself.
type synthReader struct {
	i, n int
	buf  []byte
	off  int
}

func (s *synthReader) Read(p []byte) (int, error) {
	for s.off == len(s.buf) {
		if s.i == s.n {
			return 0, io.EOF
		}
		s.buf, s.off = s.buf[:0], 0
		for range 64 {
			if s.i == s.n {
				break
			}
			if s.i%8 == 7 {
				s.buf = synthLong(s.buf, s.i)
			} else {
				s.buf = synthStanza(s.buf, s.i)
			}
			s.i++
		}
	}
	n := copy(p, s.buf[s.off:])
	s.off += n
	return n, nil
}

const synthStanzas = 64000

var synthOnce = sync.OnceValue(func() []byte {
	b, _ := io.ReadAll(&synthReader{n: synthStanzas})
	return b
})

func drain(tb testing.TB, r io.Reader, name string) (paragraphs, fields int) {
	rd := NewReader(r, name, Limits{})
	for {
		p, err := rd.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		paragraphs++
		fields += len(p.Fields)
	}
}

// BenchmarkReader parses ~50 MB of synthetic Packages text held in memory.
func BenchmarkReader(b *testing.B) {
	data := synthOnce()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if n, _ := drain(b, bytes.NewReader(data), "synthetic"); n != synthStanzas {
			b.Fatalf("%d paragraphs, want %d", n, synthStanzas)
		}
	}
}

// TestStreamingPeakHeap streams ~50 MB of generated Packages text and checks
// the heap never exceeds the 32 MiB bound while doing so.
func TestStreamingPeakHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 50 MB")
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	src := &synthReader{n: synthStanzas}
	cr := &countingReader{r: src}
	rd := NewReader(cr, "synthetic", Limits{})
	var peak uint64
	n := 0
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n%500 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if n != synthStanzas || cr.n < 40<<20 {
		t.Fatalf("read %d paragraphs, %d bytes: generator broken", n, cr.n)
	}
	t.Logf("streamed %.1f MB, %d paragraphs; heap in use: base %.1f MiB, peak %.1f MiB",
		float64(cr.n)/1e6, n, float64(base)/(1<<20), float64(peak)/(1<<20))
	if peak > 32<<20 {
		t.Fatalf("peak heap %.1f MiB exceeds 32 MiB", float64(peak)/(1<<20))
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// realPackagesSource finds the largest main amd64 Packages file in apt's
// lists directory and returns a command that decompresses it to stdout (nil
// for a plain file) and the path. It skips when there is none (apt-get
// update never ran) or its decompressor is missing.
func realPackagesSource(tb testing.TB) (*exec.Cmd, string) {
	tb.Helper()
	files, _ := filepath.Glob("/var/lib/apt/lists/*_main_binary-amd64_Packages*")
	var best string
	var bestSize int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > bestSize {
			best, bestSize = f, fi.Size()
		}
	}
	if best == "" {
		tb.Skip("no /var/lib/apt/lists/*_main_binary-amd64_Packages*")
	}
	tool := map[string]string{".lz4": "lz4", ".xz": "xz", ".gz": "gzip", ".zst": "zstd"}[filepath.Ext(best)]
	if tool == "" {
		return nil, best
	}
	if _, err := exec.LookPath(tool); err != nil {
		tb.Skipf("%s needs %s", best, tool)
	}
	return exec.Command(tool, "-dc", best), best
}

// realPackages returns the decompressed real Packages file (see
// realPackagesSource).
func realPackages(tb testing.TB) []byte {
	tb.Helper()
	cmd, path := realPackagesSource(tb)
	if cmd == nil {
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("%v: %v", cmd.Args, err)
	}
	return out
}

// TestRealPackagesStreamingHeap streams the real Packages file from its
// decompressor's pipe and checks the heap stays under the 32 MiB.
func TestRealPackagesStreamingHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("streams a 50 MB file")
	}
	cmd, path := realPackagesSource(t)
	var in io.Reader
	if cmd == nil {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		in = f
	} else {
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Close the pipe before waiting, so a failing test does not leave
		// the decompressor blocked on a full pipe.
		defer func() { out.Close(); cmd.Wait() }()
		in = out
	}
	runtime.GC()
	cr := &countingReader{r: in}
	rd := NewReader(cr, path, Limits{})
	var ms runtime.MemStats
	var peak uint64
	n := 0
	for {
		_, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n++; n%500 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	t.Logf("%s: %.1f MB, %d paragraphs, peak heap in use %.1f MiB", path, float64(cr.n)/1e6, n, float64(peak)/(1<<20))
	if peak > 32<<20 {
		t.Fatalf("peak heap %.1f MiB exceeds 32 MiB", float64(peak)/(1<<20))
	}
}

// BenchmarkReaderRealPackages parses the real Packages file from memory.
func BenchmarkReaderRealPackages(b *testing.B) {
	data := realPackages(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		drain(b, bytes.NewReader(data), "Packages")
	}
}

// BenchmarkReaderRealPackagesGzip includes gzip decompression (stdlib), for
// comparison with `zcat Packages.gz | wc -l` on the same data.
func BenchmarkReaderRealPackagesGzip(b *testing.B) {
	data := realPackages(b)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(data)
	zw.Close()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		drain(b, zr, "Packages.gz")
	}
}

// TestRealPackages reads every stanza of the real Packages file and checks
// that writing and re-reading it is lossless.
func TestRealPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("reads a 50 MB file")
	}
	data := realPackages(t)
	n, fields := drain(t, bytes.NewReader(data), "Packages")
	if n < 1000 {
		t.Fatalf("only %d paragraphs in %d bytes", n, len(data))
	}
	t.Logf("%d paragraphs, %d fields, %d bytes", n, fields, len(data))
	rd := NewReader(bytes.NewReader(data), "Packages", Limits{})
	var out bytes.Buffer
	w := NewWriter(&out)
	for {
		p, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	// The only normalisation is dropping trailing whitespace (a few real
	// Description lines have it) and the final blank line.
	var want bytes.Buffer
	for line := range bytes.Lines(bytes.TrimRight(data, "\n")) {
		want.Write(bytes.TrimRight(line, " \t\r\n"))
		want.WriteByte('\n')
	}
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Errorf("writing the real Packages file back changed it beyond trailing whitespace (%d vs %d bytes)", out.Len(), want.Len())
	}
}
