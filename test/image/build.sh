#!/bin/bash
# Build the labvm end-to-end test image: a small BIOS-bootable qcow2 "cloud
# image" made only of Debian packages (cloud kernel, busybox-static, dropbear,
# qemu-guest-agent, syslinux) that reads the standard NoCloud seed (volume
# label "cidata": meta-data, user-data, network-config v2) like cloud-init.
#
#   test/image/build.sh OUTDIR  ->  OUTDIR/tiny.qcow2, OUTDIR/tiny.qcow2.sha256
#
# Runs as root, needs no mounts and no loop devices. Results are cached in
# ${LABVM_IMAGE_CACHE:-/var/cache/labvm-test-image}/<recipe hash>/, where the
# recipe hash covers this script, test/image/{initramfs,rootfs}/,
# images/disk/assemble.sh (the disk step, shared with the data-science image)
# and the versions of the Debian packages used.
#
# Host packages: linux-image-cloud-amd64 busybox-static dropbear-bin
# qemu-guest-agent syslinux syslinux-common mtools dosfstools fdisk e2fsprogs
# qemu-utils cpio kmod
#
# Disk layout (MBR, 512 MiB): p1 FAT16 (syslinux, vmlinuz, initrd.img),
# p2 ext4 "labvm-root" (busybox userland, dropbear, qemu-ga). The initramfs
# loads the virtio/scsi/fs modules (virtiofs for labvm datasets among them)
# and switch_roots to p2.
set -euo pipefail
umask 022
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# the disk step, shared with images/ds/build.sh
ASSEMBLE=$(cd "$HERE/../../images/disk" && pwd)/assemble.sh
RECIPE_VERSION=1

log() { echo "test-image: $*" >&2; }
die() { echo "test-image: error: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUTDIR=$1
[ "$(id -u)" = 0 ] || die "must run as root"

CACHE_ROOT=${LABVM_IMAGE_CACHE:-/var/cache/labvm-test-image}

# ---- inputs ---------------------------------------------------------------
KVER=${LABVM_IMAGE_KVER:-}
if [ -z "$KVER" ]; then
	KVER=$(find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
fi
[ -n "$KVER" ] || die "no Debian cloud kernel in /boot (apt-get install linux-image-cloud-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$KERNEL" ] && [ -d "$MODDIR" ] || die "kernel $KVER incomplete ($KERNEL, $MODDIR)"

MBR=/usr/lib/syslinux/mbr/mbr.bin
BUSYBOX=/bin/busybox
BINARIES=(/usr/sbin/qemu-ga /usr/sbin/dropbear /usr/bin/dropbearkey /usr/bin/dropbearconvert)
# module name [insmod parameters]; dependencies are added by modprobe
MODULES=(
	virtio_pci virtio_scsi sr_mod sd_mod virtio_blk virtio_net virtio_console
	virtio_rng isofs vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1
	evdev button vmw_vsock_virtio_transport virtiofs
)
TOOLS_PKGS=(syslinux syslinux-common mtools dosfstools fdisk e2fsprogs qemu-utils cpio gzip kmod)

for t in mkfs.ext4 mkfs.vfat sfdisk mcopy mmd syslinux qemu-img cpio gzip modprobe ldconfig ldd dpkg-query sha256sum; do
	command -v "$t" >/dev/null || die "missing tool $t"
done
[ -x "$BUSYBOX" ] && "$BUSYBOX" --list | grep -x findfs >/dev/null || die "missing busybox-static ($BUSYBOX)"
[ -r "$MBR" ] || die "missing $MBR (syslinux-common)"
for b in "${BINARIES[@]}"; do [ -x "$b" ] || die "missing $b"; done

# shared libraries (ldd paths, including the dynamic loader)
LIBS=$(for b in "${BINARIES[@]}"; do ldd "$b"; done |
	awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)

# kernel modules in load order
MODLIST=$(for m in "${MODULES[@]}"; do modprobe -S "$KVER" --show-depends "$m"; done |
	awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
[ -n "$MODLIST" ] || die "cannot resolve kernel modules"

pkg_of() { # files... -> owning packages
	local f alts=()
	for f in "$@"; do
		alts+=("$f" "$(readlink -f "$f")")
		case $f in /usr/*) alts+=("${f#/usr}") ;; *) alts+=("/usr$f") ;; esac
	done
	dpkg-query -S "${alts[@]}" 2>/dev/null | sed 's/: .*//; s/, /\n/g; s/:[a-z0-9]*$//' || true
}
PKGS=$( {
	pkg_of "$BUSYBOX" "$KERNEL" "$MBR" /usr/lib/syslinux/modules/bios/ldlinux.c32 "${BINARIES[@]}" $LIBS
	printf '%s\n' "${TOOLS_PKGS[@]}"
} | sed 's/:.*//' | sort -u)
PKG_VERSIONS=$(dpkg-query -W -f '${Package} ${Version}\n' $PKGS 2>/dev/null | sort)

RECIPE=$( {
	echo "recipe $RECIPE_VERSION kernel $KVER"
	echo "$PKG_VERSIONS"
	cd "$HERE" && find build.sh initramfs rootfs -type f -print0 | sort -z | xargs -0 sha256sum
	cd "$HERE" && find initramfs rootfs -type l -printf '%p -> %l\n' | sort
	echo "disk $(sha256sum <"$ASSEMBLE")"
} | sha256sum | cut -c1-16)

ENTRY=$CACHE_ROOT/$RECIPE

publish() {
	mkdir -p "$OUTDIR"
	local f
	for f in tiny.qcow2 tiny.qcow2.sha256; do
		cp --reflink=auto "$ENTRY/$f" "$OUTDIR/.$f.tmp.$$"
		mv -f "$OUTDIR/.$f.tmp.$$" "$OUTDIR/$f"
	done
	log "$OUTDIR/tiny.qcow2 sha256 $(cat "$OUTDIR/tiny.qcow2.sha256")"
}

if [ -s "$ENTRY/tiny.qcow2" ] && [ -s "$ENTRY/tiny.qcow2.sha256" ]; then
	log "cached image $ENTRY"
	publish
	exit 0
fi

# ---- build ------------------------------------------------------------------
log "building image (recipe $RECIPE, kernel $KVER)"
mkdir -p "$CACHE_ROOT"
# leftovers of builds that were killed hard
find "$CACHE_ROOT" -maxdepth 1 -name '.build-*' -mmin +120 -exec rm -rf {} + 2>/dev/null || true
WORK=$(mktemp -d "$CACHE_ROOT/.build-$RECIPE-XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
STAGE=$WORK/out
mkdir -p "$STAGE"

copy_file() { # SRC DEST-IN-TREE: regular file with the content of SRC
	mkdir -p "$(dirname "$2")"
	cp -L --preserve=mode "$1" "$2"
}

# -- root file system tree
ROOT=$WORK/root
log "root file system"
mkdir -p "$ROOT"
for d in bin sbin usr/bin usr/sbin lib lib64 etc/dropbear dev proc sys run tmp mnt \
	root home var/lib/cloud var/log var/tmp var/cache var/spool; do
	mkdir -p "$ROOT/$d"
done
ln -s ../run "$ROOT/var/run"
chmod 700 "$ROOT/root"
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
"$BUSYBOX" --list-full | while read -r a; do
	[ -e "$ROOT/$a" ] || [ -L "$ROOT/$a" ] || ln -s /bin/busybox "$ROOT/$a"
done
for b in "${BINARIES[@]}"; do copy_file "$b" "$ROOT$b"; done
for l in $LIBS; do copy_file "$l" "$ROOT$l"; done
cp -a "$HERE/rootfs/." "$ROOT/"
chown -R 0:0 "$ROOT"
find "$ROOT/etc/init.d" "$ROOT/etc/acpi" "$ROOT/usr/lib/labvm" "$ROOT/usr/share/udhcpc" -type f -exec chmod 755 {} +
chmod 644 "$ROOT/usr/lib/labvm/yaml.awk"
chmod 755 "$ROOT/sbin/shutdown"
chmod 600 "$ROOT/etc/shadow"
chmod 700 "$ROOT/etc/dropbear"
ldconfig -r "$ROOT" 2>/dev/null || true

# -- initramfs
INITRD_DIR=$WORK/initrd
log "initramfs ($(echo "$MODLIST" | wc -l) modules)"
mkdir -p "$INITRD_DIR"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$INITRD_DIR/bin/busybox"
for a in $("$BUSYBOX" --list); do
	[ "$a" = busybox ] || ln -s busybox "$INITRD_DIR/bin/$a"
done
install -m 755 "$HERE/initramfs/init" "$INITRD_DIR/init"
mknod -m 600 "$INITRD_DIR/dev/console" c 5 1
mknod -m 666 "$INITRD_DIR/dev/null" c 1 3
: >"$INITRD_DIR/lib/modules/modules.load"
for m in $MODLIST; do
	rel=${m#"$MODDIR"/}
	copy_file "$m" "$INITRD_DIR/lib/modules/$rel"
	args=
	case $rel in */scsi_mod.ko) args="scan=sync" ;; esac
	echo "$rel $args" >>"$INITRD_DIR/lib/modules/modules.load"
done
(cd "$INITRD_DIR" && find . -print0 | sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -n -6 >"$WORK/initrd.img"

# -- the disk: p1 FAT16 "LABVMBOOT" (syslinux, kernel, initramfs), p2 ext4
# "labvm-root" from the tree, 512 MiB in all (images/disk/assemble.sh)
log "disk"
bash "$ASSEMBLE" --tree "$ROOT" --kernel "$KERNEL" --initrd "$WORK/initrd.img" \
	--boot-label LABVMBOOT --root-label labvm-root --disk-id 4c61564d \
	--boot-mib 40 --disk-mib 512 --work "$WORK" \
	--cmdline "console=ttyS0,115200 root=LABEL=labvm-root rootfstype=ext4 rw panic=10 quiet" \
	"$STAGE/tiny.qcow2"

# -- atomically publish into the cache (a concurrent build may have won)
if ! mv -T "$STAGE" "$ENTRY" 2>/dev/null; then
	[ -s "$ENTRY/tiny.qcow2.sha256" ] || die "cannot create cache entry $ENTRY"
	log "cache entry created concurrently, using it"
fi
log "built $(du -h "$ENTRY/tiny.qcow2" | cut -f1) image into $ENTRY"
publish
