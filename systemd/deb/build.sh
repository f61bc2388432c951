#!/usr/bin/env bash
# Builds labvm_<version>_amd64.deb with dpkg-deb alone (no debhelper):
# `make deb` runs it. Usage: build.sh VERSION OUTDIR
#
# VERSION is `git describe --always --dirty`; it becomes a Debian version
# (debian_version below). The package is staged in a temp dir under
# OUTDIR, built with root:root ownership, and the staging removed.
set -euo pipefail

version=${1:?usage: build.sh VERSION OUTDIR}
outdir=${2:?usage: build.sh VERSION OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
GO=${GO:-go}
maintainer=${DEB_MAINTAINER:-labvm developers <labvm@example.org>}

# debian_version maps git describe to a Debian version that sorts the way
# the commits do: v1.2.0 → 1.2.0; v1.2.0-5-gabc1234 → 1.2.0+git5.gabc1234;
# no tag yet (a bare hash) → 0~git<commit date>.<hash>; -dirty → +dirty.
debian_version() {
	local v=$1 dirty=""
	if [[ $v == *-dirty ]]; then
		dirty="+dirty"
		v=${v%-dirty}
	fi
	if [[ $v =~ ^[0-9a-f]{7,40}$ ]]; then
		echo "0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).${v}${dirty}"
	elif [[ $v =~ ^v?([0-9][0-9A-Za-z.~+]*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		echo "${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}${dirty}"
	elif [[ $v =~ ^v?([0-9][0-9A-Za-z.~+]*)$ ]]; then
		echo "${BASH_REMATCH[1]}${dirty}"
	else
		echo "build.sh: cannot make a Debian version of $v" >&2
		return 1
	fi
}

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}
if [ "$version" = "--debian-version" ]; then # build.sh --debian-version DESCRIBE: print the mapping only (tests)
	debian_version "$outdir"
	exit
fi
# "-1": the Debian revision. labvm is packaged from its own tree, but as a
# non-native package its changelog is changelog.Debian.gz, as elsewhere.
debver=$(debian_version "$version")-1
[[ $debver =~ ^[0-9][A-Za-z0-9.+~]*-1$ ]] || { echo "build.sh: bad Debian version $debver" >&2; exit 1; }

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
stage=$(mktemp -d "$outdir/.stage-XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN"

echo "==> building labvm $version as Debian version $debver"
# Stripped (-s -w): a package ships no symbol tables. PIE for ASLR, and
# Debian's hardening flags for the C parts (cgo: libvirt, the resolver).
ldflags="-X github.com/labvm/labvm/daemon.Version=$version -s -w -linkmode=external -extldflags=-Wl,-z,relro,-z,now"
export CGO_CFLAGS="-O2 -g0 -D_FORTIFY_SOURCE=2 -fstack-protector-strong" CGO_LDFLAGS="-Wl,-z,relro,-z,now"
(cd "$top" && $GO build -trimpath -buildmode=pie -ldflags "$ldflags" -o "$stage/labvmd" ./cmd/labvmd)
(cd "$top" && $GO build -trimpath -buildmode=pie -ldflags "$ldflags" -o "$stage/labvm" ./cmd/labvm)
strip --remove-section=.comment --remove-section=.note "$stage/labvmd" "$stage/labvm"
install -D -m 0755 "$stage/labvmd" "$root/usr/sbin/labvmd"
install -D -m 0755 "$stage/labvm" "$root/usr/bin/labvm"

# systemd units, naming /usr's binaries. /lib, not /usr/lib: Debian 12's
# systemd packages still install there.
install -d "$root/lib/systemd/system"
"$stage/labvmd" --write-units "$root/lib/systemd/system" --units-prefix /usr >/dev/null
chmod 0644 "$root"/lib/systemd/system/*

# The example config, a conffile: an admin's edits survive upgrades.
install -D -m 0644 "$top/docs/labvmd.yaml.example" "$root/etc/labvm/labvmd.yaml.example"
echo /etc/labvm/labvmd.yaml.example > "$root/DEBIAN/conffiles"

# Man pages from the commands' own help, compressed as policy asks.
install -d "$root/usr/share/man/man1" "$root/usr/share/man/man8"
"$stage/labvm" __gen-man "$root/usr/share/man/man1"
"$stage/labvmd" --write-man "$root/usr/share/man/man8" >/dev/null
find "$root/usr/share/man" -type f -exec chmod 0644 {} + -exec gzip -9n {} +

# Shell completions from cobra, where each shell looks for them.
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$stage/labvm" completion bash > "$root/usr/share/bash-completion/completions/labvm"
"$stage/labvm" completion zsh > "$root/usr/share/zsh/vendor-completions/_labvm"
"$stage/labvm" completion fish > "$root/usr/share/fish/vendor_completions.d/labvm.fish"
chmod 0644 "$root/usr/share/bash-completion/completions/labvm" "$root/usr/share/zsh/vendor-completions/_labvm" "$root/usr/share/fish/vendor_completions.d/labvm.fish"

# Documentation: copyright (labvm and every Go module linked in),
# changelog, and lintian's overrides with their reasons.
doc=$root/usr/share/doc/labvm
install -d "$doc"
bash "$here/copyright.sh" "$top" > "$doc/copyright"
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
	echo "labvm ($debver) unstable; urgency=medium"
	echo
	echo "  * Built from git commit $commit ($version)."
	echo
	echo " -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$doc/changelog.Debian.gz"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/labvm"
chmod 0644 "$doc"/*

# Maintainer scripts.
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$root/DEBIAN/"

# Depends: the shared libraries the binaries link (dpkg-shlibdeps reads
# their ELF headers), and what labvmd runs or talks to.
mkdir -p "$stage/shlibs/debian"
printf 'Source: labvm\n\nPackage: labvm\nArchitecture: amd64\n' > "$stage/shlibs/debian/control"
shlibs=$(cd "$stage/shlibs" && dpkg-shlibdeps -O "$root/usr/sbin/labvmd" "$root/usr/bin/labvm" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build.sh: dpkg-shlibdeps found no libraries" >&2; exit 1; }
depends="$shlibs, libvirt-daemon-system (>= 9.0.0), qemu-system-x86, qemu-utils, passwd, init-system-helpers (>= 1.52)"

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
installed=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: labvm
Version: $debver
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $installed
Depends: $depends
Recommends: openssh-client, nftables
Section: admin
Priority: optional
Homepage: https://github.com/labvm/labvm
Description: personal development VMs on a lab's own hosts
 labvm runs personal development VMs (compute instances) from cloud images
 on libvirt/QEMU, for the users of a shared host: fixed sizes, core quotas,
 roles, an isolated network per VNet, jobs, tunnels and an audit log.
 .
 This package holds the daemon labvmd (run by systemd through
 labvmd.socket and labvmd.service), the command line labvm, and
 labvm-guests.service, which stops instances cleanly at host shutdown.
 Members of the labvm group may use the daemon's socket.
CONTROL

deb="$outdir/labvm_${debver}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
