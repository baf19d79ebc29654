package mirror

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImportAptSourcesDebianDefault(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "debian.sources", `# Modernized from /etc/apt/sources.list
Types: deb
URIs: http://example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://example.org/debian-security
Suites: bookworm-security
Components: main contrib
Architectures: arm64 all
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://example.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Enabled: no
Types: deb
URIs: http://example.org/disabled
Suites: x
Signed-By: /k.gpg
`)
	res, err := ImportAptSources([]string{f}, dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mirrors) != 2 {
		t.Fatalf("want 2 mirrors, got %+v", res.Mirrors)
	}
	d, s := res.Mirrors[0], res.Mirrors[1]
	if d.Name != "debian" || !slices.Equal(d.Suites, []string{"bookworm", "bookworm-updates", "bookworm-backports"}) || !slices.Equal(d.Architectures, []string{"amd64"}) || d.Sources {
		t.Errorf("debian mirror: %+v", d)
	}
	if s.Name != "debian-security" || !s.Sources || !slices.Equal(s.Architectures, []string{"arm64"}) || !slices.Equal(s.Components, []string{"main", "contrib"}) {
		t.Errorf("security mirror: %+v", s)
	}
	for _, m := range res.Mirrors {
		if err := m.Validate(); err != nil {
			t.Errorf("imported config does not validate: %v", err)
		}
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "Enabled: no") {
		t.Errorf("notes: %q", res.Notes)
	}
}

func TestImportAptSourcesInlineKeyAndRefusals(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "x.sources", `Types: deb
URIs: https://example.org/repo/
Suites: stable
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZZZZZZYJKwYBBAHaRw8BAQdA
 -----END PGP PUBLIC KEY BLOCK-----
`)
	kd := filepath.Join(dir, "keyrings")
	res, err := ImportAptSources([]string{f}, kd, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(kd, "repo.asc")
	if len(res.Mirrors) != 1 || res.Mirrors[0].Keyring != want {
		t.Fatalf("mirrors %+v", res.Mirrors)
	}
	got, _ := os.ReadFile(want)
	if string(got) != "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZZZZZZYJKwYBBAHaRw8BAQdA\n-----END PGP PUBLIC KEY BLOCK-----\n" {
		t.Fatalf("inline key written as %q", got)
	}

	for name, text := range map[string]string{
		"no signed-by":     "Types: deb\nURIs: http://example.org/a\nSuites: s\nComponents: main\n",
		"fingerprint only": "Types: deb\nURIs: http://example.org/a\nSuites: s\nSigned-By: 0123456789ABCDEF0123456789ABCDEF01234567\n",
		"no suites":        "Types: deb\nURIs: http://example.org/a\nSigned-By: /k.gpg\n",
		"one-line format":  "deb http://example.org/a s main\n",
	} {
		p := writeFile(t, dir, "bad.sources", text)
		if _, err := ImportAptSources([]string{p}, kd, "amd64"); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestImportAptSourcesFlat: a flat repository's stanza (a suite ending in
// "/", no Components) becomes a valid flat [[mirror]].
func TestImportAptSourcesFlat(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "vendor.sources", `Types: deb
URIs: https://example.org/vendor/x86_64/
Suites: /
Signed-By: /usr/share/keyrings/vendor.gpg
`)
	res, err := ImportAptSources([]string{f}, dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mirrors) != 1 {
		t.Fatalf("want 1 mirror, got %+v", res.Mirrors)
	}
	m := res.Mirrors[0]
	if !slices.Equal(m.Suites, []string{"/"}) || len(m.Components) != 0 || m.URL != "https://example.org/vendor/x86_64" {
		t.Errorf("flat mirror: %+v", m)
	}
	if err := m.Validate(); err != nil {
		t.Errorf("the imported flat mirror does not validate: %v", err)
	}
	if publishedDir("/") != "flat" || remoteDir("/") != "" || publishedDir("x86_64/") != "flat/x86_64" {
		t.Errorf("flat directories: %q %q %q", publishedDir("/"), remoteDir("/"), publishedDir("x86_64/"))
	}
}

// TestImportAptSourcesOneLine: one-line .list files with options, deb-src
// lines and comments become the same [[mirror]] entries as deb822 would.
func TestImportAptSourcesOneLine(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "vendor.list", `# vendor repository
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://deb.example.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/x.gpg] http://deb.example.org/debian bookworm main
deb [ arch=amd64,arm64 signed-by=/usr/share/keyrings/y.gpg lang=de ] http://other.example.org/repo stable main contrib  # trailing comment
deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64] http://deb.example.org/debian bookworm-updates main
`)
	res, err := ImportAptSources([]string{f}, dir, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Mirrors) != 2 {
		t.Fatalf("want 2 mirrors, got %+v", res.Mirrors)
	}
	d, o := res.Mirrors[0], res.Mirrors[1]
	if d.Name != "debian" || d.URL != "http://deb.example.org/debian" || !slices.Equal(d.Suites, []string{"bookworm", "bookworm-updates"}) ||
		!slices.Equal(d.Components, []string{"main"}) || !slices.Equal(d.Architectures, []string{"amd64"}) ||
		d.Keyring != "/usr/share/keyrings/x.gpg" || !d.Sources {
		t.Errorf("first mirror: %+v", d)
	}
	if o.Name != "repo" || !slices.Equal(o.Components, []string{"main", "contrib"}) || !slices.Equal(o.Architectures, []string{"amd64", "arm64"}) ||
		o.Keyring != "/usr/share/keyrings/y.gpg" || o.Sources {
		t.Errorf("second mirror: %+v", o)
	}

	for name, tc := range map[string]struct{ line, want string }{
		"no signed-by": {"deb http://deb.example.org/debian bookworm main\n", "bad.list:1: no Signed-By"},
		"arch+=":       {"deb [arch+=i386 signed-by=/k.gpg] http://deb.example.org/debian bookworm main\n", `bad.list:1: option "arch+=i386": only key=value options`},
		"unclosed":     {"deb [arch=amd64 http://deb.example.org/debian bookworm main\n", `bad.list:1: options start with "[" but have no "]"`},
		"no suite":     {"\ndeb [signed-by=/k.gpg] http://deb.example.org/debian\n", "bad.list:2: a sources line needs a URI and a suite"},
		"not deb":      {"rpm http://x/ y\n", `bad.list:1: "rpm" is not a sources line`},
	} {
		t.Run(name, func(t *testing.T) {
			bad := writeFile(t, t.TempDir(), "bad.list", tc.line)
			_, err := ImportAptSources([]string{bad}, dir, "amd64")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
