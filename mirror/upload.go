package mirror

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gatehouse/mirror/objstore"
	"gatehouse/mirror/store"
)

// Uploading to object storage ([[publish_target]], Config.PublishTo)
// happens after the snapshot is published locally and never undoes that
// publish: like a replica push, a failed upload is logged, recorded in the
// mirror's state (stateExtra.Uploads, so status and metrics of timer-run
// syncs show it) and in the Report, and retried in full by the next
// publish (objstore.Publish uploads only what the bucket lacks).

// UploadRecord is the outcome of uploading one snapshot to one publish
// target.
type UploadRecord struct {
	Target   string    `json:"target"`
	Snapshot string    `json:"snapshot"`
	At       time.Time `json:"at"`
	objstore.Result
	// Error is why the upload failed; empty on success.
	Error string `json:"error,omitempty"`
}

// uploadSnapshot uploads snapshot id to every target of Config.PublishTo
// and returns the outcomes (hookResult records them in the state). It runs after every publish (a sync's,
// `mirror publish`, `rollback`, `import`), before post_publish, with the
// mirror's lock held; its failures never undo the publish. The returned
// warnings go into the caller's report.
func uploadSnapshot(ctx context.Context, st *store.Store, cfg Config, id string, opt Options) ([]UploadRecord, []string) {
	if len(cfg.PublishTo) == 0 {
		return nil, nil
	}
	log := opt.logger()
	files, ferr := publishedFiles(st, id)
	var recs []UploadRecord
	var warnings []string
	for _, name := range cfg.PublishTo {
		rec := UploadRecord{Target: name, Snapshot: id}
		err := ferr
		if err == nil {
			t, ok := opt.PublishTargets[name]
			if !ok {
				err = fmt.Errorf("%w named %q in publish_to, or its credentials could not be read (see the log)", objstore.ErrNoTarget, name)
			} else {
				t.Prefix = strings.Trim(strings.Trim(t.Prefix, "/")+"/"+cfg.Name, "/")
				start := time.Now()
				rec.Result, err = objstore.Publish(ctx, t, files, opt.clock()(), log)
				log.Info("uploaded snapshot to publish target", "mirror", cfg.Name, "target", name, "snapshot", id, "uploaded", rec.Uploaded,
					"skipped", rec.Skipped, "deleted", rec.Deleted, "pending_delete", rec.Pending, "duration", time.Since(start).Round(time.Millisecond))
			}
		}
		rec.At = opt.clock()().UTC()
		if err != nil {
			rec.Error = err.Error()
			log.Error("upload to publish target failed; the local snapshot stays published and the next publish retries", "mirror", cfg.Name, "target", name, "snapshot", id, "err", err)
			warnings = append(warnings, fmt.Sprintf("upload to publish target %s failed: %v", name, err))
		}
		recs = append(recs, rec)
	}
	return recs, warnings
}

// LastUploads returns the mirror's last upload per publish target, as
// recorded in its state.
func LastUploads(stateDir string, cfg Config) (map[string]UploadRecord, error) {
	st, err := openStore(stateDir, &cfg, Options{})
	if err != nil {
		return nil, err
	}
	state, err := st.ReadState()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	return readExtra(state).Uploads, nil
}

// publishedFiles lists what a client of snapshot id can fetch, keyed by
// the path below the mirror's URL (see mirror/serve): dists/... (or, for a
// flat repository, the upstream paths of its Release and indexes) from
// the snapshot, and each pool file the snapshot's indexes name from its
// pool view.
func publishedFiles(st *store.Store, id string) ([]objstore.File, error) {
	snap := filepath.Join(st.Dir(), store.SnapshotsDir, id)
	top, keyPrefix := "dists", "dists/"
	if fi, err := os.Lstat(filepath.Join(snap, store.FlatDir)); err == nil && fi.IsDir() {
		top, keyPrefix = store.FlatDir, ""
	}
	var files []objstore.File
	root := filepath.Join(snap, top)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), store.TempPrefix) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // directories; the store makes no symlinks here
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		files = append(files, objstore.File{Key: keyPrefix + filepath.ToSlash(rel), Path: p, Size: fi.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: listing %s: %w", id, top, err)
	}
	pool, _, err := snapshotPool(st, id)
	if err != nil {
		return nil, err
	}
	for rel, e := range pool {
		p, err := st.PoolView(id, rel)
		if err != nil {
			return nil, err
		}
		key := "pool/" + rel
		if keyPrefix == "" {
			key = rel
		}
		files = append(files, objstore.File{Key: key, Path: p, Size: e.Size, SHA256: e.SHA256, Pool: true})
	}
	return files, nil
}
