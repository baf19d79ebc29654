package apttest

// DependencyGraph returns packages (for one architecture plus "all") whose
// relations exercise what a dependency closure must handle, for filtered
// mirror tests. Resolving with Depends and Pre-Depends only (as apt-get
// install --no-install-recommends does against an empty system):
//
//   - "app" needs: app, libfoo1 1.3-1 (versioned: libfoo1 1.1-1 is also
//     listed and too old), libc-lite, postfix-lite (the first alternative
//     "mail-transport-agent" is virtual, provided by postfix-lite),
//     python3 (as "python3:any"; Multi-Arch: allowed) and
//     init-system-helpers (Pre-Depends, arch all). Its Recommends
//     "app-doc" is outside that closure.
//   - "alt-user" needs alt-user and libc-lite: its first alternative
//     "no-such-lib" does not exist.
//   - "broken" cannot be satisfied: it depends on "missing-dep", which
//     nothing provides.
//   - "needs-newer" cannot be satisfied: it wants libfoo1 (>= 2.0).
//
// The test of this package checks these closures against the real apt.
func DependencyGraph(arch string) []Package {
	return []Package{
		{Name: "app", Version: "2.0-1", Arch: arch,
			PreDepends: "init-system-helpers (>= 1.50)",
			Depends:    "libfoo1 (>= 1.2), mail-transport-agent | postfix-lite, python3:any",
			Recommends: "app-doc"},
		{Name: "app-doc", Source: "app", Version: "2.0-1", Arch: "all", Section: "doc"},
		{Name: "libfoo1", Source: "libfoo", Version: "1.3-1", Arch: arch, MultiArch: "same", Depends: "libc-lite", Section: "libs"},
		{Name: "libfoo1", Source: "libfoo", Version: "1.1-1", Arch: arch, MultiArch: "same", Depends: "libc-lite", Section: "libs"},
		{Name: "libc-lite", Version: "2.36-9", Arch: arch, MultiArch: "same", Priority: "required", Section: "libs"},
		{Name: "postfix-lite", Version: "3.7-1", Arch: arch, Provides: "mail-transport-agent", Depends: "libc-lite", Section: "mail"},
		{Name: "python3", Version: "3.11.2-1", Arch: arch, MultiArch: "allowed", Depends: "libc-lite", Section: "python"},
		{Name: "init-system-helpers", Version: "1.65", Arch: "all", Section: "admin", Priority: "important"},
		{Name: "alt-user", Version: "1", Arch: arch, Depends: "no-such-lib | libc-lite"},
		{Name: "broken", Version: "1", Arch: arch, Depends: "libc-lite, missing-dep"},
		{Name: "needs-newer", Version: "1", Arch: arch, Depends: "libfoo1 (>= 2.0)"},
	}
}
