package mirror

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"

	"gatehouse/apt"
	"gatehouse/apt/compress"
)

// markPublished tells the census which pool paths the published snapshot
// serves from the base layer pool/, with which content, by reading its
// indexes. Only a snapshot whose manifest has PoolObjects counts: then
// pool/<path> is the object its indexes name (the store never replaces a
// base-layer file while a retained snapshot, here the published one,
// serves it), so the new snapshot needs nothing for an unchanged path.
// Paths it overrides are left out: the new snapshot needs its own
// override for them.
//
// The indexes were verified when that snapshot was published, so their
// Packages files are scanned for the four fields the pool needs
// (scanPoolFields) rather than parsed and checked stanza by stanza, which
// costs several times more; anything unexpected in them is an error, and
// the caller then checks every pool file instead.
func (r *run) markPublished(pc *poolCensus) error {
	if r.curMan == nil || !r.curMan.PoolObjects {
		return nil
	}
	mp, err := r.st.SnapshotPath(r.curID, manifestFile)
	if err != nil {
		return err
	}
	snapDir := filepath.Dir(mp)
	over, err := r.st.Overridden(r.curID)
	if err != nil {
		return err
	}
	mark := func(e poolEntry, _ string) error {
		rel, _ := poolRel(e.Filename)
		if _, o := over[rel]; !o {
			pc.markPublished(e)
		}
		return nil
	}
	for _, suite := range slices.Sorted(maps.Keys(r.curMan.Suites)) {
		if err := eachPublishedEntry(snapDir, suite, r.curMan.Suites[suite], mark); err != nil {
			return err
		}
	}
	return nil
}

// eachPublishedEntry is eachPoolEntry for the indexes of a published
// snapshot (verified when it was published): Packages files are scanned
// for the pool fields only (scanPoolFields), several times faster than
// parsing and checking each stanza, which matters to a gc of a million
// entries; anything the scanner does not expect is parsed as usual.
func eachPublishedEntry(snapDir, suite string, ms *manifestSuite, fn func(poolEntry, string) error) error {
	for _, rel := range parsedIndexes(ms) {
		p := filepath.Join(snapDir, filepath.FromSlash(publishedDir(suite)), filepath.FromSlash(rel))
		where := publishedDir(suite) + "/" + rel
		if path.Base(compress.TrimSuffix(rel)) != "Sources" {
			calls := 0
			err := scanIndex(p, suite, where, func(e poolEntry, w string) error { calls++; return fn(e, w) })
			if !errors.Is(err, errScan) || calls > 0 {
				// An error after entries were handed on cannot be
				// retried: fn may not be idempotent.
				if err != nil {
					return err
				}
				continue
			}
		}
		if _, err := readIndex(p, suite, where, 0, fn); err != nil {
			return err
		}
	}
	return nil
}

// scanIndex calls fn with the pool entries of a Packages index this
// program published (see markPublished).
func scanIndex(p, suite, where string, fn func(poolEntry, string) error) error {
	rd, err := openIndex(p, where)
	if err != nil {
		return err
	}
	defer rd.Close()
	return scanPoolFields(rd, func(filename string, size int64, s256, s512 string) error {
		fn2, err := apt.CleanRepoPath(filename)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if isFlat(suite) {
			fn2 = flatPoolKey(fn2)
		}
		return fn(poolEntry{Filename: fn2, Suite: suite, Size: size, SHA256: s256, SHA512: s512}, where)
	})
}

var errScan = errors.New("unexpected Packages syntax")

// scanPoolFields reads a Packages file and calls fn with the Filename,
// Size, SHA256 and SHA512 of every stanza that has a Filename. The strings
// are only valid during the call. It checks nothing else: use it only on
// indexes verified before (apt.PackagesReader does that).
func scanPoolFields(r io.Reader, fn func(filename string, size int64, s256, s512 string) error) error {
	br := bufio.NewReaderSize(r, 256<<10)
	var name, size, s256, s512 []byte
	var has bool
	flush := func() error {
		if !has {
			return nil
		}
		has = false
		defer func() { name, size, s256, s512 = name[:0], size[:0], s256[:0], s512[:0] }()
		if len(name) == 0 {
			return nil
		}
		n, err := strconv.ParseInt(string(size), 10, 64)
		if err != nil || n < 0 {
			return errScan
		}
		return fn(string(name), n, string(s256), string(s512))
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line (a Description): none of the four fields.
			if k, _, ok := bytes.Cut(line, []byte(":")); !isSpaceByte(line[0]) {
				if !ok || poolField(k) {
					return errScan
				}
				has = true
			}
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return flush()
			}
			if err != nil {
				return err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		line = bytes.TrimRight(line, "\r\n\t ")
		switch {
		case len(line) == 0:
			if ferr := flush(); ferr != nil {
				return ferr
			}
		case isSpaceByte(line[0]) || line[0] == '#':
		default:
			has = true
			k, v, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				return errScan
			}
			v = bytes.TrimLeft(v, " \t")
			switch {
			case bytes.EqualFold(k, []byte("Filename")):
				name = append(name[:0], v...)
			case bytes.EqualFold(k, []byte("Size")):
				size = append(size[:0], v...)
			case bytes.EqualFold(k, []byte("SHA256")):
				s256 = append(s256[:0], v...)
			case bytes.EqualFold(k, []byte("SHA512")):
				s512 = append(s512[:0], v...)
			}
		}
		if err == io.EOF {
			return flush()
		}
	}
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' }

// poolField reports whether k names a field scanPoolFields reads.
func poolField(k []byte) bool {
	for _, f := range []string{"Filename", "Size", "SHA256", "SHA512"} {
		if bytes.EqualFold(k, []byte(f)) {
			return true
		}
	}
	return false
}
