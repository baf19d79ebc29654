// Command bench-replica measures contrib/push-replicas, the two-stage
// rsync push of a published snapshot to a static replica, against a plain
// `rsync -a` of the same tree (the files clients are served, copied into
// an ordinary directory beforehand, untimed): into an empty replica, and
// after -change of the packages got a new version (incremental). It
// builds a synthetic signed upstream, serves it on 127.0.0.1 with
// net/http, and syncs it with mirror.Sync first.
//
//	go run ./cmd/bench-replica -packages 20000
//
// It needs rsync on PATH. It is not part of `go test`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
	"gatehouse/mirror"
	"gatehouse/mirror/store"
)

func main() {
	var (
		packages = flag.Int("packages", 20000, "synthetic packages (pool files)")
		minSize  = flag.Int("min", 2048, "smallest pool file, bytes")
		maxSize  = flag.Int("max", 8192, "largest pool file, bytes")
		change   = flag.Float64("change", 0.02, "fraction of packages changed for the incremental push")
		rounds   = flag.Int("rounds", 3, "rounds of (push, rsync) pairs; the median ratio is reported")
		script   = flag.String("script", "contrib/push-replicas", "the push script")
		dir      = flag.String("dir", "", "work directory (default: a new temp dir, removed afterwards)")
	)
	flag.Parse()
	if err := run(*packages, *minSize, *maxSize, *change, *rounds, *script, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench-replica:", err)
		os.Exit(1)
	}
}

func run(n, minSize, maxSize int, change float64, rounds int, script, dir string) error {
	script, err := filepath.Abs(script)
	if err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bench-replica-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	key, err := pgp.GenerateSigningKey("bench", "bench@example.org", pgp.AlgoEd25519, time.Now().Add(-24*time.Hour))
	if err != nil {
		return err
	}
	upDir := filepath.Join(dir, "upstream")
	t0 := time.Now()
	repo, err := repobuild.BuildSynthetic(upDir, key, n, minSize, maxSize)
	if err != nil {
		return err
	}
	fmt.Printf("upstream: %d packages of %d-%d bytes built in %s\n", n, minSize, maxSize, time.Since(t0).Round(time.Millisecond))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(upDir)), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	state := filepath.Join(dir, "state")
	cfg := mirror.Config{Name: "bench", URL: "http://" + ln.Addr().String(), Suites: []string{"synthetic"}, Components: []string{"main"},
		Architectures: []string{"amd64"}, Keyring: repo.KeyringPath, Concurrency: 16, MaxDeleteFraction: 1}
	opt := mirror.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	sync := func() error {
		t := time.Now()
		rep, err := mirror.Sync(context.Background(), state, cfg, opt)
		if err != nil {
			return err
		}
		fmt.Printf("sync: %s, %d files fetched in %s\n", rep.Result, rep.FilesFetched, time.Since(t).Round(time.Millisecond))
		return nil
	}
	if err := sync(); err != nil {
		return err
	}
	var full, incr []float64
	for r := range rounds {
		rd := filepath.Join(dir, fmt.Sprintf("round%d", r))
		// (a) into empty replicas.
		plain := filepath.Join(rd, "plain")
		if err := materialize(state, cfg.Name, plain); err != nil {
			return err
		}
		tp, err := push(script, state, cfg.Name, filepath.Join(rd, "replica"))
		if err != nil {
			return err
		}
		tr, err := timed("rsync", "-a", plain+"/", filepath.Join(rd, "rsync")+"/")
		if err != nil {
			return err
		}
		full = append(full, tp.Seconds()/tr.Seconds())
		fmt.Printf("round %d full:        push-replicas %s, rsync -a %s: %.2fx\n", r, tp.Round(time.Millisecond), tr.Round(time.Millisecond), full[len(full)-1])
		// (b) after a change upstream.
		if err := repo.UpdateSynthetic(max(1, int(float64(n)*change))); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
		if err := os.RemoveAll(plain); err != nil {
			return err
		}
		if err := materialize(state, cfg.Name, plain); err != nil {
			return err
		}
		tp, err = push(script, state, cfg.Name, filepath.Join(rd, "replica"))
		if err != nil {
			return err
		}
		tr, err = timed("rsync", "-a", "--delete", plain+"/", filepath.Join(rd, "rsync")+"/")
		if err != nil {
			return err
		}
		incr = append(incr, tp.Seconds()/tr.Seconds())
		fmt.Printf("round %d incremental: push-replicas %s, rsync -a --delete %s: %.2fx\n", r, tp.Round(time.Millisecond), tr.Round(time.Millisecond), incr[len(incr)-1])
		if err := os.RemoveAll(rd); err != nil {
			return err
		}
	}
	slices.Sort(full)
	slices.Sort(incr)
	fmt.Printf("median: full push %.2fx rsync -a, incremental %.2fx (%d packages, %.0f%% changed)\n", full[len(full)/2], incr[len(incr)/2], n, change*100)
	return nil
}

// push runs the script as post_publish would for the published snapshot.
func push(script, state, name, dest string) (time.Duration, error) {
	id, snap, err := store.ResolveCurrent(mirror.StoreRoot(state), name)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(script, dest)
	cmd.Env = append(os.Environ(), "GATEHOUSE_MIRROR="+name, "GATEHOUSE_SNAPSHOT="+id, "GATEHOUSE_SNAPSHOT_DIR="+snap,
		"GATEHOUSE_POOL_DIR="+filepath.Join(mirror.StoreRoot(state), name, store.PoolDir))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
	}
	return time.Since(t), nil
}

func timed(name string, args ...string) (time.Duration, error) {
	t := time.Now()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	return time.Since(t), nil
}

// materialize copies the tree clients of the published snapshot are served
// (dists, and the pool view) into the plain directory out, with the files'
// modification times, as the baseline rsync's source.
func materialize(state, name, out string) error {
	_, snap, err := store.ResolveCurrent(mirror.StoreRoot(state), name)
	if err != nil {
		return err
	}
	pool := filepath.Join(mirror.StoreRoot(state), name, store.PoolDir)
	copyTree := func(from, to string, skip func(rel string) bool) error {
		return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == from {
				return filepath.SkipDir
			}
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(from, p)
			if skip != nil && skip(rel) {
				return nil
			}
			dst := filepath.Join(to, rel)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
		})
	}
	if err := copyTree(filepath.Join(snap, "dists"), filepath.Join(out, "dists"), nil); err != nil {
		return err
	}
	if err := copyTree(filepath.Join(snap, store.PoolDir), filepath.Join(out, store.PoolDir), nil); err != nil {
		return err
	}
	return copyTree(pool, filepath.Join(out, store.PoolDir), func(rel string) bool {
		_, err := os.Stat(filepath.Join(out, store.PoolDir, rel))
		return err == nil || strings.HasPrefix(filepath.Base(rel), ".")
	})
}
