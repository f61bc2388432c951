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
# the hash covers this script, rootfs/ and the mirror. Packages come from the
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
for t in "${TOOLS[@]}"; do
	command -v "$t" >/dev/null || die "missing tool $t (apt-get install mmdebstrap syslinux syslinux-common mtools dosfstools fdisk e2fsprogs qemu-utils)"
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR" ] || die "missing $MBR (syslinux-common)"

RECIPE=$( {
	echo "recipe $RECIPE_VERSION mirror '$MIRROR'"
	cd "$HERE" && find build.sh rootfs -type f -print0 | sort -z | xargs -0 sha256sum
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

# -- disk layout (512-byte sectors)
ROOT_MIB=$(( $(du -sm "$ROOT" | cut -f1) * 115 / 100 + 1024 ))
BOOT_START=2048
BOOT_MIB=128
ROOT_START=$((BOOT_START + BOOT_MIB * 2048))
DISK_MIB=$(( (ROOT_START / 2048) + ROOT_MIB ))
ROOT_SECTORS=$((DISK_MIB * 2048 - ROOT_START))
CMDLINE="console=ttyS0,115200 root=LABEL=ds-root rootfstype=ext4 rw net.ifnames=1 quiet"

log "boot partition"
BOOT=$WORK/boot.img
mkfs.vfat -F 16 -n DSBOOT -h "$BOOT_START" -i 4c56ad5e -C "$BOOT" $((BOOT_MIB * 1024)) >/dev/null
cat >"$WORK/syslinux.cfg" <<CFG
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $CMDLINE
CFG
export MTOOLS_SKIP_CHECK=1
mmd -i "$BOOT" ::/syslinux
syslinux --install --directory /syslinux "$BOOT"
mcopy -i "$BOOT" "$WORK/syslinux.cfg" ::/syslinux/syslinux.cfg
mcopy -i "$BOOT" "$KERNEL" ::/vmlinuz
mcopy -i "$BOOT" "$INITRD" ::/initrd.img

log "root partition (${ROOT_MIB} MiB)"
ROOTIMG=$WORK/root.img
truncate -s $((ROOT_SECTORS * 512)) "$ROOTIMG"
mkfs.ext4 -q -F -T default -L ds-root -m 0 -d "$ROOT" "$ROOTIMG"
rm -rf "$ROOT"

log "disk (${DISK_MIB} MiB)"
RAW=$WORK/disk.raw
truncate -s ${DISK_MIB}M "$RAW"
sfdisk --quiet --no-reread --no-tell-kernel "$RAW" <<SF
label: dos
label-id: 0x4c56ad5e
start=$BOOT_START, size=$((BOOT_MIB * 2048)), type=6, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
SF
dd if="$MBR" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$BOOT" of="$RAW" bs=1M seek=$((BOOT_START / 2048)) conv=notrunc,sparse status=none
dd if="$ROOTIMG" of="$RAW" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
rm -f "$ROOTIMG" "$BOOT"
qemu-img convert -c -f raw -O qcow2 "$RAW" "$STAGE/$NAME.qcow2"
rm -f "$RAW"
sha256sum "$STAGE/$NAME.qcow2" | cut -d' ' -f1 >"$STAGE/$NAME.qcow2.sha256"

if ! mv -T "$STAGE" "$ENTRY" 2>/dev/null; then
	[ -s "$ENTRY/$NAME.qcow2.sha256" ] || die "cannot create cache entry $ENTRY"
	log "cache entry created concurrently, using it"
fi
log "built $(du -h "$ENTRY/$NAME.qcow2" | cut -f1) image into $ENTRY in $(( $(date +%s) - START )) s"
publish
