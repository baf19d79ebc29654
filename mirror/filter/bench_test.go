package filter

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/apt"
)

// bookwormSelection is a 50-package selection typical of a server segment.
var bookwormSelection = []string{
	"openssh-server", "openssh-client", "nginx", "python3", "curl", "vim", "git", "rsync", "sudo", "tmux",
	"htop", "less", "lsof", "strace", "tcpdump", "iproute2", "iptables", "nftables", "chrony", "cron",
	"logrotate", "rsyslog", "ca-certificates", "gnupg", "wget", "unzip", "zstd", "xz-utils", "bzip2", "jq",
	"postgresql-15", "redis-server", "haproxy", "certbot", "python3-requests", "python3-yaml", "python3-venv", "build-essential", "make", "gcc",
	"openjdk-17-jre-headless", "nodejs", "golang-go", "docker.io", "podman", "ansible", "prometheus-node-exporter", "apparmor", "auditd", "systemd",
}

// listsPackages returns apt's lz4-compressed copy of a suite's main amd64
// Packages in /var/lib/apt/lists, skipping tb when it or lz4 is absent.
func listsPackages(tb testing.TB, suite string) string {
	tb.Helper()
	files, _ := filepath.Glob("/var/lib/apt/lists/*_dists_" + suite + "_main_binary-amd64_Packages.lz4")
	if len(files) == 0 {
		tb.Skipf("no %s main amd64 Packages in /var/lib/apt/lists", suite)
	}
	if _, err := exec.LookPath("lz4"); err != nil {
		tb.Skip("lz4 not installed")
	}
	return files[0]
}

// addLists streams a Packages.lz4 file into u as suite's main.
func addLists(tb testing.TB, u *Universe, suite, file string) {
	tb.Helper()
	cmd := exec.Command("lz4", "-dc", file)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	pr := apt.NewPackagesReader(bufio.NewReaderSize(out, 1<<16), file)
	for {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := u.Add(suite, "main", p); err != nil {
			tb.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		tb.Fatal(err)
	}
}

// loadBookworm streams bookworm main amd64 into a Universe.
func loadBookworm(tb testing.TB) *Universe {
	tb.Helper()
	file := listsPackages(tb, "bookworm")
	u := NewUniverse()
	addLists(tb, u, "bookworm", file)
	return u
}

// peakRSS returns the process's peak resident set size (VmHWM) in MiB.
func peakRSS() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// BenchmarkResolveBookworm measures issue 7's target: closure over
// bookworm main amd64 (~63k packages) for a 50-package selection in ≤ 2 s
// and ≤ 200 MiB RSS. Reproduce with
//
//	go test -run='^$' -bench=ResolveBookworm -benchtime=3x ./mirror/filter/
//
// load-s is reading the Packages file into the Universe, ns/op the
// resolve alone, total-s the load plus the first resolve; heap-MiB is the live heap holding the Universe; rss-MiB the
// process's peak RSS (test binary included).
func BenchmarkResolveBookworm(b *testing.B) {
	start := time.Now()
	u := loadBookworm(b)
	load := time.Since(start)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	spec := Spec{Include: bookwormSelection, WithDependencies: true, Architectures: []string{"amd64"}}
	first := time.Now()
	res, err := Resolve(u, spec)
	if err != nil {
		b.Fatal(err)
	}
	total := load + time.Since(first)
	b.ResetTimer()
	for b.Loop() {
		var err error
		if res, err = Resolve(u, spec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(res.Unsatisfied) != 0 {
		b.Errorf("bookworm selection has problems: %v", res.Unsatisfied)
	}
	b.ReportMetric(load.Seconds(), "load-s")
	b.ReportMetric(total.Seconds(), "total-s")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
	b.ReportMetric(peakRSS(), "rss-MiB")
	b.ReportMetric(float64(len(res.Selected)), "selected")
	b.ReportMetric(float64(u.Len()), "packages")
	runtime.KeepAlive(u)
}

// BenchmarkUniverse100k measures what max_packages bounds in a filtered
// sync: the heap a Universe of 100,000 distinct packages holds, per
// package. The stanzas are synthetic but Debian-sized (about 800 bytes of
// Packages text each, as bookworm main averages). Reproduce with
//
//	go test -run='^$' -bench=Universe100k -benchtime=1x ./mirror/filter/
func BenchmarkUniverse100k(b *testing.B) {
	const n = 100_000
	var text strings.Builder
	for i := range n {
		fmt.Fprintf(&text, `Package: pkg%06d
Source: src%05d
Version: 1.%d.%d-1+deb12u1
Installed-Size: %d
Maintainer: Example Maintainers <pkg-maint@example.org>
Architecture: amd64
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.0), pkg%06d (= 1.%d.%d-1+deb12u1), zlib1g (>= 1:1.2.0)
Description: example package number %d for measuring the universe
 This is the long description of an example package. It runs over a few
 lines, as most Debian descriptions do, so the stanza is the usual size.
Homepage: https://example.org/projects/pkg%06d
Description-md5: %032x
Section: libs
Priority: optional
Filename: pool/main/p/src%05d/pkg%06d_1.%d.%d-1+deb12u1_amd64.deb
Size: %d
MD5sum: %032x
SHA256: %064x

`, i, i/3, i%7, i%13, 100+i%5000, (i+1)%n, i%7, i%13, i, i, i, i/3, i, i%7, i%13, 4096+i, i, i)
	}
	in := text.String()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		u := NewUniverse()
		pr := apt.NewPackagesReader(strings.NewReader(in), "synthetic")
		for {
			p, err := pr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := u.Add("stable", "main", p); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if u.Len() != n {
			b.Fatalf("universe holds %d packages, want %d", u.Len(), n)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/pkg")
		b.ReportMetric(float64(len(in))/n, "text-B/pkg")
		runtime.KeepAlive(u)
	}
}
