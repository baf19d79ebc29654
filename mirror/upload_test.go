package mirror

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/objstore"
)

// TestPublishToS3 publishes a mirror to a real S3-compatible server
// (SeaweedFS) and points real apt at the bucket's plain HTTP endpoint: it
// installs, also a package whose file name has '+' and '~' (aptly needed a
// workaround for '+' on S3); a second publish uploads only what changed,
// keeps the old snapshot's objects for the grace period, and apt updates
// and installs the new version. A wrong secret fails the upload, which is
// recorded, while the local snapshot stays published.
func TestPublishToS3(t *testing.T) {
	s3 := apttest.StartS3(t, "apt")
	odd := apttest.Package{Name: "g++-greet", Source: "gpp-greet", Version: "1.0+dfsg~rc1-1", Arch: "amd64"}
	up := newUpstream(t, testSuite("1.0-1", odd))
	state := t.TempDir()
	cfg := up.config()
	cfg.PublishTo = []string{"bucket"}
	opt := testOptions(t)
	target := objstore.Target{Name: "bucket", Endpoint: s3.Endpoint, Bucket: "apt", Prefix: "debian",
		AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, DeleteAfter: time.Hour}
	opt.PublishTargets = map[string]objstore.Target{"bucket": target}
	sync := func() *Report {
		t.Helper()
		rep, err := Sync(context.Background(), state, cfg, opt)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		if rep.Result != ResultPublished || len(rep.Uploads) != 1 {
			t.Fatalf("sync: %+v", rep)
		}
		return rep
	}
	rep := sync()
	if u := rep.Uploads[0]; u.Error != "" || u.Uploaded == 0 || u.Skipped != 0 {
		t.Fatalf("first upload: %+v", u)
	}
	base := s3.Endpoint + "/apt/debian/" + testMirror
	apt := apttest.AptClient(t, up.repo.SourcesLine(base, "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update from the bucket: %v\n%s", err, out)
	}
	if out, err := apt.InstallDownloadOnly("hello", "g++-greet"); err != nil {
		t.Fatalf("apt-get install from the bucket: %v\n%s", err, out)
	}
	oddFile := filepath.Base(up.repo.PoolPath("g++-greet", "1.0+dfsg~rc1-1", "amd64"))
	if !strings.Contains(oddFile, "+") || !strings.Contains(oddFile, "~") {
		t.Fatalf("test package file %q lacks + or ~", oddFile)
	}
	if _, err := os.Stat(filepath.Join(apt.ArchivesDir(), strings.ReplaceAll(oddFile, "~", "%7e"))); err != nil {
		if _, err2 := os.Stat(filepath.Join(apt.ArchivesDir(), oddFile)); err2 != nil {
			ents, _ := os.ReadDir(apt.ArchivesDir())
			t.Errorf("apt did not download %s: %v; archives: %v", oddFile, err, ents)
		}
	}

	oldHello := up.repo.PoolPath("hello", "1.0-1", "amd64")
	// An object's Last-Modified has one-second resolution, and apt asks
	// for InRelease with If-Modified-Since: an InRelease re-uploaded in
	// the second apt last fetched it can be answered 304 (README, "Object
	// storage"). Let the clock move on, as it does between real publishes.
	time.Sleep(1100 * time.Millisecond)
	if err := up.repo.Rebuild(testSuite("1.1-1", odd)); err != nil {
		t.Fatal(err)
	}
	rep = sync()
	second := rep.Snapshot
	u := rep.Uploads[0]
	if u.Error != "" || u.Uploaded == 0 || u.Skipped == 0 || u.Pending == 0 || u.Deleted != 0 {
		t.Fatalf("second upload: %+v (want some uploaded, unchanged pool files skipped, old ones pending)", u)
	}
	if code, _ := s3.Get(t, "apt/debian/"+testMirror+"/"+oldHello); code != 200 {
		t.Errorf("old snapshot's %s: status %d during the grace period", oldHello, code)
	}
	if out, err := apt.Update(); err != nil {
		t.Fatalf("apt-get update after the second publish: %v\n%s", err, out)
	}
	if out, err := apt.Run("install", "--download-only", "hello=1.1-1"); err != nil {
		t.Fatalf("apt-get install of the new version: %v\n%s", err, out)
	}

	// A failed upload never un-publishes and is kept in the state.
	bad := target
	bad.SecretKey = "wrong-secret-value"
	opt.PublishTargets = map[string]objstore.Target{"bucket": bad}
	if err := up.repo.Rebuild(testSuite("1.2-1", odd)); err != nil {
		t.Fatal(err)
	}
	rep, err := Sync(context.Background(), state, cfg, opt)
	if err != nil || rep.Result != ResultPublished || len(rep.Uploads) != 1 || rep.Uploads[0].Error == "" {
		t.Fatalf("sync with a failing upload: %v %+v", err, rep)
	}
	if strings.Contains(rep.Uploads[0].Error, bad.SecretKey) {
		t.Errorf("upload error shows the secret: %s", rep.Uploads[0].Error)
	}
	last, err := LastUploads(state, cfg)
	if err != nil || last["bucket"].Error == "" || last["bucket"].Snapshot != rep.Snapshot {
		t.Errorf("state after a failed upload: %v %+v", err, last)
	}
	local := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	if out, err := local.Update(); err != nil {
		t.Fatalf("local mirror after a failed upload: %v\n%s", err, out)
	}
	if out, err := local.Run("install", "--download-only", "hello=1.2-1"); err != nil {
		t.Fatalf("local mirror does not serve the new snapshot: %v\n%s", err, out)
	}
	// The bucket still serves the previous snapshot whole.
	if out, err := apt.Update(); err != nil {
		t.Fatalf("bucket after a failed upload: %v\n%s", err, out)
	}
	st, err := Status(state, cfg, time.Now())
	if err != nil || !slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "publish target bucket failed") }) {
		t.Errorf("status after a failed upload names no failed upload: %v %q", err, st.Warnings)
	}

	// Every publish uploads, a rollback's too: back to the second
	// snapshot with the right key, and the bucket follows.
	opt.PublishTargets = map[string]objstore.Target{"bucket": target}
	if err := RollbackWith(context.Background(), state, cfg, second, opt); err != nil {
		t.Fatal(err)
	}
	last, err = LastUploads(state, cfg)
	if err != nil || last["bucket"].Error != "" || last["bucket"].Snapshot != second {
		t.Errorf("upload after rollback to %s: %v %+v", second, err, last)
	}
	if st, err := Status(state, cfg, time.Now()); err != nil || slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "publish target") }) {
		t.Errorf("status after a good upload still warns: %v %q", err, st.Warnings)
	}
}
