package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gatehouse/mirror/serve"
	"gatehouse/mirror/store"
)

var errKilled = errors.New("killed here (test hook)")

// put stores content as an object and names it at pool path rel in sn.
func put(t *testing.T, st *store.Store, sn *store.Snapshot, rel, content string) {
	t.Helper()
	sum := sha256.Sum256([]byte(content))
	h := hex.EncodeToString(sum[:])
	w, err := st.NewObject(h)
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := sn.UsePool(rel, h); err != nil {
		t.Fatal(err)
	}
}

// refs is a Collection.Referenced of the given pool paths.
func refs(rels ...string) func(func(string)) error {
	return func(yield func(string)) error {
		for _, r := range rels {
			yield(r)
		}
		return nil
	}
}

// curlStatus GETs url with the real curl and returns the HTTP status.
func curlStatus(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).Output()
	if err != nil {
		t.Fatalf("curl %s: %v", url, err)
	}
	return strings.TrimSpace(string(out))
}

// TestUnnamedPoolFilesNotServed: pool/ files that no published or
// retained snapshot names are never served, whatever point a sync or a GC
// was killed at; the next sync or GC removes them.
func TestUnnamedPoolFilesNotServed(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	for _, stage := range []string{"commit linked", "commit renamed", "gc hidden", "gc pruned"} {
		t.Run(strings.ReplaceAll(stage, " ", "_"), func(t *testing.T) {
			root := t.TempDir()
			st, err := store.Open(root, "m")
			if err != nil {
				t.Fatal(err)
			}
			unlock, err := st.Lock(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			srv := httptest.NewServer(serve.NewHandler(root, []string{"m"}, nil))
			defer srv.Close()
			url := func(rel string) string { return srv.URL + "/m/pool/" + rel }
			commit := func(rels ...string) (string, error) {
				sn, err := st.NewSnapshot()
				if err != nil {
					t.Fatal(err)
				}
				for _, rel := range rels {
					put(t, st, sn, rel, "content of "+rel)
				}
				return sn.Commit(context.Background())
			}
			if _, err := commit("main/a/a_1_all.deb"); err != nil {
				t.Fatal(err)
			}
			newRel, pruned := "main/b/b_1_all.deb", ""
			onDisk := filepath.Join(st.Dir(), store.PoolDir, "main/b/b_1_all.deb")

			if strings.HasPrefix(stage, "gc") {
				// The second snapshot drops a and names b; a GC that
				// prunes the first is killed before it deletes a.
				if _, err := commit(newRel); err != nil {
					t.Fatal(err)
				}
				snaps, err := st.Snapshots()
				if err != nil || len(snaps) != 2 {
					t.Fatalf("snapshots %v, %v", snaps, err)
				}
				restore := store.SetTestHook(func(s string) error {
					if s == stage {
						return errKilled
					}
					return nil
				})
				_, err = st.Collect(context.Background(), store.Collection{MaxDeleteFraction: 1, Prune: []string{snaps[0].ID}, Referenced: refs(newRel)})
				restore()
				if !errors.Is(err, errKilled) {
					t.Fatalf("gc: %v", err)
				}
				newRel, onDisk = "main/a/a_1_all.deb", filepath.Join(st.Dir(), store.PoolDir, "main/a/a_1_all.deb")
				pruned = snaps[0].ID
			} else {
				restore := store.SetTestHook(func(s string) error {
					if s == stage {
						return errKilled
					}
					return nil
				})
				_, err := commit("main/a/a_1_all.deb", newRel)
				restore()
				if !errors.Is(err, errKilled) {
					t.Fatalf("commit: %v", err)
				}
				if got := curlStatus(t, url("main/a/a_1_all.deb")); got != "200" {
					t.Errorf("the published file: HTTP %s", got)
				}
			}
			// The file is in pool/, and no published or retained
			// snapshot names it: it must not be served.
			if _, err := os.Lstat(onDisk); err != nil {
				t.Fatalf("the test needs %s in pool/: %v", newRel, err)
			}
			if got := curlStatus(t, url(newRel)); got != "404" {
				t.Errorf("%s after a kill at %q: HTTP %s, want 404", newRel, stage, got)
			}
			// The next sync (NewSnapshot) or GC finishes the job.
			if strings.HasPrefix(stage, "gc") {
				// A rollback to the snapshot the GC was pruning
				// finishes the GC first, so it cannot land on a
				// snapshot whose files are going.
				if err := st.Rollback(pruned); err == nil {
					t.Errorf("rollback to %s, which a killed GC was pruning, succeeded", pruned)
				}
				if _, err := st.Collect(context.Background(), store.Collection{MaxDeleteFraction: 1, Referenced: refs("main/b/b_1_all.deb")}); err != nil {
					t.Fatal(err)
				}
			} else {
				sn, err := st.NewSnapshot()
				if err != nil {
					t.Fatal(err)
				}
				sn.Abort()
				if snaps, _ := st.Snapshots(); len(snaps) != 1 {
					t.Errorf("after recovery %d snapshots, want the published one only", len(snaps))
				}
			}
			if _, err := os.Lstat(onDisk); !os.IsNotExist(err) {
				t.Errorf("%s still in pool/ after recovery: %v", newRel, err)
			}
			if _, err := os.Lstat(filepath.Join(st.Dir(), store.HiddenFile)); !os.IsNotExist(err) {
				t.Errorf("hidden list left after recovery: %v", err)
			}
			// And a sync that completes serves its new files.
			if _, err := commit("main/c/c_1_all.deb"); err != nil {
				t.Fatal(err)
			}
			for _, rel := range []string{"main/c/c_1_all.deb", "main/b/b_1_all.deb"} {
				if !strings.HasPrefix(stage, "gc") && rel == "main/b/b_1_all.deb" {
					continue // b was never published
				}
				if got := curlStatus(t, url(rel)); got != "200" {
					t.Errorf("published %s: HTTP %s", rel, got)
				}
			}
		})
	}
}
