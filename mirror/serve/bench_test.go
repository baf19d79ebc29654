package serve

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// BenchmarkServe measures GETs of small pool files (2 KiB, the typical size
// of many small packages and index diffs) and of a 1 MiB file, over
// loopback with keep-alive, with the access log on (discarded).
//
//	go test -run='^$' -bench=BenchmarkServe -benchtime=3s ./mirror/serve/
func BenchmarkServe(b *testing.B) {
	f := newFixture(b)
	const nSmall = 256
	for i := range nSmall {
		p, err := f.st.PoolPath(fmt.Sprintf("main/p/pkg%d/pkg%d_1.0_amd64.deb", i, i))
		if err != nil {
			b.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, randBytes(b, 2048), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	big, _ := f.st.PoolPath("main/b/big/big_1.0_amd64.deb")
	os.MkdirAll(filepath.Dir(big), 0o755)
	if err := os.WriteFile(big, randBytes(b, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	srv := f.server(b, nil)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	fetch := func(b *testing.B, url string, size int64) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
	}
	b.Run("small-2KiB", func(b *testing.B) {
		b.SetBytes(2048)
		var ctr atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := ctr.Add(1) % nSmall
				fetch(b, fmt.Sprintf("%s/debian/pool/main/p/pkg%d/pkg%d_1.0_amd64.deb", srv.URL, i, i), 2048)
			}
		})
	})
	b.Run("dists-InRelease", func(b *testing.B) {
		size := int64(len(f.files["/debian/dists/stable/InRelease"]))
		b.SetBytes(size)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				fetch(b, srv.URL+"/debian/dists/stable/InRelease", size)
			}
		})
	})
	b.Run("large-1MiB", func(b *testing.B) {
		b.SetBytes(1 << 20)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				fetch(b, srv.URL+"/debian/pool/main/b/big/big_1.0_amd64.deb", 1<<20)
			}
		})
	})
}
