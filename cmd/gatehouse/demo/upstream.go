package demo

import (
	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
)

// Packages are the sample upstream's packages: a small dependency chain so
// apt-get install --download-only shows the closure being fetched.
func Packages() []repobuild.Package {
	return []repobuild.Package{
		{Name: "gatehouse-hello", Version: "1.0-1", Arch: "all", Depends: "libgatehouse-greeting (>= 1.0)", Section: "misc", Priority: "optional",
			Description: "sample package served by the gatehouse demo\n This package was signed upstream, verified by gatehouse and served\n from its mirror.",
			Files:       map[string]string{"usr/share/doc/gatehouse-hello/README": "Hello from the gatehouse demo mirror.\n"}},
		{Name: "libgatehouse-greeting", Version: "1.2~rc1-1", Arch: "all", Section: "libs", Priority: "optional",
			Description: "sample library of the gatehouse demo"},
		{Name: "gatehouse-extras", Version: "2:0.9+dfsg-3", Arch: "all", Section: "misc", Priority: "optional",
			Description: "another sample package"},
	}
}

// BuildUpstream builds the demo's sample upstream archive under dir: suite
// "stable" (codename "demo"), component main, architecture arch, with
// Packages as real .debs (dpkg-deb must be installed), by-hash indexes and
// translations, signed with key. It uses apt/repobuild, not apt/apttest,
// so the binary links no test code.
func BuildUpstream(dir string, key *pgp.SigningKey, arch string) (*repobuild.Repo, error) {
	return repobuild.Build(dir, key, repobuild.Suite{
		Name: "stable", Codename: "demo", Origin: "Gatehouse Demo", Label: "Gatehouse Demo",
		Components: []string{"main"}, Architectures: []string{arch},
		Packages: map[string][]repobuild.Package{"main": Packages()},
		ByHash:   true, Translations: true,
	})
}
