#!/usr/bin/env bash
# `make lint`: the sources-only check, go mod tidy, gofmt, go vet,
# staticcheck and errcheck. staticcheck and errcheck are Go tool
# dependencies pinned in go.mod (`go tool ...`), fetched from the Go module
# proxy like any module.
#
# Every finding fails the run. LINT_DAEMON_FATAL=0 makes those in daemon/
# (except daemon/api and daemon/client) printed only, an escape hatch kept
# from while daemon/ was being split (issue 11); the default, here and in
# the Makefile, is 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
LINT_DAEMON_FATAL=${LINT_DAEMON_FATAL:-1}

# Paths whose staticcheck/errcheck findings are reported only when
# LINT_DAEMON_FATAL=0.
report_only='^daemon/' report_only_except='^daemon/(api|client)/'

failed=()
daemon_count=0

# triage NAME STATUS FILE: findings outside the report-only paths fail the
# run; a tool that failed without printing any finding failed too.
triage() {
	local name=$1 status=$2 out=$3 strict daemon
	# The go command's own progress is not a finding.
	sed -i '/^go: downloading /d' "$out"
	strict=$(grep -vE "$report_only" "$out"; grep -E "$report_only_except" "$out")
	daemon=$(grep -E "$report_only" "$out" | grep -vE "$report_only_except")
	if [ -n "$strict" ]; then
		printf '%s:\n%s\n' "$name" "$strict"
		failed+=("$name")
	elif [ "$status" -ne 0 ] && [ -z "$daemon" ]; then
		printf '%s failed (exit %d) without findings:\n' "$name" "$status"
		cat "$out"
		failed+=("$name")
	fi
	if [ -n "$daemon" ]; then
		if [ "$LINT_DAEMON_FATAL" = 1 ]; then
			printf '%s, daemon/:\n%s\n' "$name" "$daemon"
			failed+=("$name (daemon/)")
		else
			printf '%s, daemon/ (reported, not fatal with LINT_DAEMON_FATAL=0):\n%s\n' "$name" "$daemon"
		fi
		daemon_count=$((daemon_count + $(printf '%s\n' "$daemon" | wc -l)))
	fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "==> lint tools (pinned in go.mod)"
# Built (and fetched from the module proxy) here, so their output below is
# findings only.
$GO tool -n staticcheck >/dev/null || failed+=("go tool staticcheck")
$GO tool -n errcheck >/dev/null || failed+=("go tool errcheck")

echo "==> sources only"
$GO run ./test/lint/sourcesonly || failed+=("sources only")

echo "==> go mod tidy"
$GO mod tidy -diff || failed+=("go mod tidy (run it and commit go.mod, go.sum)")

echo "==> gofmt"
gofmt -l $(git ls-files '*.go') >"$tmp/gofmt" 2>&1
if [ -s "$tmp/gofmt" ]; then
	echo "gofmt needed (make fmt):"
	cat "$tmp/gofmt"
	failed+=(gofmt)
fi

echo "==> go vet"
$GO vet ./... || failed+=("go vet")

echo "==> staticcheck"
$GO tool staticcheck ./... >"$tmp/staticcheck" 2>&1
triage staticcheck $? "$tmp/staticcheck"

echo "==> errcheck (exclusions and why: .errcheck-excludes)"
$GO tool errcheck -exclude .errcheck-excludes ./... >"$tmp/errcheck" 2>&1
triage errcheck $? "$tmp/errcheck"

if [ "$daemon_count" -gt 0 ] && [ "$LINT_DAEMON_FATAL" != 1 ]; then
	echo "lint: $daemon_count finding(s) in daemon/ reported, not fatal (LINT_DAEMON_FATAL=0; the default, 1, makes them fatal)"
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "lint failed: ${failed[*]}"
	exit 1
fi
echo "lint: clean"
