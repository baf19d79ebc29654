package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/fetch"
	"gatehouse/mirror/store"
)

// suiteRun is one suite's Release as fetched and checked by a sync.
type suiteRun struct {
	name string
	dir  string // upstream, relative to the archive root: "dists/<name>" (see remoteDir)
	// local is where the upstream's Release and indexes go in a snapshot:
	// dir itself for a verbatim mirror; for a filtered one a directory
	// beside dists/ that serve never exposes (see upstreamDir).
	local string
	// unchanged is true when upstream's Release is the one published (a
	// 304, or the same bytes).
	unchanged  bool
	validators fetch.Validators
	// prev is the suite's last accepted Release as stored, which an
	// unchanged suite reports (its Date and Valid-Until).
	prev store.SuiteState

	// Exactly one of inRelease and release (+releaseGPG) is set for a
	// changed suite.
	inRelease, release, releaseGPG []byte
	body                           []byte // the signed Release text
	rel                            *apt.Release
	signedBy                       []string
	// from is the URL of the directory the Release files came from, for
	// messages.
	from string
}

// primary is the file whose bytes identify the accepted Release.
func (sr *suiteRun) primary() []byte {
	if sr.inRelease != nil {
		return sr.inRelease
	}
	return sr.release
}

func (sr *suiteRun) report() SuiteReport {
	rep := SuiteReport{Suite: sr.name, Changed: !sr.unchanged, SignedBy: sr.signedBy}
	if sr.rel != nil {
		rep.Date, rep.ValidUntil = sr.rel.Date, sr.rel.ValidUntil
	} else if sr.unchanged {
		// The published Release is the one accepted before.
		rep.Date, rep.ValidUntil = sr.prev.Date, sr.prev.ValidUntil
	}
	return rep
}

// refused wraps err as a verification failure.
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// refuse wraps err, a verification failure at where, so that errors.Is
// matches both ErrRefused and err's own sentinels.
func refuse(where string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrRefused, where, err)
}

// fetchRelease gets and checks the Release of one suite. With a published
// snapshot it asks conditionally, so an unchanged upstream costs one 304.
func (r *run) fetchRelease(ctx context.Context, name string) (*suiteRun, error) {
	sr := &suiteRun{name: name, dir: remoteDir(name), local: r.localDir(name)}
	r.progress(Event{Suite: name, Phase: PhaseRelease})
	prev, hadPrev := r.state.Suites[name]
	sr.prev = prev
	var val fetch.Validators
	// Only a published suite with the same selection can be "unchanged".
	published := r.curID != "" && r.curMan != nil && r.curMan.Suites[name] != nil &&
		r.curMan.Suites[name].Selection == selectionKey(r.cfg)
	// The validators belong to the Release of the snapshot the state
	// accepted it into; when that is not the one this sync builds on (a
	// staged snapshot of a mirror switched back to publish = "auto"), a
	// 304 would leave it unpublished: ask for the bytes and compare.
	if published && hadPrev && (prev.Snapshot == "" || prev.Snapshot == r.curID) {
		val = fetch.Validators{ETag: prev.ETag, LastModified: prev.LastModified}
		if (fetch.Validators{LastModified: prev.LastModified, Date: r.extra.ResponseDate[name]}).LastModifiedNearDate() {
			// The Release we hold may have been replaced in the second
			// it was fetched without its Last-Modified (or, on nginx,
			// its ETag: mtime and size) changing: ask for the bytes and
			// compare them (samePublished) instead of trusting a 304.
			val = fetch.Validators{}
		}
	}
	url := r.baseOf(name) + "/" + joinRel(sr.dir, "")
	sr.from = url
	data, v, notMod, err := r.client.GetBytes(ctx, url+"InRelease", maxReleaseSize, val)
	switch {
	case err == nil && notMod:
		sr.unchanged, sr.validators = true, val
		r.warnExpiry(name, prev)
		return sr, r.checkPublished(sr)
	case err == nil:
		sr.inRelease, sr.validators = data, v
	case errors.Is(err, fetch.ErrNotFound):
		data, v, notMod, err = r.client.GetBytes(ctx, url+"Release", maxReleaseSize, val)
		if err != nil {
			return nil, fmt.Errorf("mirror %s: suite %s: neither InRelease nor Release: %w", r.cfg.Name, name, err)
		}
		if notMod {
			sr.unchanged, sr.validators = true, val
			r.warnExpiry(name, prev)
			return sr, r.checkPublished(sr)
		}
		sr.release, sr.validators = data, v
		sr.releaseGPG, _, _, err = r.client.GetBytes(ctx, url+"Release.gpg", 1<<20, fetch.Validators{})
		if err != nil {
			if errors.Is(err, fetch.ErrNotFound) {
				return nil, refused("mirror %s: suite %s: Release is not signed (no InRelease, no Release.gpg at %s)", r.cfg.Name, name, url)
			}
			return nil, fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, name, err)
		}
	default:
		return nil, fmt.Errorf("mirror %s: suite %s: %w", r.cfg.Name, name, err)
	}

	if published && r.samePublished(sr) {
		// Upstream ignores conditional requests but serves what we have.
		sr.unchanged = true
		r.warnExpiry(name, prev)
		return sr, r.checkPublished(sr)
	}
	if err := r.verifyRelease(sr, prev, hadPrev); err != nil {
		return nil, err
	}
	if err := r.checkListed(sr); err != nil {
		return nil, err
	}
	return sr, nil
}

// checkListed fails, wrapping ErrConfig, when the verified Release of sr
// does not list a configured component or architecture, unless the mirror
// sets allow_missing (then it warns). A flat repository's Release lists
// neither, and a Release without Architectures does not say, so those are
// not checked.
func (r *run) checkListed(sr *suiteRun) error {
	rel := sr.rel
	var comps, arches []string
	if len(rel.Components) > 0 {
		for _, c := range r.cfg.Components {
			if !rel.HasComponent(c) {
				comps = append(comps, c)
			}
		}
	}
	if len(rel.Architectures) > 0 {
		for _, a := range r.cfg.Architectures {
			if !slices.Contains(rel.Architectures, a) {
				arches = append(arches, a)
			}
		}
	}
	var missing []string
	if len(comps) > 0 {
		missing = append(missing, fmt.Sprintf("component %s (it lists components: %s)", quoteAll(comps), strings.Join(rel.Components, " ")))
	}
	if len(arches) > 0 {
		missing = append(missing, fmt.Sprintf("architecture %s (it lists architectures: %s)", quoteAll(arches), strings.Join(rel.Architectures, " ")))
	}
	if len(missing) == 0 {
		return nil
	}
	what := strings.Join(missing, " nor ")
	if r.cfg.AllowMissing {
		msg := fmt.Sprintf("suite %s: the Release does not list %s; left out (allow_missing = true)", sr.name, what)
		r.rep.Warnings = append(r.rep.Warnings, msg)
		r.log.Warn(msg)
		return nil
	}
	return fmt.Errorf("%w: mirror %s: suite %s: the Release from %s does not list %s; nothing was published. Fix components/architectures in this [[mirror]] table (a typo?), or set allow_missing = true to mirror only what the upstream has",
		ErrConfig, r.cfg.Name, sr.name, sr.from, what)
}

// quoteAll quotes each of vs and joins them with ", ".
func quoteAll(vs []string) string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// checkPublished verifies the published copy of an unchanged suite's
// upstream Release (for a filtered mirror, the copy kept beside dists/)
// against the configured keyring, as a changed one would be. A 304 says
// only that upstream did not change; the keyring may have (a rotated
// upstream key, a wrong file deployed), and clients configured with it
// would refuse the mirror while every sync said "current".
func (r *run) checkPublished(sr *suiteRun) error {
	where := fmt.Sprintf("mirror %s: suite %s", r.cfg.Name, sr.name)
	read := func(name string) ([]byte, string, error) {
		p, err := r.st.SnapshotPath(r.curID, sr.local+"/"+name)
		if err != nil {
			return nil, "", err
		}
		b, err := os.ReadFile(p)
		return b, "snapshot " + r.curID + ", " + sr.local + "/" + name, err
	}
	b, p, err := read("InRelease")
	if errors.Is(err, fs.ErrNotExist) {
		var rel, sig []byte
		var err2 error
		rel, p, err = read("Release")
		sig, _, err2 = read("Release.gpg")
		if err == nil && err2 == nil {
			_, err = pgp.VerifyDetached(rel, sig, r.kr, r.now)
		} else {
			return refused("%s: published snapshot %s has neither InRelease nor Release with Release.gpg of the upstream; run `gatehouse mirror verify %s`, then `gatehouse mirror rollback %s` or delete its state to sync afresh",
				where, r.curID, r.cfg.Name, r.cfg.Name)
		}
	} else if err == nil {
		_, _, err = pgp.VerifyClearsigned(b, r.kr, r.now)
	} else {
		return fmt.Errorf("%s: reading the published Release: %w", where, err)
	}
	if err != nil {
		return refused("%s: the published Release (%s) is not signed by a key in the configured keyring %s: %v. The upstream has not changed, so the keyring has: if the upstream rotated its signing key, set keyring to its new Signed-By file and sync again; otherwise restore the previous keyring. Clients that use the configured keyring refuse this mirror until then",
			where, p, r.cfg.Keyring, err)
	}
	return nil
}

// samePublished reports whether sr's Release files equal the published ones.
func (r *run) samePublished(sr *suiteRun) bool {
	eq := func(rel string, want []byte) bool {
		p, err := r.st.SnapshotPath(r.curID, rel)
		if err != nil {
			return false
		}
		b, err := os.ReadFile(p)
		return err == nil && bytes.Equal(b, want)
	}
	if sr.inRelease != nil {
		return eq(sr.local+"/InRelease", sr.inRelease)
	}
	return eq(sr.local+"/Release", sr.release) && eq(sr.local+"/Release.gpg", sr.releaseGPG)
}

// verifyRelease applies APT's signature rule and the Release checks.
func (r *run) verifyRelease(sr *suiteRun, prev store.SuiteState, hadPrev bool) error {
	where := fmt.Sprintf("mirror %s: suite %s", r.cfg.Name, sr.name)
	var res *pgp.Result
	var err error
	if sr.inRelease != nil {
		sr.body, res, err = pgp.VerifyClearsigned(sr.inRelease, r.kr, r.now)
		if err != nil {
			return refuse(where+": InRelease from "+sr.from+"InRelease", err)
		}
	} else {
		res, err = pgp.VerifyDetached(sr.release, sr.releaseGPG, r.kr, r.now)
		if err != nil {
			return refuse(where+": Release.gpg from "+sr.from+"Release.gpg", err)
		}
		sr.body = sr.release
	}
	sr.signedBy = res.SignedBy()
	rel, err := apt.ParseRelease(sr.body)
	if err != nil {
		return refuse(where, err)
	}
	sr.rel = rel
	// The apt checks' errors name the values and what to check; they
	// only need the mirror and suite in front.
	if err := apt.CheckSuite(rel, sr.name); err != nil {
		return refuse(where, err)
	}
	var last time.Time
	if hadPrev {
		last = prev.Date
	}
	if err := apt.CheckDate(rel, last, r.now, r.cfg.MaxFutureSkew.Duration); err != nil {
		return refuse(where, err)
	}
	if hadPrev && rel.Date.Equal(last) {
		if old := r.extra.BodySHA256[sr.name]; old != "" && old != sha256Hex(sr.body) {
			return refused("%s: Release has the same Date (%s) as the one accepted before but different content; a signer does not publish two Releases under one Date, so this looks like a replay or tampering",
				where, apt.FormatDate(rel.Date))
		}
	}
	if err := apt.CheckValidUntil(rel, r.now); err != nil {
		return refuse(where, err)
	}
	return nil
}

// warnExpiry warns when the still-published Release of an unchanged suite
// is expired or about to, because clients will soon refuse it.
func (r *run) warnExpiry(name string, prev store.SuiteState) {
	if prev.ValidUntil.IsZero() {
		return
	}
	left := prev.ValidUntil.Sub(r.now)
	if left < 2*24*time.Hour {
		msg := fmt.Sprintf("suite %s: upstream has not changed and its Release expires %s (Valid-Until); clients will refuse it then", name, apt.FormatDate(prev.ValidUntil))
		if left <= 0 {
			msg = fmt.Sprintf("suite %s: upstream has not changed and its Release expired %s (Valid-Until); clients refuse it", name, apt.FormatDate(prev.ValidUntil))
		}
		r.rep.Warnings = append(r.rep.Warnings, msg)
		r.log.Warn(msg)
	}
}
