package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"gatehouse/apt/apttest"
	"gatehouse/bastion/record"
	"gatehouse/bastion/recupload"
)

// TestRecordingsVerifyRemote uploads recordings written by the bastion's
// recorder (with a checkpointed index, and one recording still open) to a
// real S3-compatible server with the bastion's uploader, then checks them
// with `recordings verify --remote` from a config that has no recordings
// directory: 0 when intact (the open one a note), 3 when an object was
// changed, 3 when one was removed, 3 for an object added beside them. A
// credentials file others can read is refused (2).
func TestRecordingsVerifyRemote(t *testing.T) {
	s3 := apttest.StartS3(t, "rec")
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "recording_key")
	if err := record.GenerateSigningKey(keyPath); err != nil {
		t.Fatal(err)
	}
	signer, err := record.LoadSigningKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "recordings")
	index, err := record.OpenAudit(filepath.Join(root, record.IndexName), nil)
	if err != nil {
		t.Fatal(err)
	}
	index.EnableCheckpoints(signer, "index", nil, 0)
	for _, id := range []string{"c1-1", "c2-1"} {
		rec, err := record.NewRecording(record.RecorderConfig{Dir: root, SigningKey: signer, Index: index}, id,
			record.Meta{User: "root", Principal: "admin", Start: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := rec.Channel(0, "session", "xterm", 80, 24)
		ch.Output([]byte("hello from " + id + "\r\n"))
		if err := rec.Close("done"); err != nil {
			t.Fatal(err)
		}
	}
	open, err := record.NewRecording(record.RecorderConfig{Dir: root, SigningKey: signer, Index: index}, "c3-open",
		record.Meta{User: "root", Principal: "admin", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close("test over")
	if err := index.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	target := recupload.Target{Name: "store", Endpoint: s3.Endpoint, Bucket: "rec", Prefix: "bastion1",
		AccessKey: s3.AccessKey, SecretKey: s3.SecretKey}
	up, err := recupload.New(target, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := 0
	for _, id := range []string{"c1-1", "c2-1"} {
		ents, _ := os.ReadDir(filepath.Join(root, id))
		want += len(ents)
	}
	if n, err := up.Pass(ctx); err != nil || n != want {
		t.Fatalf("upload pass: %d files, %v (want the %d files of the 2 sealed recordings, not the open one)", n, err, want)
	}
	if n, err := up.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("second pass uploaded %d files again, %v", n, err)
	}

	creds := filepath.Join(dir, "s3-credentials")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3.AccessKey, s3.SecretKey)), 0o600)
	conf := filepath.Join(dir, "auditor.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("state_dir = %q\n\n[[publish_target]]\nname = \"store\"\ntype = \"s3\"\nendpoint = %q\nbucket = \"rec\"\nprefix = \"bastion1\"\ncredentials_file = %q\n",
		filepath.Join(dir, "nowhere"), s3.Endpoint, creds)), 0o644)
	verify := func() (int, string) {
		t.Helper()
		code, out, errs := ghRun(t, "--config", conf, "recordings", "verify", "--remote", "store", "--key", keyPath+".pub")
		return code, out + errs
	}
	if code, out := verify(); code != 0 || !strings.Contains(out, "c1-1: OK") || !strings.Contains(out, "c3-open: in progress") {
		t.Fatalf("intact bucket: exit %d\n%s", code, out)
	}

	c := s3.Client(t)
	key := "bastion1/c2-1/ch00.cast"
	b := []byte(readAllObject(t, c, key))
	b[len(b)-3] ^= 1 // one bit of recorded output
	put := func(k string, body []byte) {
		t.Helper()
		if _, err := c.PutObject(ctx, "rec", k, strings.NewReader(string(body)), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	good := readAllObject(t, c, key)
	put(key, b)
	if code, out := verify(); code != 3 || !strings.Contains(out, "c2-1") {
		t.Fatalf("changed object: exit %d, want 3\n%s", code, out)
	}
	put(key, []byte(good))
	if code, out := verify(); code != 0 {
		t.Fatalf("restored object: exit %d\n%s", code, out)
	}
	if err := c.RemoveObject(ctx, "rec", "bastion1/c1-1/manifest.json.sig", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(); code != 3 || !strings.Contains(out, "c1-1") {
		t.Fatalf("removed signature: exit %d, want 3\n%s", code, out)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "c1-1"))
	for _, e := range ents {
		c.RemoveObject(ctx, "rec", "bastion1/c1-1/"+e.Name(), minio.RemoveObjectOptions{})
	}
	if code, out := verify(); code != 3 || !strings.Contains(out, "c1-1") {
		t.Fatalf("removed recording: exit %d, want 3\n%s", code, out)
	}
	if _, err := up.Pass(ctx); err != nil { // the uploader puts it back
		t.Fatal(err)
	}
	if code, out := verify(); code != 0 {
		t.Fatalf("re-uploaded: exit %d\n%s", code, out)
	}
	put("bastion1/notes.txt", []byte("stray"))
	put("bastion1/c1-1/sub/deeper", []byte("stray"))
	if code, out := verify(); code != 3 || !strings.Contains(out, "not recordings") {
		t.Fatalf("stray objects: exit %d, want 3\n%s", code, out)
	}

	os.Chmod(creds, 0o644)
	if code, out := verify(); code != 2 || !strings.Contains(out, "chmod 600") {
		t.Fatalf("world-readable credentials: exit %d, want 2\n%s", code, out)
	}
}

func readAllObject(t *testing.T, c *minio.Client, key string) string {
	t.Helper()
	o, err := c.GetObject(context.Background(), "rec", key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := o.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}
