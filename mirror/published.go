package mirror

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"gatehouse/apt"
	"gatehouse/apt/pgp"
	"gatehouse/mirror/store"
)

// A snapshot is "published" once "current" has named it. The store does
// not remember that: a snapshot whose Commit renamed it into snapshots/
// but failed before the switch (a killed or failed sync), or one staged
// without publishing, looks like any other. So each switch is recorded in
// the mirror's state (stateExtra.Published), and rollback without an
// argument goes back only to a snapshot clients have already been served.

// SnapshotListing is one snapshot as `gatehouse mirror list` shows it.
type SnapshotListing struct {
	store.SnapshotInfo
	// Published is true when the snapshot has been the published one
	// (now or before). Snapshots made before gatehouse recorded this
	// (older than the oldest record) count as published: every sync then
	// published what it made.
	Published bool `json:"Published"`
	// PublishedAt is when it last became the published snapshot; zero
	// when not recorded.
	PublishedAt time.Time `json:"PublishedAt,omitzero"`
}

// notePublished records in x that snapshot id became current at at, and
// forgets records of snapshots no longer in snaps (pruned), so the state
// does not grow.
func notePublished(x *stateExtra, snaps []store.SnapshotInfo, id string, at time.Time) {
	if x.Published == nil {
		x.Published = map[string]time.Time{}
	}
	x.Published[id] = at.UTC()
	for k := range x.Published {
		if k != id && !slices.ContainsFunc(snaps, func(s store.SnapshotInfo) bool { return s.ID == k }) {
			delete(x.Published, k)
		}
	}
}

// recordPublished notes that this run made snapshot id current.
func (r *run) recordPublished(id string) {
	snaps, err := r.st.Snapshots()
	if err != nil {
		r.log.Warn("listing snapshots to record the publication", "err", err)
	}
	notePublished(&r.extra, snaps, id, r.opt.clock()())
	if b, err := json.Marshal(r.extra); err == nil {
		r.state.Extra = b
	}
}

// listings joins the store's snapshots (oldest first) with the recorded
// publications.
func listings(snaps []store.SnapshotInfo, x stateExtra) []SnapshotListing {
	// Snapshots before the oldest recorded one predate the records.
	firstRecorded := len(snaps)
	for i, s := range snaps {
		if _, ok := x.Published[s.ID]; ok {
			firstRecorded = i
			break
		}
	}
	out := make([]SnapshotListing, len(snaps))
	for i, s := range snaps {
		at, ok := x.Published[s.ID]
		out[i] = SnapshotListing{SnapshotInfo: s, PublishedAt: at, Published: ok || s.Current || i < firstRecorded}
	}
	return out
}

// ListSnapshots returns the mirror's finished snapshots, oldest first,
// with whether and when each was published.
func ListSnapshots(stateDir string, cfg Config) ([]SnapshotListing, error) {
	st, err := openStore(stateDir, &cfg, Options{})
	if err != nil {
		return nil, err
	}
	snaps, err := st.Snapshots()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	state, err := st.ReadState()
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", cfg.Name, err)
	}
	return listings(snaps, readExtra(state)), nil
}

// publishedReleaseDate returns the Date and Valid-Until of the upstream
// Release of suite in snapshot id, verified with cfg's keyring (a file
// that does not verify is not shown as the upstream's); ok is false when
// it cannot be read or verified.
func publishedReleaseDate(st *store.Store, cfg Config, id, suite string, now time.Time) (date, validUntil time.Time, ok bool) {
	dir := publishedDir(suite)
	if cfg.Mode == ModeFiltered {
		dir = upstreamDir + "/dists/" + suite
	}
	read := func(name string) []byte {
		p, err := st.SnapshotPath(id, dir+"/"+name)
		if err != nil {
			return nil
		}
		b, _ := os.ReadFile(p)
		return b
	}
	kr, err := pgp.LoadKeyring(cfg.Keyring)
	if err != nil {
		return date, validUntil, false
	}
	var body []byte
	if b := read("InRelease"); b != nil {
		body, _, err = pgp.VerifyClearsigned(b, kr, now)
	} else {
		body = read("Release")
		_, err = pgp.VerifyDetached(body, read("Release.gpg"), kr, now)
	}
	if err != nil {
		return date, validUntil, false
	}
	rel, err := apt.ParseRelease(body)
	if err != nil {
		return date, validUntil, false
	}
	return rel.Date, rel.ValidUntil, true
}
