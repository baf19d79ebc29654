//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// side is one jump host under test, as seen by the measurements.
type side struct {
	name    string // "gatehouse" or "openssh"
	target  string // ssh_config alias of the target behind this jump host
	p       *proc
	login   string
	hostKey gossh.PublicKey
}

func (e *env) sides() [2]side {
	return [2]side{
		{name: "gatehouse", target: "tg", p: e.gate, login: "admin", hostKey: e.gateHostKey},
		{name: "openssh", target: "to", p: e.ossh, login: e.user, hostKey: e.osshHostKey},
	}
}

// measureSetup times complete `ssh -J jump target true` runs, alternating
// the jump hosts (and which goes first) so that load from other processes
// on the machine hits both alike.
func (e *env) measureSetup(ctx context.Context, runs int) (*SetupResult, error) {
	cfg, err := e.clientConfig("setup", "")
	if err != nil {
		return nil, err
	}
	sides := e.sides()
	var ms [2][]float64
	var cpu [2]float64
	// One untimed run each warms the page cache for ssh and sshd.
	for _, s := range sides {
		if _, err := sshRun(ctx, cfg, s.target, "true"); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", s.name, err)
		}
	}
	for i := 0; i < runs; i++ {
		for k := 0; k < 2; k++ {
			j := (i + k) % 2
			s := sides[j]
			s.p.quiesce(5 * time.Second)
			c0, err := s.p.cpuSeconds()
			if err != nil {
				return nil, err
			}
			d, err := sshRun(ctx, cfg, s.target, "true")
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", s.name, i+1, err)
			}
			ms[j] = append(ms[j], float64(d.Microseconds())/1000)
			s.p.quiesce(5 * time.Second)
			c1, err := s.p.cpuSeconds()
			if err != nil {
				return nil, err
			}
			cpu[j] += c1 - c0
		}
	}
	r := &SetupResult{Runs: runs}
	r.Gatehouse = setupSide(ms[0], cpu[0])
	r.OpenSSH = setupSide(ms[1], cpu[1])
	r.Ratio = ratio(r.Gatehouse.MedianMs, r.OpenSSH.MedianMs)
	return r, nil
}

func setupSide(ms []float64, cpu float64) SetupSide {
	return SetupSide{
		MedianMs:          round(median(ms), 1),
		MinMs:             round(slices.Min(ms), 1),
		P90Ms:             round(percentile(ms, 0.9), 1),
		JumpCPUmsPerLogin: round(cpu*1000/float64(len(ms)), 1),
		AllMs:             roundAll(ms, 1),
	}
}

// measureThroughput pipes mib MiB of zeros through each jump host into
// `wc -c` on the target, with cipher on both hops, reps times per jump
// host, alternating which goes first, after one untimed 64 MiB run each
// (as the shared harness does). Only the jump hosts named in jumps run.
func (e *env) measureThroughput(ctx context.Context, cipher string, mib, reps int, jumps map[string]bool) (*ThroughputResult, error) {
	cfg, err := e.clientConfig(strings.SplitN(cipher, "@", 2)[0], cipher)
	if err != nil {
		return nil, err
	}
	sides := e.sides()
	for _, s := range sides {
		if jumps[s.name] {
			if _, err := e.transfer(ctx, cfg, s.target, 64); err != nil {
				return nil, fmt.Errorf("%s %s warm-up: %w", s.name, cipher, err)
			}
		}
	}
	var mbps, cpuPerGiB [2][]float64
	for i := 0; i < reps; i++ {
		for k := 0; k < 2; k++ {
			j := (i + k) % 2
			s := sides[j]
			if !jumps[s.name] {
				continue
			}
			s.p.quiesce(10 * time.Second)
			c0, err := s.p.cpuSeconds()
			if err != nil {
				return nil, err
			}
			d, err := e.transfer(ctx, cfg, s.target, mib)
			if err != nil {
				return nil, fmt.Errorf("%s %s run %d: %w", s.name, cipher, i+1, err)
			}
			s.p.quiesce(10 * time.Second)
			c1, err := s.p.cpuSeconds()
			if err != nil {
				return nil, err
			}
			mbps[j] = append(mbps[j], float64(mib<<20)/1e6/d.Seconds())
			// CPU over the whole run (logins included), per GiB sent.
			cpuPerGiB[j] = append(cpuPerGiB[j], (c1-c0)/(float64(mib)/1024))
			e.log.Info("transfer", "jump", s.name, "cipher", cipher, "seconds", round(d.Seconds(), 2),
				"MB/s", round(mbps[j][len(mbps[j])-1], 1), "jump_cpu_s", round(c1-c0, 2))
		}
	}
	r := &ThroughputResult{Cipher: cipher, MiB: mib, Reps: reps}
	for j, dst := range []*ThroughputSide{&r.Gatehouse, &r.OpenSSH} {
		if len(mbps[j]) == 0 {
			continue
		}
		*dst = ThroughputSide{
			MedianMBps:           round(median(mbps[j]), 1),
			AllMBps:              roundAll(mbps[j], 1),
			JumpCPUSecondsPerGiB: round(median(cpuPerGiB[j]), 2),
		}
	}
	if len(mbps[0]) > 0 && len(mbps[1]) > 0 {
		r.Ratio = ratio(r.Gatehouse.MedianMBps, r.OpenSSH.MedianMBps)
	}
	return r, nil
}

// transfer runs `ssh -F cfg host 'wc -c'` with mib MiB of zeros on its
// standard input and checks the count the target prints. It returns the
// wall time of the whole client command, from process start (before
// either login) to exit: what the shared harness times around
// `head -c 1G /dev/zero | ssh -J bastion target 'wc -c'`.
func (e *env) transfer(ctx context.Context, cfg, host string, mib int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, host, "wc -c")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	werr := make(chan error, 1)
	go func() {
		// head -c writes 128 KiB blocks into the pipe; so does this.
		buf := make([]byte, 128<<10)
		var err error
		for left := mib << 20; left > 0 && err == nil; left -= len(buf) {
			_, err = in.Write(buf[:min(left, len(buf))])
		}
		in.Close()
		werr <- err
	}()
	err = cmd.Wait()
	d := time.Since(start)
	if err := errors.Join(err, <-werr); err != nil {
		return 0, fmt.Errorf("ssh %s: %v\n%s", host, err, stderr.Bytes())
	}
	if got, want := strings.TrimSpace(stdout.String()), strconv.Itoa(mib<<20); got != want {
		return 0, fmt.Errorf("ssh %s: the target counted %q bytes, want %s\n%s", host, got, want, stderr.Bytes())
	}
	return d, nil
}

// sshRun runs one ssh command and returns its wall time.
func sshRun(ctx context.Context, cfg, host, command string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", cfg, host, command)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("ssh -F %s %s %s: %w\n%s", cfg, host, command, err, out.Bytes())
	}
	return d, nil
}

// measureConcurrency opens n jump sessions to each jump host with an
// in-process client (n ssh processes would swamp the machine), at most
// inflight logins at a time, and holds every successful one open until all
// attempts have finished; then it reads the jump host's memory and closes
// them. No attempt is retried.
func (e *env) measureConcurrency(ctx context.Context, n, inflight int) (*ConcurrencyResult, error) {
	r := &ConcurrencyResult{Sessions: n, Inflight: inflight}
	dest := "127.0.0.1:" + strconv.Itoa(e.banner.port)
	for _, s := range e.sides() {
		s.p.quiesce(10 * time.Second)
		c0, err := s.p.cpuSeconds()
		if err != nil {
			return nil, err
		}
		cs := e.load(ctx, s, dest, n, inflight)
		c1, err := s.p.cpuSeconds()
		if err == nil {
			cs.JumpCPUSeconds = round(c1-c0, 2)
		}
		if s.name == "gatehouse" {
			cs.PeakRSSMiB = round(float64(s.p.peakRSSKiB())/1024, 1)
			r.Gatehouse = cs
		} else {
			r.OpenSSH = cs
		}
		e.log.Info("concurrency", "jump", s.name, "ok", cs.Succeeded, "failed", cs.Failed, "pss_mib", cs.PSSMiB, "processes", cs.Processes)
		// sshd needs a moment to reap a thousand session processes.
		s.p.quiesce(60 * time.Second)
	}
	return r, nil
}

func (e *env) load(ctx context.Context, s side, dest string, n, inflight int) ConcurrencySide {
	addr := "127.0.0.1:" + strconv.Itoa(s.p.port)
	cc := &gossh.ClientConfig{
		User:            s.login,
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(e.signer)},
		HostKeyCallback: gossh.FixedHostKey(s.hostKey),
		Timeout:         30 * time.Second,
	}
	var (
		mu       sync.Mutex
		ok       int
		failures = map[string]int{}
		clients  []*gossh.Client
		attempts sync.WaitGroup
	)
	sem := make(chan struct{}, inflight)
	start := time.Now()
	for i := 0; i < n; i++ {
		attempts.Add(1)
		go func() {
			defer attempts.Done()
			sem <- struct{}{}
			c, err := openJump(ctx, addr, cc, dest)
			<-sem
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[failureKind(err)]++
				return
			}
			ok++
			clients = append(clients, c)
		}()
	}
	attempts.Wait()
	cs := ConcurrencySide{
		Succeeded:   ok,
		Failed:      n - ok,
		Failures:    failures,
		OpenSeconds: round(time.Since(start).Seconds(), 2),
	}
	pss, procs := treePSSKiB(s.p.cmd.Process.Pid)
	cs.PSSMiB, cs.Processes = round(float64(pss)/1024, 1), procs
	for _, c := range clients {
		c.Close()
	}
	return cs
}

// openJump logs in to the jump host, opens a direct-tcpip channel to dest
// and reads the destination's SSH version line through it.
func openJump(ctx context.Context, addr string, cc *gossh.ClientConfig, dest string) (*gossh.Client, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
	conn, chans, reqs, err := gossh.NewClientConn(nc, addr, cc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c := gossh.NewClient(conn, chans, reqs)
	ch, err := c.Dial("tcp", dest)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("direct-tcpip: %w", err)
	}
	line := make([]byte, 0, 64)
	b := make([]byte, 1)
	for len(line) < 255 {
		if _, err := ch.Read(b); err != nil {
			c.Close()
			return nil, fmt.Errorf("reading banner: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	if !bytes.HasPrefix(line, []byte("SSH-2.0-")) {
		c.Close()
		return nil, fmt.Errorf("banner: got %q", line)
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// failureKind shortens an error to a class for counting (addresses and
// ports removed).
func failureKind(err error) string {
	s := err.Error()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return strings.SplitN(s, ":", 2)[0] + ": timeout"
	}
	f := strings.Fields(s)
	for i, w := range f {
		if strings.Contains(w, "127.0.0.1") {
			f[i] = "ADDR"
		}
	}
	s = strings.Join(f, " ")
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

// cpuSeconds is the process's user+system time plus that of its reaped
// children (for sshd: the per-connection processes that have exited).
func (p *proc) cpuSeconds() (float64, error) {
	f, err := statFields(p.cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	var ticks int64
	// After the comm field: state is index 0, utime 11, stime 12,
	// cutime 13, cstime 14 (proc(5) fields 14-17).
	for _, i := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", p.cmd.Process.Pid, err)
		}
		ticks += v
	}
	const clkTck = 100 // USER_HZ, fixed on Linux
	return float64(ticks) / clkTck, nil
}

// quiesce waits until the process has no children left (sshd has reaped
// every per-connection process, so their CPU time is in cutime) and then
// a little for in-flight work, up to limit.
func (p *proc) quiesce(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && hasChildren(p.cmd.Process.Pid) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
}

func hasChildren(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		if b, err := os.ReadFile(t); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return true
		}
	}
	return false
}

// peakRSSKiB is VmHWM, the process's peak resident set size.
func (p *proc) peakRSSKiB() int64 {
	return statusField(p.cmd.Process.Pid, "VmHWM:")
}

func statusField(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

// treePSSKiB sums the proportional set size of pid and all its descendants
// (shared pages split between the processes sharing them), and counts them.
func treePSSKiB(pid int) (int64, int) {
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		child, err := strconv.Atoi(filepath.Base(filepath.Dir(s)))
		if err != nil {
			continue
		}
		if f, err := statFields(child); err == nil {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				parent[child] = pp
			}
		}
	}
	in := func(c int) bool {
		for i := 0; c > 1 && i < 64; i++ {
			if c == pid {
				return true
			}
			c = parent[c]
		}
		return false
	}
	var total int64
	n := 0
	for c := range parent {
		if !in(c) {
			continue
		}
		n++
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", c))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				total += v
			}
		}
	}
	return total, n
}

// statFields returns /proc/PID/stat split after the command name, which
// may itself contain spaces and parentheses.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}
