#!/bin/bash
# Build the labvm data-science image: Debian 12 (bookworm) made only of
# Debian packages with mmdebstrap — cloud kernel, cloud-init,
# qemu-guest-agent, OpenSSH, Python 3 with Jupyter Notebook (terminals
# included), numpy, pandas, scipy, scikit-learn, matplotlib, venv and
# ipykernel, R with the IRkernel, git — and the units that start Jupyter as
# the instance's user at boot (rootfs/, see docs/ARCHITECTURE.md "Applications
# in the guest").
#
#   images/ds/build.sh OUTDIR  ->  OUTDIR/ds-debian-12.qcow2 (+ .sha256)
#
# Runs as root (mmdebstrap's root mode), needs no loop devices. Results are
# cached in ${LABVM_DS_IMAGE_CACHE:-/var/cache/labvm-ds-image}/<recipe hash>/;
# the hash covers this script, rootfs/, images/disk/assemble.sh (the disk
# step, shared with the test image) and the mirror. Packages come from the
# host's apt sources (deb.debian.org bookworm, bookworm-updates,
# bookworm-security) unless LABVM_DS_MIRROR names another.
#
# JupyterLab and RStudio Server are not Debian packages and are left out;
# the image serves only jupyter (port 8888, /tree), which is what the
# import command printed at the end declares.
#
# Disk layout (MBR, 6 GiB virtual): p1 FAT16 "DSBOOT" (syslinux, vmlinuz,
# initrd.img), p2 ext4 "ds-root" (the system; cloud-init's growpart grows it
# to the instance's disk). Kernel upgrades inside a guest do not reach p1.
set -euo pipefail
umask 022
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPE_VERSION=1
NAME=ds-debian-12

log() { echo "ds-image: $*" >&2; }
die() { echo "ds-image: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUTDIR=$1
[ "$(id -u)" = 0 ] || die "must run as root"
CACHE_ROOT=${LABVM_DS_IMAGE_CACHE:-/var/cache/labvm-ds-image}
MIRROR=${LABVM_DS_MIRROR:-}

PACKAGES=(
	linux-image-cloud-amd64 initramfs-tools systemd-sysv udev dbus
	cloud-init cloud-guest-utils ifupdown isc-dhcp-client netbase iproute2
	qemu-guest-agent openssh-server sudo ca-certificates less procps
	python3 jupyter-notebook jupyter-client python3-numpy python3-pandas python3-scipy
	python3-sklearn python3-matplotlib python3-terminado python3-venv
	python3-ipykernel python3-pip
	r-base-core r-cran-irkernel
	git
)
TOOLS=(mmdebstrap syslinux mkfs.vfat mkfs.ext4 sfdisk mcopy mmd qemu-img sha256sum)
# the disk step, shared with test/image/build.sh
ASSEMBLE=$(cd "$HERE/../disk" && pwd)/assemble.sh
for t in "${TOOLS[@]}"; do
	command -v "$t" >/dev/null || die "missing tool $t (apt-get install mmdebstrap syslinux syslinux-common mtools dosfstools fdisk e2fsprogs qemu-utils)"
done
[ -r /usr/lib/syslinux/mbr/mbr.bin ] || die "missing /usr/lib/syslinux/mbr/mbr.bin (syslinux-common)"

RECIPE=$( {
	echo "recipe $RECIPE_VERSION mirror '$MIRROR'"
	cd "$HERE" && find build.sh rootfs -type f -print0 | sort -z | xargs -0 sha256sum
	echo "disk $(sha256sum <"$ASSEMBLE")"
} | sha256sum | cut -c1-16)
ENTRY=$CACHE_ROOT/$RECIPE

publish() {
	mkdir -p "$OUTDIR"
	local f
	for f in $NAME.qcow2 $NAME.qcow2.sha256; do
		cp --reflink=auto "$ENTRY/$f" "$OUTDIR/.$f.tmp.$$"
		mv -f "$OUTDIR/.$f.tmp.$$" "$OUTDIR/$f"
	done
	log "$OUTDIR/$NAME.qcow2 sha256 $(cat "$OUTDIR/$NAME.qcow2.sha256")"
	cat <<-MSG
	Import it with:
	  labvm image import $NAME $(realpath "$OUTDIR/$NAME.qcow2") --app jupyter=8888/tree
	MSG
}

if [ -s "$ENTRY/$NAME.qcow2" ] && [ -s "$ENTRY/$NAME.qcow2.sha256" ]; then
	log "cached image $ENTRY"
	publish
	exit 0
fi

log "building image (recipe $RECIPE)"
START=$(date +%s)
mkdir -p "$CACHE_ROOT"
find "$CACHE_ROOT" -maxdepth 1 -name '.build-*' -mmin +240 -exec rm -rf {} + 2>/dev/null || true
WORK=$(mktemp -d "$CACHE_ROOT/.build-$RECIPE-XXXXXX")
cleanup() {
	# mmdebstrap unmounts what it mounted; be sure nothing is left before removing
	grep -F " $WORK/" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
ROOT=$WORK/root
STAGE=$WORK/out
mkdir -p "$STAGE"

# -- the system tree
log "mmdebstrap (${#PACKAGES[@]} packages and their dependencies)"
MIRRORS=()
[ -z "$MIRROR" ] || MIRRORS=("$MIRROR")
IFS=,
mmdebstrap --mode=root --variant=apt --format=directory \
	--include="${PACKAGES[*]}" \
	--aptopt='Acquire::Retries "3"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
	--essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo "MODULES=most" >"$1/etc/initramfs-tools/conf.d/labvm"' \
	--customize-hook="cp -a '$HERE/rootfs/.' \"\$1/\"" \
	--customize-hook="chroot \"\$1\" /bin/sh /usr/lib/labvm/image-setup" \
	bookworm "$ROOT" ${MIRRORS[@]+"${MIRRORS[@]}"}
unset IFS

KERNEL=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
INITRD=$ROOT/boot/initrd.img-${KERNEL##*/vmlinuz-}
[ -r "$KERNEL" ] && [ -r "$INITRD" ] || die "no kernel/initrd in the tree"

log "disk"
bash "$ASSEMBLE" --tree "$ROOT" --consume-tree --kernel "$KERNEL" --initrd "$INITRD" \
	--boot-label DSBOOT --root-label ds-root --disk-id 4c56ad5e \
	--boot-mib 128 --disk-mib auto --compress --work "$WORK" \
	--cmdline "console=ttyS0,115200 root=LABEL=ds-root rootfstype=ext4 rw net.ifnames=1 quiet" \
	"$STAGE/$NAME.qcow2"

if ! mv -T "$STAGE" "$ENTRY" 2>/dev/null; then
	[ -s "$ENTRY/$NAME.qcow2.sha256" ] || die "cannot create cache entry $ENTRY"
	log "cache entry created concurrently, using it"
fi
log "built $(du -h "$ENTRY/$NAME.qcow2" | cut -f1) image into $ENTRY in $(( $(date +%s) - START )) s"
publish
