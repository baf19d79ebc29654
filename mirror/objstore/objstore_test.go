package objstore

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"gatehouse/apt/apttest"
)

func TestStage(t *testing.T) {
	for key, want := range map[string]int{
		"pool/main/h/hello/hello_1.0_amd64.deb":                 stagePool,
		"dists/stable/main/binary-amd64/by-hash/SHA256/abcd":    stageByHash,
		"dists/stable/main/binary-amd64/Packages.xz":            stageIndex,
		"dists/stable/InRelease":                                stageRelease,
		"dists/stable/Release.gpg":                              stageRelease,
		"sub/Packages.gz":                                       stageIndex,
		"sub/g++_1.0~rc1_amd64.deb":                             stagePool,
		"dists/stable/main/i18n/by-hash/SHA256/Release-looking": stageByHash,
	} {
		if got := stage(key); got != want {
			t.Errorf("stage(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestPublishDeletesAfterGrace runs Publish against a real S3-compatible
// server: unchanged files are skipped, a file changed in the bucket behind
// gatehouse's back (same size) is uploaded again, and an object the new
// file set no longer names stays until the grace period has passed.
func TestPublishDeletesAfterGrace(t *testing.T) {
	s3 := apttest.StartS3(t, "bkt")
	dir := t.TempDir()
	write := func(name, body string) File {
		p := filepath.Join(dir, strings.ReplaceAll(name, "/", "_"))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return File{Key: name, Path: p, Size: int64(len(body))}
	}
	tg := Target{Name: "t", Endpoint: s3.Endpoint, Bucket: "bkt", Prefix: "p/", AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, DeleteAfter: time.Hour}
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, old := write("pool/a+b~1.deb", "aaaa"), write("pool/old.deb", "old")
	rel := write("dists/s/InRelease", "r1")
	res, err := Publish(ctx, tg, []File{a, old, rel}, now, nil)
	if err != nil || res.Uploaded != 3 {
		t.Fatalf("first publish: %+v %v", res, err)
	}
	if code, body := s3.Get(t, "bkt/p/pool/a+b~1.deb"); code != 200 || string(body) != "aaaa" {
		t.Fatalf("GET of a key with + and ~: %d %q", code, body)
	}
	// Changed behind our back, same size: the manifest no longer matches.
	c := s3.Client(t)
	if _, err := c.PutObject(ctx, "bkt", "p/pool/a+b~1.deb", strings.NewReader("XXXX"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	rel2 := write("dists/s/InRelease", "r2")
	res, err = Publish(ctx, tg, []File{a, rel2}, now.Add(time.Minute), nil)
	if err != nil || res.Uploaded != 2 || res.Skipped != 0 || res.Pending != 1 || res.Deleted != 0 {
		t.Fatalf("second publish: %+v %v", res, err)
	}
	if code, _ := s3.Get(t, "bkt/p/pool/old.deb"); code != 200 {
		t.Errorf("old object deleted before its grace period: %d", code)
	}
	if code, body := s3.Get(t, "bkt/p/pool/a+b~1.deb"); code != 200 || string(body) != "aaaa" {
		t.Fatalf("object replaced in the bucket not uploaded again: %d %q", code, body)
	}
	if res, err := Publish(ctx, tg, []File{a, rel2}, now.Add(2*time.Minute), nil); err != nil || res.Uploaded != 0 || res.Skipped != 2 {
		t.Fatalf("publish of an unchanged set: %+v %v", res, err)
	}
	if err := c.RemoveObject(ctx, "bkt", "p/pool/a+b~1.deb", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err = Publish(ctx, tg, []File{a, rel2}, now.Add(2*time.Hour), nil)
	if err != nil || res.Uploaded != 1 || res.Deleted != 1 || res.Pending != 0 {
		t.Fatalf("third publish: %+v %v", res, err)
	}
	if code, _ := s3.Get(t, "bkt/p/pool/old.deb"); code != 404 {
		t.Errorf("old object after its grace period: %d", code)
	}
	if code, body := s3.Get(t, "bkt/p/pool/a+b~1.deb"); code != 200 || string(body) != "aaaa" {
		t.Errorf("removed object not uploaded again: %d %q", code, body)
	}
	// Anonymous users read but do not write.
	req := strings.NewReader("evil")
	resp, err := httpPut(s3.Endpoint+"/bkt/p/pool/evil.deb", req)
	if err == nil && resp < 300 {
		t.Errorf("anonymous PUT accepted: %d", resp)
	}
}

func httpPut(url string, body *strings.Reader) (int, error) {
	req, err := http.NewRequest(http.MethodPut, url, body)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
