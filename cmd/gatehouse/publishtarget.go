package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"os"
	"strings"

	"gatehouse/bastion/recupload"
	"gatehouse/mirror"
	"gatehouse/mirror/objstore"
)

// publishTarget is one [[publish_target]] table: an S3-compatible bucket
// that mirrors upload their published snapshots to (publish_to) and the
// bastion its sealed recordings to ([bastion] recordings_upload). It lives
// here, not in mirror or bastion, because both halves use it and they
// share no package; each half gets its own target type from it, with the
// credentials resolved here (only cmd/gatehouse reads the environment).
type publishTarget struct {
	Name string `toml:"name"`
	// Type is "s3", the only kind so far.
	Type string `toml:"type"`
	// Endpoint is the server's base URL, e.g. "https://s3.example.org".
	Endpoint string `toml:"endpoint"`
	Bucket   string `toml:"bucket"`
	// Prefix is prepended to every key; a mirror's files go below
	// PREFIX/NAME/, recordings below PREFIX/.
	Prefix string `toml:"prefix"`
	Region string `toml:"region"`
	// CredentialsFile holds aws_access_key_id and aws_secret_access_key
	// (optionally aws_session_token) as "key = value" lines, as in
	// ~/.aws/credentials; mode 0600. Without it the AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN environment variables
	// are used. Secrets never go in the config file.
	CredentialsFile string `toml:"credentials_file"`
	// DeleteAfter is how long objects a newer snapshot no longer names
	// stay in the bucket for clients still holding the older InRelease
	// (default "24h").
	DeleteAfter mirror.Duration `toml:"delete_after"`
	// Concurrency is the number of uploads in flight (default 8).
	Concurrency int `toml:"concurrency"`
}

// validate checks one table; where locates it for the message.
func (p *publishTarget) validate(where string) error {
	switch {
	case p.Name == "":
		return usageErrorf("%s: [[publish_target]] needs a name", where)
	case p.Type != "s3":
		return usageErrorf("%s: [[publish_target]] name=%q: type = %q is not supported; use type = \"s3\" (any S3-compatible server)", where, p.Name, p.Type)
	case p.Bucket == "":
		return usageErrorf("%s: [[publish_target]] name=%q: bucket is required", where, p.Name)
	case p.DeleteAfter.Duration < 0:
		return usageErrorf("%s: [[publish_target]] name=%q: delete_after must not be negative", where, p.Name)
	}
	u, err := url.Parse(p.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		return usageErrorf("%s: [[publish_target]] name=%q: endpoint %q: want https://host[:port] with no path and no credentials", where, p.Name, p.Endpoint)
	}
	return nil
}

// credentials returns the access key, secret key and session token from
// CredentialsFile (refused when group- or world-readable, like private
// keys) or the environment.
func (p *publishTarget) credentials() (ak, sk, token string, err error) {
	if p.CredentialsFile == "" {
		ak, sk, token = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN")
		if ak == "" || sk == "" {
			return "", "", "", fmt.Errorf("[[publish_target]] name=%q: no credentials: set credentials_file (mode 0600) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", p.Name)
		}
		return ak, sk, token, nil
	}
	f, err := os.Open(p.CredentialsFile)
	if err != nil {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file: %w", p.Name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file: %w", p.Name, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file %s is readable by group or others (mode %04o): run chmod 600 %s",
			p.Name, p.CredentialsFile, st.Mode().Perm(), p.CredentialsFile)
	}
	if st.Size() > 64<<10 {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file %s: %d bytes is too large", p.Name, p.CredentialsFile, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file: %w", p.Name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue // comments and ini sections ([default])
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			// Never echo the line: it may be a secret.
			return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file %s: a line is not \"key = value\"", p.Name, p.CredentialsFile)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "aws_access_key_id":
			ak = strings.TrimSpace(v)
		case "aws_secret_access_key":
			sk = strings.TrimSpace(v)
		case "aws_session_token":
			token = strings.TrimSpace(v)
		}
	}
	if ak == "" || sk == "" {
		return "", "", "", fmt.Errorf("[[publish_target]] name=%q: credentials_file %s lacks aws_access_key_id or aws_secret_access_key", p.Name, p.CredentialsFile)
	}
	return ak, sk, token, nil
}

// mirrorTargets resolves the publish targets the configured mirrors name,
// for mirror.Options.PublishTargets. A target whose credentials cannot be
// read is left out with the error logged by the caller's sync: the mirror
// still syncs and publishes locally, and the upload failure is recorded.
func (c *fileConfig) mirrorTargets() (map[string]objstore.Target, []error) {
	used := map[string]bool{}
	for _, m := range c.Mirror {
		for _, n := range m.PublishTo {
			used[n] = true
		}
	}
	out := map[string]objstore.Target{}
	var errs []error
	for _, p := range c.PublishTarget {
		if !used[p.Name] {
			continue
		}
		ak, sk, tok, err := p.credentials()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[p.Name] = objstore.Target{Name: p.Name, Endpoint: p.Endpoint, Bucket: p.Bucket, Prefix: p.Prefix, Region: p.Region,
			AccessKey: ak, SecretKey: sk, SessionToken: tok, DeleteAfter: p.DeleteAfter.Duration, Concurrency: p.Concurrency}
	}
	return out, errs
}

// recordingsTarget resolves the target named name for the bastion half.
func (c *fileConfig) recordingsTarget(name string) (*recupload.Target, error) {
	for _, p := range c.PublishTarget {
		if p.Name != name {
			continue
		}
		ak, sk, tok, err := p.credentials()
		if err != nil {
			return nil, err
		}
		return &recupload.Target{Name: p.Name, Endpoint: p.Endpoint, Bucket: p.Bucket, Prefix: p.Prefix, Region: p.Region,
			AccessKey: ak, SecretKey: sk, SessionToken: tok}, nil
	}
	return nil, usageErrorf("no [[publish_target]] is named %q", name)
}

// validatePublishTargets checks the [[publish_target]] tables and that
// every publish_to and recordings_upload names one.
func (c *fileConfig) validatePublishTargets(path string) error {
	names := map[string]bool{}
	for i := range c.PublishTarget {
		p := &c.PublishTarget[i]
		at := fmt.Sprintf("%s:%d", path, c.pos.line(fmt.Sprintf("publish_target[%d]", i)))
		if err := p.validate(at); err != nil {
			return err
		}
		if names[p.Name] {
			return usageErrorf("%s: two [[publish_target]] tables are named %q; names must be unique", at, p.Name)
		}
		names[p.Name] = true
	}
	for i, m := range c.Mirror {
		for _, n := range m.PublishTo {
			if !names[n] {
				return usageErrorf("%s:%d: [[mirror]] name=%q: publish_to names %q, but no [[publish_target]] has that name", path, c.pos.line(fmt.Sprintf("mirror[%d]", i)), m.Name, n)
			}
		}
	}
	if c.Bastion != nil && c.Bastion.RecordingsUpload != "" && !names[c.Bastion.RecordingsUpload] {
		return usageErrorf("%s:%d: [bastion] recordings_upload = %q names no [[publish_target]]", path, c.pos.line("bastion.recordings_upload"), c.Bastion.RecordingsUpload)
	}
	return nil
}

// publishTargetsFor resolves the mirrors' publish targets, logging those
// whose credentials cannot be read (their uploads then fail and are
// recorded; the sync itself goes on).
func (c *fileConfig) publishTargetsFor(g *globals) map[string]objstore.Target {
	t, errs := c.mirrorTargets()
	for _, err := range errs {
		g.log.Error("publish target unusable; uploads to it fail until this is fixed", "err", err)
	}
	return t
}

// resolveRecordingsTarget sets [bastion]'s RecordingsTarget from
// recordings_upload; a target whose credentials cannot be read stops the
// bastion from starting with a configuration error.
func (c *fileConfig) resolveRecordingsTarget() error {
	if c.Bastion == nil || c.Bastion.RecordingsUpload == "" {
		return nil
	}
	t, err := c.recordingsTarget(c.Bastion.RecordingsUpload)
	if err != nil {
		return usageErrorf("[bastion] recordings_upload: %v", err)
	}
	c.Bastion.RecordingsTarget = t
	return nil
}
