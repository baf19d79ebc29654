package mirror

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// treeChangers are the functions that create, link, rename or remove
// files; under mirror/ only mirror/store may call them on the state
// directory (DESIGN.md: the store is the only writer of its tree; others
// get typed writers from it: store.NewFile, store.SubDir, Snapshot.WriteFile).
var treeChangers = map[string][]string{
	"os": {"Rename", "Link", "Symlink", "Remove", "RemoveAll", "Mkdir", "MkdirAll", "MkdirTemp",
		"Create", "CreateTemp", "WriteFile", "OpenFile", "Chtimes", "Chmod", "Chown", "Lchown", "Truncate"},
	"unix": {"Link", "Linkat", "Rename", "Renameat", "Renameat2", "Unlink", "Unlinkat", "Mkdir", "Mkdirat",
		"Symlink", "Symlinkat", "Open", "Openat", "Creat", "Rmdir"},
}

// treeChangerAllowed lists, per file and enclosing function, the calls
// outside mirror/store that never touch the state directory, with why.
var treeChangerAllowed = map[string]string{
	"bundle/export.go:writeFile":    "writes the export bundle where the operator asked, never into the state directory (export only reads the store)",
	"bundle/export.go:put":          "dirSink writes a directory bundle's entries below the export destination",
	"bundle/export.go:writeDir":     "creates the export destination directory of a directory bundle",
	"bundle/export.go:next":         "creates the next volume of a split export bundle",
	"bundle/export.go:remove":       "removes the volumes of a split export that failed",
	"sources.go:writeInlineKeyring": "import-apt-sources writes an inline Signed-By key into the keyring directory the operator names",
}

// TestOnlyStoreChangesTheTree fails when a package under mirror/ other
// than mirror/store calls a function that creates, links, renames or
// removes files, outside treeChangerAllowed. os.OpenFile with read-only
// flags is reading and passes.
func TestOnlyStoreChangesTheTree(t *testing.T) {
	fset := token.NewFileSet()
	checked, used := 0, map[string]bool{}
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (p == "store" || p == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		checked++
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, ok := sel.X.(*ast.Ident)
				if !ok || !slices.Contains(treeChangers[pkg.Name], sel.Sel.Name) {
					return true
				}
				if pkg.Name == "os" && sel.Sel.Name == "OpenFile" && len(call.Args) == 3 && readOnlyFlags(call.Args[1]) {
					return true
				}
				key := filepath.ToSlash(p) + ":" + fn.Name.Name
				if _, ok := treeChangerAllowed[key]; ok {
					used[key] = true
					return true
				}
				t.Errorf("%s: %s calls %s.%s: only mirror/store creates, links, renames or removes files in the state directory; ask it for a writer (store.NewFile, store.SubDir, Snapshot.WriteFile), or, if this never touches the state directory, add %q with the reason to treeChangerAllowed",
					fset.Position(call.Pos()), fn.Name.Name, pkg.Name, sel.Sel.Name, key)
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("scanned %d files; the test would check nothing", checked)
	}
	for key := range treeChangerAllowed {
		if !used[key] {
			t.Errorf("treeChangerAllowed lists %s, which no longer calls any: remove it", key)
		}
	}
}

// readOnlyFlags reports whether an os.OpenFile flag expression names none
// of the flags that write or create.
func readOnlyFlags(e ast.Expr) bool {
	ro := true
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok {
			switch id.Name {
			case "O_WRONLY", "O_RDWR", "O_CREATE", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE":
				ro = false
			}
		}
		return true
	})
	return ro
}
