package bastion

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatehouse/bastion/internal/sshtest"
	"gatehouse/bastion/record"
)

// abusePy drives the recording proxy below what the OpenSSH client lets
// a user do: raw SFTP packets (reused ids, extensions), env requests
// before exec. It logs in with paramiko as "login@host:port" to the
// bastion (the login way) and prints one JSON object with what it saw.
const abusePy = `
import json, socket, struct, sys
import paramiko

def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def s(b):
    if isinstance(b, str): b = b.encode()
    return u32(len(b)) + b
def pkt(typ, *fields):
    body = bytes([typ]) + b"".join(fields)
    return u32(len(body)) + body

def recv_exact(ch, n):
    b = b""
    while len(b) < n:
        d = ch.recv(n - len(b))
        if not d: return None
        b += d
    return b

def read_packet(ch):
    h = recv_exact(ch, 4)
    if h is None: return None
    body = recv_exact(ch, struct.unpack(">I", h)[0])
    if body is None: return None
    return body[0], body[1:]

def status(body):
    rid, code = struct.unpack(">II", body[:8])
    n = struct.unpack(">I", body[8:12])[0]
    return {"id": rid, "code": code, "message": body[12:12+n].decode(errors="replace")}

def sftp(t):
    ch = t.open_session(timeout=20)
    ch.settimeout(20)
    ch.invoke_subsystem("sftp")
    ch.sendall(pkt(1, u32(3)))
    typ, _ = read_packet(ch)
    assert typ == 2, typ
    return ch

def do_dupid(t, a, out):
    ch = sftp(t)
    h = b"\0\0\0\0"  # sftp-server's first handle
    # One write: OPEN for writing, STAT reusing its id, then a WRITE and a
    # CLOSE on the handle the OPEN will get.
    ch.sendall(pkt(3, u32(5), s(a["path"]), u32(0x1a), u32(0)) +
               pkt(17, u32(5), s("/")) +
               pkt(6, u32(6), s(h), u64(0), s("pwned")) +
               pkt(4, u32(7), s(h)))
    ch.settimeout(5)
    replies = []
    try:
        while True:
            p = read_packet(ch)
            if p is None:
                out["closed"] = True
                break
            replies.append(p[0])
    except socket.timeout:
        out["closed"] = False
    out["replies"] = replies
    # Only the channel is closed: the connection still serves.
    ch2 = t.open_session(timeout=20)
    ch2.settimeout(20)
    ch2.exec_command("echo alive")
    out["after"] = ch2.makefile().read().decode()

def do_lsetstat(t, a, out):
    ch = sftp(t)
    ch.sendall(pkt(200, u32(1), s("lsetstat@openssh.com"), s(a["path"]), u32(4), u32(0o4777)))
    typ, body = read_packet(ch)
    out["status"] = status(body)

def do_ext(t, a, out):
    ch = sftp(t)
    for rid, name in ((2, "evil@example.org"), (3, "allowed@example.org")):
        ch.sendall(pkt(200, u32(rid), s(name), s("/etc/passwd")))
        typ, body = read_packet(ch)
        out[name] = status(body)

def do_env(t, a, out):
    ch = t.open_session(timeout=20)
    ch.settimeout(20)
    for k, v in a["env"].items():
        ch.set_environment_variable(k, v)
    ch.exec_command(a["command"])
    data = b""
    while True:
        d = ch.recv(65536)
        if not d: break
        data += d
    out["stdout"] = data.decode(errors="replace")
    out["exit"] = ch.recv_exit_status()

def main():
    a = json.loads(sys.argv[1])
    key = paramiko.Ed25519Key.from_private_key_file(a["key"])
    key.load_certificate(a["cert"])
    sock = socket.create_connection(("127.0.0.1", a["port"]), timeout=20)
    t = paramiko.Transport(sock)
    t.start_client(timeout=20)
    t.auth_publickey(a["user"], key)
    out = {}
    globals()["do_" + a["scenario"]](t, a, out)
    t.close()
    print(json.dumps(out))

main()
`

// paramikoPython is a python3 that can import paramiko (Debian's
// python3-paramiko, which test.sh installs), or skips the test.
func paramikoPython(t testing.TB) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import paramiko").Run() == nil {
			return py
		}
	}
	t.Skip("python3 with paramiko not installed (Debian package python3-paramiko)")
	return ""
}

// paramiko runs scenario of abusePy as the admin key/cert, logging in
// through the bastion to the target, and returns its JSON report.
func (b *proxyBastion) paramiko(t testing.TB, key sshtest.Key, cert, scenario string, args map[string]any) map[string]any {
	t.Helper()
	py := paramikoPython(t)
	script := filepath.Join(t.TempDir(), "abuse.py")
	writeFile(t, script, []byte(abusePy))
	a := map[string]any{"key": key.Priv, "cert": cert, "port": b.port, "user": b.env.sshd.User + "@" + b.env.target(), "scenario": scenario}
	for k, v := range args {
		a[k] = v
	}
	j, _ := json.Marshal(a)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, py, script, string(j))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("paramiko %s: %v\n%s%s", scenario, err, stdout.String(), stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("paramiko %s: %v\n%s%s", scenario, err, stdout.String(), stderr.String())
	}
	return out
}

// recEvents returns the events.jsonl entries of kind in dir.
func recEvents(t testing.TB, dir, kind string) []event {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, record.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	var out []event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("events.jsonl: %v", err)
		}
		if e.str("event") == kind {
			out = append(out, e)
		}
	}
	return out
}

// findRec returns the first event with all of want (values compared as
// printed), or nil.
func findRec(evs []event, want map[string]string) event {
next:
	for _, e := range evs {
		for k, v := range want {
			if e.str(k) != v {
				continue next
			}
		}
		return e
	}
	return nil
}

func dumpEvents(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		j, _ := json.Marshal(e)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestProxyRecordingEvasion: a logged-in admin tries to act through the
// recording proxy without it showing in the recording (issue 12,
// finding 1), with paramiko and the real OpenSSH clients.
func TestProxyRecordingEvasion(t *testing.T) {
	e := newProxyEnv(t)
	b := newProxyBastion(t, e, func(c *Config) {
		c.AcceptEnv = []string{"LANG", "LC_X", "GH_OK"}
		c.SFTPExtensions = []string{"allowed@example.org"}
		// Debian 12's paramiko (2.12) knows no AEAD cipher: widen the
		// hardened default with the documented setting, as an operator
		// with such clients would.
		c.Ciphers = append(slices.Clone(cipherAlgos), "aes128-ctr")
	})

	t.Run("sftp-duplicate-id", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		path := filepath.Join(b.dir, "dupid.txt")
		out := b.paramiko(t, key, cert, "dupid", map[string]any{"path": path})
		if out["closed"] != true {
			t.Errorf("channel still open after a reused request id: %v", out)
		}
		if out["after"] != "alive\n" {
			t.Errorf("the connection did not survive the closed channel: %v", out)
		}
		if data, err := os.ReadFile(path); err == nil {
			t.Errorf("the file was written (%q) by a request hidden behind a reused id", data)
		}
		dir, _ := b.recordingOf(t, id)
		evs := recEvents(t, dir, "sftp")
		if findRec(evs, map[string]string{"op": "open", "path": path, "flags": "write,create,trunc"}) == nil ||
			findRec(evs, map[string]string{"op": "violation"}) == nil {
			t.Errorf("events.jsonl lacks the open or the violation:\n%s", dumpEvents(evs))
		}
		b.waitEvent(t, "sftp.refused", map[string]string{"key_id": id})
		b.verifyWithSSHKeygen(t, dir)
	})

	t.Run("sftp-lsetstat", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		path := filepath.Join(b.dir, "setuid.bin")
		writeFile(t, path, []byte("#!/bin/sh\n"))
		out := b.paramiko(t, key, cert, "lsetstat", map[string]any{"path": path})
		if st, _ := out["status"].(map[string]any); st["code"] != 0.0 {
			t.Fatalf("lsetstat: %v", out)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSetuid == 0 {
			t.Fatalf("lsetstat did not reach the target: %v %v", fi.Mode(), err)
		}
		dir, _ := b.recordingOf(t, id)
		evs := recEvents(t, dir, "sftp")
		ev := findRec(evs, map[string]string{"op": "lsetstat", "path": path, "result": "ok"})
		if attrs, _ := ev["attrs"].(map[string]any); attrs == nil || attrs["mode"] != "4777" {
			t.Errorf("no lsetstat event with the path and mode 4777:\n%s", dumpEvents(evs))
		}
	})

	t.Run("sftp-unknown-extension", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		out := b.paramiko(t, key, cert, "ext", nil)
		evil, _ := out["evil@example.org"].(map[string]any)
		if evil["code"] != 8.0 || !strings.Contains(evil["message"].(string), "sftp_extensions") {
			t.Errorf("unknown extension not refused by the bastion: %v", out)
		}
		// The allowed one reaches the target, which does not know it.
		if ok, _ := out["allowed@example.org"].(map[string]any); ok["code"] != 8.0 || strings.Contains(ok["message"].(string), "gatehouse") {
			t.Errorf("allowed extension not relayed: %v", out)
		}
		dir, _ := b.recordingOf(t, id)
		evs := recEvents(t, dir, "sftp")
		if findRec(evs, map[string]string{"op": "extended", "name": "evil@example.org", "result": "refused: extension not in [bastion] sftp_extensions"}) == nil ||
			findRec(evs, map[string]string{"op": "extended", "name": "allowed@example.org", "result": "op unsupported"}) == nil {
			t.Errorf("extensions not recorded:\n%s", dumpEvents(evs))
		}
	})

	t.Run("env", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		payload := "echo env-ran-$((6*7))"
		out := b.paramiko(t, key, cert, "env", map[string]any{
			"env":     map[string]string{"LC_X": payload, "LC_Y": "leak", "GH_OK": "fine"},
			"command": `eval "$LC_X"; echo "Y=${LC_Y:-unset} G=${GH_OK:-unset}"`,
		})
		if out["stdout"] != "env-ran-42\nY=unset G=fine\n" || out["exit"] != 0.0 {
			t.Fatalf("env through the proxy: %v", out)
		}
		dir, _ := b.recordingOf(t, id)
		if ev := recEvents(t, dir, "env"); findRec(ev, map[string]string{"name": "LC_X", "value": payload}) == nil || findRec(ev, map[string]string{"name": "GH_OK", "value": "fine"}) == nil {
			t.Errorf("relayed env values not recorded:\n%s", dumpEvents(ev))
		}
		if ev := recEvents(t, dir, "request.denied"); findRec(ev, map[string]string{"request": "env", "name": "LC_Y", "value": "leak"}) == nil {
			t.Errorf("refused env not recorded:\n%s", dumpEvents(ev))
		}
	})

	t.Run("exec-too-long", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		cmd := "echo ran-anyway #" + strings.Repeat("x", 70000)
		r := sshtest.SSH(t, "-F", cfg, "web1", cmd)
		if r.Exit == 0 || strings.Contains(r.Stdout, "ran-anyway") || !strings.Contains(r.Stderr, "max_command_bytes") {
			t.Fatalf("a command over max_command_bytes: %s", r)
		}
		dir, _ := b.recordingOf(t, id)
		if ev := recEvents(t, dir, "request.denied"); findRec(ev, map[string]string{"request": "exec", "command_bytes": strconv.Itoa(len(cmd))}) == nil {
			t.Errorf("refused command not recorded:\n%s", dumpEvents(ev))
		}
	})

	t.Run("exec-recorded-in-full", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		// Under the limit in bytes, but six times that escaped.
		cmd := "echo full-$((1+1)) #" + strings.Repeat("\x01", 20000) + "END"
		if r := sshtest.SSH(t, "-F", cfg, "web1", cmd); r.Exit != 0 || r.Stdout != "full-2\n" {
			t.Fatalf("exec: %s", r)
		}
		dir, _ := b.recordingOf(t, id)
		ev := recEvents(t, dir, "exec")
		if len(ev) != 1 || ev[0].str("command") != record.Sanitize(cmd, 0) {
			t.Errorf("command not recorded in full (%d events)", len(ev))
		}
	})

	t.Run("subsystem-refused", func(t *testing.T) {
		t.Parallel()
		key, cert, id := b.admin(t)
		cfg := b.proxyConfig(t, key, cert)
		r := sshtest.SSH(t, "-F", cfg, "-s", "web1", "netconf")
		if r.Exit == 0 || !strings.Contains(r.Stderr, "gatehouse: subsystem netconf is not relayed") {
			t.Fatalf("subsystem netconf: %s", r)
		}
		dir, _ := b.recordingOf(t, id)
		if ev := recEvents(t, dir, "request.denied"); findRec(ev, map[string]string{"request": "subsystem"}) == nil {
			t.Errorf("refused subsystem not recorded:\n%s", dumpEvents(ev))
		}
	})
}
