package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/store"
)

// Verify re-checks the published snapshot of a mirror against its signed
// Release (an fsck): each suite's signature against cfg.Keyring, every index
// file against the Release's size and hash, every by-hash file against its
// name, and every pool file the indexes list for presence, size and hash.
// Pool files no retained snapshot references are reported as extra.
//
// Each problem is one line starting with "missing:", "corrupted:",
// "extra:" or "unverifiable:"; an empty list means the mirror is sound.
// An expired Valid-Until is not corruption: it is logged as a warning
// (Status reports it too). err is for failures to run the check at all.
func Verify(ctx context.Context, stateDir string, cfg Config, opt Options) (problems []string, err error) {
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return nil, err
	}
	log := opt.logger().With("mirror", cfg.Name)
	now := opt.clock()()
	cur, err := st.Current()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	kr, err := publishedKeyring(cfg, opt)
	if err != nil {
		return nil, err
	}
	mpath, err := st.SnapshotPath(cur, manifestFile)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	snapDir := filepath.Dir(mpath)
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	man, merr := readManifest(st, cur)
	if merr != nil {
		report("corrupted: %s: %v", manifestFile, merr)
	}
	ps := newPoolSet()
	for _, suite := range cfg.Suites {
		var listed *manifestSuite
		if man != nil {
			listed = man.Suites[suite]
		}
		ms, err := verifySuite(snapDir, suite, cfg, kr, listed, now, log, report)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
		}
		if ms == nil {
			continue
		}
		if err := collectPool(snapDir, suite, ms, ps); err != nil {
			report("unverifiable: suite %s: pool files not checked: %v", suite, err)
		}
	}
	if err := verifyPool(ctx, st, cfg, ps, report); err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	refs, err := referenced(st)
	if err != nil {
		report("unverifiable: extra pool files not checked: %v", err)
	} else if err := extraPool(st, refs, report); err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	slices.Sort(problems)
	return problems, nil
}

// publishedKeyring is the keyring the published Releases of cfg are signed
// by: the upstream's, or for a filtered mirror the appliance's own key.
func publishedKeyring(cfg Config, opt Options) (*pgp.Keyring, error) {
	if cfg.Mode != ModeFiltered {
		kr, err := pgp.LoadKeyring(cfg.Keyring)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: keyring: %w", cfg.Name, err)
		}
		return kr, nil
	}
	if opt.Signing.Key == "" {
		return nil, fmt.Errorf("mirror %s: a filtered mirror is signed with the [signing] key, which is not set", cfg.Name)
	}
	k, err := pgp.LoadSigningKey(opt.Signing.Key)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: [signing] key: %w", cfg.Name, err)
	}
	pub, err := k.PublicKey(false)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: [signing] key: %w", cfg.Name, err)
	}
	return pgp.ReadKeyring(bytes.NewReader(pub), opt.Signing.Key+" (public part)")
}

// verifySuite checks one suite's Release and indexes and returns the index
// files found intact, for reading the pool list; nil when the Release itself
// cannot be trusted.
func verifySuite(snapDir, suite string, cfg Config, kr *pgp.Keyring, listed *manifestSuite, now time.Time, log *slog.Logger, report func(string, ...any)) (*manifestSuite, error) {
	dir := filepath.Join(snapDir, filepath.FromSlash(publishedDir(suite)))
	where := publishedDir(suite)
	var body []byte
	inr, err := os.ReadFile(filepath.Join(dir, "InRelease"))
	switch {
	case err == nil:
		body, _, err = pgp.VerifyClearsigned(inr, kr, now)
		if err != nil {
			report("corrupted: %s/InRelease: %v", where, err)
			return nil, nil
		}
	case errors.Is(err, fs.ErrNotExist):
		rel, err1 := os.ReadFile(filepath.Join(dir, "Release"))
		sig, err2 := os.ReadFile(filepath.Join(dir, "Release.gpg"))
		if err1 != nil || err2 != nil {
			report("missing: %s/InRelease (and no Release with Release.gpg)", where)
			return nil, nil
		}
		if _, err := pgp.VerifyDetached(rel, sig, kr, now); err != nil {
			report("corrupted: %s/Release: %v", where, err)
			return nil, nil
		}
		body = rel
	default:
		return nil, err
	}
	rel, err := apt.ParseRelease(body)
	if err != nil {
		report("corrupted: %s: %v", where, err)
		return nil, nil
	}
	if err := apt.CheckValidUntil(rel, now); err != nil {
		log.Warn("published Release has expired; clients refuse it until a sync succeeds (not corruption)", "suite", suite, "valid_until", rel.ValidUntil)
	}
	inManifest := map[string]bool{}
	if listed != nil {
		for _, f := range listed.Files {
			inManifest[f.Path] = true
		}
	}
	ms := &manifestSuite{}
	groups := map[string]bool{}
	for _, e := range wantedIndexes(cfg, rel) {
		k := compress.TrimSuffix(e.Path)
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		algo, want := e.StrongestHash()
		got, size, err := hashFile(p, algo)
		if errors.Is(err, fs.ErrNotExist) {
			if inManifest[e.Path] {
				report("missing: %s/%s", where, e.Path)
			}
			groups[k] = groups[k] || false
			continue
		}
		if err != nil {
			return nil, err
		}
		if size != e.Size || got != want {
			report("corrupted: %s/%s: has %d bytes %s %s, Release says %d bytes %s", where, e.Path, size, algo, got, e.Size, want)
			continue
		}
		groups[k] = true
		ms.Files = append(ms.Files, manifestEntry{Path: e.Path, Size: e.Size, SHA256: e.SHA256, SHA512: e.SHA512})
	}
	for k, ok := range groups {
		if !ok && requiredIndex(k) {
			report("missing: %s/%s (no variant present)", where, k)
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || filepath.Base(filepath.Dir(filepath.Dir(p))) != "by-hash" {
			return err
		}
		algo := filepath.Base(filepath.Dir(p))
		if algo != apt.AlgoSHA256 && algo != apt.AlgoSHA512 {
			return nil
		}
		got, _, err := hashFile(p, algo)
		if err != nil {
			return err
		}
		if got != filepath.Base(p) {
			rel, _ := filepath.Rel(snapDir, p)
			report("corrupted: %s: content has %s %s", filepath.ToSlash(rel), algo, got)
		}
		return nil
	})
	return ms, err
}

// verifyPool re-hashes every pool file the published indexes name.
func verifyPool(ctx context.Context, st *store.Store, cfg Config, ps *poolSet, report func(string, ...any)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	for fn, e := range ps.files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			rel, _ := poolRel(fn)
			p, err := st.PoolPath(rel)
			if err != nil {
				report("corrupted: %s: %v", fn, err)
				return nil
			}
			algo, want := apt.AlgoSHA256, e.SHA256
			if e.SHA512 != "" {
				algo, want = apt.AlgoSHA512, e.SHA512
			}
			got, size, err := hashFile(p, algo)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				report("missing: %s", fn)
			case err != nil:
				return err
			case size != e.Size:
				report("corrupted: %s: has %d bytes, index says %d", fn, size, e.Size)
			case got != want:
				report("corrupted: %s: %s is %s, index says %s", fn, algo, got, want)
			}
			return nil
		})
	}
	return g.Wait()
}

// extraPool reports pool files no retained snapshot references.
func extraPool(st *store.Store, refs map[string]struct{}, report func(string, ...any)) error {
	root := filepath.Join(st.Dir(), store.PoolDir)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), store.TempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if _, ok := refs[rel]; !ok {
			report("extra: %s", path.Join(store.PoolDir, rel))
		}
		return nil
	})
}

// hashFile returns the hex digest (algo SHA256 or SHA512) and size of a file.
func hashFile(p, algo string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	if algo == apt.AlgoSHA512 {
		h = sha512.New()
	}
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
