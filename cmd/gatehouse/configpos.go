package main

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// configPositions knows the line of every key and table header of a
// configuration file, per occurrence: the TOML decoder reports where syntax
// errors are but not where a key it did not decode (a typo) or a value that
// fails validation is. Every message about the file names file:line, and the
// same typo in two [[mirror]] tables must name two lines, not the first one
// twice (which a first-match text search does).
type configPositions struct {
	// byInstance maps "mirror[1].keyring" (array tables numbered from 0)
	// or "bastion.user_ca_keys" to its line; a table header itself is
	// "mirror[1]" or "bastion".
	byInstance map[string]int
	// byKey lists, per dotted key without indices ("mirror.componets"),
	// the lines it occurs on in file order.
	byKey map[string][]int
}

var (
	posTableRe = regexp.MustCompile(`^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$`)
	posKeyRe   = regexp.MustCompile(`^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=`)
)

// scanPositions scans data line by line. It is not a TOML parser: it skips
// multi-line strings and is only used after the decoder accepted the file.
func scanPositions(data []byte) *configPositions {
	p := &configPositions{byInstance: map[string]int{}, byKey: map[string][]int{}}
	count := map[string]int{}
	table, instance := "", ""
	inMulti := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if inMulti != "" {
			if strings.Count(line, inMulti)%2 == 1 {
				inMulti = ""
			}
			continue
		}
		if m := posTableRe.FindStringSubmatch(line); m != nil && !strings.Contains(line, "=") {
			table = normKey(m[2])
			if m[1] == "[[" {
				instance = fmt.Sprintf("%s[%d]", table, count[table])
				count[table]++
			} else {
				instance = table
			}
			p.byInstance[instance] = n
			p.byKey[table] = append(p.byKey[table], n)
			continue
		}
		m := posKeyRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		k := normKey(m[1])
		full, inst := k, k
		if table != "" {
			full, inst = table+"."+k, instance+"."+k
		}
		if _, dup := p.byInstance[inst]; !dup {
			p.byInstance[inst] = n
		}
		p.byKey[full] = append(p.byKey[full], n)
		for _, q := range []string{`"""`, `'''`} {
			if strings.Count(line, q)%2 == 1 {
				inMulti = q
			}
		}
	}
	return p
}

// normKey turns `a . "b"` into the toml.Key string form `a.b`.
func normKey(s string) string {
	var parts []string
	for _, f := range strings.Split(s, ".") {
		parts = append(parts, strings.Trim(strings.TrimSpace(f), `"'`))
	}
	return toml.Key(parts).String()
}

// line returns the line of instance key k ("mirror[1].keyring"), falling
// back to its table's header, or 0 when unknown.
func (p *configPositions) line(k string) int {
	if p == nil {
		return 0
	}
	for {
		if n, ok := p.byInstance[k]; ok {
			return n
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			return 0
		}
		k = k[:i]
	}
}

// undecodedLines returns the line of each key in und (md.Undecoded(), in
// file order): the i-th occurrence of a key string gets the i-th line on
// which that key appears.
func (p *configPositions) undecodedLines(und []toml.Key) []int {
	seen := map[string]int{}
	out := make([]int, len(und))
	for i, k := range und {
		s := k.String()
		if lines := p.byKey[s]; seen[s] < len(lines) {
			out[i] = lines[seen[s]]
		}
		seen[s]++
	}
	return out
}
