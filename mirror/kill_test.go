package mirror

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

const killChildEnv = "GATEHOUSE_MIRROR_KILL_CHILD"

// TestKillChild is the child process of TestKillResume: it runs one Sync
// described by the environment and prints every progress event, so the
// parent can SIGKILL it at a chosen point. It does nothing in a normal run.
func TestKillChild(t *testing.T) {
	spec := os.Getenv(killChildEnv)
	if spec == "" {
		t.Skip("helper process for TestKillResume")
	}
	var c struct {
		State string
		Cfg   Config
	}
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		t.Fatal(err)
	}
	opt := testOptions(t)
	opt.Progress = func(e Event) { fmt.Printf("event %s %d\n", e.Phase, e.Files) }
	rep, err := Sync(context.Background(), c.State, c.Cfg, opt)
	fmt.Printf("done %s %v\n", rep.Result, err)
}

func manyPackages(n int) []apttest.Package {
	var ps []apttest.Package
	for i := range n {
		ps = append(ps, apttest.Package{Name: fmt.Sprintf("bulk%02d", i), Version: "1.0", Arch: "amd64", Size: 1000 + 100*i})
	}
	return ps
}

// TestKillResume SIGKILLs a sync while it fetches indexes, while it fetches
// pool files, and as it publishes. Afterwards the mirror still serves a
// complete snapshot to apt, and the next sync completes without fetching
// again any pool file the killed one had finished.
func TestKillResume(t *testing.T) {
	if os.Getenv(killChildEnv) != "" {
		t.Skip("inside the child")
	}
	for _, kp := range []struct {
		event string
		n     int // kill at the n-th event of that phase
	}{{"indexes", 1}, {"pool", 5}, {"publish", 1}} {
		point := "event " + kp.event
		t.Run(kp.event, func(t *testing.T) {
			up := newUpstream(t)
			state := t.TempDir()
			cfg := up.config()
			cfg.Concurrency = 2
			mustSync(t, state, cfg)
			before := publishedTree(t, state)
			initial := len(poolFiles(t, state))
			if err := up.repo.Rebuild(testSuite("1.1-1", manyPackages(16)...)); err != nil {
				t.Fatal(err)
			}
			up.srv.SetFault("pool", apttest.Fault{Delay: 60 * time.Millisecond})
			up.srv.SetFault("dists/stable/main", apttest.Fault{Delay: 40 * time.Millisecond})

			spec, _ := json.Marshal(struct {
				State string
				Cfg   Config
			}{state, cfg})
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.v")
			cmd.Env = append(os.Environ(), killChildEnv+"="+string(spec))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = cmd.Stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killed, seenN := false, 0
			sc := bufio.NewScanner(out)
			var seen []string
			for sc.Scan() {
				line := sc.Text()
				seen = append(seen, line)
				if strings.HasPrefix(line, point+" ") {
					seenN++
				}
				if !killed && seenN == kp.n {
					cmd.Process.Kill() // SIGKILL
					killed = true
				}
			}
			cmd.Wait()
			if !killed {
				t.Fatalf("child never reached %q:\n%s", point, strings.Join(seen, "\n"))
			}
			after := publishedTree(t, state)
			if after["current"] == before["current"] {
				checkUnchanged(t, before, after)
			} else {
				t.Logf("the kill landed after the publish: %s", after["current"])
			}
			// The old (or complete new) snapshot serves.
			apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
			if out, err := apt.Update(); err != nil {
				t.Fatalf("apt-get update after the kill: %v\n%s", err, out)
			}
			done := poolFiles(t, state)
			up.srv.ClearFaults()
			up.srv.ResetRequests()
			rep := mustSync(t, state, cfg)
			if rep.Result != ResultPublished && rep.Result != ResultCurrent {
				t.Fatalf("sync after the kill: %+v", rep)
			}
			for _, p := range done {
				if n := up.srv.Count(p); n != 0 {
					t.Errorf("%s was finished before the kill but fetched again (%d requests)", p, n)
				}
			}
			t.Logf("%d new pool files were finished before the kill; the resumed sync fetched %d files", len(done)-initial, rep.FilesFetched)
			if out, err := apt.Update(); err != nil {
				t.Fatalf("apt-get update after resuming: %v\n%s", err, out)
			}
			if out, err := apt.InstallDownloadOnly("bulk15", "hello=1.1-1"); err != nil {
				t.Fatalf("apt-get install after resuming: %v\n%s", err, out)
			}
			if problems, err := Verify(context.Background(), state, cfg, testOptions(t)); err != nil || len(problems) != 0 {
				t.Errorf("verify after resuming: %v %q", err, problems)
			}
		})
	}
}

// poolFiles lists the finished pool files ("pool/...") of the test mirror.
func poolFiles(t *testing.T, state string) []string {
	t.Helper()
	root := filepath.Join(StoreRoot(state), testMirror)
	var out []string
	err := filepath.WalkDir(filepath.Join(root, store.PoolDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), store.TempPrefix) {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCancel: a cancelled sync stops, leaves the published tree as it was
// and no unfinished snapshot behind, and records the failure.
func TestCancel(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	cfg := up.config()
	cfg.Concurrency = 1
	mustSync(t, state, cfg)
	before := publishedTree(t, state)
	if err := up.repo.Rebuild(testSuite("1.1-1", manyPackages(8)...)); err != nil {
		t.Fatal(err)
	}
	up.srv.SetFault("pool", apttest.Fault{Delay: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt := testOptions(t)
	opt.Progress = func(e Event) {
		if e.Phase == PhasePool && e.Files > 0 {
			cancel()
		}
	}
	rep, err := Sync(ctx, state, cfg, opt)
	if !errors.Is(err, context.Canceled) || rep.Result != ResultFailed {
		t.Fatalf("cancelled sync: %q, %v", rep.Result, err)
	}
	checkUnchanged(t, before, publishedTree(t, state))
	es, _ := os.ReadDir(filepath.Join(StoreRoot(state), testMirror, store.SnapshotsDir))
	if len(es) != 1 {
		t.Errorf("snapshots dir after cancel holds %d entries, want the published one", len(es))
	}
	st, _ := Status(state, cfg, time.Now())
	if st.LastSync == nil || st.LastSync.Result != ResultFailed || len(st.Warnings) == 0 {
		t.Errorf("status after a cancelled sync: %+v", st)
	}
	if rep := mustSync(t, state, cfg); rep.Result != ResultPublished {
		t.Errorf("next sync: %+v", rep)
	}
}
