package repobuild

import (
	"fmt"
	"testing"
	"time"

	"gatehouse/apt/pgp"
)

func resetDebCache() {
	debCache.Lock()
	defer debCache.Unlock()
	clear(debCache.m)
	debCache.bytes = 0
}

func packages200() []Package {
	pkgs := make([]Package, 200)
	for i := range pkgs {
		pkgs[i] = Package{Name: fmt.Sprintf("bench%03d", i), Version: "1.0-1", Arch: "amd64", Size: 4096,
			Depends: fmt.Sprintf("bench%03d", (i+1)%200)}
	}
	return pkgs
}

// BenchmarkBuild200 times Build of a 200-package suite of real .debs
// (Sources, by-hash, Translations, Contents, three compressions) into a
// fresh directory: "cold" runs dpkg-deb for every package, "warm" takes
// them from the process cache as a second test of a run would.
//
//	go test -run '^$' -bench Build200 -benchtime 3x ./apt/repobuild/
func BenchmarkBuild200(b *testing.B) {
	key, err := pgp.GenerateSigningKey("gatehouse bench", "bench@example.org", "ed25519", time.Now().Add(-time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	s := Suite{Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
		Packages: map[string][]Package{"main": packages200()}, Sources: true, ByHash: true, Translations: true, Contents: true}
	for _, cold := range []bool{true, false} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if cold {
					resetDebCache()
				}
				if _, err := Build(b.TempDir(), key, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildSynthetic times BuildSynthetic of 20,000 packages of 2-8
// KiB, the mirror benchmark's upstream.
//
//	go test -run '^$' -bench BuildSynthetic -benchtime 1x ./apt/repobuild/
func BenchmarkBuildSynthetic(b *testing.B) {
	key, err := pgp.GenerateSigningKey("gatehouse bench", "bench@example.org", "ed25519", time.Now().Add(-time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := BuildSynthetic(b.TempDir(), key, 20000, 2048, 8192); err != nil {
			b.Fatal(err)
		}
	}
}
