// Package repobuild builds signed Debian repositories on disk: real .deb
// files made by dpkg-deb, Packages/Sources/Translation/Contents indexes in
// every requested compression with by-hash copies, and Release, InRelease
// and Release.gpg signed by gatehouse/apt/pgp so that gpgv, sqv and apt
// accept them. BuildSynthetic is the exception: its pool files are random
// bytes, for sync benchmarks only.
//
// It exists apart from gatehouse/apt/apttest (which serves such
// repositories with injected faults and drives apt-get, and takes a
// testing.TB) because the gatehouse binary uses it too: the demo builds
// its sample upstream with it. It therefore must not import testing or
// net/http/httptest (cmd/gatehouse's deps test fails if the binary links
// them). The tests reach it through apttest's aliases (apttest.Build,
// apttest.Package, ...), which are the same types.
//
// .debs are cached per process by content (up to 128 MiB) and built in
// parallel, so a test that builds the same packages twice pays dpkg-deb
// once. Timing (2 shared cores, load around 9): Build of 200 real packages
// with Sources, by-hash, Translations and Contents takes about 3.6 s cold
// and 0.8 s warm (BenchmarkBuild200). BuildSynthetic of 20,000 packages
// takes 10-15 s and of 60,000 about 30-60 s with a peak RSS near 300 MiB,
// so benchmarks that measure the mirror's memory should build their
// upstream in another process.
package repobuild
