package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"gatehouse/bastion/internal/sshtest"
)

// allBytes is a shell command printing every byte value 0..255 once.
func allBytes() (string, []byte) {
	var cmd strings.Builder
	want := make([]byte, 256)
	cmd.WriteString("printf '")
	for i := range 256 {
		want[i] = byte(i)
		fmt.Fprintf(&cmd, `\%03o`, i)
	}
	cmd.WriteString("'")
	return cmd.String(), want
}

// TestRelayBinaryExec: every byte value survives the relay to the admin
// and into the ttyrec, and the sealed manifest verifies with the real
// ssh-keygen -Y verify.
func TestRelayBinaryExec(t *testing.T) {
	e := newEnv(t)
	rec, allowed := newRecording(t, true)
	f := startFront(t, e, frontOptions{rec: rec})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	cmd, want := allBytes()
	got, err := s.Output(cmd)
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("admin received %d bytes, want the 256 byte values:\n%q", len(got), got)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	// Bulk output, on stdout and stderr at once: nothing lost either way.
	s2, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	bulk, err := s2.CombinedOutput("seq 1 150000; seq 1 50000 >&2")
	if err != nil || len(bulk) < 1_200_000 {
		t.Fatalf("bulk exec: %d bytes, %v", len(bulk), err)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	if tty := ttyrecBytes(t, filepath.Join(rec.Dir(), "ch01.ttyrec")); len(tty) != len(bulk) {
		t.Errorf("ttyrec holds %d bytes, the admin received %d", len(tty), len(bulk))
	}
	if tty := ttyrecBytes(t, filepath.Join(rec.Dir(), "ch00.ttyrec")); !bytes.Equal(tty, want) {
		t.Fatalf("ttyrec holds %q, want the 256 byte values", tty)
	}
	ev := events(t, rec, "exec")
	if len(ev) != 2 || !strings.Contains(ev[0], `"command":"printf`) {
		t.Errorf("exec events %q", ev)
	}
	if ex := events(t, rec, "exit"); len(ex) != 2 || !strings.Contains(ex[0], `"status":0`) {
		t.Errorf("exit events %q", ex)
	}
	verifyManifest(t, rec, allowed)
}

// TestRelayExitStatusAndEnv: the exit status comes back and is marked in
// the cast; only allow-listed environment variables, and never agent or
// X11 forwarding, reach the target (whose sshd would accept FOO).
func TestRelayExitStatusAndEnv(t *testing.T) {
	e := newEnv(t)
	rec, allowed := newRecording(t, true)
	f := startFront(t, e, frontOptions{rec: rec})
	c := f.client(t)

	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.SendRequest("auth-agent-req@openssh.com", true, nil); ok || err != nil {
		t.Errorf("agent forwarding request: ok=%v err=%v, want refused", ok, err)
	}
	x11 := ssh.Marshal(struct {
		Single        bool
		Proto, Cookie string
		Screen        uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00", 0})
	if ok, err := s.SendRequest("x11-req", true, x11); ok || err != nil {
		t.Errorf("x11 request: ok=%v err=%v, want refused", ok, err)
	}
	if err := s.Setenv("LANG", "C"); err != nil {
		t.Errorf("LANG refused: %v", err)
	}
	if err := s.Setenv("LC_ALL", "C"); err != nil {
		t.Errorf("LC_ALL refused: %v", err)
	}
	if err := s.Setenv("FOO", "leak"); err == nil {
		t.Errorf("FOO accepted")
	}
	out, err := s.CombinedOutput(`echo "$LANG:$LC_ALL:$FOO:${SSH_AUTH_SOCK:-noagent}"; exit 3`)
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
		t.Fatalf("exit: %v (output %q), want exit status 3", err, out)
	}
	if string(out) != "C:C::noagent\n" {
		t.Errorf("output %q", out)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	cast := readFile(t, filepath.Join(rec.Dir(), "ch00.cast"))
	if !strings.Contains(cast, `"m", "exit-status 3"]`) {
		t.Errorf("cast lacks the exit marker:\n%s", cast)
	}
	denied := strings.Join(events(t, rec, "request.denied"), "\n")
	for _, want := range []string{"auth-agent-req@openssh.com", "x11-req", "env FOO"} {
		if !strings.Contains(denied, want) {
			t.Errorf("no request.denied event for %s:\n%s", want, denied)
		}
	}
	verifyManifest(t, rec, allowed)
}

// TestRelayPTYShell: a pty shell with a window change; the resize reaches
// the target and the cast, and the cast plays in the real asciinema.
func TestRelayPTYShell(t *testing.T) {
	e := newEnv(t)
	rec, allowed := newRecording(t, true)
	act := NewActivity(time.Unix(0, 0))
	f := startFront(t, e, frontOptions{rec: rec, relay: RelayOptions{Activity: act}})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 0}); err != nil {
		t.Fatal(err)
	}
	in, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	if err := s.WindowChange(33, 101); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, "stty size; echo caf\xc3\xa9-$((6*7)); exit 3\n")
	got := readUntil(t, out, "café-42")
	werr := s.Wait()
	var ee *ssh.ExitError
	if !errors.As(werr, &ee) || ee.ExitStatus() != 3 {
		t.Fatalf("shell exit: %v, want 3", werr)
	}
	if !strings.Contains(got, "33 101") {
		t.Errorf("the target did not see the window change: %q", got)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if act.LastInput().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("LastInput %v not updated by the admin's input", act.LastInput())
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	castPath := filepath.Join(rec.Dir(), "ch00.cast")
	cast := readFile(t, castPath)
	for _, want := range []string{`"r", "101x33"]`, `"m", "exit-status 3"]`, `"i", "stty size`, `"TERM":"xterm"`} {
		if !strings.Contains(cast, want) {
			t.Errorf("cast lacks %s:\n%s", want, cast)
		}
	}
	verifyManifest(t, rec, allowed)

	sshtest.Require(t, "asciinema", "script")
	outFile := filepath.Join(t.TempDir(), "played")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// asciinema wants a terminal: script gives it one.
	play := exec.CommandContext(ctx, "script", "-qec", "asciinema cat "+castPath+" > "+outFile, "/dev/null")
	if b, err := play.CombinedOutput(); err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, b)
	}
	if played := readFile(t, outFile); !strings.Contains(played, "café-42") {
		t.Errorf("asciinema cat output lacks the session output: %q", played)
	}
}

// TestRelayRealSSHClient drives the relay with the real OpenSSH client
// (ssh -tt), as an admin would.
func TestRelayRealSSHClient(t *testing.T) {
	e := newEnv(t)
	rec, _ := newRecording(t, false)
	f := startFront(t, e, frontOptions{rec: rec})
	known := filepath.Join(t.TempDir(), "known_hosts")
	args := append(sshtest.ClientOptions(known, f.key.Priv, ""), "-tt", "-p", strconv.Itoa(f.port),
		"admin@127.0.0.1", "echo real-$((6*7)); exit 3")
	r := sshtest.SSH(t, args...)
	if r.Exit != 3 || !strings.Contains(r.Stdout, "real-42") {
		t.Fatalf("ssh -tt through the relay:\n%s", r)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	tty := ttyrecBytes(t, filepath.Join(rec.Dir(), "ch00.ttyrec"))
	if !bytes.Equal(tty, []byte(r.Stdout)) {
		t.Errorf("ttyrec %q differs from what the client received %q", tty, r.Stdout)
	}
	if cast := readFile(t, filepath.Join(rec.Dir(), "ch00.cast")); strings.Contains(cast, `"i",`) {
		t.Errorf("input recorded although RecordInput is off:\n%s", cast)
	}
}

// TestRelaySignal: a signal request reaches the target and is marked in
// the cast. OpenSSH's sshd acts on signals only for sessions that run
// with privilege separation, which root logins do not; as root the test
// checks that the target received the request, otherwise that the exit
// signal comes back and is marked.
func TestRelaySignal(t *testing.T) {
	e := newEnv(t)
	rec, _ := newRecording(t, true)
	f := startFront(t, e, frontOptions{rec: rec})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("echo started; exec sleep 2"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, out, "started")
	time.Sleep(100 * time.Millisecond) // let the exec happen
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	werr := s.Wait()
	root := os.Geteuid() == 0
	var ee *ssh.ExitError
	if root {
		if !strings.Contains(e.sshd.Log(), "session_signal_req") {
			t.Fatalf("the target never saw the signal request:\n%s", e.sshd.Log())
		}
	} else if !errors.As(werr, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("wait: %v, want exit signal TERM\nsshd log:\n%s", werr, e.sshd.Log())
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	// A command killed by a signal: sshd reports exit-signal.
	s2, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Run("kill -TERM $$"); !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("kill -TERM $$: %v, want exit signal TERM", err)
	}
	if err := f.result(t); err != nil {
		t.Fatalf("relay: %v", err)
	}
	if err := rec.Close("test done"); err != nil {
		t.Fatal(err)
	}
	if cast := readFile(t, filepath.Join(rec.Dir(), "ch01.cast")); !strings.Contains(cast, `"m", "exit-signal TERM"]`) {
		t.Errorf("cast lacks the exit-signal marker:\n%s", cast)
	}
	cast := readFile(t, filepath.Join(rec.Dir(), "ch00.cast"))
	wants := []string{`"m", "signal TERM"]`}
	if !root {
		wants = append(wants, `"m", "exit-signal TERM"]`)
	}
	for _, want := range wants {
		if !strings.Contains(cast, want) {
			t.Errorf("cast lacks %s:\n%s", want, cast)
		}
	}
}

// TestRelayRecordingFailureClosesSession: once the recording cannot be
// written, the session is cut, the admin is told, and Relay reports it.
func TestRelayRecordingFailureClosesSession(t *testing.T) {
	e := newEnv(t)
	rec, _ := newRecording(t, true)
	f := startFront(t, e, frontOptions{rec: rec})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	out, _ := s.StdoutPipe()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	if err := s.Start("cat"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, "first\n")
	readUntil(t, out, "first")
	// Closing the recording makes every later write fail, as a full
	// disk would.
	rec.Close("pulled")
	fmt.Fprintf(in, "second\n")
	rest := readUntil(t, out, "never")
	if strings.Contains(rest, "second") {
		t.Errorf("unrecorded input reached the target and came back: %q", rest)
	}
	waitClosed(t, s, "the recording failed")
	if err := f.result(t); !errors.Is(err, ErrRecording) {
		t.Fatalf("relay returned %v, want ErrRecording", err)
	}
	if !strings.Contains(stderr.String(), "recording cannot be written") {
		t.Errorf("admin was not told: stderr %q", stderr.String())
	}
}

// TestRelayDenyPTYAndSubsystems: DenyPTY refuses a pty, and subsystems
// other than sftp are not relayed.
func TestRelayDenyPTYAndSubsystems(t *testing.T) {
	e := newEnv(t)
	f := startFront(t, e, frontOptions{relay: RelayOptions{DenyPTY: true}})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Error("pty granted despite DenyPTY")
	}
	// The channel still works for an allowed request, unrecorded.
	if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
		t.Errorf("exec after refusals: %q %v", out, err)
	}
	// A refused subsystem ends its channel with the reason on stderr and
	// exit status 1 (a failure reply makes OpenSSH's client drop the
	// message).
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := ch.SendRequest("subsystem", true, ssh.Marshal(stringReq{"netconf"})); !ok || err != nil {
		t.Fatalf("subsystem request: %v %v", ok, err)
	}
	stderr, _ := io.ReadAll(ch.Stderr())
	var status []byte
	for req := range reqs {
		if req.Type == "exit-status" {
			status = req.Payload
		}
	}
	if !bytes.Equal(status, []byte{0, 0, 0, 1}) || !strings.Contains(string(stderr), "gatehouse: subsystem netconf is not relayed") {
		t.Errorf("netconf subsystem: exit-status %x, stderr %q", status, stderr)
	}
	for range 2 {
		if err := f.result(t); err != nil {
			t.Fatalf("relay: %v", err)
		}
	}
}

// TestRelayContextEndsSession: cancelling the context (idle timeout, max
// session, revocation in the bastion) closes a running session and
// Relay returns the cause.
func TestRelayContextEndsSession(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	f := startFront(t, e, frontOptions{ctx: ctx})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := s.StdoutPipe()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	if err := s.Start("echo started; sleep 30"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, out, "started")
	idle := errors.New("idle timeout")
	cancel(idle)
	waitClosed(t, s, "the context ended")
	if err := f.result(t); !errors.Is(err, idle) {
		t.Fatalf("relay returned %v, want the context's cause", err)
	}
	if !strings.Contains(stderr.String(), "gatehouse: session closed: idle timeout") {
		t.Errorf("admin was not told why: stderr %q", stderr.String())
	}
}

// TestRelayRefusedWithoutRecording: a session whose recording cannot be
// started is refused before anything reaches the target.
func TestRelayRefusedWithoutRecording(t *testing.T) {
	e := newEnv(t)
	rec, _ := newRecording(t, true)
	rec.Close("already over")
	f := startFront(t, e, frontOptions{rec: rec})
	c := f.client(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	if out, err := s.CombinedOutput("touch " + marker); err == nil {
		t.Fatalf("session ran unrecorded: %q", out)
	}
	if err := f.result(t); !errors.Is(err, ErrRecording) {
		t.Fatalf("relay returned %v, want ErrRecording", err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the command reached the target: %v", err)
	}
}

// waitClosed fails unless the session ends within 10 s of what happened.
func waitClosed(t *testing.T, s *ssh.Session, after string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("session still open after " + after)
	}
}

// TestMatchEnv: OpenSSH AcceptEnv patterns.
func TestMatchEnv(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"LANG", "LANG", true}, {"LANG", "LANGUAGE", false}, {"LC_*", "LC_ALL", true}, {"LC_*", "LC_", true},
		{"LC_*", "LD_PRELOAD", false}, {"*", "ANY", true}, {"A?C", "ABC", true}, {"A?C", "AC", false},
		{"*_X*", "LC_XY", true}, {"*_X*", "LCX", false}, {"", "", true}, {"LANG", "", false},
	} {
		if got := MatchEnv(tc.pat, tc.name); got != tc.want {
			t.Errorf("MatchEnv(%q, %q) = %v", tc.pat, tc.name, got)
		}
	}
	for _, bad := range []string{"", "A=B", "LC_ ", "a/b", "*****"} {
		if ValidEnvPattern(bad) == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
