#!/usr/bin/env bash
# test.sh: the whole gatehouse test suite, on a fresh Debian 12 machine with Go.
#
# It installs the Debian packages the tests drive for real (OpenSSH, gpgv,
# sqv, asciinema, dpkg, apt, nginx, debhelper and lintian for the package
# test in systemd/, ...), then runs: gofmt check, go vet,
# staticcheck, go test -race ./..., and a short fuzz run of every fuzz target.
# README.md gives this exact command, and .ci/run runs it.
#
# Environment: FUZZTIME (default 5s) per fuzz target; SKIP_INSTALL=1 skips apt-get.
set -euo pipefail
cd "$(dirname "$0")"

FUZZTIME=${FUZZTIME:-5s}
PACKAGES=(
  openssh-server openssh-client gnupg gpgv sqv debian-archive-keyring
  asciinema dpkg-dev apt curl nginx iproute2 zstd xz-utils bzip2 lzma lz4 systemd chromium
  python3-paramiko
  ssh-audit jq haproxy rsync
  debhelper lintian
)

step() { printf '\n==> %s\n' "$*"; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step "installing Debian packages the tests use"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change these files (run gofmt -w):"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

step "go build"
go build -o /dev/null ./cmd/gatehouse

step "SeaweedFS weed for the object-storage tests (built once per version, cached)"
# The S3 tests (mirror/objstore, mirror, cmd/gatehouse) run a real
# S3-compatible server. weed is built from testdata/seaweed-wrapper, a module
# outside gatehouse's go.mod (seaweedfs's go.mod has a replace directive that
# `go install pkg@version` refuses). A cold build takes about six minutes and
# 230 MB; the binary is kept per version in the cache below (the same place
# apttest.WeedCacheDir uses), so later runs and the -race run reuse it.
WEED_VERSION=$(awk '$1 == "github.com/seaweedfs/seaweedfs" && $2 ~ /^v/ { print $2; exit }' testdata/seaweed-wrapper/go.mod)
if [ -n "${XDG_CACHE_HOME:-}" ]; then WEED_CACHE=$XDG_CACHE_HOME/gatehouse-test
elif [ "$(id -u)" -eq 0 ]; then WEED_CACHE=/var/cache/gatehouse-test
else WEED_CACHE=$HOME/.cache/gatehouse-test; fi
export GATEHOUSE_WEED="$WEED_CACHE/weed-$WEED_VERSION"
if [ ! -x "$GATEHOUSE_WEED" ]; then
  mkdir -p "$WEED_CACHE"
  start=$(date +%s)
  (cd testdata/seaweed-wrapper && go build -trimpath -o "$GATEHOUSE_WEED.tmp" github.com/seaweedfs/seaweedfs/weed)
  mv "$GATEHOUSE_WEED.tmp" "$GATEHOUSE_WEED"
  echo "built $GATEHOUSE_WEED in $(( $(date +%s) - start ))s"
else
  echo "cached: $GATEHOUSE_WEED"
fi

step "go test -race"
go test -race -count=1 -timeout 45m ./...

step "fuzz: every Fuzz target for $FUZZTIME"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(' "$dir"/*_test.go 2>/dev/null | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/' | sort -u); do
    echo "fuzz $pkg $target"
    # Go's fuzz coordinator sometimes reports "context deadline exceeded"
    # at the end of -fuzztime without any failing input (no crasher is
    # written): retry such a run once; a real crasher fails at once.
    for attempt in 1 2; do
      if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/gatehouse-fuzz.log 2>&1; then
        break
      fi
      if [ "$attempt" = 1 ] && grep -q "context deadline exceeded" /tmp/gatehouse-fuzz.log &&
         ! grep -q "Failing input written to" /tmp/gatehouse-fuzz.log; then
        echo "  (fuzz deadline flake without a failing input; retrying $target once)"
        continue
      fi
      cat /tmp/gatehouse-fuzz.log; echo "fuzz target $target in $pkg failed (the crasher is saved under $dir/testdata/fuzz)"; exit 1
    done
  done
done

step "all checks passed"
