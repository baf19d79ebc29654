package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules enforces DESIGN.md's dependency direction with the real
// `go list`, so a forbidden edge fails CI instead of slipping into review.
func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "gatehouse/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath                         string
		Imports, TestImports, XTestImports []string
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 2 {
		t.Fatalf("go list found %d packages; the test would check nothing", len(pkgs))
	}
	const mod = "gatehouse/"
	ours := func(p string) bool { return strings.HasPrefix(p, mod) }
	under := func(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }
	testOnly := []string{"gatehouse/apt/apttest", "gatehouse/bastion/internal/sshtest"}
	pure := []string{"gatehouse/apt/deb822", "gatehouse/apt/version", "gatehouse/bastion/policy"}

	for _, p := range pkgs {
		for _, imp := range p.Imports {
			if imp == "golang.org/x/crypto/openpgp" || strings.HasPrefix(imp, "golang.org/x/crypto/openpgp/") {
				t.Errorf("%s imports deprecated %s: use github.com/ProtonMail/go-crypto", p.ImportPath, imp)
			}
			if (imp == "os/signal") && p.ImportPath != "gatehouse/cmd/gatehouse" {
				t.Errorf("%s imports os/signal: only cmd/gatehouse handles process state", p.ImportPath)
			}
			if !ours(imp) {
				continue
			}
			switch {
			case under(imp, "gatehouse/cmd") && !(under(p.ImportPath, "gatehouse/cmd/gatehouse") && strings.HasPrefix(imp, "gatehouse/cmd/gatehouse/")):
				// cmd/gatehouse's own subpackages (status page, metrics,
				// demo) are imported by it and by each other, by nobody else.
				t.Errorf("%s imports %s: nothing outside cmd/gatehouse imports cmd", p.ImportPath, imp)
			case under(p.ImportPath, "gatehouse/mirror") && under(imp, "gatehouse/bastion"),
				under(p.ImportPath, "gatehouse/bastion") && under(imp, "gatehouse/mirror"):
				t.Errorf("%s imports %s: mirror and bastion never import each other", p.ImportPath, imp)
			case strings.HasPrefix(p.ImportPath, imp+"/"):
				t.Errorf("%s imports its parent %s", p.ImportPath, imp)
			case under(p.ImportPath, "gatehouse/apt") && !under(imp, "gatehouse/apt"):
				t.Errorf("%s imports %s: apt/ imports nothing of ours outside apt/", p.ImportPath, imp)
			}
			for _, pp := range pure {
				if p.ImportPath == pp {
					t.Errorf("%s imports %s: it must import nothing of ours", p.ImportPath, imp)
				}
			}
			for _, to := range testOnly {
				// The demo and the benchmark commands build their sample
				// upstreams with gatehouse/apt/repobuild, the builder
				// apttest wraps, so they show real signed repositories
				// without linking test code.
				if imp == to {
					t.Errorf("%s imports test-only package %s outside tests", p.ImportPath, imp)
				}
			}
		}
	}
}

// TestBinaryLinksNoTestCode checks, with the real `go list -deps`, that the
// gatehouse binary links neither the testing package (whose init registers
// -test.* flags and which has no business in a server) nor
// net/http/httptest nor our test-only packages. The demo's sample archive
// comes from gatehouse/apt/repobuild for this reason.
func TestBinaryLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "gatehouse/cmd/gatehouse").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps found %d packages; the test would check nothing", len(deps))
	}
	forbidden := []string{"testing", "net/http/httptest", "gatehouse/apt/apttest", "gatehouse/bastion/internal/sshtest"}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f {
				t.Errorf("the gatehouse binary links %s: test code must stay out of it (go list -deps ./cmd/gatehouse)", d)
			}
		}
	}
}
