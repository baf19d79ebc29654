package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatehouse/apt/apttest"
	"gatehouse/mirror/serve"
)

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fd count of serve: %v", err)
	}
	return len(es)
}

// TestServeFlood: `gatehouse serve`, as its own process with a descriptor
// limit of 1024, holds a real signed repository synced by `mirror sync`.
// 2,000 connections from 127.0.0.2 request its 8 MiB package and never
// read. The real apt-get on 127.0.0.1 still completes update and the
// download; serve's descriptors stay under its cap (64 flood connections
// with their open files, plus apt's); the source is logged once for the
// minute, and the refusals are counted in the metrics.
func TestServeFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test")
	}
	for _, tool := range []string{"apt-get", "dpkg-deb", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	const flood = 2000
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur < flood+500 {
		if rl.Max < flood+500 {
			t.Skipf("the test process may open only %d descriptors; the flood needs %d", rl.Max, flood+500)
		}
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	bin := buildGatehouse(t)
	t.Logf("built in %v", time.Since(start))
	dir := t.TempDir()
	repo, err := apttest.Build(filepath.Join(dir, "up"), apttest.NewKey(t, "ed25519"), apttest.Suite{
		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]apttest.Package{"main": {
			{Name: "tool", Version: "1.0", Arch: "amd64"},
			{Name: "big", Version: "1.0", Arch: "amd64", Size: 8 << 20},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repository built at %v", time.Since(start))
	up := apttest.Serve(t, repo.Dir)
	addr := freePort(t)
	conf := filepath.Join(dir, "gh.toml")
	text := fmt.Sprintf("state_dir = %q\n\n[serve]\nlisten = %q\n\n[[mirror]]\nname = \"up\"\nurl = %q\nsuites = [\"stable\"]\ncomponents = [\"main\"]\narchitectures = [\"amd64\"]\nkeyring = %q\n",
		filepath.Join(dir, "state"), addr, up.URL, repo.KeyringPath)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := ghRun(t, "--config", conf, "mirror", "sync"); code != 0 {
		t.Fatalf("sync: %s %s", out, errs)
	}

	t.Logf("synced at %v", time.Since(start))
	// serve with its own descriptor limit: the default max_conns follows it.
	const fdLimit = 1024
	var logs lockedBuffer
	srv := exec.Command("sh", "-c", `ulimit -n `+strconv.Itoa(fdLimit)+` && exec "$0" "$@"`, bin, "--config", conf, "serve")
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-srvDone:
		case <-time.After(40 * time.Second):
			srv.Process.Kill()
			<-srvDone
		}
	}()
	for i := 0; ; i++ {
		if _, err := httpGet("http://" + addr + "/"); err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("serve did not start:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if want := fmt.Sprintf("max_conns=%d max_conns_per_source=64 fd_limit=%d", fdLimit*3/4/2, fdLimit); !strings.Contains(logs.String(), want) {
		t.Fatalf("serve did not log its limits as %q:\n%s", want, logs.String())
	}
	pid := srv.Process.Pid
	base := countFDs(t, pid)

	// The flood: connect, ask for the big package, never read.
	bigURL := "/up/" + repo.PoolPath("big", "1.0", "amd64")
	var (
		mu       sync.Mutex
		conns    []net.Conn
		dialErrs int
	)
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	floodStart := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{
				LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
				Timeout:   5 * time.Second,
				Control: func(network, address string, c syscall.RawConn) error {
					var serr error
					c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
					return serr
				},
			}
			for range next {
				c, err := d.Dial("tcp", addr)
				if err == nil {
					c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: gatehouse\r\n\r\n", bigURL)
				}
				mu.Lock()
				if err != nil {
					dialErrs++ // a refusal's reset can beat connect(2) or the write
				}
				if c != nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range flood {
		if time.Since(floodStart) > 60*time.Second {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("flood: %d connections opened in %v (%d reset at once)", flood, time.Since(floodStart), dialErrs)

	// apt from another source is served while the flood holds its slots.
	maxFDs := 0
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				maxFDs = max(maxFDs, len(es))
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	apt := apttest.AptClient(t, fmt.Sprintf("deb [signed-by=%s] http://%s/up stable main", repo.KeyringPath, addr))
	if out, err := apt.Update(); err != nil || strings.Contains(out, "Err:") {
		t.Fatalf("apt-get update during the flood: %v\n%s\nserve:\n%s", err, out, tail(logs.String(), 40))
	}
	if out, err := apt.InstallDownloadOnly("tool", "big"); err != nil {
		t.Fatalf("apt-get install during the flood: %v\n%s\nserve:\n%s", err, out, tail(logs.String(), 40))
	}
	close(stop)
	<-sampled
	t.Logf("apt done at %v", time.Since(start))
	if d := time.Since(floodStart); d > 50*time.Second {
		t.Fatalf("flood and apt took %v: the flood connections may have been cut by min_send_time, which proves less", d)
	}
	// 64 flood connections each with the file it sends, apt's few.
	limit := base + 2*64 + 16
	t.Logf("serve's descriptors: %d before the flood, at most %d during it (bound %d, RLIMIT_NOFILE %d)", base, maxFDs, limit, fdLimit)
	if maxFDs > limit || maxFDs >= fdLimit {
		t.Errorf("serve held %d descriptors during the flood, more than %d", maxFDs, limit)
	}
	if v := metricValue(t, addr, "gatehouse_http_connections_refused_total", `reason="max_conns_per_source"`); v < float64(flood-64-dialErrs) {
		t.Errorf("refused connections counted: %v, want at least %d", v, flood-64-dialErrs)
	}
	var refusals []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "refusing new connections") {
			refusals = append(refusals, l)
		}
	}
	if len(refusals) != 1 || !strings.Contains(refusals[0], "source=127.0.0.2/32") || !strings.Contains(refusals[0], "reason=max_conns_per_source") {
		t.Errorf("refusal log lines (want one for 127.0.0.2 in this minute): %q", refusals)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestServeOptionsReserveBastion: max_conns's default leaves the bastion
// half of the descriptor budget under `run`, and an explicit value wins.
func TestServeOptionsReserveBastion(t *testing.T) {
	g := &globals{log: slog.New(slog.DiscardHandler)}
	fds := serve.FDLimit()
	cfg := &fileConfig{}
	alone, err := serveOptions(cfg, false, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	withBastion, err := serveOptions(cfg, true, g, nil)
	if err != nil {
		t.Fatal(err)
	}
	if alone.MaxConns != serve.DefaultMaxConns(fds, 0) || withBastion.MaxConns != serve.DefaultMaxConns(fds, fds*3/8) || withBastion.MaxConns >= alone.MaxConns {
		t.Errorf("max_conns %d alone, %d with a bastion (fd limit %d)", alone.MaxConns, withBastion.MaxConns, fds)
	}
	if alone.MaxConnsPerSource != serve.DefaultMaxConnsPerSource {
		t.Errorf("max_conns_per_source %d", alone.MaxConnsPerSource)
	}
	cfg.Serve.MaxConns, cfg.Serve.MinSendRate = 77, "2KiB"
	set, err := serveOptions(cfg, true, g, nil)
	if err != nil || set.MaxConns != 77 || set.MinSendRate != 2048 {
		t.Errorf("explicit values: %+v %v", set, err)
	}
}
