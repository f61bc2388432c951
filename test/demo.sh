#!/usr/bin/env bash
# The foundation's story, told by the real binaries: start a private
# labvmd, import the test image, and walk one instance through its life.
# Usage: test/demo.sh BIN_DIR IMAGE
set -euo pipefail

bin=${1:?usage: demo.sh BIN_DIR IMAGE}
image=${2:?usage: demo.sh BIN_DIR IMAGE}
# A private daemon, so the demo never touches a real installation.
work=$(mktemp -d /var/tmp/labvm-demo-XXXXXX)
chmod 0755 "$work"
export LABVM_SOCKET=$work/labvm.sock
bridge=lvdemo$$
# Its own firewall table: the default "labvm" belongs to a real labvmd.
table=lvdemo_$$
subnet=${LABVM_DEMO_SUBNET:-10.178.$((RANDOM % 200)).0/24}
daemon_pid=

cleanup() {
	set +e
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	for dom in $(virsh -q list --name 2>/dev/null); do
		virsh dumpxml "$dom" 2>/dev/null | grep -q "$work" && virsh destroy "$dom" >/dev/null 2>&1
	done
	ip link del "$bridge" 2>/dev/null
	"$bin/labvmd" --config /nonexistent --firewall-table "$table" --remove-firewall >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# run prints a command as a user would type it, then runs it.
run() {
	local shown=("${@}")
	shown[0]=$(basename "$1")
	printf '$'; printf ' %q' "${shown[@]}"; printf '\n'
	"$@"
}

step "Starting labvmd (socket $LABVM_SOCKET, bridge $bridge, subnet $subnet)"
"$bin/labvmd" --config /nonexistent --socket "$LABVM_SOCKET" --data-dir "$work/data" \
	--bridge "$bridge" --subnet "$subnet" --firewall-table "$table" --bridge-prefix lvd \
	--phone-home-port 0 >"$work/labvmd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
	"$bin/labvm" info >/dev/null 2>&1 && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/labvmd.log"; exit 1; }
	sleep 0.1
done
run "$bin/labvm" info

step "Importing the test cloud image, checksum verified"
run "$bin/labvm" image import tiny "$image" --sha256 "$(cat "$image.sha256")"
run "$bin/labvm" image list
run "$bin/labvm" sizes

step "Creating alice-dev: 120 GiB thin disk, cloud-init seed, private address"
run "$bin/labvm" create alice-dev --image tiny --size Standard_B1s
run "$bin/labvm" show alice-dev
run "$bin/labvm" list
run "$bin/labvm" network show default

step "Working in the guest through the QEMU guest agent"
run "$bin/labvm" exec alice-dev -- cat /etc/hostname
run "$bin/labvm" exec alice-dev -- sh -c 'echo "root disk: $(( $(cat /sys/block/vda/size) / 2097152 )) GiB"'
run "$bin/labvm" exec alice-dev -- sh -c 'echo "written before stop" > /root/marker && sync'

step "Stopping: the guest shuts down and the domain is deallocated; the disk stays"
run "$bin/labvm" stop alice-dev
run "$bin/labvm" list
printf 'QEMU processes for alice-dev: %s\n' "$(pgrep -fc 'guest=labvm-alice-dev' || true)"

step "Starting again: same disk, same address, same data"
run "$bin/labvm" start alice-dev
run "$bin/labvm" exec alice-dev -- cat /root/marker

step "Restarting"
run "$bin/labvm" restart alice-dev

step "Deleting: domain, disk, seed and address are gone"
run "$bin/labvm" delete alice-dev --yes
run "$bin/labvm" list
printf 'instance files left: %s\n' "$(ls "$work/data/instances" | wc -l)"

step "Demo finished"
