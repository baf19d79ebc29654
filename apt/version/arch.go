package version

import "strings"

// The tables below are dpkg 1.21's /usr/share/dpkg/cputable (first column) and
// /usr/share/dpkg/tupletable, in file order. Dpkg::Arch expands "<cpu>" lines
// over every CPU and lets an earlier line win, which archTuples reproduces.
var dpkgCPUs = []string{
	"alpha", "amd64", "arc", "armeb", "arm", "arm64", "avr32", "hppa", "loong64",
	"i386", "ia64", "m32r", "m68k", "mips", "mipsel", "mipsr6", "mipsr6el",
	"mips64", "mips64el", "mips64r6", "mips64r6el", "nios2", "or1k", "powerpc",
	"powerpcel", "ppc64", "ppc64el", "riscv64", "s390", "s390x", "sh3", "sh3eb",
	"sh4", "sh4eb", "sparc", "sparc64", "tilegx",
}

var dpkgTupleTable = [][2]string{
	{"eabi-uclibc-linux-arm", "uclibc-linux-armel"},
	{"base-uclibc-linux-<cpu>", "uclibc-linux-<cpu>"},
	{"eabihf-musl-linux-arm", "musl-linux-armhf"},
	{"base-musl-linux-<cpu>", "musl-linux-<cpu>"},
	{"ilp32-gnu-linux-arm64", "arm64ilp32"},
	{"eabihf-gnu-linux-arm", "armhf"},
	{"eabi-gnu-linux-arm", "armel"},
	{"abin32-gnu-linux-mips64r6el", "mipsn32r6el"},
	{"abin32-gnu-linux-mips64r6", "mipsn32r6"},
	{"abin32-gnu-linux-mips64el", "mipsn32el"},
	{"abin32-gnu-linux-mips64", "mipsn32"},
	{"abi64-gnu-linux-mips64r6el", "mips64r6el"},
	{"abi64-gnu-linux-mips64r6", "mips64r6"},
	{"abi64-gnu-linux-mips64el", "mips64el"},
	{"abi64-gnu-linux-mips64", "mips64"},
	{"spe-gnu-linux-powerpc", "powerpcspe"},
	{"x32-gnu-linux-amd64", "x32"},
	{"base-gnu-linux-<cpu>", "<cpu>"},
	{"eabihf-gnu-kfreebsd-arm", "kfreebsd-armhf"},
	{"base-gnu-kfreebsd-<cpu>", "kfreebsd-<cpu>"},
	{"base-gnu-knetbsd-<cpu>", "knetbsd-<cpu>"},
	{"base-gnu-kopensolaris-<cpu>", "kopensolaris-<cpu>"},
	{"base-gnu-hurd-<cpu>", "hurd-<cpu>"},
	{"base-bsd-dragonflybsd-<cpu>", "dragonflybsd-<cpu>"},
	{"base-bsd-freebsd-<cpu>", "freebsd-<cpu>"},
	{"base-bsd-openbsd-<cpu>", "openbsd-<cpu>"},
	{"base-bsd-netbsd-<cpu>", "netbsd-<cpu>"},
	{"base-bsd-darwin-<cpu>", "darwin-<cpu>"},
	{"base-sysv-aix-<cpu>", "aix-<cpu>"},
	{"base-sysv-solaris-<cpu>", "solaris-<cpu>"},
	{"eabi-uclibc-uclinux-arm", "uclinux-armel"},
	{"base-uclibc-uclinux-<cpu>", "uclinux-<cpu>"},
	{"base-tos-mint-m68k", "mint-m68k"},
}

// archTuples maps a Debian architecture name to its dpkg tuple
// (abi, libc, os, cpu); built once from the tables above.
var archTuples = buildArchTuples()

func buildArchTuples() map[string][4]string {
	toArch := map[string][4]string{}
	seenTuple := map[string]bool{}
	add := func(tuple, arch string, keepFirst bool) {
		if keepFirst && (seenTuple[tuple] || hasKey(toArch, arch)) {
			return
		}
		p := strings.SplitN(tuple, "-", 4)
		toArch[arch] = [4]string{p[0], p[1], p[2], p[3]}
		seenTuple[tuple] = true
	}
	for _, row := range dpkgTupleTable {
		if strings.Contains(row[0], "<cpu>") {
			for _, cpu := range dpkgCPUs {
				add(strings.ReplaceAll(row[0], "<cpu>", cpu), strings.ReplaceAll(row[1], "<cpu>", cpu), true)
			}
			continue
		}
		add(row[0], row[1], false)
	}
	return toArch
}

func hasKey(m map[string][4]string, k string) bool {
	_, ok := m[k]
	return ok
}

// archTuple is Dpkg::Arch::debarch_to_debtuple: "linux-X" is read as "X".
func archTuple(arch string) ([4]string, bool) {
	if rest, ok := strings.CutPrefix(arch, "linux-"); ok {
		if i := strings.IndexByte(rest, '-'); i >= 0 {
			rest = rest[:i]
		}
		arch = rest
	}
	t, ok := archTuples[arch]
	return t, ok
}

// wildcardTuple is Dpkg::Arch::debwildcard_to_debtuple.
func wildcardTuple(pattern string) ([4]string, bool) {
	p := strings.SplitN(pattern, "-", 4)
	hasAny := false
	for _, s := range p {
		if s == "any" {
			hasAny = true
		}
	}
	if !hasAny {
		return archTuple(pattern)
	}
	switch len(p) {
	case 4:
		return [4]string{p[0], p[1], p[2], p[3]}, true
	case 3:
		return [4]string{"any", p[0], p[1], p[2]}, true
	case 2:
		return [4]string{"any", "any", p[0], p[1]}, true
	default:
		return [4]string{"any", "any", "any", "any"}, true
	}
}

// ArchMatches reports whether the concrete architecture arch (e.g. "amd64",
// "hurd-i386") is matched by pattern, which is an architecture name, "any",
// or a dpkg wildcard such as "linux-any", "any-amd64", "any-arm" or
// "musl-linux-any". It implements Dpkg::Arch::debarch_is, using dpkg 1.21's
// architecture tables; unknown architectures match only themselves and "any".
func ArchMatches(arch, pattern string) bool {
	if pattern == arch || pattern == "any" {
		return true
	}
	real, ok := archTuple(arch)
	if !ok {
		return false
	}
	alias, ok := wildcardTuple(pattern)
	if !ok {
		return false
	}
	for i := range real {
		if alias[i] != "any" && alias[i] != real[i] {
			return false
		}
	}
	return true
}

// archIsConcerned is Dpkg::Arch::debarch_is_concerned: a positive entry that
// matches selects the architecture; a negated entry that matches excludes it;
// a list of only negated entries selects every architecture none of them
// matches.
func archIsConcerned(arch string, list []string) bool {
	seen := false
	for _, a := range list {
		a = strings.ToLower(a)
		if not, ok := strings.CutPrefix(a, "!"); ok {
			if ArchMatches(arch, not) {
				return false
			}
			seen = true
		} else if ArchMatches(arch, a) {
			return true
		}
	}
	return seen
}
