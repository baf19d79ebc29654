package mirror

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
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

// aptLoopResult is what an apt loop saw: runs, hash mismatches, 404s
// and the first failures.
type aptLoopResult struct {
	runs, mismatches, notFound int
	errs                       []string
}

// aptLoop runs apt-get update and a download of pkgs in a loop (see
// startAptLoop) until stop, which returns what it saw.
type aptLoop struct {
	done chan struct{}
	res  chan aptLoopResult
}

// startAptLoop runs a real apt-get update and install --download-only of
// pkgs with client apt, over and over, until stop is called: a client
// that keeps its lists between runs, as a host does, while the mirror
// changes under it.
func startAptLoop(apt *apttest.Apt, pkgs ...string) *aptLoop {
	l := &aptLoop{done: make(chan struct{}), res: make(chan aptLoopResult, 1)}
	go func() {
		var r aptLoopResult
		defer func() { l.res <- r }()
		for ; ; r.runs++ {
			select {
			case <-l.done:
				return
			default:
			}
			out, err := apt.Update()
			if err == nil {
				apt.Run("clean")
				var o2 string
				o2, err = apt.InstallDownloadOnly(pkgs...)
				out += o2
			}
			if strings.Contains(out, "Hash Sum mismatch") || strings.Contains(out, "Hashes of expected file") {
				r.mismatches++
			}
			if strings.Contains(out, "404") {
				r.notFound++
			}
			if err != nil && len(r.errs) < 5 {
				r.errs = append(r.errs, fmt.Sprintf("run %d: %v\n%s", r.runs, err, out))
			}
		}
	}()
	return l
}

// stop ends the loop after its current run and returns its result.
func (l *aptLoop) stop() aptLoopResult {
	close(l.done)
	return <-l.res
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

// TestKillAtRandomWhileAptLoops SIGKILLs syncs at random moments, over 20
// rounds of upstream changes (new versions, and a package rebuilt under the
// same Filename with new bytes), while a real apt-get updates and downloads
// in a loop from the served mirror. apt must never see a hash mismatch,
// and verify must find the mirror sound after every kill.
func TestKillAtRandomWhileAptLoops(t *testing.T) {
	if os.Getenv(killChildEnv) != "" {
		t.Skip("inside the child")
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	up := newUpstream(t, testSuite("1.0-1", manyPackages(16)...))
	state := t.TempDir()
	cfg := up.config()
	cfg.Concurrency = 2
	// Syncs here follow each other every second or two while one apt run
	// takes seconds on a loaded machine: keep enough snapshots that the
	// one apt read its indexes from is not pruned before it downloads.
	cfg.KeepSnapshots = 20
	mustSync(t, state, cfg)
	apt := apttest.AptClient(t, up.repo.SourcesLine(serveMirror(t, state), "stable", "main"))
	// Not bulk03: its bytes change under the same Filename, and a client
	// holding the indexes of the snapshot before a publish then gets the
	// new bytes, as from any mirror ("Mirror sync in progress?") until its
	// next update.
	loop := startAptLoop(apt, "hello")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("seed is the start time; rounds follow")
	kills, published := 0, 0
	for round := range 20 {
		pk := manyPackages(16)
		pk[3].Size = 2000 + 37*(round/3) // bulk03: same Filename, new bytes every third round
		s := testSuite(fmt.Sprintf("1.%d-1", round+1), pk...)
		var err error
		if round%3 == 0 {
			err = up.repo.RebuildChanged([]string{"bulk03_1.0_amd64"}, s)
		} else {
			err = up.repo.Rebuild(s)
		}
		if err != nil {
			t.Fatal(err)
		}
		up.srv.SetFault("pool", apttest.Fault{Delay: time.Duration(5+rng.IntN(20)) * time.Millisecond})
		spec, _ := json.Marshal(struct {
			State string
			Cfg   Config
		}{state, cfg})
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$")
		cmd.Env = append(os.Environ(), killChildEnv+"="+string(spec))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.IntN(900)) * time.Millisecond
		time.Sleep(delay)
		if cmd.Process.Kill() == nil {
			kills++
		}
		cmd.Wait()
		lines, err := Verify(context.Background(), state, cfg, testOptions(t))
		if err != nil || len(problemsOnly(lines)) != 0 {
			t.Fatalf("round %d, killed after %v: verify: %v %q", round, delay, err, lines)
		}
		if id, _, err := store.ResolveCurrent(StoreRoot(state), testMirror); err == nil {
			t.Logf("round %d: killed after %v; published %s; notes %q", round, delay, id, lines)
		}
		// Every other round completes, so the mirror moves on and
		// prunes while apt reads.
		if round%2 == 1 {
			up.srv.ClearFaults()
			if rep := mustSync(t, state, cfg); rep.Result == ResultPublished {
				published++
			}
			mustVerify(t, state, cfg)
		}
	}
	r := loop.stop()
	t.Logf("%d kills, %d completed publishes, %d apt runs, %d failed", kills, published, r.runs, len(r.errs))
	if r.mismatches != 0 || len(r.errs) != 0 {
		t.Errorf("apt saw %d hash mismatches, %d failures:\n%s", r.mismatches, len(r.errs), strings.Join(r.errs, "\n"))
	}
	if kills < 20 {
		t.Errorf("only %d kills landed", kills)
	}
	if r.runs < 5 {
		t.Errorf("apt ran only %d times: the test did not overlap syncs", r.runs)
	}
}
