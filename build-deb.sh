#!/usr/bin/env bash
# build-deb.sh [VERSION] [OUTDIR]: build a .deb of gatehouse (static binary,
# systemd units, sysusers/tmpfiles snippets, example config and alert rules),
# installable with `apt-get install ./gatehouse_VERSION_ARCH.deb`, so the
# appliance can be delivered through its own mirror.
set -euo pipefail
cd "$(dirname "$0")"
version=${1:-0.1.0}
out=${2:-dist}
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
  "$root/usr/lib/tmpfiles.d" "$root/etc/gatehouse" "$root/usr/share/doc/gatehouse/examples"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$root/usr/bin/gatehouse" ./cmd/gatehouse
install -m 0644 systemd/*.service systemd/*.timer "$root/lib/systemd/system/"
install -m 0644 systemd/sysusers.d/gatehouse.conf "$root/usr/lib/sysusers.d/gatehouse.conf"
install -m 0644 systemd/tmpfiles.d/gatehouse.conf "$root/usr/lib/tmpfiles.d/gatehouse.conf"
install -m 0640 configs/gatehouse.toml "$root/etc/gatehouse/gatehouse.toml"
install -m 0644 configs/gatehouse-alerts.yml README.md "$root/usr/share/doc/gatehouse/examples/"

cat > "$root/DEBIAN/control" <<CONTROL
Package: gatehouse
Version: $version
Architecture: $arch
Maintainer: gatehouse developers <gatehouse@example.org>
Section: admin
Priority: optional
Recommends: systemd
Description: verified APT mirror and certificate-only SSH bastion
 gatehouse is the single checked entrance to an isolated network segment:
 it syncs signed APT repositories, verifies every byte against the
 upstream's OpenPGP signature and serves a local mirror; and it runs an SSH
 bastion that accepts only OpenSSH certificates and records sessions.
CONTROL
echo /etc/gatehouse/gatehouse.toml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null; then systemd-sysusers gatehouse.conf; fi
  if command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create gatehouse.conf; fi
  if getent group gatehouse >/dev/null; then chgrp gatehouse /etc/gatehouse/gatehouse.toml || true; fi
fi
exit 0
POSTINST
chmod 0755 "$root/DEBIAN/postinst"
mkdir -p "$out"
deb="$out/gatehouse_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
