#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make host`: virt-install
# (Debian's virtinst) for the side-by-side figure. labvm-bench times
# commands itself, so hyperfine is not needed.
set -euo pipefail
if ! command -v virt-install >/dev/null; then
	echo "==> installing virtinst (virt-install) for the comparison"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends virtinst </dev/null
fi
