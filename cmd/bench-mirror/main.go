// Command bench measures mirror.Sync against the limit of the machine: it
// builds a synthetic signed upstream, serves it with a real nginx on
// 127.0.0.1, and times in one run
//
//	(a) curl --parallel --parallel-max C fetching the same files (the limit),
//	(b) a full sync into an empty state directory,
//	(c) a sync after -change of the packages got a new version, next to curl
//	    fetching just the changed files and new indexes,
//	(d) a no-op sync (one conditional request per suite),
//
// each sync in a child process of this binary, so its peak RSS is its own.
//
//	go run ./cmd/bench-mirror -packages 20000 -min 2048 -max 8192
//	go run ./cmd/bench-mirror -packages 60000 -min 1024 -max 1024
//
// It needs nginx and curl on PATH. It is not part of `go test`.
//
// With -freshfs (root), each full sync and each curl of the full list
// writes to its own fresh loop-mounted ext4, as ../shared/bench/mirror/run.sh
// does: without it the figures depend on the age and kind of $TMPDIR's file
// system more than on the program (README.md, "Why cmd/bench-mirror and the
// shared harness disagree").
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
	"gatehouse/mirror"
)

func main() {
	var (
		packages = flag.Int("packages", 20000, "synthetic packages")
		minSize  = flag.Int("min", 2048, "smallest pool file, bytes")
		maxSize  = flag.Int("max", 8192, "largest pool file, bytes")
		change   = flag.Float64("change", 0.02, "fraction of packages changed for the incremental sync")
		conc     = flag.Int("concurrency", 16, "parallel downloads for curl and the sync")
		dir      = flag.String("dir", "", "work directory (default: a new temp dir, removed afterwards)")
		rounds   = flag.Int("rounds", 3, "alternating rounds of (a) and (b)")
		profile  = flag.String("cpuprofile", "", "write CPU profiles of the syncs to FILE.full, FILE.changed, FILE.noop")
		freshFS  = flag.Bool("freshfs", false, "give each full sync and each curl of the full list its own fresh loop-mounted ext4, as ../shared/bench/mirror/run.sh does (needs root, mkfs.ext4, mount)")
		child    = flag.String("child", "", "internal: run one sync with this JSON spec and print its report")
	)
	flag.Parse()
	if *child != "" {
		os.Exit(runChild(*child))
	}
	if err := run(*packages, *minSize, *maxSize, *change, *conc, *rounds, *dir, *profile, *freshFS); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type childSpec struct {
	State   string
	Cfg     mirror.Config
	Profile string // CPU profile file, "" for none
}

type childResult struct {
	Report *mirror.Report
	Err    string
	// HWM is the child's peak RSS (VmHWM) in bytes. The parent's rusage
	// Maxrss is no use here: Linux carries the parent's high-water mark
	// into a vforked child across exec.
	HWM int64
}

// peakRSS reads this process's VmHWM from /proc/self/status.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb * 1024
		}
	}
	return 0
}

func runChild(spec string) int {
	var c childSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if c.Profile != "" {
		f, err := os.Create(c.Profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	opt := mirror.Options{Log: log}
	if c.Profile != "" {
		// The pool list is at its largest when publishing starts.
		opt.Progress = func(e mirror.Event) {
			if e.Phase == mirror.PhasePublish {
				if f, err := os.Create(c.Profile + ".heap"); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
		}
	}
	rep, err := mirror.Sync(context.Background(), c.State, c.Cfg, opt)
	res := childResult{Report: rep, HWM: peakRSS()}
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		return 2
	}
	return 0
}

type measured struct {
	wall   time.Duration
	inner  time.Duration // Sync's own duration
	maxRSS int64         // bytes
	rep    *mirror.Report
}

func run(n, minSize, maxSize int, change float64, conc, rounds int, dir, profile string, freshFS bool) error {
	if rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	for _, tool := range []string{"nginx", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is needed on PATH", tool)
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "gatehouse-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		// nginx's workers run as an unprivileged user and must read it.
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
		dir = d
	}
	upDir := filepath.Join(dir, "upstream")
	key, err := pgp.GenerateSigningKey("bench", "bench@example.org", pgp.AlgoEd25519, time.Now().Add(-24*time.Hour))
	if err != nil {
		return err
	}
	t0 := time.Now()
	repo, err := repobuild.BuildSynthetic(upDir, key, n, minSize, maxSize)
	if err != nil {
		return err
	}
	fmt.Printf("upstream: %d packages of %d-%d bytes built in %s\n", n, minSize, maxSize, time.Since(t0).Round(time.Millisecond))

	base, stop, err := startNginx(dir, upDir)
	if err != nil {
		return err
	}
	defer stop()

	files, bytes, err := fileList(upDir)
	if err != nil {
		return err
	}
	cfg := mirror.Config{Name: "bench", URL: base, Suites: []string{"synthetic"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: repo.KeyringPath, Concurrency: conc, MaxDeleteFraction: 1}
	prof := func(kind string) string {
		if profile == "" {
			return ""
		}
		return profile + "." + kind
	}
	// (a) and (b) alternate for several rounds: on a shared machine the
	// ratio of neighbours is steadier than either time alone.
	var state string
	var curlA time.Duration
	var ratios []float64
	for i := range rounds {
		curlDir, stateDir := dir, dir
		if freshFS {
			var umount func()
			if curlDir, umount, err = mountFresh(filepath.Join(dir, fmt.Sprintf("fs-curl-%d", i))); err != nil {
				return err
			}
			defer umount()
			if stateDir, umount, err = mountFresh(filepath.Join(dir, fmt.Sprintf("fs-state-%d", i))); err != nil {
				return err
			}
			defer umount()
		}
		ca, err := curl(curlDir, fmt.Sprintf("curl-full-%d", i), base, files, conc)
		if err != nil {
			return err
		}
		// Earlier outputs stay until the end: deleting thousands of files
		// right before a measurement makes it pay for the deletion.
		state = filepath.Join(stateDir, fmt.Sprintf("state-%d", i))
		full, err := syncChild(state, cfg, prof("full"))
		if err != nil {
			return err
		}
		ratios = append(ratios, ratio(full.wall, ca))
		curlA += ca
		fmt.Printf("round %d: (a) curl --parallel-max %d, %d files, %.1f MiB: %s; (b) full sync: %s (in Sync %s), %d files fetched, peak RSS %.1f MiB: %.2f× the limit\n",
			i+1, conc, len(files), float64(bytes)/(1<<20), ca.Round(time.Millisecond), full.wall.Round(time.Millisecond), full.inner.Round(time.Millisecond),
			full.rep.FilesFetched, mib(full.maxRSS), ratios[i])
	}
	curlA /= time.Duration(rounds)
	slices.Sort(ratios)
	fmt.Printf("(b)/(a) full sync vs curl: median %.2f× over %d rounds (min %.2f, max %.2f)\n", ratios[len(ratios)/2], rounds, ratios[0], ratios[len(ratios)-1])

	// (c) runs three times: from the third on, the sync also prunes the
	// oldest snapshot and collects garbage (KeepSnapshots 3), the steady
	// state of a timer-driven mirror.
	changed := int(float64(n) * change)
	for i := 1; i <= 3; i++ {
		if err := repo.UpdateSynthetic(changed); err != nil {
			return err
		}
		newFiles, err := changedFiles(upDir, files)
		if err != nil {
			return err
		}
		files = append(files, newFiles...)
		curlC, err := curl(dir, fmt.Sprintf("curl-changed-%d", i), base, newFiles, conc)
		if err != nil {
			return err
		}
		inc, err := syncChild(state, cfg, prof(fmt.Sprintf("changed%d", i)))
		if err != nil {
			return err
		}
		gc := "no snapshot pruned, no GC"
		if len(inc.rep.Pruned) > 0 {
			gc = fmt.Sprintf("pruned %d snapshot, GC removed %d files", len(inc.rep.Pruned), inc.rep.GCRemoved)
		}
		fmt.Printf("(c%d) sync after %d packages (%.0f%%) changed: %s (in Sync %s), %d files fetched, %d reused, %s, peak RSS %.1f MiB\n",
			i, changed, change*100, inc.wall.Round(time.Millisecond), inc.inner.Round(time.Millisecond), inc.rep.FilesFetched, inc.rep.FilesReused, gc, mib(inc.maxRSS))
		fmt.Printf("     %.3f× the mean curl of the full list; curl of just the %d new files: %s, %.2f× that\n",
			ratio(inc.wall, curlA), len(newFiles), curlC.Round(time.Millisecond), ratio(inc.wall, curlC))
	}

	noop, err := syncChild(state, cfg, prof("noop"))
	if err != nil {
		return err
	}
	if noop.rep.Result != mirror.ResultCurrent {
		return fmt.Errorf("no-op sync: result %q, want current", noop.rep.Result)
	}
	fmt.Printf("(d) no-op sync: %s inside Sync, %s with process start, peak RSS %.1f MiB\n",
		noop.inner.Round(time.Microsecond*100), noop.wall.Round(time.Millisecond), mib(noop.maxRSS))
	return nil
}

// mountFresh mounts a new ext4 file system (a sparse 8 GiB image with
// 400,000 inodes, as ../shared/bench/mirror/run.sh makes) at dir.
//
// Why: what a file creation costs depends on the file system more than on
// the program. The machine's root file system (where the default work
// directory lives) may be an old ext4 without a journal: there every new
// inode is searched past recently deleted ones (ext4's recently_deleted()
// reads the inode table for each candidate), which made creating 20,000
// pool files cost 2-3 CPU-s instead of under 1 on a fresh one, and more
// right after an earlier round deleted its files. The shared harness gives
// each tool a fresh file system, so only this mode compares with it.
func mountFresh(dir string) (string, func(), error) {
	img := dir + ".img"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	for _, args := range [][]string{
		{"truncate", "-s", "8G", img},
		{"mkfs.ext4", "-q", "-F", "-N", "400000", img},
		{"mount", "-o", "loop", img, dir},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			os.Remove(img)
			return "", nil, fmt.Errorf("-freshfs: %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// nginx and curl need nothing here, but a sync's readers might.
	os.Chmod(dir, 0o755)
	return dir, func() {
		exec.Command("umount", dir).Run()
		os.Remove(img)
	}, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// startNginx serves root on a free loopback port until stop is called.
func startNginx(dir, root string) (base string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`worker_processes 2;
error_log stderr warn;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s;
        root %[3]s;
        location / { }
    }
}
`, prefix, addr, root)
	cp := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cp, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command("nginx", "-c", cp, "-p", prefix, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	// nginx goes with the bench even when the bench is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		cmd.Wait()
	}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			stop()
			return "", nil, fmt.Errorf("nginx did not start on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + addr, stop, nil
}

// fileList is what a sync of the synthetic suite fetches: the InRelease,
// every index variant, and every pool file.
func fileList(upDir string) ([]string, int64, error) {
	d := "dists/synthetic"
	files := []string{d + "/InRelease"}
	var total int64
	for _, s := range []string{"", ".gz", ".xz"} {
		files = append(files, d+"/main/binary-amd64/Packages"+s)
	}
	pool, err := poolFiles(upDir)
	if err != nil {
		return nil, 0, err
	}
	for _, f := range append(files, pool...) {
		fi, err := os.Stat(filepath.Join(upDir, f))
		if err != nil {
			return nil, 0, err
		}
		total += fi.Size()
	}
	return append(files, pool...), total, nil
}

func poolFiles(upDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(upDir, "dists/synthetic/main/binary-amd64/Packages"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	pr := apt.NewPackagesReader(bufio.NewReader(f), "Packages")
	for {
		p, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p.Filename)
	}
}

// changedFiles is the InRelease, the indexes and the pool files that are
// new since old was listed.
func changedFiles(upDir string, old []string) ([]string, error) {
	seen := map[string]bool{}
	for _, f := range old {
		seen[f] = true
	}
	all, _, err := fileList(upDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range all {
		if !seen[f] || strings.HasPrefix(f, "dists/") {
			out = append(out, f)
		}
	}
	return out, nil
}

// curl fetches files from base with curl's parallel mode and returns the
// wall time.
func curl(dir, name, base string, files []string, conc int) (time.Duration, error) {
	out := filepath.Join(dir, name)
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "url = \"%s/%s\"\noutput = \"%s/%s\"\n", base, f, out, f)
	}
	cfgPath := filepath.Join(dir, name+".curlrc")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		return 0, err
	}
	// Neither contender pays for the other's write-back.
	syscall.Sync()
	start := time.Now()
	cmd := exec.Command("curl", "--parallel", "--parallel-max", fmt.Sprint(conc), "--create-dirs", "--fail", "--no-progress-meter", "-K", cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("curl: %w", err)
	}
	return time.Since(start), nil
}

// syncChild runs one sync in a child process and measures it.
func syncChild(state string, cfg mirror.Config, profile string) (*measured, error) {
	spec, err := json.Marshal(childSpec{State: state, Cfg: cfg, Profile: profile})
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-child", string(spec))
	cmd.Stderr = os.Stderr
	syscall.Sync()
	start := time.Now()
	out, err := cmd.Output()
	wall := time.Since(start)
	var res childResult
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Report == nil {
		return nil, fmt.Errorf("sync child: %v (output %q, decode %v)", err, out, jerr)
	}
	if res.Err != "" {
		return nil, fmt.Errorf("sync: %s", res.Err)
	}
	return &measured{wall: wall, inner: res.Report.Duration, rep: res.Report, maxRSS: res.HWM}, nil
}
