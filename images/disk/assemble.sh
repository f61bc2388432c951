#!/bin/bash
# Assemble a BIOS-bootable qcow2 disk from a root file system tree, a kernel
# and an initrd — the disk step both image recipes share
# (test/image/build.sh and images/ds/build.sh; each recipe's hash covers
# this file, so a change here rebuilds both images).
#
#   images/disk/assemble.sh [options] OUT.qcow2  ->  OUT.qcow2, OUT.qcow2.sha256
#
#   --tree DIR          root file system tree (required); copied into p2
#   --kernel FILE       kernel (required), /vmlinuz on p1
#   --initrd FILE       initrd (required), /initrd.img on p1
#   --boot-label NAME   FAT volume label of p1 (required)
#   --root-label NAME   ext4 label of p2 (required; the cmdline names it)
#   --disk-id HEX       8 hex digits: FAT volume id and MBR disk id (required)
#   --cmdline TEXT      kernel command line (required)
#   --boot-mib N        size of p1 in MiB (required)
#   --disk-mib N|auto   whole disk in MiB (required); auto: p1 plus the
#                       tree's size +15% +1 GiB for p2
#   --compress          compress the qcow2's clusters (qemu-img convert -c)
#   --consume-tree      remove the tree once p2 is made (saves disk space)
#   --work DIR          scratch directory (required; must exist); files it
#                       makes there are removed
#
# Layout (MBR, 512-byte sectors): p1 at 1 MiB, FAT16, bootable, syslinux
# (the serial console at 115200, no prompt); p2 ext4 right after p1 to the
# end of the disk. Nothing is mounted and no loop device is used: p1 is
# built with mtools, p2 with mkfs.ext4 -d, the disk with sfdisk and dd.
#
# Tools: mkfs.vfat (dosfstools), mmd/mcopy (mtools), syslinux and its MBR
# (syslinux, syslinux-common), mkfs.ext4 (e2fsprogs), sfdisk (fdisk),
# qemu-img (qemu-utils), sha256sum.
set -euo pipefail
umask 022
export LC_ALL=C

die() { echo "assemble: error: $*" >&2; exit 1; }
log() { echo "assemble: $*" >&2; }

TREE='' KERNEL='' INITRD='' BOOT_LABEL='' ROOT_LABEL='' DISK_ID='' CMDLINE='' BOOT_MIB='' DISK_MIB='' WORK=''
COMPRESS=() CONSUME=0
while [ $# -gt 0 ]; do
	case $1 in
	--tree) TREE=${2:?}; shift ;;
	--kernel) KERNEL=${2:?}; shift ;;
	--initrd) INITRD=${2:?}; shift ;;
	--boot-label) BOOT_LABEL=${2:?}; shift ;;
	--root-label) ROOT_LABEL=${2:?}; shift ;;
	--disk-id) DISK_ID=${2:?}; shift ;;
	--cmdline) CMDLINE=${2:?}; shift ;;
	--boot-mib) BOOT_MIB=${2:?}; shift ;;
	--disk-mib) DISK_MIB=${2:?}; shift ;;
	--work) WORK=${2:?}; shift ;;
	--compress) COMPRESS=(-c) ;;
	--consume-tree) CONSUME=1 ;;
	--) shift; break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
	shift
done
[ $# -eq 1 ] || die "usage: $0 [options] OUT.qcow2 (see the comment at the top)"
OUT=$1

for v in TREE KERNEL INITRD BOOT_LABEL ROOT_LABEL DISK_ID CMDLINE BOOT_MIB DISK_MIB WORK; do
	[ -n "${!v}" ] || die "missing --$(echo "$v" | tr 'A-Z_' 'a-z-')"
done
[ -d "$TREE" ] || die "tree $TREE is not a directory"
[ -r "$KERNEL" ] || die "cannot read kernel $KERNEL"
[ -r "$INITRD" ] || die "cannot read initrd $INITRD"
[ -d "$WORK" ] || die "work directory $WORK does not exist"
[[ $DISK_ID =~ ^[0-9a-f]{8}$ ]] || die "--disk-id must be 8 lower-case hex digits, not '$DISK_ID'"
[[ $BOOT_MIB =~ ^[1-9][0-9]*$ ]] || die "--boot-mib must be a positive number of MiB, not '$BOOT_MIB'"
[[ $DISK_MIB =~ ^([1-9][0-9]*|auto)$ ]] || die "--disk-mib must be a number of MiB or auto, not '$DISK_MIB'"
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR" ] || die "missing $MBR (syslinux-common)"
for t in mkfs.vfat mmd mcopy syslinux mkfs.ext4 sfdisk qemu-img sha256sum; do
	command -v "$t" >/dev/null || die "missing tool $t (apt-get install dosfstools mtools syslinux syslinux-common e2fsprogs fdisk qemu-utils)"
done

# -- layout (512-byte sectors)
BOOT_START=2048 # 1 MiB
ROOT_START=$((BOOT_START + BOOT_MIB * 2048))
if [ "$DISK_MIB" = auto ]; then
	DISK_MIB=$(( (ROOT_START / 2048) + $(du -sm "$TREE" | cut -f1) * 115 / 100 + 1024 ))
fi
ROOT_SECTORS=$((DISK_MIB * 2048 - ROOT_START))
[ "$ROOT_SECTORS" -ge $((64 * 2048)) ] || die "disk of $DISK_MIB MiB leaves under 64 MiB for the root partition"

BOOT=$WORK/boot.img
ROOTIMG=$WORK/root.img
RAW=$WORK/disk.raw
CFG=$WORK/syslinux.cfg
trap 'rm -f "$BOOT" "$ROOTIMG" "$RAW" "$CFG"' EXIT

# -- p1: FAT16 + syslinux, built as a file (no mount)
log "boot partition $BOOT_LABEL ($BOOT_MIB MiB)"
mkfs.vfat -F 16 -n "$BOOT_LABEL" -h "$BOOT_START" -i "$DISK_ID" -C "$BOOT" $((BOOT_MIB * 1024)) >/dev/null
cat >"$CFG" <<CFG
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
mcopy -i "$BOOT" "$CFG" ::/syslinux/syslinux.cfg
mcopy -i "$BOOT" "$KERNEL" ::/vmlinuz
mcopy -i "$BOOT" "$INITRD" ::/initrd.img

# -- p2: ext4 populated from the tree (mkfs.ext4 -d, no mount)
log "root partition $ROOT_LABEL ($((ROOT_SECTORS / 2048)) MiB)"
truncate -s $((ROOT_SECTORS * 512)) "$ROOTIMG"
mkfs.ext4 -q -F -T default -L "$ROOT_LABEL" -m 0 -d "$TREE" "$ROOTIMG"
[ "$CONSUME" = 0 ] || rm -rf "$TREE"

# -- whole disk
log "disk ($DISK_MIB MiB)"
truncate -s "${DISK_MIB}M" "$RAW"
sfdisk --quiet --no-reread --no-tell-kernel "$RAW" <<SF
label: dos
label-id: 0x$DISK_ID
start=$BOOT_START, size=$((BOOT_MIB * 2048)), type=6, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
SF
dd if="$MBR" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$BOOT" of="$RAW" bs=1M seek=$((BOOT_START / 2048)) conv=notrunc,sparse status=none
dd if="$ROOTIMG" of="$RAW" bs=1M seek=$((ROOT_START / 2048)) conv=notrunc,sparse status=none
rm -f "$BOOT" "$ROOTIMG"
qemu-img convert ${COMPRESS[@]+"${COMPRESS[@]}"} -f raw -O qcow2 "$RAW" "$OUT"
rm -f "$RAW"
sha256sum "$OUT" | cut -d' ' -f1 >"$OUT.sha256"
