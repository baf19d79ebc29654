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
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"gatehouse/apt"
	"gatehouse/apt/compress"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/store"
)

// Verify re-checks what a mirror serves against its signed Releases (an
// fsck): for the published snapshot each suite's signature against
// cfg.Keyring, every index file against the Release's size and hash, every
// by-hash file against its name; for it and every retained snapshot (what
// rollback can publish) every pool file its indexes list, as that snapshot
// serves it (its override, else pool/), for presence, size and hash. A file shared
// by several snapshots is hashed once. Files in pool/ that no retained
// snapshot serves and that are not store objects are reported as extra.
//
// Each problem is one line starting with "missing:", "corrupted:",
// "extra:" or "unverifiable:"; problems of a snapshot other than the
// published one end in "(snapshot ID)". Lines starting with "note:" are
// not problems: what an interrupted sync left (verified downloads no
// snapshot uses yet, which `mirror gc` removes). A list with no problem
// means the mirror is sound. An expired Valid-Until is not corruption: it
// is logged as a warning (Status reports it too). err is for failures to
// run the check at all.
func Verify(ctx context.Context, stateDir string, cfg Config, opt Options) (problems []string, err error) {
	st, err := openStore(stateDir, &cfg, opt)
	if err != nil {
		return nil, err
	}
	log := opt.logger().With("mirror", cfg.Name)
	now := opt.clock()()
	if _, err := st.Current(); err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	kr, err := publishedKeyring(cfg, opt)
	if err != nil {
		return nil, err
	}
	snaps, err := st.Snapshots()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	var mu sync.Mutex
	hashes := &inodeHashes{m: map[inodeKey]inodeHash{}}
	for _, sn := range snaps {
		suffix := ""
		if !sn.Current {
			suffix = " (snapshot " + sn.ID + ")"
		}
		report := func(format string, args ...any) {
			mu.Lock()
			problems = append(problems, fmt.Sprintf(format, args...)+suffix)
			mu.Unlock()
		}
		man, merr := readManifest(st, sn.ID)
		if merr != nil {
			report("corrupted: %s: %v", manifestFile, merr)
		}
		ps := newPoolSet()
		if !sn.Current {
			// A retained snapshot was made under the configuration of its
			// day (other components, architectures, sources), so its
			// dists are checked against its own manifest by the sync that
			// made it; what rollback needs from here is its pool view.
			if man != nil {
				for _, suite := range slices.Sorted(maps.Keys(man.Suites)) {
					if err := collectPool(sn.Dir, suite, man.Suites[suite], ps); err != nil {
						report("unverifiable: suite %s: pool files not checked: %v", suite, err)
					}
				}
			}
			if err := verifyPool(ctx, st, sn.ID, cfg, ps, hashes, report); err != nil {
				return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
			}
			continue
		}
		for _, suite := range cfg.Suites {
			var listed *manifestSuite
			if man != nil {
				listed = man.Suites[suite]
			}
			ms, err := verifySuite(sn.Dir, suite, cfg, kr, listed, now, log, report)
			if err != nil {
				return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
			}
			if ms == nil {
				continue
			}
			if err := collectPool(sn.Dir, suite, ms, ps); err != nil {
				report("unverifiable: suite %s: pool files not checked: %v", suite, err)
			}
		}
		if err := verifyPool(ctx, st, sn.ID, cfg, ps, hashes, report); err != nil {
			return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
		}
	}
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	refs, err := snapshotBaseRefs(st, snaps)
	if err != nil {
		report("unverifiable: extra pool files not checked: %v", err)
	} else if err := extraPool(st, refs, report); err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	slices.Sort(problems)
	return problems, nil
}

// IsProblem reports whether a line of Verify's result is a problem (and
// not a note).
func IsProblem(line string) bool { return !strings.HasPrefix(line, "note:") }

// snapshotBaseRefs returns the pool paths the snapshots serve from pool/.
func snapshotBaseRefs(st *store.Store, snaps []store.SnapshotInfo) (map[string]struct{}, error) {
	out := map[string]struct{}{}
	err := baseRefs(st, snaps)(func(rel string) {
		if _, ok := out[rel]; !ok {
			out[strings.Clone(rel)] = struct{}{}
		}
	})
	return out, err
}

type inodeKey struct{ dev, ino uint64 }

type inodeHash struct {
	algo, sum string
	size      int64
}

// inodeHashes remembers the hash of each inode Verify read, so a pool file
// that several snapshots share is read once.
type inodeHashes struct {
	mu sync.Mutex
	m  map[inodeKey]inodeHash
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

// verifyPool re-hashes every pool file the indexes of snapshot id name,
// as that snapshot serves it.
func verifyPool(ctx context.Context, st *store.Store, id string, cfg Config, ps *poolSet, hashes *inodeHashes, report func(string, ...any)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	for fn, e := range ps.files {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			rel, _ := poolRel(fn)
			p, err := st.PoolView(id, rel)
			if err != nil {
				report("corrupted: %s: %v", fn, err)
				return nil
			}
			algo, want := apt.AlgoSHA256, e.SHA256
			if e.SHA256 == "" {
				algo, want = apt.AlgoSHA512, e.SHA512
			}
			got, size, err := hashes.hash(p, algo)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				report("missing: %s", fn)
			case err != nil:
				return err
			case size != e.Size:
				report("corrupted: %s: has %d bytes, index says %d", fn, size, e.Size)
			case !strings.EqualFold(got, want):
				report("corrupted: %s: %s is %s, index says %s", fn, algo, got, want)
			}
			return nil
		})
	}
	return g.Wait()
}

// hash is hashFile, once per inode.
func (ih *inodeHashes) hash(p, algo string) (string, int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0, err
	}
	var k inodeKey
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k = inodeKey{uint64(st.Dev), st.Ino}
		ih.mu.Lock()
		h, ok := ih.m[k]
		ih.mu.Unlock()
		if ok && h.algo == algo {
			return h.sum, h.size, nil
		}
	}
	sum, size, err := hashFile(p, algo)
	if err == nil && k != (inodeKey{}) {
		ih.mu.Lock()
		ih.m[k] = inodeHash{algo, sum, size}
		ih.mu.Unlock()
	}
	return sum, size, err
}

// extraPool reports files in pool/ that no retained snapshot serves: a
// store object (a verified download linked there by a publish that was
// interrupted) is a note, anything else is extra. Objects nothing links
// (downloads of an interrupted sync) are counted in the same note.
func extraPool(st *store.Store, refs map[string]struct{}, report func(string, ...any)) error {
	root := filepath.Join(st.Dir(), store.PoolDir)
	var files int
	var bytes int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel := filepath.ToSlash(p[len(root)+1:])
		if _, ok := refs[rel]; ok {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && (strings.HasPrefix(d.Name(), store.TempPrefix) || store.IsObjectFile(fi)) {
			files++
			bytes += fi.Size()
			return nil
		}
		report("extra: %s", path.Join(store.PoolDir, rel))
		return nil
	})
	if err != nil {
		return err
	}
	n, b, err := st.Leftovers()
	if err != nil {
		return err
	}
	files, bytes = files+n, bytes+b
	if files > 0 {
		report("note: %d unreferenced pool files, %.1f MiB; `gatehouse mirror gc` removes them", files, float64(bytes)/(1<<20))
	}
	return nil
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
