package mirror

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"gatehouse/mirror/store"
)

// Package counts are worked out once per snapshot, while it is built
// (a verbatim sync counts the stanzas during the census pass it makes over
// the indexes anyway), and kept in the snapshot's manifest. Status and the
// metrics read them from the published snapshot's manifest, so a scrape
// never parses a Packages file, and a rollback or a staged publish shows
// the counts of what clients now get.

// IndexCount is the number of packages in one Packages index (or of
// source packages in one Sources index) of a published suite.
type IndexCount struct {
	// Component is the index's component ("main", or
	// "main/debian-installer" for installer udebs); "" in a flat
	// repository.
	Component string `json:"component"`
	// Architecture is the index's architecture ("amd64", "all"), "source"
	// for a Sources index, "" in a flat repository.
	Architecture string `json:"architecture"`
	// Index is the index's path below dists/<suite>, without compression
	// suffix ("main/binary-amd64/Packages").
	Index string `json:"index"`
	// Packages is the number of stanzas in the index.
	Packages int `json:"packages"`
}

// fillCounts counts the stanzas of every Packages and Sources index of
// the suites of man whose counts are not known yet, reading the snapshot
// under construction in snapDir. It is called just before the manifest is
// written, once per new snapshot.
func fillCounts(snapDir string, man *manifest) error {
	for _, name := range slices.Sorted(maps.Keys(man.Suites)) {
		ms := man.Suites[name]
		if ms == nil || ms.Counts != nil {
			continue
		}
		c, err := eachPoolEntryCounted(snapDir, name, ms, 0, func(poolEntry, string) error { return nil })
		if err != nil {
			return fmt.Errorf("counting the packages of suite %s: %w", name, err)
		}
		ms.Counts = c
	}
	return nil
}

// indexCounts turns a suite's Counts into IndexCounts, sorted by index.
func indexCounts(counts map[string]int) []IndexCount {
	out := make([]IndexCount, 0, len(counts))
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		ic := IndexCount{Index: k, Packages: counts[k]}
		dir, base, _ := cutLast(k)
		if base == "Sources" {
			ic.Component, _, _ = cutLast(dir)
			ic.Architecture = "source"
		} else if comp, arch, ok := cutLast(dir); ok {
			ic.Component = comp
			ic.Architecture, _ = strings.CutPrefix(arch, "binary-")
		}
		out = append(out, ic)
	}
	return out
}

// cutLast splits p at its last slash: ("main/binary-amd64", "Packages").
// Without a slash, dir is "" and base is p.
func cutLast(p string) (dir, base string, ok bool) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p, false
	}
	return p[:i], p[i+1:], true
}

// publishedCounts returns, per suite, the package counts recorded in the
// manifest of snapshot id; nil when the manifest is unreadable or
// predates the counts (they appear with the next snapshot).
func publishedCounts(st *store.Store, id string) map[string][]IndexCount {
	m, err := readManifest(st, id)
	if err != nil {
		return nil
	}
	out := map[string][]IndexCount{}
	for name, ms := range m.Suites {
		if ms.Counts != nil {
			out[name] = indexCounts(ms.Counts)
		}
	}
	return out
}

// TotalPackages is the sum of the binary package counts of cs (Sources
// indexes left out). A package built for "all" is counted once per
// architecture whose Packages index lists it, as apt on each
// architecture sees it.
func TotalPackages(cs []IndexCount) int {
	n := 0
	for _, c := range cs {
		if c.Architecture != "source" {
			n += c.Packages
		}
	}
	return n
}
