package apttest

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDependencyGraph checks the closures DependencyGraph documents with
// the real apt resolver.
func TestDependencyGraph(t *testing.T) {
	key := NewKey(t, "ed25519")
	dir := t.TempDir()
	repo, err := Build(dir, key, Suite{Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]Package{"main": DependencyGraph("amd64")}})
	if err != nil {
		t.Fatal(err)
	}
	srv := Serve(t, dir)
	apt := AptClient(t, repo.SourcesLine(srv.URL, "stable", "main"))
	if out, err := apt.Update(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	inst := regexp.MustCompile(`(?m)^Inst (\S+) \((\S+) `)
	closure := func(root string, recommends bool) ([]string, string, error) {
		args := []string{"install", "-s", root}
		if !recommends {
			args = append(args, "--no-install-recommends")
		}
		out, err := apt.Run(args...)
		var got []string
		for _, m := range inst.FindAllStringSubmatch(out, -1) {
			got = append(got, m[1]+"="+m[2])
		}
		slices.Sort(got)
		return got, out, err
	}
	for root, want := range map[string][]string{
		"app":      {"app=2.0-1", "init-system-helpers=1.65", "libc-lite=2.36-9", "libfoo1=1.3-1", "postfix-lite=3.7-1", "python3=3.11.2-1"},
		"alt-user": {"alt-user=1", "libc-lite=2.36-9"},
	} {
		got, out, err := closure(root, false)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("closure of %s = %v, want %v (%v)\n%s", root, got, want, err, out)
		}
	}
	if got, out, _ := closure("app", true); !slices.Contains(got, "app-doc=2.0-1") {
		t.Errorf("app's Recommends not followed by apt:\n%s", out)
	}
	for _, root := range []string{"broken", "needs-newer"} {
		if got, out, err := closure(root, false); err == nil || !strings.Contains(out, "unmet dependencies") {
			t.Errorf("%s resolved to %v:\n%s", root, got, out)
		}
	}
}
