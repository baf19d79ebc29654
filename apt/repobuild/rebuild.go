package repobuild

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// RebuildChanged is Rebuild for an upstream that rebuilds packages under
// the same Filename (same name, version and architecture, new bytes), as
// vendor and flat repositories do: the pool files of the packages named in
// changed ("name_version_arch", as PoolPath takes them) are removed before
// the build, so the build writes them anew from the suites' Package
// descriptions (give those a different Size, Files or Extra), and the
// indexes list the new sizes and hashes.
//
// Clients that read the old indexes meanwhile get a 404 or the new bytes,
// as from a real upstream doing this.
func (r *Repo) RebuildChanged(changed []string, suites ...Suite) error {
	r.mu.Lock()
	var paths []string
	for _, k := range changed {
		rel, ok := r.pool[k]
		if !ok {
			r.mu.Unlock()
			return fmt.Errorf("apttest: RebuildChanged: no package %s in the last build", k)
		}
		paths = append(paths, rel)
	}
	r.mu.Unlock()
	for _, rel := range paths {
		if err := os.Remove(filepath.Join(r.Dir, filepath.FromSlash(rel))); err != nil {
			return fmt.Errorf("apttest: RebuildChanged: %w", err)
		}
	}
	return r.Rebuild(suites...)
}

// SameSizeVariant returns a copy of p whose .deb has exactly the size of
// p's but other bytes (one character of its Description differs), for an
// upstream that changes content without changing the size: only the hash
// can tell the two apart.
func SameSizeVariant(ctx context.Context, p Package) (Package, error) {
	orig, err := buildDeb(ctx, &p)
	if err != nil {
		return Package{}, err
	}
	desc := []byte(p.description())
	for i := len(desc) - 1; i >= 0 && i >= len(desc)-40; i-- {
		if desc[i] < 'a' || desc[i] > 'z' {
			continue
		}
		for _, c := range []byte("etaoinsrhl") {
			if c == desc[i] {
				continue
			}
			d := bytes.Clone(desc)
			d[i] = c
			v := p
			v.Description = string(d)
			b, err := buildDeb(ctx, &v)
			if err != nil {
				return Package{}, err
			}
			if len(b) == len(orig) && !bytes.Equal(b, orig) {
				return v, nil
			}
		}
	}
	return Package{}, fmt.Errorf("apttest: no same-size variant of %s_%s_%s found", p.Name, p.Version, p.Arch)
}
