#!/bin/sh
# labvm: run an instance's setup or startup script.
# usage: run-script KIND SCRIPT TIMEOUT_SECONDS [DONE_URL]
# Output goes to /var/log/labvm-KIND.log; "EXIT BOOT_ID" to
# /var/lib/labvm/KIND.status when the script ends, which is what labvmd
# waits for. A script that outlives TIMEOUT is killed and fails with 124.
kind=$1 script=$2 limit=$3 url=$4
dir=/var/lib/labvm
log=/var/log/labvm-$kind.log
status=$dir/$kind.status
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)

# A first boot runs setup before startup; cloud-init starts them the other
# way round, so startup waits for setup's result.
if [ "$kind" = startup ] && [ -f "$dir/setup.sh" ]; then
	while [ ! -f "$dir/setup.status" ]; do sleep 1; done
fi

start=$(date +%s)
if [ "$(head -c 2 "$script")" = '#!' ]; then
	timeout "$limit" "$script" >"$log" 2>&1 </dev/null
else
	timeout "$limit" /bin/sh "$script" >"$log" 2>&1 </dev/null
fi
rc=$?
if [ $(($(date +%s) - start)) -ge "$limit" ]; then
	echo "labvm: the $kind script did not finish within ${limit}s and was stopped" >>"$log"
	rc=124
fi
printf '%s %s\n' "$rc" "$boot" >"$status.tmp" && mv "$status.tmp" "$status"
sync
if [ -n "$url" ]; then
	data="kind=$kind&exit=$rc"
	curl -fsS -m 10 -X POST --data "$data" "$url" >/dev/null 2>&1 ||
		wget -q -T 10 -O /dev/null --post-data "$data" "$url" >/dev/null 2>&1
fi
exit 0
