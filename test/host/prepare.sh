#!/usr/bin/env bash
# Prepares a Debian 12 host for labvm: installs the missing packages and
# starts virtlogd and libvirtd when they are not running (hosts without
# systemd as PID 1, such as CI containers, have nobody else to start them).
set -euo pipefail

packages=(
	libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc
	qemu-system-x86 qemu-utils
	busybox-static linux-image-cloud-amd64 dropbear-bin qemu-guest-agent
	syslinux syslinux-common mtools dosfstools e2fsprogs fdisk cpio kmod gzip
	nftables iproute2 openssh-client procps util-linux
	xorriso genisoimage fuseiso python3-yaml python3-jsonschema systemd iptables
	python3-pytest python3-venv python3-setuptools python3-pip
	openssh-server etcd-server
	lintian dpkg-dev prometheus
	chromium mmdebstrap
)

if [ "$(id -u)" -ne 0 ]; then
	echo "prepare.sh: run as root (sudo make …)" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

if ! pgrep -x virtlogd >/dev/null; then
	echo "==> starting virtlogd"
	virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
	echo "==> starting libvirtd"
	libvirtd -d
fi
# libvirtd takes a moment to open its socket.
for _ in $(seq 1 50); do
	virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
	sleep 0.2
done
echo "prepare.sh: libvirtd did not come up; see its log" >&2
exit 1
