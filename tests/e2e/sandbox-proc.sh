#!/usr/bin/env bash
# Sandbox check on a running moat: boots the test guest with --user 65534, 2 vCPUs and a virtio-rng (so a
# device worker thread exists), waits for the guest's
# /init, then reads /proc: every moat thread must have Seccomp: 2, and the process no capabilities and uid
# 65534. Stops moat with SIGTERM (expects exit status 143). Prints what it saw; exits 0 when all holds.
#
#   tests/e2e/sandbox-proc.sh MOAT KERNEL INITRD CMDLINE
set -euo pipefail

MOAT_BIN=$1 KERNEL=$2 INITRD=$3 CMDLINE=$4
W=$(mktemp -d "${TMPDIR:-/tmp}/moat-sbx.XXXXXX")
RM_ONEFS=()
if rm --help 2>&1 | grep -q -- --one-file-system; then RM_ONEFS=(--one-file-system); fi # not in busybox
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
	rm -rf ${RM_ONEFS[@]+"${RM_ONEFS[@]}"} "$W"
}
trap cleanup EXIT

"$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --cpus 2 --memory 512M --user 65534 --rng \
	--cmdline "$CMDLINE moat.scenario=sleep" --console "file:$W/console" --timeout 200 \
	</dev/null 2>"$W/err" &
pid=$!

# Whether moat still runs (not a zombie); says why not when it does not.
alive() {
	[ -r "/proc/$pid/stat" ] || { echo "moat (pid $pid) is gone"; return 1; }
	if grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat"; then echo "moat (pid $pid) has exited"; return 1; fi
}
waited=0
while [ $waited -lt 150 ]; do
	grep -q MOAT_INIT_OK "$W/console" 2>/dev/null && break
	alive || break
	sleep 1
	waited=$((waited + 1))
done
echo "waited ${waited}s for the guest's /init"
fail=()
grep -q MOAT_INIT_OK "$W/console" 2>/dev/null || fail+=("the guest did not reach /init")
if alive; then
	st=$(cat "/proc/$pid/status")
	for f in Uid CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do grep "^$f:" <<<"$st" | tr '\t' ' '; done
	grep -q "^Uid:[[:space:]]*65534[[:space:]]" <<<"$st" || fail+=("uid is not 65534")
	for f in CapPrm CapEff CapBnd CapAmb; do
		grep -q "^$f:[[:space:]]*0000000000000000$" <<<"$st" || fail+=("$f is not 0")
	done
	threads=0
	for t in /proc/$pid/task/*; do
		name=$(cat "$t/comm")
		sec=$(awk '/^Seccomp:/ { print $2 }' "$t/status")
		echo "thread $(basename "$t") $name Seccomp: $sec"
		threads=$((threads + 1))
		[ "$sec" = 2 ] || fail+=("thread $name has Seccomp: $sec")
	done
	[ $threads -ge 4 ] || fail+=("expected the main thread, 2 vCPU threads and a device thread, saw $threads threads")
	grep -q '^moat-rng$' /proc/$pid/task/*/comm || fail+=("no moat-rng device thread")
	kill -TERM "$pid"
fi
rc=0
wait "$pid" || rc=$?
pid=
echo "moat exit status $rc"
[ "$rc" = 143 ] || fail+=("exit status $rc after SIGTERM, expected 143; stderr: $(tail -n 3 "$W/err" | tr '\n' ' ')")
if [ ${#fail[@]} -gt 0 ]; then
	printf 'sandbox check failed: %s\n' "${fail[@]}"
	exit 1
fi
echo "sandbox check passed"
