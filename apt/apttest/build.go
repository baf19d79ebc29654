package apttest

import (
	"gatehouse/apt/pgp"
	"gatehouse/apt/repobuild"
)

// The repository builder lives in gatehouse/apt/repobuild, which imports
// neither testing nor net/http/httptest, so the gatehouse demo can build
// its sample archive with it without linking test code into the binary.
// These names keep the tests' spelling (apttest.Build, apttest.Package, ...)
// and are the very same types and functions.

// Package is one binary package of a test repository: see
// repobuild.Package.
type Package = repobuild.Package

// Suite describes one suite of a test repository: see repobuild.Suite.
type Suite = repobuild.Suite

// Repo is a built repository on disk: see repobuild.Repo.
type Repo = repobuild.Repo

// Build writes a signed repository with the given suites under dir: see
// repobuild.Build.
func Build(dir string, key *pgp.SigningKey, suites ...Suite) (*Repo, error) {
	return repobuild.Build(dir, key, suites...)
}

// BuildFlat writes a signed flat repository: see repobuild.BuildFlat.
func BuildFlat(dir string, key *pgp.SigningKey, pkgs []Package) (*Repo, error) {
	return repobuild.BuildFlat(dir, key, pkgs)
}

// BuildFlatIn writes a signed flat repository in subdirectory sub of dir:
// see repobuild.BuildFlatIn.
func BuildFlatIn(dir, sub string, key *pgp.SigningKey, pkgs []Package) (*Repo, error) {
	return repobuild.BuildFlatIn(dir, sub, key, pkgs)
}

// BuildSynthetic writes a large repository whose pool files are random
// bytes, for benchmarks: see repobuild.BuildSynthetic.
func BuildSynthetic(dir string, key *pgp.SigningKey, n, sizeMin, sizeMax int) (*Repo, error) {
	return repobuild.BuildSynthetic(dir, key, n, sizeMin, sizeMax)
}

// WriteAptConfig writes a private apt configuration under dir: see
// repobuild.WriteAptConfig.
func WriteAptConfig(dir, arch, sourcesLines string) (string, error) {
	return repobuild.WriteAptConfig(dir, arch, sourcesLines)
}
