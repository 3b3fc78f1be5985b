#!/usr/bin/env bash
# Run every test stage (make test-unit, test-kvm, test-e2e), keep going after a failure, and sum up.
# On an x86_64 host the arm64 host-KVM tests and end-to-end scenarios run too (make ARCH=arm64 test-kvm and
# test-e2e: the cross-built programs in the arm64 nested test bed); MOAT_TEST_ARM64=0 leaves them out.
#
#   tools/test-all.sh [--arch x86_64|arm64]
#
# Ends with the line "N passed, N failed" (tests of all stages; a stage that fails without reporting
# counts, e.g. a build error, counts as one failure) and exits non-zero if anything failed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCH=x86_64
while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || { echo "test-all: --arch needs a value" >&2; exit 2; }; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	*) echo "usage: $0 [--arch x86_64|arm64]" >&2; exit 2 ;;
	esac
done

# ARCH:TARGET. Unit tests (the arm64 device tree included) run for the build host.
STAGES=("$ARCH:test-unit" "$ARCH:test-kvm" "$ARCH:test-e2e")
if [ "$ARCH" = x86_64 ] && [ "${MOAT_TEST_ARM64:-1}" != 0 ]; then
	STAGES+=("arm64:test-kvm" "arm64:test-e2e")
fi
LOG=
cleanup() { [ -z "$LOG" ] || rm -f "$LOG"; }
trap cleanup EXIT
LOG=$(mktemp "${TMPDIR:-/tmp}/moat-test-all.XXXXXX")

total_pass=0
total_fail=0
summary=()
for stage in "${STAGES[@]}"; do
	a=${stage%%:*}
	st=${stage#*:}
	[ "$a" = "$ARCH" ] || st="$st ARCH=$a"
	echo "==== make $st"
	start=$EPOCHREALTIME
	rc=0
	make -C "$REPO" --no-print-directory ARCH="$a" "${stage#*:}" 2>&1 | tee "$LOG" || rc=${PIPESTATUS[0]}
	secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
	clean=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG")
	p=
	f=
	# Criterion: "[====] Synthesis: Tested: X | Passing: Y | Failing: Z | Crashing: W"
	syn=$(grep -E 'Synthesis: Tested: [0-9]+' <<<"$clean" | tail -n 1 || true)
	if [ -n "$syn" ]; then
		# Crashing tests are also counted in Failing: failed = Tested - Passing.
		p=$(sed -nE 's/.*Passing: ([0-9]+).*/\1/p' <<<"$syn")
		f=$(sed -nE 's/.*Tested: ([0-9]+).*/\1/p' <<<"$syn")
		f=$((f - p))
	fi
	# The e2e harness: "N passed, N failed[, N skipped]"
	if [ -z "$p" ]; then
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' <<<"$clean" | tail -n 1 || true)
		line=${line%, * skipped}
		if [ -n "$line" ]; then
			p=${line%% passed*}
			f=${line#*, }
			f=${f%% failed}
		fi
	fi
	note=
	if [ -z "$p" ]; then
		if [ "$rc" = 0 ]; then
			p=1; f=0; note="; no test counts printed, counted as 1 passed"
		else
			p=0; f=1; note="; failed before reporting test counts, counted as 1 failure"
		fi
	elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		f=1
		note="; exit status $rc with no failing test reported, counted as 1 failure"
	fi
	if [ "$rc" = 0 ] && [ "$f" = 0 ]; then res=PASS; else res=FAIL; fi
	summary+=("$(printf '%-20s %s (%s passed, %s failed; exit status %s; %ss%s)' "$st" "$res" "$p" "$f" "$rc" "$secs" "$note")")
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
done

echo "==== summary"
printf '%s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
