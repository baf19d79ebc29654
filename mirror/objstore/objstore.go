// Package objstore uploads a published mirror snapshot to an S3-compatible
// bucket, so that any web server or CDN in front of the bucket serves it to
// apt the way gatehouse serve does (as aptly's S3 publishing does).
//
// Publish keeps the order a mirror push needs so that a client in the middle
// of `apt-get update` never sees an index naming a file the bucket lacks
// (ftpsync's two stages): pool files first, then by-hash files, then the
// other indexes, then Release, Release.gpg and InRelease last. Objects the
// new snapshot no longer names are not deleted at once: they are recorded
// with a deadline (Target.DeleteAfter) in a manifest kept in the bucket
// (ManifestKey under the prefix), and deleted by the first Publish after
// the deadline, so a client still holding the previous InRelease finds its
// indexes and packages.
//
// Only what the bucket lacks is uploaded: the bucket is listed once per
// Publish, and a file is skipped when the listing has its key with its size
// and the manifest records its SHA-256 and the ETag the bucket lists for
// it (a file rebuilt with the same size, or an object replaced behind
// gatehouse's back, is uploaded again). Signing is minio-go's, not ours.
//
// Object keys are the paths apt requests, byte for byte: a '+' or '~' in a
// package file name stays a '+' or '~' in the key (minio-go percent-encodes
// it on the wire). Whether a given server maps apt's GET of such a name to
// that key is the server's business; the tests check it against a real
// S3-compatible server.
package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sync/errgroup"
)

// ManifestKey is the object, below the target's prefix, that records what
// gatehouse uploaded (key, size, SHA-256) and which objects wait for
// deletion. Its name starts with '.', which no apt path does.
const ManifestKey = ".gatehouse/manifest.json"

// DefaultDeleteAfter is the grace period for objects a new snapshot no
// longer names: a day, as long as Debian's mirrors keep by-hash files of
// earlier generations reachable for clients mid-update.
const DefaultDeleteAfter = 24 * time.Hour

// Target is one bucket location with its credentials. Credentials come
// from the caller (a file or the environment), never from the config file.
type Target struct {
	// Name names the target in errors and logs.
	Name string
	// Endpoint is the server's base URL, "https://s3.example.org" or
	// "http://127.0.0.1:8333" (plain HTTP only for tests and trusted
	// networks).
	Endpoint string
	Bucket   string
	// Prefix is prepended to every key ("" or "a/b", no leading slash).
	Prefix string
	// Region is the bucket's region; "" lets the library ask the server.
	Region string
	// AccessKey, SecretKey and SessionToken sign the requests.
	AccessKey, SecretKey, SessionToken string
	// DeleteAfter is the grace period before objects no longer named are
	// deleted; zero means DefaultDeleteAfter, negative means at once.
	DeleteAfter time.Duration
	// Concurrency is the number of uploads in flight (default 8).
	Concurrency int
}

// File is one file of the snapshot to upload.
type File struct {
	// Key is the path apt requests, relative to the target's prefix.
	Key string
	// Path is the local file.
	Path string
	Size int64
	// SHA256 is the file's hash when the caller knows it (pool files, from
	// the signed index); Publish hashes the file when it is empty.
	SHA256 string
	// Pool marks a package or source file (uploaded first); other keys
	// are classified by name (by-hash, indexes, Release files).
	Pool bool
}

// Result says what one Publish did.
type Result struct {
	Uploaded int   `json:"uploaded"`
	Bytes    int64 `json:"bytes"`
	Skipped  int   `json:"skipped"`
	Deleted  int   `json:"deleted"`
	// Pending counts objects waiting for their deletion deadline.
	Pending int `json:"pending"`
}

// manifest is the JSON of ManifestKey.
type manifest struct {
	Version int `json:"version"`
	// Files maps each key of the last published snapshot to its size and
	// SHA-256.
	Files map[string]manifestFile `json:"files"`
	// Pending maps keys no longer named to when they may be deleted.
	Pending map[string]time.Time `json:"pending,omitempty"`
}

type manifestFile struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// ETag is what the server answered to the upload; a listing showing
	// another one means the object was replaced behind gatehouse's back.
	ETag string `json:"etag,omitempty"`
}

// Stages, in upload order.
const (
	stagePool = iota
	stageByHash
	stageIndex
	stageRelease
	nStages
)

// stage classifies a key of a published tree.
func stage(key string) int {
	base := key[strings.LastIndexByte(key, '/')+1:]
	switch {
	case base == "InRelease" || base == "Release" || base == "Release.gpg":
		return stageRelease
	case strings.Contains("/"+key, "/by-hash/"):
		return stageByHash
	case strings.HasPrefix(key, "dists/") || strings.Contains(key, "/dists/"):
		return stageIndex
	case strings.HasSuffix(base, ".deb") || strings.HasSuffix(base, ".udeb") || strings.HasSuffix(base, ".ddeb") ||
		strings.HasPrefix(key, "pool/") || strings.Contains(key, "/pool/"):
		return stagePool
	}
	// A flat repository's indexes (Packages, Sources, ...) sit beside
	// its packages: anything not a package goes with the indexes.
	return stageIndex
}

// releaseOrder puts Release before Release.gpg before InRelease, so the
// detached pair is complete before the file most clients read changes.
func releaseOrder(key string) int {
	switch key[strings.LastIndexByte(key, '/')+1:] {
	case "Release":
		return 0
	case "Release.gpg":
		return 1
	}
	return 2
}

// NewClient returns a minio-go client for t.
func NewClient(t Target) (*minio.Client, error) {
	u, err := url.Parse(t.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("publish target %s: endpoint %q: want http(s)://host[:port] with no path", t.Name, t.Endpoint)
	}
	if t.AccessKey == "" || t.SecretKey == "" {
		return nil, fmt.Errorf("publish target %s: no credentials (set credentials_file or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", t.Name)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(t.AccessKey, t.SecretKey, t.SessionToken),
		Secure:       u.Scheme == "https",
		Region:       t.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("publish target %s: %w", t.Name, err)
	}
	return c, nil
}

func (t Target) key(rel string) string {
	p := strings.Trim(t.Prefix, "/")
	if p == "" {
		return rel
	}
	return p + "/" + rel
}

// Publish makes the bucket hold exactly files (plus objects waiting for
// their deletion deadline), in the safe order described in the package
// comment. now is the clock for deletion deadlines. An error leaves the
// bucket with the previous snapshot's Release files as long as the error
// came before the last stage, and the manifest unchanged, so the next
// Publish retries what is missing.
func Publish(ctx context.Context, t Target, files []File, now time.Time, log *slog.Logger) (Result, error) {
	var res Result
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := NewClient(t)
	if err != nil {
		return res, err
	}
	where := func(err error) error {
		return fmt.Errorf("publish target %s (bucket %s): %w", t.Name, t.Bucket, err)
	}
	old, err := readManifest(ctx, c, t)
	if err != nil {
		return res, where(err)
	}
	listed := map[string]minio.ObjectInfo{}
	for o := range c.ListObjects(ctx, t.Bucket, minio.ListObjectsOptions{Prefix: t.key(""), Recursive: true}) {
		if o.Err != nil {
			return res, where(fmt.Errorf("listing: %w", o.Err))
		}
		listed[o.Key] = o
	}
	var stages [nStages][]File
	current := make(map[string]manifestFile, len(files))
	var mu sync.Mutex
	for _, f := range files {
		if f.Key == "" || strings.HasPrefix(f.Key, "/") || strings.HasPrefix(f.Key, ".gatehouse/") {
			return res, where(fmt.Errorf("bad object key %q", f.Key))
		}
		if f.SHA256 == "" {
			if f.SHA256, err = hashFile(f.Path); err != nil {
				return res, where(err)
			}
		}
		want := manifestFile{Size: f.Size, SHA256: f.SHA256}
		o, ok := listed[t.key(f.Key)]
		if was := old.Files[f.Key]; ok && o.Size == f.Size && was.Size == f.Size && was.SHA256 == f.SHA256 &&
			was.ETag != "" && sameETag(was.ETag, o.ETag) {
			current[f.Key] = was
			res.Skipped++
			continue
		}
		current[f.Key] = want
		s := stage(f.Key)
		if f.Pool {
			s = stagePool
		}
		stages[s] = append(stages[s], f)
	}
	slices.SortStableFunc(stages[stageRelease], func(a, b File) int { return releaseOrder(a.Key) - releaseOrder(b.Key) })
	for s, batch := range stages {
		n := t.Concurrency
		if n <= 0 {
			n = 8
		}
		if s == stageRelease {
			n = 1 // in releaseOrder
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(n)
		for _, f := range batch {
			g.Go(func() error {
				info, err := c.FPutObject(gctx, t.Bucket, t.key(f.Key), f.Path, minio.PutObjectOptions{
					ContentType:  "application/octet-stream",
					UserMetadata: map[string]string{"sha256": f.SHA256},
				})
				if err != nil {
					return fmt.Errorf("uploading %s: %w", f.Key, err)
				}
				if info.Size != f.Size {
					return fmt.Errorf("uploading %s: the server stored %d bytes of %d (file changed while uploading?)", f.Key, info.Size, f.Size)
				}
				mu.Lock()
				mf := current[f.Key]
				mf.ETag = info.ETag
				current[f.Key] = mf
				mu.Unlock()
				return nil
			})
			res.Uploaded++
			res.Bytes += f.Size
		}
		if err := g.Wait(); err != nil {
			return res, where(err)
		}
	}

	// Deletions: what the bucket holds under the prefix and the new
	// snapshot does not name waits DeleteAfter, then goes.
	grace := t.DeleteAfter
	if grace == 0 {
		grace = DefaultDeleteAfter
	}
	next := manifest{Version: 1, Files: current, Pending: map[string]time.Time{}}
	mkey := t.key(ManifestKey)
	for _, k := range slices.Sorted(maps.Keys(listed)) {
		rel := strings.TrimPrefix(k, t.key(""))
		if k == mkey || strings.HasPrefix(rel, ".gatehouse/") {
			continue
		}
		if _, ok := current[rel]; ok {
			continue
		}
		due, ok := old.Pending[rel]
		if !ok {
			due = now.Add(grace)
		}
		if now.Before(due) {
			next.Pending[rel] = due
			continue
		}
		if err := c.RemoveObject(ctx, t.Bucket, k, minio.RemoveObjectOptions{}); err != nil {
			log.Warn("publish target: deleting an object failed; retried on the next publish", "target", t.Name, "key", k, "err", err)
			next.Pending[rel] = due
			continue
		}
		res.Deleted++
	}
	res.Pending = len(next.Pending)
	b, err := json.Marshal(next)
	if err != nil {
		return res, where(err)
	}
	if _, err := c.PutObject(ctx, t.Bucket, mkey, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{ContentType: "application/json"}); err != nil {
		return res, where(fmt.Errorf("writing %s: %w", ManifestKey, err))
	}
	return res, nil
}

// maxManifest bounds the manifest read back from the bucket (about 150
// bytes per file: 6 million files).
const maxManifest = 1 << 30

// readManifest returns the bucket's manifest, empty when there is none. A
// manifest that does not parse is treated as absent (everything is then
// uploaded again): it only ever saves work.
func readManifest(ctx context.Context, c *minio.Client, t Target) (manifest, error) {
	m := manifest{Files: map[string]manifestFile{}, Pending: map[string]time.Time{}}
	o, err := c.GetObject(ctx, t.Bucket, t.key(ManifestKey), minio.GetObjectOptions{})
	if err != nil {
		return m, fmt.Errorf("reading %s: %w", ManifestKey, err)
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, maxManifest))
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return m, nil
		}
		return m, fmt.Errorf("reading %s: %w", ManifestKey, err)
	}
	var got manifest
	if json.Unmarshal(b, &got) != nil {
		return m, nil
	}
	if got.Files != nil {
		m.Files = got.Files
	}
	if got.Pending != nil {
		m.Pending = got.Pending
	}
	return m, nil
}

// sameETag compares ETags as servers quote them or not.
func sameETag(a, b string) bool {
	return strings.Trim(a, `"`) == strings.Trim(b, `"`)
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrNoTarget is wrapped when a mirror names a publish target that is not
// configured.
var ErrNoTarget = errors.New("no such [[publish_target]]")
