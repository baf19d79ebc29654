package fetch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkGetVsCurl fetches 2,000 files of 2–8 KiB from a real nginx on
// loopback with 16 parallel workers, and reports the time relative to
// `curl --parallel --parallel-max 16` fetching the same list in the same run
// (the limit the mirror's performance targets are measured against).
//
//	go test -run='^$' -bench=BenchmarkGetVsCurl -benchtime=5x ./mirror/fetch/
func BenchmarkGetVsCurl(b *testing.B) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		b.Skip("curl not installed")
	}
	const nFiles, workers = 2000, 16
	dir := b.TempDir()
	type file struct {
		name string
		want Want
	}
	var files []file
	var total int64
	for i := range nFiles {
		body := randBytes(b, 2048+(i*7919)%6144)
		name := fmt.Sprintf("pool/main/p%d/pkg%d_1.0_amd64.deb", i%100, i)
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			b.Fatal(err)
		}
		files = append(files, file{name, wantOf(body)})
		total += int64(len(body))
	}
	base := startNginx(b, dir)

	// The limit: curl with the same parallelism, writing the same files.
	var cfg strings.Builder
	curlOut := b.TempDir()
	for _, f := range files {
		fmt.Fprintf(&cfg, "url = \"%s/%s\"\noutput = \"%s\"\n", base, f.name, filepath.Join(curlOut, strings.ReplaceAll(f.name, "/", "_")))
	}
	cfgPath := filepath.Join(b.TempDir(), "curl.cfg")
	os.WriteFile(cfgPath, []byte(cfg.String()), 0o644)
	runCurl := func() time.Duration {
		os.RemoveAll(curlOut)
		os.MkdirAll(curlOut, 0o755)
		start := time.Now()
		out, err := exec.Command(curl, "--parallel", "--parallel-max", fmt.Sprint(workers), "-sS", "--fail", "-K", cfgPath).CombinedOutput()
		if err != nil {
			b.Fatalf("curl: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	runOurs := func(i int) time.Duration {
		out := filepath.Join(b.TempDir(), fmt.Sprint(i))
		c := New(Config{Concurrency: workers}, nil)
		defer c.CloseIdleConnections()
		start := time.Now()
		work := make(chan file)
		var wg sync.WaitGroup
		var firstErr error
		var once sync.Once
		for range workers {
			wg.Go(func() {
				for f := range work {
					if _, err := c.Get(context.Background(), base+"/"+f.name, toPath(filepath.Join(out, f.name)), f.want); err != nil {
						once.Do(func() { firstErr = err })
					}
				}
			})
		}
		for _, f := range files {
			work <- f
		}
		close(work)
		wg.Wait()
		d := time.Since(start)
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		return d
	}

	// Interleave the two so both see the same machine load; compare the
	// best of each.
	b.SetBytes(total)
	b.ResetTimer()
	var ours, curlBest time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if d := runCurl(); curlBest == 0 || d < curlBest {
			curlBest = d
		}
		b.StartTimer()
		if d := runOurs(i); ours == 0 || d < ours {
			ours = d
		}
	}
	b.ReportMetric(float64(ours)/float64(curlBest), "x-curl")
	b.ReportMetric(float64(curlBest.Milliseconds()), "curl-ms")
	b.ReportMetric(float64(ours.Milliseconds()), "best-ms")
}
