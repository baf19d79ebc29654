// Package apttest builds signed Debian repositories on disk and serves them
// over loopback HTTP with injectable faults, for the tests of other
// gatehouse packages; it also drives the real apt-get against a repository
// with a private configuration. It is used only from tests: it imports
// testing and net/http/httptest, which the gatehouse binary must not link.
//
// The building itself is gatehouse/apt/repobuild (shared with the demo);
// Build, Package, Suite, Repo and friends here are aliases of it.
// Repositories are real: every .deb is built by dpkg-deb (cached per
// process, built in parallel), indexes come in every requested compression
// with by-hash copies, and Release files are signed by gatehouse/apt/pgp so
// that gpgv, sqv and apt accept them. BuildSynthetic is the exception: its
// pool files are random bytes, for sync benchmarks only.
//
// A typical test:
//
//	repo, err := apttest.Build(t.TempDir(), apttest.NewKey(t, "ed25519"), apttest.Suite{
//		Name: "stable", Components: []string{"main"}, Architectures: []string{"amd64"},
//		Packages: map[string][]apttest.Package{"main": {{Name: "hello", Version: "1.0", Arch: "amd64"}}},
//	})
//	...
//	srv := apttest.Serve(t, repo.Dir)
//	srv.SetFault(repo.PoolPath("hello", "1.0", "amd64"), apttest.Fault{FlipByte: 100})
//	apt := apttest.AptClient(t, repo.SourcesLine(srv.URL, "stable", "main"))
//	out, err := apt.Update()
//
// Timing (2 shared cores, load around 9): Build of 200 real packages with
// Sources, by-hash, Translations and Contents takes about 3.6 s cold and
// 0.8 s when the process's .deb cache already holds them
// (BenchmarkBuild200). BuildSynthetic of 20,000 packages takes 10-15 s and
// of 60,000 about 30-60 s with a peak RSS near 300 MiB, so benchmarks
// that measure the mirror's memory should build their upstream in another
// process.
package apttest
