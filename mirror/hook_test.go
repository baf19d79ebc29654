package mirror

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/store"
)

// hookScript writes an executable shell script into dir and returns its path.
func hookScript(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPostPublishRuns: the hook runs after a sync's publish, after
// `mirror publish` and after rollback, with argv as given (no shell: an
// argument with spaces and "$" arrives as one, unexpanded), the
// documented environment, and directories that hold the served tree.
// A staged sync runs no hook.
func TestPostPublishRuns(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	dir := t.TempDir()
	out := filepath.Join(dir, "calls")
	script := hookScript(t, dir, `printf '%s|%s|%s|%s|%s|%s\n' "$1" "$GATEHOUSE_MIRROR" "$GATEHOUSE_SNAPSHOT" "$GATEHOUSE_SNAPSHOT_DIR" "$GATEHOUSE_POOL_DIR" "$#" >> "`+out+`"
test -f "$GATEHOUSE_SNAPSHOT_DIR/dists/stable/InRelease" || exit 9
test -d "$GATEHOUSE_POOL_DIR/main" || exit 8
`)
	cfg := up.config()
	cfg.PostPublish = []string{script, "a b $HOME"}
	s1 := mustSync(t, state, cfg)
	if s1.PostPublish == nil || !s1.PostPublish.OK {
		t.Fatalf("hook after sync: %+v", s1.PostPublish)
	}
	calls := func() []string {
		b, _ := os.ReadFile(out)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	root := filepath.Join(StoreRoot(state), testMirror)
	want := "a b $HOME|up|" + s1.Snapshot + "|" + filepath.Join(root, store.SnapshotsDir, s1.Snapshot) + "|" + filepath.Join(root, store.PoolDir) + "|1"
	if c := calls(); len(c) != 1 || c[0] != want {
		t.Fatalf("hook calls %q, want %q", c, want)
	}
	// No change upstream: nothing published, no hook.
	mustSync(t, state, cfg)
	if c := calls(); len(c) != 1 {
		t.Fatalf("hook ran without a publish: %q", c)
	}
	if err := up.repo.Rebuild(testSuite("1.1-1")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	cfg.Publish = PublishManual
	s2 := mustSync(t, state, cfg)
	if s2.Result != ResultStaged || s2.PostPublish != nil || len(calls()) != 1 {
		t.Fatalf("staged sync ran the hook: %+v %q", s2, calls())
	}
	if _, err := Publish(context.Background(), state, cfg, "", testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if err := RollbackWith(context.Background(), state, cfg, "", testOptions(t)); err != nil {
		t.Fatal(err)
	}
	c := calls()
	if len(c) != 3 || !strings.Contains(c[1], "|"+s2.Snapshot+"|") || !strings.Contains(c[2], "|"+s1.Snapshot+"|") {
		t.Fatalf("hook calls after publish and rollback: %q", c)
	}
	ms, err := Status(state, cfg, time.Now())
	if err != nil || ms.PostPublish == nil || !ms.PostPublish.OK || ms.PostPublish.Snapshot != s1.Snapshot {
		t.Fatalf("status: %v %+v", err, ms.PostPublish)
	}
}

// TestPostPublishFails: a failing hook leaves the snapshot published, makes
// Sync return a *PostPublishError naming the snapshot, is counted in the
// state (consecutive failures) that status shows, and none of its output
// (which can carry credentials) reaches the state or the status; a later
// success resets the count.
func TestPostPublishFails(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	dir := t.TempDir()
	flag := filepath.Join(dir, "ok")
	script := hookScript(t, dir, `echo "rsync: auth failed for https://user:SECRET-TOKEN@replica.example.org/" >&2
test -f "`+flag+`" && exit 0
exit 23
`)
	cfg := up.config()
	cfg.PostPublish = []string{script}
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	var pe *PostPublishError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPostPublish) || rep.Result != ResultPublished || currentID(t, state) != rep.Snapshot {
		t.Fatalf("sync with a failing hook: %v, %+v, current %q", err, rep, currentID(t, state))
	}
	want := "mirror up: published " + rep.Snapshot + "; post_publish failed: exit status 23"
	if !strings.HasPrefix(err.Error(), want) || pe.Record.ExitStatus != 23 || pe.Record.Failures != 1 {
		t.Fatalf("error %q (record %+v), want it to start with %q", err, pe.Record, want)
	}
	if _, err := Publish(context.Background(), state, cfg, "", testOptions(t)); !errors.As(err, &pe) || pe.Record.Failures != 2 {
		t.Fatalf("second failure: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(StoreRoot(state), testMirror, store.StateFile))
	if err != nil || strings.Contains(string(b), "SECRET") || !strings.Contains(string(b), `"exit_status": 23`) {
		t.Fatalf("state.json: %v\n%s", err, b)
	}
	ms, _ := Status(state, cfg, time.Now())
	if ms.PostPublish == nil || ms.PostPublish.OK || len(ms.Warnings) != 1 ||
		!strings.Contains(ms.Warnings[0], "post_publish failed for snapshot "+rep.Snapshot) || !strings.Contains(ms.Warnings[0], "(2 in a row): exit status 23") {
		t.Fatalf("status: %+v", ms)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(context.Background(), state, cfg, "", testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if ms, _ := Status(state, cfg, time.Now()); !ms.PostPublish.OK || ms.PostPublish.Failures != 0 || len(ms.Warnings) != 0 {
		t.Fatalf("status after success: %+v", ms)
	}
}

// TestPostPublishTimeout: a hook that outlives post_publish_timeout is
// killed with its whole process group (a child it started in the
// background too), and the publish stands.
func TestPostPublishTimeout(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	script := hookScript(t, dir, `sleep 300 &
echo $! > "`+pidFile+`"
sleep 300
`)
	cfg := up.config()
	cfg.PostPublish = []string{script}
	cfg.PostPublishTimeout.Duration = time.Second
	start := time.Now()
	rep, err := Sync(context.Background(), state, cfg, testOptions(t))
	var pe *PostPublishError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "killed after the post_publish_timeout of 1s") || currentID(t, state) != rep.Snapshot {
		t.Fatalf("sync with a hanging hook: %v", err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("sync took %s with a 1s hook timeout", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		// A zombie until reaped by init: check its state.
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the hook's background child %d survived the timeout", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPostPublishConfig: the command must be an absolute path (no PATH
// lookup, no shell) and the timeout sane.
func TestPostPublishConfig(t *testing.T) {
	c := Config{Name: "m", URL: "http://example.org/", Suites: []string{"s"}, Keyring: "/k", PostPublish: []string{"push-replicas"}}
	c.Defaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "post_publish: the command \"push-replicas\" must be an absolute path") {
		t.Errorf("relative post_publish: %v", err)
	}
	c.PostPublish = []string{"/bin/true"}
	c.Publish = "later"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `publish must be "auto" or "manual", got "later"`) {
		t.Errorf("bad publish: %v", err)
	}
}

// TestPostPublishAfterImport: an air-gap import is a publish too: the
// receiving appliance's hook runs for the imported snapshot, and its
// failure is returned after the import published.
func TestPostPublishAfterImport(t *testing.T) {
	up := newUpstream(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	cfg := up.config()
	mustSync(t, stateA, cfg)
	key := apttest.NewKey(t, "ed25519")
	out := t.TempDir()
	b1 := filepath.Join(out, "b1.tar")
	if _, err := Export(context.Background(), stateA, []Config{cfg}, b1, "", key, 0, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(out, "calls")
	cfg.PostPublish = []string{hookScript(t, out, `echo "$GATEHOUSE_SNAPSHOT" >> "`+calls+`"
exit 4
`)}
	rep, err := Import(context.Background(), stateB, []Config{cfg}, b1, agKeyring(t, key), testOptions(t))
	if !errors.Is(err, ErrPostPublish) || len(rep.Mirrors) != 1 || rep.Mirrors[0].Result != ResultPublished || currentID(t, stateB) != rep.Mirrors[0].Snapshot {
		t.Fatalf("import with a failing hook: %v %+v", err, rep)
	}
	if b, _ := os.ReadFile(calls); strings.TrimSpace(string(b)) != rep.Mirrors[0].Snapshot {
		t.Fatalf("hook calls %q, want the imported snapshot %s", b, rep.Mirrors[0].Snapshot)
	}
}

// TestSanitizeHookOutput: what a hook prints reaches the log only with
// control characters escaped, so it cannot forge log lines or drive a
// terminal, and at most hookTailBytes of it.
func TestSanitizeHookOutput(t *testing.T) {
	got := sanitize([]byte("ok\x1b[31mred\rforged\x00\xff\u0085end\n"))
	if want := "ok\\x1b[31mred\\x0dforged\\x00\ufffd\\x85end"; got != want {
		t.Errorf("sanitize: %q, want %q", got, want)
	}
	tb := &tailBuffer{max: 4}
	tb.Write([]byte("abcdef"))
	tb.Write([]byte("gh"))
	if string(tb.b) != "efgh" {
		t.Errorf("tail: %q", tb.b)
	}
}

// TestPostPublishEnv: the hook gets the environment the caller passes
// (Options.HookEnv: the command line passes its own), not this process's,
// and with none only a PATH.
func TestPostPublishEnv(t *testing.T) {
	up := newUpstream(t)
	state := t.TempDir()
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	t.Setenv("GATEHOUSE_TEST_LEAK", "leaked")
	cfg := up.config()
	cfg.PostPublish = []string{hookScript(t, dir, `env | sort > "`+out+`"`)}
	mustSync(t, state, cfg)
	b, _ := os.ReadFile(out)
	if strings.Contains(string(b), "GATEHOUSE_TEST_LEAK") || !strings.Contains(string(b), DefaultHookPath+"\n") || !strings.Contains(string(b), "GATEHOUSE_SNAPSHOT=") {
		t.Fatalf("hook environment without HookEnv:\n%s", b)
	}
	opt := testOptions(t)
	opt.HookEnv = []string{"PATH=/usr/bin:/bin", "FROM_CALLER=1"}
	if _, err := Publish(context.Background(), state, cfg, "", opt); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(out)
	if !strings.Contains(string(b), "FROM_CALLER=1\n") || strings.Contains(string(b), "GATEHOUSE_TEST_LEAK") {
		t.Fatalf("hook environment with HookEnv:\n%s", b)
	}
}
