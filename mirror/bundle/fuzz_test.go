package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const seedManifest = `{"format":1,"created":"2026-11-01T12:00:00Z","key":"AB","mirrors":[{"name":"up","snapshot":"x","suites":["stable"],"since":""}],` +
	`"files":[{"path":"up/dists/stable/InRelease","size":1,"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}]}`

// FuzzParseManifest: arbitrary manifest bytes never panic, and whatever
// is accepted only names clean paths below a listed mirror.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(seedManifest))
	f.Add([]byte(`{}`))
	f.Add([]byte(strings.Replace(seedManifest, "up/dists", "up/../dists", 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		for _, fl := range m.Files {
			name, rel, ok := SplitPath(fl.Path)
			if !ok || m.Mirror(name) == nil || strings.Contains(rel, "..") || fl.Size < 0 {
				t.Fatalf("accepted %+v", fl)
			}
		}
	})
}

// FuzzOpen: arbitrary bytes as a single-file bundle never panic and never
// yield a manifest that ParseManifest would refuse.
func FuzzOpen(f *testing.F) {
	k := newKey(f)
	fx := newFixture(f, "up", false)
	var buf bytes.Buffer
	if _, err := ExportStream(context.Background(), &buf, []Source{fx.src}, opts(k)); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes()[:4096])
	f.Add([]byte("not a tar"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "b")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		rd, err := Open(p)
		if err != nil {
			return
		}
		defer rd.Close()
		if _, err := ParseManifest(rd.manRaw); err != nil {
			t.Fatalf("Open accepted a manifest ParseManifest refuses: %v", err)
		}
	})
}
