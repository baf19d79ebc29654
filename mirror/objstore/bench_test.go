package objstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"gatehouse/apt/apttest"
)

// BenchmarkPublishVsPlainUpload measures what Publish's order, listing,
// hashing and manifest cost over a plain upload of the same files with the
// same client library and concurrency, against a real S3-compatible server
// on loopback: a first Publish into an empty prefix, a plain FPutObject of
// every file, and a second Publish with nothing changed (list + compare).
// GATEHOUSE_BENCH_FILES sets the number of files (default 20000; 1-16 KiB
// each, 90% pool files, the rest indexes and by-hash). Run it with
//
//	go test -run '^$' -bench PublishVsPlain -benchtime 1x ./mirror/objstore/
func BenchmarkPublishVsPlainUpload(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("GATEHOUSE_BENCH_FILES")); err == nil && v > 0 {
		n = v
	}
	s3 := apttest.StartS3(b, "bench")
	dir := b.TempDir()
	files := make([]File, n)
	var total int64
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 16<<10)
	for i := range files {
		key := fmt.Sprintf("pool/main/p/pkg%05d/pkg%05d_1.0+b1~rc_amd64.deb", i, i)
		switch {
		case i%10 == 1:
			key = fmt.Sprintf("dists/stable/main/binary-amd64/by-hash/SHA256/%064x", i)
		case i%10 == 2:
			key = fmt.Sprintf("dists/stable/main/i18n/Translation-%05d", i)
		}
		size := 1<<10 + rng.IntN(15<<10)
		for j := range size {
			buf[j] = byte(rng.Uint32())
		}
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			b.Fatal(err)
		}
		files[i] = File{Key: key, Path: p, Size: int64(size), Pool: i%10 >= 3}
		total += int64(size)
	}
	files = append(files, File{Key: "dists/stable/InRelease", Path: files[0].Path, Size: files[0].Size})
	tg := Target{Name: "bench", Endpoint: s3.Endpoint, Bucket: "bench", AccessKey: s3.AccessKey, SecretKey: s3.SecretKey}
	ctx := context.Background()
	c := s3.Client(b)
	// Warm the server up (volume creation, connections) so that neither
	// measured run pays for it.
	for _, f := range files[:min(len(files), 2000)] {
		if _, err := c.FPutObject(ctx, "bench", "warm/"+f.Key, f.Path, minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		t0 := time.Now()
		tg.Prefix = "plain"
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(8)
		for _, f := range files {
			g.Go(func() error {
				_, err := c.FPutObject(gctx, "bench", tg.key(f.Key), f.Path, minio.PutObjectOptions{ContentType: "application/octet-stream"})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		plain := time.Since(t0)

		tg.Prefix = "published"
		t0 = time.Now()
		res, err := Publish(ctx, tg, files, time.Now(), nil)
		if err != nil || res.Uploaded != len(files) {
			b.Fatalf("publish: %+v %v", res, err)
		}
		pub := time.Since(t0)
		t0 = time.Now()
		res, err = Publish(ctx, tg, files, time.Now(), nil)
		if err != nil || res.Skipped != len(files) {
			b.Fatalf("second publish: %+v %v", res, err)
		}
		again := time.Since(t0)
		b.ReportMetric(plain.Seconds(), "plain-s")
		b.ReportMetric(pub.Seconds(), "publish-s")
		b.ReportMetric(pub.Seconds()/plain.Seconds(), "publish/plain")
		b.ReportMetric(again.Seconds(), "unchanged-publish-s")
		b.Logf("%d files, %d MiB: plain upload %v, Publish %v (%.2fx), Publish with nothing changed %v",
			len(files), total>>20, plain.Round(time.Millisecond), pub.Round(time.Millisecond), pub.Seconds()/plain.Seconds(), again.Round(time.Millisecond))
	}
}
