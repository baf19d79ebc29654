#!/usr/bin/env bash
# build-deb.sh [OUTDIR]: build the gatehouse .deb (default OUTDIR: dist) and
# print its path. It is the one documented way to build the package.
#
# The package is built by debhelper from debian/ (dpkg-buildpackage -us -uc
# -b -d; -d because Go comes from go.dev, not from Debian). The version is
# the top entry of debian/changelog; add an entry (dch -v VERSION) to release.
#
# dpkg-buildpackage writes its results into the parent directory of the
# source tree and its intermediate files into debian/: so that neither the
# checkout nor its parent (in CI, whatever directory the clone sits in) gets
# stray files, it builds a copy of the tree in a temporary directory and
# moves only the .deb to OUTDIR.
#
# SOURCE_DATE_EPOCH defaults to the date of the changelog entry (set by
# dpkg-buildpackage), so two builds of one commit are byte-identical.
set -euo pipefail
cd "$(dirname "$0")"

if [ $# -gt 1 ] || [[ "${1:-}" =~ ^[0-9] ]]; then
  echo "usage: $0 [OUTDIR]   (the version comes from debian/changelog: add an entry to change it)" >&2
  exit 2
fi
out=${1:-dist}
for tool in dpkg-buildpackage dh go; do
  if ! command -v "$tool" >/dev/null; then
    echo "$0: $tool not found: install dpkg-dev and debhelper (apt-get install dpkg-dev debhelper) and Go" >&2
    exit 2
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src="$tmp/gatehouse"
mkdir "$src"
# Copy what git would commit: tracked files plus new, not ignored ones (so a
# build never picks up dist/, old build output or editor files).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
else
  tar --exclude=./dist --exclude=./.git -cf - . | tar -xf - -C "$src"
fi

(cd "$src" && dpkg-buildpackage -us -uc -b -d) >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log" >&2
  echo "$0: dpkg-buildpackage failed (log above)" >&2
  exit 1
}
mkdir -p "$out"
debs=("$tmp"/gatehouse_*.deb)
cp "${debs[@]}" "$out/"
echo "$out/$(basename "${debs[0]}")"
