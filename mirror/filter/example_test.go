package filter_test

import (
	"fmt"
	"io"
	"strings"

	"gatehouse/apt"
	"gatehouse/mirror/filter"
)

// A filtered sync streams every verified Packages file of the upstream
// into one Universe, resolves the configured selection, refuses to publish
// when something is unsatisfied, and then writes indexes (WriteIndexes,
// WriteTranslation per suite), the signed Release (WriteRelease) and the
// pool files of Result.Selected.
func ExampleResolve() {
	const packages = `Package: app
Version: 2.0-1
Architecture: amd64
Depends: libfoo1 (>= 1.2), mail-transport-agent | postfix-lite, missing-lib
Filename: pool/main/a/app/app_2.0-1_amd64.deb
Size: 1000
SHA256: 0000000000000000000000000000000000000000000000000000000000000001

Package: libfoo1
Version: 1.3-1
Architecture: amd64
Filename: pool/main/libf/libfoo/libfoo1_1.3-1_amd64.deb
Size: 2000
SHA256: 0000000000000000000000000000000000000000000000000000000000000002

Package: postfix-lite
Version: 3.7-1
Architecture: amd64
Provides: mail-transport-agent
Filename: pool/main/p/postfix/postfix-lite_3.7-1_amd64.deb
Size: 3000
SHA256: 0000000000000000000000000000000000000000000000000000000000000003
`
	u := filter.NewUniverse()
	pr := apt.NewPackagesReader(strings.NewReader(packages), "main/binary-amd64/Packages")
	for {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		if err := u.Add("stable", "main", p); err != nil {
			panic(err)
		}
	}
	res, err := filter.Resolve(u, filter.Spec{Include: []string{"app"}, WithDependencies: true, Architectures: []string{"amd64"}})
	if err != nil {
		panic(err)
	}
	for _, e := range res.Selected {
		fmt.Println(e, e.Filename)
	}
	for _, p := range res.Unsatisfied {
		fmt.Println("unsatisfied:", p)
	}
	// Output:
	// app 2.0-1 amd64 pool/main/a/app/app_2.0-1_amd64.deb
	// libfoo1 1.3-1 amd64 pool/main/libf/libfoo/libfoo1_1.3-1_amd64.deb
	// postfix-lite 3.7-1 amd64 pool/main/p/postfix/postfix-lite_3.7-1_amd64.deb
	// unsatisfied: app 2.0-1 amd64: Depends: missing-lib: no package is named or provides missing-lib (selected by the include patterns)
}
