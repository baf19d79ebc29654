package mirror

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"gatehouse/apt/deb822"
)

// SourcesImport is the result of ImportAptSources: mirror entries ready for
// the configuration file, plus notes on what was skipped and why.
type SourcesImport struct {
	Mirrors []Config
	// Notes explain skipped stanzas and written keyrings, one line each.
	Notes []string
}

// ImportAptSources turns apt's sources files into mirror configurations, so
// nobody types an archive URL or picks a keyring by hand: deb822 files (the
// format of /etc/apt/sources.list.d/*.sources) and, for names ending in
// .list, one-line files ("deb [arch=amd64 signed-by=...] URI SUITE COMP...").
//
// Stanzas with "Enabled: no" are skipped. A stanza without Signed-By is
// refused: apt would fall back to every key in trusted.gpg.d, and a mirror
// must name the one keyring its upstream is trusted by. An inline Signed-By
// key block is written to keyringDir/<mirror>.asc (0644, never overwriting a
// different file). Stanzas with the same URI, keyring, components and
// architectures are merged into one mirror with several suites. defaultArch
// is used when a stanza names no Architectures (apt uses the host's).
func ImportAptSources(files []string, keyringDir, defaultArch string) (*SourcesImport, error) {
	res := &SourcesImport{}
	names := map[string]bool{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("reading apt sources: %w", err)
		}
		if strings.HasSuffix(f, ".list") {
			err = importListFile(fh, f, keyringDir, defaultArch, res, names)
		} else {
			err = importSourcesFile(fh, f, keyringDir, defaultArch, res, names)
		}
		fh.Close()
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

func importSourcesFile(r io.Reader, name, keyringDir, defaultArch string, res *SourcesImport, names map[string]bool) error {
	rd := deb822.NewReader(r, name, deb822.Limits{})
	for {
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parsing apt sources: %w (is %s a deb822 .sources file? one-line files are read when their name ends in .list)", err, name)
		}
		where := fmt.Sprintf("%s:%d", name, p.Line)
		if strings.EqualFold(strings.TrimSpace(p.Value("Enabled")), "no") {
			res.Notes = append(res.Notes, where+": skipped (Enabled: no)")
			continue
		}
		types := strings.Fields(p.Value("Types"))
		if !slices.Contains(types, "deb") && !slices.Contains(types, "deb-src") {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: skipped (Types %q has neither deb nor deb-src)", where, p.Value("Types")))
			continue
		}
		uris := strings.Fields(p.Value("URIs"))
		suites := strings.Fields(p.Value("Suites"))
		if len(uris) == 0 || len(suites) == 0 {
			return fmt.Errorf("%s: stanza lacks URIs or Suites; fix the file or remove the stanza", where)
		}
		st := sourceStanza{
			where: where, types: types, uris: uris, suites: suites,
			comps:    strings.Fields(p.Value("Components")),
			arches:   strings.Fields(p.Value("Architectures")),
			signedBy: strings.TrimSpace(p.Value("Signed-By")),
		}
		if err := st.add(keyringDir, defaultArch, res, names); err != nil {
			return err
		}
	}
}

// sourceStanza is one deb822 stanza or one-line entry, as apt reads it.
type sourceStanza struct {
	where                              string // file:line
	types, uris, suites, comps, arches []string
	signedBy                           string
}

// add turns st into mirror entries of res (merged with an equal one).
func (st sourceStanza) add(keyringDir, defaultArch string, res *SourcesImport, names map[string]bool) error {
	where, types, uris, suites, comps, arches := st.where, st.types, st.uris, st.suites, st.comps, st.arches
	if len(arches) == 0 && defaultArch != "" {
		arches = []string{defaultArch}
	}
	arches = slices.DeleteFunc(arches, func(a string) bool { return a == "all" })
	signedBy := st.signedBy
	if signedBy == "" {
		return fmt.Errorf("%s: no Signed-By: a mirror needs the one keyring its upstream signs with; add Signed-By to the stanza (or [signed-by=...] to the line; apt recommends it too) and run again", where)
	}
	keyring, inline, err := sourcesKeyring(signedBy, where)
	if err != nil {
		return err
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: skipped URI %q (only http and https upstreams are mirrored)", where, u))
			continue
		}
		c := Config{
			URL:           strings.TrimRight(u, "/"),
			Suites:        suites,
			Components:    comps,
			Architectures: arches,
			Keyring:       keyring,
			Sources:       slices.Contains(types, "deb-src"),
		}
		if inline != "" {
			c.Keyring = "inline:" + inline // merge key until written below
		}
		if mergeSources(res.Mirrors, c) {
			continue
		}
		c.Name = uniqueName(names, pu)
		if inline != "" {
			if c.Keyring, err = writeInlineKeyring(keyringDir, c.Name, inline); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			res.Notes = append(res.Notes, fmt.Sprintf("%s: wrote the inline Signed-By key to %s", where, c.Keyring))
		}
		c.Defaults()
		res.Mirrors = append(res.Mirrors, c)
	}
	return nil
}

// importListFile reads apt's one-line format (sources.list, *.list):
//
//	deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg] http://example.org/debian bookworm main contrib
//	deb-src http://example.org/debian bookworm main
//
// Options other than arch and signed-by (lang, target, trusted, ...) do
// not change what is mirrored and are ignored; arch+= and arch-= depend on
// the host's configuration, so they are refused with the line named.
func importListFile(r io.Reader, name, keyringDir, defaultArch string, res *SourcesImport, names map[string]bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", name, n)
		if f[0] != "deb" && f[0] != "deb-src" {
			return fmt.Errorf("%s: %q is not a sources line (want \"deb\" or \"deb-src\" first); fix the line or comment it out", where, f[0])
		}
		st := sourceStanza{where: where, types: []string{f[0]}}
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), f[0]))
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return fmt.Errorf("%s: options start with \"[\" but have no \"]\"; fix the line", where)
			}
			for _, opt := range strings.Fields(rest[1:end]) {
				k, v, ok := strings.Cut(opt, "=")
				if !ok || strings.HasSuffix(k, "+") || strings.HasSuffix(k, "-") {
					return fmt.Errorf("%s: option %q: only key=value options are understood (arch+= and arch-= depend on the host); write arch=LIST", where, opt)
				}
				switch strings.ToLower(k) {
				case "arch":
					st.arches = strings.Split(v, ",")
				case "signed-by":
					st.signedBy = strings.ReplaceAll(v, ",", " ")
				}
			}
			rest = rest[end+1:]
		}
		f = strings.Fields(rest)
		if len(f) < 2 {
			return fmt.Errorf("%s: a sources line needs a URI and a suite: %s URI SUITE [COMPONENT...]", where, st.types[0])
		}
		// Clones: a merge appends to Suites, which must not write into comps.
		st.uris, st.suites, st.comps = f[:1], slices.Clone(f[1:2]), slices.Clone(f[2:])
		if err := st.add(keyringDir, defaultArch, res, names); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

// mergeSources folds c into an existing entry with the same upstream and
// trust settings (Debian's default file lists "bookworm bookworm-updates" in
// one stanza and may list more suites in another).
func mergeSources(ms []Config, c Config) bool {
	for i := range ms {
		m := &ms[i]
		if m.URL == c.URL && m.Keyring == c.Keyring && slices.Equal(m.Components, c.Components) && slices.Equal(m.Architectures, c.Architectures) {
			for _, s := range c.Suites {
				if !slices.Contains(m.Suites, s) {
					m.Suites = append(m.Suites, s)
				}
			}
			m.Sources = m.Sources || c.Sources
			return true
		}
	}
	return false
}

// uniqueName derives a mirror name from the URL's last path element (or its
// host), made valid and unique.
func uniqueName(names map[string]bool, u *url.URL) string {
	base := strings.ToLower(path.Base(strings.TrimRight(u.Path, "/")))
	if base == "" || base == "." || base == "/" {
		base = strings.ToLower(u.Hostname())
	}
	var b strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-._")
	if name == "" {
		name = "mirror"
	}
	if len(name) > 60 {
		name = name[:60]
	}
	cand := name
	for i := 2; names[cand]; i++ {
		cand = fmt.Sprintf("%s-%d", name, i)
	}
	names[cand] = true
	return cand
}

// sourcesKeyring resolves a Signed-By value to a keyring path, or to the text
// of an inline armored key block. Fingerprint-only values name keys in apt's
// global trust store, which a mirror does not use.
func sourcesKeyring(signedBy, where string) (path, inline string, err error) {
	if strings.Contains(signedBy, "BEGIN PGP PUBLIC KEY BLOCK") {
		// Continuation lines hold "." for empty lines (deb822 convention).
		lines := strings.Split(signedBy, "\n")
		for i, l := range lines {
			if strings.TrimSpace(l) == "." {
				lines[i] = ""
			}
		}
		return "", strings.Join(lines, "\n") + "\n", nil
	}
	fields := strings.Fields(signedBy)
	if len(fields) != 1 || !strings.HasPrefix(fields[0], "/") {
		return "", "", fmt.Errorf("%s: Signed-By %q is not a single keyring path: gatehouse needs the keyring file (e.g. /usr/share/keyrings/NAME.gpg)", where, signedBy)
	}
	return fields[0], "", nil
}

// writeInlineKeyring stores an inline key as keyringDir/<name>.asc, refusing
// to replace a different existing file.
func writeInlineKeyring(keyringDir, name, key string) (string, error) {
	if keyringDir == "" {
		return "", errors.New("Signed-By holds an inline key: pass a directory to write it to")
	}
	p := filepath.Join(keyringDir, name+".asc")
	if old, err := os.ReadFile(p); err == nil {
		if string(old) != key {
			return "", fmt.Errorf("keyring %s already exists with different content; move it away or set keyring by hand", p)
		}
		return p, nil
	}
	if err := os.MkdirAll(keyringDir, 0o755); err != nil {
		return "", fmt.Errorf("creating keyring directory: %w", err)
	}
	if err := os.WriteFile(p, []byte(key), 0o644); err != nil {
		return "", fmt.Errorf("writing inline key: %w", err)
	}
	return p, nil
}
