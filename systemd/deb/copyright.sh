#!/usr/bin/env bash
# Writes /usr/share/doc/labvm/copyright: labvm's own notice, then each Go
# module linked into labvm or labvmd with its license (Go links them in
# statically). Licenses that Debian ships in /usr/share/common-licenses
# are referred to there, the others are copied in full.
set -euo pipefail
top=$1
GO=${GO:-go}
cat <<'HEAD'
labvm: personal development VMs on a lab's own hosts.

Copyright: the labvm authors (see the git history at
https://github.com/labvm/labvm).

No license has been declared for labvm itself; all rights are reserved by
its authors. The Go modules below are linked into /usr/bin/labvm and
/usr/sbin/labvmd under their own licenses.
HEAD
cd "$top"
$GO list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/labvm ./cmd/labvmd | sort -u |
while read -r path ver dir; do
	lic=""
	for f in LICENSE LICENSE.txt LICENSE.md COPYING LICENCE; do
		[ -f "$dir/$f" ] && { lic=$dir/$f; break; }
	done
	echo
	echo "-------------------------------------------------------------------------"
	echo "$path $ver"
	echo
	if [ -z "$lic" ]; then
		echo "(no license file in the module)"
	elif grep -q "Apache License" "$lic" && grep -q "Version 2.0" "$lic"; then
		echo "Apache License 2.0: see /usr/share/common-licenses/Apache-2.0"
		# A NOTICE travels with Apache-licensed code.
		[ -f "$dir/NOTICE" ] && { echo; sed 's/[[:space:]]*$//' "$dir/NOTICE"; }
	elif grep -q "Mozilla Public License" "$lic" && grep -q "2.0" "$lic"; then
		echo "Mozilla Public License 2.0: see /usr/share/common-licenses/MPL-2.0"
	else
		sed 's/[[:space:]]*$//' "$lic"
	fi
done
