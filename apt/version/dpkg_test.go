package version

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testdata/versions.txt holds every distinct Version value of the Debian 12
// main, bookworm-updates and bookworm-security amd64 Packages indexes (21,624
// strings), so the dpkg comparison runs the same on machines whose apt lists
// are empty.

// loadCorpus returns the distinct version strings of testdata/versions.txt
// plus those of any Packages index in /var/lib/apt/lists.
func loadCorpus(t testing.TB) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	data, err := os.ReadFile("testdata/versions.txt")
	if err != nil {
		t.Fatalf("read corpus: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		add(strings.TrimSpace(line))
	}
	fromTestdata := len(out)
	files, _ := filepath.Glob("/var/lib/apt/lists/*Packages*")
	for _, f := range files {
		n, err := versionsFromIndex(f, add)
		if err != nil {
			t.Logf("skipping %s: %v", f, err)
			continue
		}
		t.Logf("%s: %d Version fields", f, n)
	}
	t.Logf("corpus: %d versions from testdata, %d more from apt lists", fromTestdata, len(out)-fromTestdata)
	return out
}

// versionsFromIndex calls add for each Version field of a Packages index.
func versionsFromIndex(path string, add func(string)) (int, error) {
	n := 0
	err := scanIndex(path, func(sc *bufio.Scanner) {
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Version:"); ok {
				add(strings.TrimSpace(v))
				n++
			}
		}
	})
	return n, err
}

// scanIndex streams a possibly compressed index file to body as lines.
// .lz4 and .xz are read through the real decompressor binaries.
func scanIndex(path string, body func(*bufio.Scanner)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	var cmd *exec.Cmd
	switch {
	case strings.HasSuffix(path, ".gz"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			return err
		}
		r = zr
	case strings.HasSuffix(path, ".lz4"), strings.HasSuffix(path, ".xz"):
		tool := "lz4"
		if strings.HasSuffix(path, ".xz") {
			tool = "xz"
		}
		if _, err := exec.LookPath(tool); err != nil {
			return err
		}
		cmd = exec.Command(tool, "-dc")
		cmd.Stdin = f
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		r = out
	case strings.HasSuffix(path, "Packages"):
	default:
		return errors.New("unknown compression")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	body(sc)
	err = sc.Err()
	if cmd != nil {
		_, _ = io.Copy(io.Discard, r)
		if werr := cmd.Wait(); err == nil {
			err = werr
		}
	}
	return err
}

// generatedVersions builds deterministic tricky versions: epochs, '~' and
// '~~', '+', '.', '-' inside upstream, ':' inside upstream, letters of both
// cases, leading zeros, 40-digit runs, empty and odd revisions.
func generatedVersions() []string {
	rng := rand.New(rand.NewPCG(3, 4))
	epochs := []string{"", "", "", "0:", "1:", "2:", "00:", "01:", "10:", "2147483647:"}
	nums := []string{"0", "1", "2", "9", "00", "01", "10", "010", "99", "100",
		"1234567890123456789012345678901234567890", "1234567890123456789012345678901234567891",
		"0001234567890123456789012345678901234567890", "99999999999999999999999999999999999999999"}
	words := []string{"a", "b", "z", "A", "Z", "rc", "beta", "alpha", "dfsg", "ds", "git", "b", "deb", "ubuntu", "esm"}
	seps := []string{".", ".", "+", "~", "~~", "-", ""}
	revs := []string{"", "", "-1", "-0", "-00", "-1.1", "-1~", "-1~~", "-1+b1", "-0ubuntu1", "-a", "-~", "-1.0+deb12u1", "-1+", "-1.", "-10", "-9"}
	set := map[string]bool{}
	var out []string
	addV := func(s string) {
		if !set[s] {
			set[s] = true
			out = append(out, s)
		}
	}
	for _, s := range []string{"1.0~", "1.0", "1.0~~", "1.0~a", "1.0a", "1.0+", "1.0.", "1.0-1", "1.0~-1", "1.0-0",
		"0:1.0", "1:1.0", "1.00", "1.000", "1.01", "1.1", "1.0a~", "1.0A", "1.0z", "1.0Z", "1~", "1~~~", "1~~",
		"1:0", "0:0", "0", "00", "1.0-1~", "1.0-1~~", "1.0-1+", "2:1:2", "1:1:2-3", "1-2-3", "a", "A", "z1.0", "~1"} {
		addV(s)
	}
	for len(out) < 4000 {
		var b strings.Builder
		ep := epochs[rng.IntN(len(epochs))]
		b.WriteString(ep)
		if rng.IntN(20) == 0 {
			b.WriteString(words[rng.IntN(len(words))])
		} else {
			b.WriteString(nums[rng.IntN(len(nums))])
		}
		for range rng.IntN(5) {
			sep := seps[rng.IntN(len(seps))]
			if ep != "" && rng.IntN(15) == 0 {
				sep = ":"
			}
			b.WriteString(sep)
			if rng.IntN(2) == 0 {
				b.WriteString(nums[rng.IntN(len(nums))])
			} else {
				b.WriteString(words[rng.IntN(len(words))])
			}
		}
		if rng.IntN(6) == 0 {
			b.WriteString([]string{"~", "~~", "+", ".", "~a"}[rng.IntN(5)])
		}
		rev := revs[rng.IntN(len(revs))]
		up := b.String()
		if rev == "" && strings.Contains(strings.TrimPrefix(up, ep), "-") {
			rev = "-1" // a '-' in upstream needs a revision after it
		}
		s := up + rev
		if _, err := Parse(s); err == nil {
			addV(s)
		}
	}
	return out
}

// dpkgOp is the --compare-versions operator that is true exactly when
// Compare returned c.
func dpkgOp(c int) string {
	switch {
	case c < 0:
		return "lt"
	case c > 0:
		return "gt"
	}
	return "eq"
}

type pair struct{ a, b string }

// dpkgAll makes TestCompareAgainstDpkg check every adjacent pair of the
// sorted corpus (about 27,000 dpkg runs) instead of every other one.
var dpkgAll = flag.Bool("dpkg.all", false, "compare every adjacent corpus pair with dpkg (slow)")

// TestCompareAgainstDpkg checks Compare against the real
// `dpkg --compare-versions` on neighbours of the whole corpus sorted by
// Compare (the hardest pairs: they differ least), on reversed neighbours and
// on random pairs. For each pair dpkg is asked the relation Compare claims,
// so exit 0 confirms the exact result and exit 1 is a mismatch. By default
// every other adjacency is checked (about 14,000 dpkg runs, keeping the test
// well under a minute on a busy 2-core machine); -dpkg.all checks all of
// them, which verifies our whole total order against dpkg's.
func TestCompareAgainstDpkg(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg not installed")
	}
	strs := append(loadCorpus(t), generatedVersions()...)
	type pv struct {
		s string
		v Version
	}
	var vs []pv
	for _, s := range strs {
		v, err := Parse(s)
		if err != nil {
			// Every Version in a real archive must parse.
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		vs = append(vs, pv{s, v})
	}
	slices.SortStableFunc(vs, func(x, y pv) int { return Compare(x.v, y.v) })
	var pairs []pair
	for i := 1; i < len(vs); i++ {
		if i%2 == 1 || *dpkgAll {
			pairs = append(pairs, pair{vs[i-1].s, vs[i].s})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		pairs = append(pairs, pair{vs[rng.IntN(len(vs))].s, vs[rng.IntN(len(vs))].s})
	}
	// Reversed neighbours check the other sign.
	for i := 1; i < len(vs); i += 50 {
		pairs = append(pairs, pair{vs[i].s, vs[i-1].s})
	}
	if testing.Short() {
		rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
		pairs = pairs[:min(len(pairs), 2000)]
	} else if len(pairs) < 10000 {
		t.Fatalf("only %d pairs; the corpus is too small", len(pairs))
	}

	start := time.Now()
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	work := make(chan pair)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				c, _ := CompareStrings(p.a, p.b)
				op := dpkgOp(c)
				var stderr bytes.Buffer
				cmd := exec.Command(dpkg, "--compare-versions", p.a, op, p.b)
				cmd.Stderr = &stderr
				err := cmd.Run()
				var msg string
				var ee *exec.ExitError
				switch {
				case err == nil:
				case errors.As(err, &ee) && ee.ExitCode() == 1:
					msg = fmt.Sprintf("Compare(%q, %q) = %d but dpkg says not %q", p.a, p.b, c, op)
				default:
					msg = fmt.Sprintf("dpkg --compare-versions %q %s %q: %v: %s", p.a, op, p.b, err, stderr.String())
				}
				if msg != "" {
					mu.Lock()
					failures = append(failures, msg)
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range pairs {
		work <- p
	}
	close(work)
	wg.Wait()
	t.Logf("%d pairs (%d versions) checked against %s in %v", len(pairs), len(vs), dpkg, time.Since(start).Round(time.Millisecond))
	for i, f := range failures {
		if i == 20 {
			t.Errorf("... and %d more", len(failures)-20)
			break
		}
		t.Error(f)
	}
}

// TestParseErrorsAgainstDpkg checks that what we reject dpkg rejects too
// (exit 2) or at least warns about (the characters policy forbids, where we
// are deliberately stricter).
func TestParseErrorsAgainstDpkg(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg not installed")
	}
	hard := []string{"1:", "a:1", ":1", "1.0-", "-1", "1:-1", "1 2", "2147483648:1", "99999999999999999999:1", "x:y", "1.0-1-"}
	warn := []string{"1.0_1", "1:1.0-1:2", "1.0!", "1.0-a_b", "1.0=2", "1.0\u00e9"}
	for _, s := range append(hard, warn...) {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", s)
		}
	}
	for _, s := range hard {
		out, err := exec.Command(dpkg, "--compare-versions", s, "eq", "1").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("dpkg on %q: %v (%s), want exit 2", s, err, out)
		}
	}
	for _, s := range warn {
		out, _ := exec.Command(dpkg, "--compare-versions", s, "eq", "1").CombinedOutput()
		if !bytes.Contains(out, []byte("bad syntax")) {
			t.Errorf("dpkg on %q printed %q, want a bad-syntax warning or error", s, out)
		}
	}
}
