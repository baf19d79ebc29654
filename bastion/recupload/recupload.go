// Package recupload copies the bastion's sealed session recordings to an
// S3-compatible bucket ([bastion] recordings_upload), so that they outlive
// the appliance and an auditor can verify them there (Download, then the
// same checks as `gatehouse recordings verify --all`) without access to the
// appliance's state directory, as Teleport ships recordings to S3.
//
// Layout in the bucket, below the target's prefix: RECORDING_ID/FILE for
// every file of a sealed recording (manifest.json and its signature last,
// so a recording whose upload was cut short fails verification instead of
// passing with fewer files), then index.jsonl, the hash-chained and
// checkpointed recordings index, replaced after each pass. A recording is
// uploaded once it is sealed (its manifest exists); open ones wait. The
// index uploaded may name recordings still open at that moment: Verify's
// caller treats a recording the index starts but does not close, and that
// the bucket lacks, as in progress rather than deleted.
//
// Uploads never block a session: the bastion notifies the Uploader after
// each recording closes, and a pass that fails is logged and retried on the
// next notification or tick. Each pass lists the bucket once and uploads
// the files it lacks (by key and size); recordings are immutable once
// sealed.
//
// This package uses minio-go directly; it shares no code with the mirror's
// object storage upload (mirror/objstore): mirror and bastion import no
// package of each other.
package recupload

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"gatehouse/bastion/record"
)

// Target is the bucket location and credentials (resolved by the caller;
// never from the config file).
type Target struct {
	Name                               string
	Endpoint                           string // "https://host[:port]"
	Bucket, Prefix, Region             string
	AccessKey, SecretKey, SessionToken string
}

func (t Target) key(rel string) string {
	p := strings.Trim(t.Prefix, "/")
	if p == "" {
		return rel
	}
	return p + "/" + rel
}

func (t Target) client() (*minio.Client, error) {
	u, err := url.Parse(t.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("publish target %s: endpoint %q: want http(s)://host[:port]", t.Name, t.Endpoint)
	}
	if t.AccessKey == "" || t.SecretKey == "" {
		return nil, fmt.Errorf("publish target %s: no credentials", t.Name)
	}
	return minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(t.AccessKey, t.SecretKey, t.SessionToken),
		Secure:       u.Scheme == "https",
		Region:       t.Region,
		BucketLookup: minio.BucketLookupPath,
	})
}

// Uploader uploads the sealed recordings under a recordings root.
type Uploader struct {
	t    Target
	root string
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	lastErr error
	last    time.Time
}

// New returns an Uploader of the recordings under root to t.
func New(t Target, root string, log *slog.Logger) (*Uploader, error) {
	if _, err := t.client(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Uploader{t: t, root: root, log: log, kick: make(chan struct{}, 1)}, nil
}

// Notify asks for a pass soon (a recording was sealed). It never blocks.
func (u *Uploader) Notify() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// Run makes a pass at start, after each Notify and every interval, until
// ctx ends; then it makes a last pass bounded by final (recordings sealed
// at shutdown).
func (u *Uploader) Run(ctx context.Context, interval, final time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		u.pass(ctx)
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), final)
			u.pass(fctx)
			cancel()
			return
		case <-u.kick:
		case <-t.C:
		}
	}
}

func (u *Uploader) pass(ctx context.Context) {
	n, err := u.Pass(ctx)
	u.mu.Lock()
	u.lastErr, u.last = err, time.Now()
	u.mu.Unlock()
	if err != nil {
		u.log.Error("uploading recordings failed; retried on the next pass", "target", u.t.Name, "err", err)
	} else if n > 0 {
		u.log.Info("uploaded recordings", "target", u.t.Name, "files", n)
	}
}

// LastError returns the error of the last pass (nil when it succeeded).
func (u *Uploader) LastError() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastErr
}

// Pass uploads every file of every sealed recording that the bucket lacks,
// then the recordings index, and returns how many files it uploaded.
func (u *Uploader) Pass(ctx context.Context) (int, error) {
	c, err := u.t.client()
	if err != nil {
		return 0, err
	}
	where := func(err error) error {
		return fmt.Errorf("publish target %s (bucket %s): %w", u.t.Name, u.t.Bucket, err)
	}
	listed := map[string]int64{}
	for o := range c.ListObjects(ctx, u.t.Bucket, minio.ListObjectsOptions{Prefix: u.t.key(""), Recursive: true}) {
		if o.Err != nil {
			return 0, where(fmt.Errorf("listing: %w", o.Err))
		}
		listed[o.Key] = o.Size
	}
	ents, err := os.ReadDir(u.root)
	if err != nil {
		return 0, err
	}
	n := 0
	put := func(rel, p string, size int64) error {
		if s, ok := listed[u.t.key(rel)]; ok && s == size {
			return nil
		}
		if _, err := c.FPutObject(ctx, u.t.Bucket, u.t.key(rel), p, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
			return where(fmt.Errorf("uploading %s: %w", rel, err))
		}
		n++
		return nil
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(u.root, e.Name())
		if _, err := os.Lstat(filepath.Join(dir, record.ManifestName)); err != nil {
			continue // open (or not a recording)
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			return n, err
		}
		// The manifest and its signature go last.
		slices.SortStableFunc(files, func(a, b os.DirEntry) int { return last(a.Name()) - last(b.Name()) })
		for _, f := range files {
			if !f.Type().IsRegular() {
				continue
			}
			fi, err := f.Info()
			if err != nil {
				return n, err
			}
			if err := put(e.Name()+"/"+f.Name(), filepath.Join(dir, f.Name()), fi.Size()); err != nil {
				return n, err
			}
		}
	}
	idx := filepath.Join(u.root, record.IndexName)
	if fi, err := os.Stat(idx); err == nil {
		// The index grows while the bastion runs: upload a copy of what
		// is there now, whole lines only, so a concurrent append does
		// not tear the object.
		if err := u.putIndex(ctx, c, idx, fi.Size(), listed); err != nil {
			return n, where(err)
		}
	}
	return n, nil
}

func last(name string) int {
	switch name {
	case record.ManifestName:
		return 1
	case record.SignatureName:
		return 2
	}
	return 0
}

// putIndex uploads the index's complete lines when the bucket's copy has
// another size.
func (u *Uploader) putIndex(ctx context.Context, c *minio.Client, p string, size int64, listed map[string]int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, size))
	if err != nil {
		return err
	}
	if i := strings.LastIndexByte(string(b), '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	if s, ok := listed[u.t.key(record.IndexName)]; ok && s == int64(len(b)) {
		return nil
	}
	_, err = c.PutObject(ctx, u.t.Bucket, u.t.key(record.IndexName), strings.NewReader(string(b)), int64(len(b)), minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return fmt.Errorf("uploading %s: %w", record.IndexName, err)
	}
	return nil
}

// maxObject bounds one downloaded object (a recording file); a bigger one
// is refused rather than filling the auditor's disk.
const maxObject = 16 << 30

// Download copies every recording and the index under t's prefix into dir
// (which must exist and be empty), for verification with
// record.VerifyEvidence. Keys that are not RECORDING_ID/FILE or the index
// are reported as an error naming them: something other than gatehouse
// wrote there.
func Download(ctx context.Context, t Target, dir string) error {
	c, err := t.client()
	if err != nil {
		return err
	}
	where := func(err error) error { return fmt.Errorf("publish target %s (bucket %s): %w", t.Name, t.Bucket, err) }
	var stray []string
	for o := range c.ListObjects(ctx, t.Bucket, minio.ListObjectsOptions{Prefix: t.key(""), Recursive: true}) {
		if o.Err != nil {
			return where(fmt.Errorf("listing: %w", o.Err))
		}
		rel := strings.TrimPrefix(o.Key, t.key(""))
		parts := strings.Split(rel, "/")
		ok := rel == record.IndexName || len(parts) == 2 && validName(parts[0]) && validName(parts[1])
		if !ok {
			stray = append(stray, o.Key)
			continue
		}
		if o.Size > maxObject {
			return where(fmt.Errorf("object %s: %d bytes is more than a recording file may have", o.Key, o.Size))
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := c.FGetObject(ctx, t.Bucket, o.Key, dst, minio.GetObjectOptions{}); err != nil {
			return where(fmt.Errorf("downloading %s: %w", o.Key, err))
		}
	}
	if len(stray) > 0 {
		return where(fmt.Errorf("%w: %s", ErrStray, strings.Join(stray[:min(len(stray), 10)], ", ")))
	}
	return nil
}

// ErrStray is wrapped when the bucket holds objects gatehouse does not
// write under the recordings prefix.
var ErrStray = errors.New("objects that are not recordings")

// validName accepts a recording id or file name: no separators, no dot
// names, nothing a file system would treat specially.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00") && len(s) <= 255
}

// OpenInIndex returns the recordings that the index at path starts and
// does not close: in progress when that copy of the index was made.
func OpenInIndex(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	open := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), record.MaxAuditLine)
	for sc.Scan() {
		var e struct {
			Event string `json:"event"`
			ID    string `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch e.Event {
		case "recording.start":
			open[e.ID] = true
		case "recording.close":
			delete(open, e.ID)
		}
	}
	return open, sc.Err()
}
