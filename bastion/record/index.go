package record

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/crypto/ssh"
)

// IndexName is the recordings index in the recordings root (see
// RecorderConfig.Index).
const IndexName = "index.jsonl"

// VerifyResult is the outcome for one recording in VerifyAll.
type VerifyResult struct {
	ID       string
	Manifest *Manifest // nil when it could not be read
	Err      error     // nil when the recording verified
}

// indexEntry is what VerifyAll needs from an index line.
type indexEntry struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	Final string `json:"final"`
}

// VerifyAll verifies every recording under root with Verify and checks
// them against root/index.jsonl: the index's hash chain holds, every
// indexed recording still exists (a deleted one is reported by id), every
// directory is indexed, and each manifest's final hash is the one logged
// when the recording closed. Per-recording problems are in the results;
// the error reports index-level problems (missing index, broken chain).
// Like any hash chain, the index cannot show lines cut from its end.
func VerifyAll(root string, pub ssh.PublicKey) ([]VerifyResult, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("recordings %s: %w", root, err)
	}
	byID := map[string]*VerifyResult{}
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		res := &VerifyResult{ID: e.Name(), Err: Verify(dir, pub)}
		res.Manifest, _, _ = ReadManifest(dir)
		byID[e.Name()] = res
	}
	indexErr := checkIndex(filepath.Join(root, IndexName), byID)
	out := make([]VerifyResult, 0, len(byID))
	for _, r := range byID {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, indexErr
}

// checkIndex cross-checks the index with the recordings found, adding
// problems to byID (and entries for deleted recordings).
func checkIndex(path string, byID map[string]*VerifyResult) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("recordings index: %w; deleted recordings cannot be detected", err)
	}
	defer f.Close()
	_, chainErr := VerifyAudit(f)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("recordings index: %w", err)
	}
	addProblem := func(id, msg string) {
		r := byID[id]
		if r == nil {
			r = &VerifyResult{ID: id}
			byID[id] = r
		}
		if ve, ok := r.Err.(*VerifyError); ok {
			ve.Problems = append(ve.Problems, msg)
			return
		}
		ve := &VerifyError{Dir: id, Problems: []string{msg}}
		if r.Err != nil {
			ve.Problems = append([]string{r.Err.Error()}, msg)
		}
		r.Err = ve
	}
	indexed := map[string]bool{}
	lr := newLineReader(f, MaxAuditLine)
	for n := 1; ; n++ {
		line, complete, err := lr.next()
		if err != nil || !complete {
			break // VerifyAudit reported it
		}
		var e indexEntry
		if json.Unmarshal(line, &e) != nil || !validID(e.ID) {
			continue
		}
		switch e.Event {
		case "recording.start":
			indexed[e.ID] = true
			if byID[e.ID] == nil {
				addProblem(e.ID, fmt.Sprintf("started at %s line %d but its directory is missing (deleted)", IndexName, n))
			}
		case "recording.close":
			r := byID[e.ID]
			if r == nil || r.Manifest == nil {
				continue // reported as missing above / by Verify
			}
			if r.Manifest.Final != e.Final {
				addProblem(e.ID, fmt.Sprintf("manifest final hash differs from the one logged at %s line %d (manifest replaced)", IndexName, n))
			}
		}
	}
	for id := range byID {
		if !indexed[id] {
			addProblem(id, fmt.Sprintf("not listed in %s", IndexName))
		}
	}
	if chainErr != nil {
		return fmt.Errorf("recordings index %s: %w", path, chainErr)
	}
	return nil
}
