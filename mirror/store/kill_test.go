package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kill tests re-run this test binary as a child process (selected by
// this environment variable) and SIGKILL it, because only a real process
// death shows what a killed sync leaves on disk.
const childEnv = "GATEHOUSE_STORE_TEST_CHILD"

// TestMain runs the child's body instead of the tests when the kill tests
// re-execute this binary.
func TestMain(m *testing.M) {
	if v := os.Getenv(childEnv); v != "" {
		childMain(v)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childMain(v string) {
	mode, root, _ := strings.Cut(v, ":")
	s, err := Open(root, "m")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer unlock()
	fmt.Println("locked")
	switch mode {
	case "hold":
		time.Sleep(time.Hour)
	case "sync":
		for {
			if err := childSync(s); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
	}
}

// childSync is a miniature sync: new pool files by temp+rename (as
// mirror/fetch writes them), a dists tree naming them, commit, prune, GC.
func childSync(s *Store) error {
	gen := int(time.Now().UnixNano() % 1e9)
	var pool []string
	for i := range 5 {
		rel := fmt.Sprintf("g%d/p%d.deb", gen, i)
		p, err := s.PoolPath(rel)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(p), TempPrefix+strconv.Itoa(i))
		if err := os.WriteFile(tmp, []byte(poolContent(rel)), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
		pool = append(pool, rel)
	}
	sn, err := s.NewSnapshot()
	if err != nil {
		return err
	}
	defer sn.Abort()
	buildGen(nopTB{}, sn, gen, 20)
	p, _ := sn.Path("dists/stable/POOL")
	if err := os.WriteFile(p, []byte(strings.Join(pool, "\n")), 0o644); err != nil {
		return err
	}
	if _, err := sn.Commit(context.Background()); err != nil {
		return err
	}
	if _, err := s.Prune(2); err != nil {
		return err
	}
	snaps, err := s.Snapshots()
	if err != nil {
		return err
	}
	var refs []string
	for _, sn := range snaps {
		b, err := os.ReadFile(filepath.Join(sn.Dir, "dists/stable/POOL"))
		if err != nil {
			return err
		}
		refs = append(refs, strings.Split(string(b), "\n")...)
	}
	_, err = s.GC(context.Background(), func(yield func(string) bool) {
		for _, r := range refs {
			if !yield(r) {
				return
			}
		}
	}, 1)
	return err
}

func poolContent(rel string) string { return "pool file " + rel }

// nopTB lets buildGen run outside a test; the child exits on failure.
type nopTB struct{ testing.TB }

func (nopTB) Helper() {}
func (nopTB) Fatal(args ...any) {
	fmt.Println(append([]any{"error"}, args...)...)
	os.Exit(1)
}

func startChild(t *testing.T, mode, root string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+mode+":"+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "locked" {
			return cmd, sc
		}
		if strings.HasPrefix(line, "error") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s", line)
		}
	}
	cmd.Wait()
	t.Fatal("child exited before taking the lock")
	return nil, nil
}

func checkPublished(root string) error {
	_, dir, err := ResolveCurrent(root, "m")
	if err != nil {
		return err
	}
	if _, err := checkGen(dir); err != nil {
		return fmt.Errorf("published snapshot %s incomplete: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "dists/stable/POOL"))
	if err != nil {
		return fmt.Errorf("published snapshot %s incomplete: %w", dir, err)
	}
	for rel := range strings.SplitSeq(string(b), "\n") {
		got, err := os.ReadFile(filepath.Join(root, "m", PoolDir, rel))
		if err != nil || string(got) != poolContent(rel) {
			return fmt.Errorf("pool file %s named by the published snapshot: %v", rel, err)
		}
	}
	return nil
}

// TestKillDuringSync SIGKILLs a process that syncs in a loop (pool writes,
// snapshot build, commit, prune, GC) at random moments; every time the
// published snapshot must be complete, its pool files present, and the
// next process must take the lock and publish again.
func TestKillDuringSync(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	root := t.TempDir()
	published := false
	for round := range 8 {
		cmd, sc := startChild(t, "sync", root)
		go func() {
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "error") {
					t.Errorf("child: %s", sc.Text())
				}
			}
		}()
		time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		err := checkPublished(root)
		if errors.Is(err, ErrNoCurrent) && !published {
			t.Logf("round %d: killed before the first publish", round)
			continue
		}
		if err != nil {
			t.Fatalf("round %d: after SIGKILL: %v", round, err)
		}
		published = true
	}
	if !published {
		t.Fatal("no round published anything; the child is too slow to test")
	}
	// A fresh process takes the lock and publishes; leftovers are cleaned.
	s := openLocked(t, root, "m")
	s.Now = nil
	if err := childSync(s); err != nil {
		t.Fatal(err)
	}
	if err := checkPublished(root); err != nil {
		t.Fatal(err)
	}
	es, _ := os.ReadDir(filepath.Join(root, "m", SnapshotsDir))
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("interrupted snapshot %s left after the next sync", e.Name())
		}
	}
	es, _ = os.ReadDir(filepath.Join(root, "m"))
	for _, e := range es {
		if strings.HasPrefix(e.Name(), CurrentLink+TempPrefix) {
			t.Errorf("temp link %s left after the next sync", e.Name())
		}
	}
}

// TestLockHeldByOtherProcess: the message names the other process's pid.
func TestLockHeldByOtherProcess(t *testing.T) {
	root := t.TempDir()
	cmd, _ := startChild(t, "hold", root)
	defer cmd.Wait()
	defer cmd.Process.Kill()
	s, _ := Open(root, "m")
	_, err := s.Lock(context.Background())
	var le *LockedError
	if !errors.As(err, &le) || le.PID != cmd.Process.Pid {
		t.Fatalf("Lock while child %d holds it: %v", cmd.Process.Pid, err)
	}
	want := fmt.Sprintf("sync of mirror m already running (pid %d since ", cmd.Process.Pid)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q lacks %q", err, want)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The kernel drops the flock with the process: no stale lock.
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	unlock()
}
