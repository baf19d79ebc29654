package bastion

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/record"
	"gatehouse/bastion/recupload"
)

// TestRecordingsUpload: with recordings_upload, a proxied session's
// recording reaches a real S3-compatible server once sealed (the bastion
// notifies its uploader when the session ends), and what is in the bucket
// verifies against the recording key, downloaded without the bastion's
// state.
func TestRecordingsUpload(t *testing.T) {
	s3 := apttest.StartS3(t, "rec")
	target := &recupload.Target{Name: "store", Endpoint: s3.Endpoint, Bucket: "rec", Prefix: "b1",
		AccessKey: s3.AccessKey, SecretKey: s3.SecretKey}
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) { c.RecordingsTarget = target })
	key, cert, id := b.admin(t)
	login := fmt.Sprintf("%s@%s", e.sshd.User, e.target())
	r := sshtest.SSH(t, append(sshtest.ClientOptions(b.known+"-B", key.Priv, cert), "-p", strconv.Itoa(b.port), login+"@127.0.0.1", "echo uploaded-session")...)
	if r.Exit != 0 || r.Stdout != "uploaded-session\n" {
		t.Fatalf("session: %s", r)
	}
	dir, _ := b.recordingOf(t, id)
	recID := filepath.Base(dir)
	// The upload follows the session's end; wait for the signature, the
	// last file of a recording to go up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, _ := s3.Get(t, "rec/b1/"+recID+"/"+record.SignatureName); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recording %s not in the bucket 60 s after the session ended", recID)
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := t.TempDir()
	if err := recupload.Download(context.Background(), *target, got); err != nil {
		t.Fatal(err)
	}
	if err := record.Verify(filepath.Join(got, recID), e.recPub); err != nil {
		t.Fatalf("uploaded recording does not verify: %v", err)
	}
	if _, err := os.Stat(filepath.Join(got, record.IndexName)); err != nil {
		t.Errorf("index not uploaded: %v", err)
	}
}
