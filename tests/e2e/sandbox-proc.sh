#!/usr/bin/env bash
# Sandbox check on a running moat, twice:
#  1. --user 65534, 2 vCPUs and a virtio-rng (so a device worker thread exists), and with two CPUs here
#     --vcpu-affinity 0 --device-affinity 1 (the vCPU threads may run on CPU 0 only, the rng's on CPU 1 only);
#  2. the same with --jail on an empty temporary directory, 1 vCPU.
# Each time: wait for the guest's /init, then read /proc: every moat thread must have Seccomp: 2, the
# process no capabilities, no_new_privs and uid 65534; with --jail, moat's root must be the jail directory
# (same device and inode, nothing inside), its mount, IPC, UTS and network namespaces not this shell's, and
# it must report its Landlock restriction at the kernel's ABI (or that the kernel has none).
# Stops moat with SIGTERM (expects exit status 143). Prints what it saw; exits 0 when all holds.
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
fail=()

# Whether moat still runs (not a zombie); says why not when it does not.
alive() {
	[ -r "/proc/$pid/stat" ] || { echo "moat (pid $pid) is gone"; return 1; }
	if grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat"; then echo "moat (pid $pid) has exited"; return 1; fi
}

# The kernel's Landlock ABI version (landlock_create_ruleset(NULL, 0, VERSION), syscall 444 on every
# architecture), 0 without Landlock, "unknown" without python3 to ask.
landlock_abi() {
	command -v python3 >/dev/null || { echo unknown; return; }
	python3 -c 'import ctypes
r = ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)
print(r if r > 0 else 0)'
}

# check LABEL MIN_THREADS JAIL_DIR|'' -- MOAT_ARGS...: run moat, look at it, stop it.
check() {
	local label=$1 min_threads=$2 jail=$3 console=$W/console-$1 err=$W/err-$1
	shift 4
	echo "== $label: moat $*"
	"$MOAT_BIN" --kernel "$KERNEL" --initrd "$INITRD" --memory 512M --user 65534 --rng \
		--cmdline "$CMDLINE moat.scenario=sleep" --console "file:$console" --timeout 200 "$@" \
		</dev/null 2>"$err" &
	pid=$!
	local waited=0
	while [ $waited -lt 150 ]; do
		grep -q MOAT_INIT_OK "$console" 2>/dev/null && break
		alive || break
		sleep 1
		waited=$((waited + 1))
	done
	echo "waited ${waited}s for the guest's /init"
	grep -q MOAT_INIT_OK "$console" 2>/dev/null || fail+=("$label: the guest did not reach /init")
	if alive; then
		local st threads=0 t name sec cpus
		st=$(cat "/proc/$pid/status")
		for f in Uid CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do grep "^$f:" <<<"$st" | tr '\t' ' '; done
		grep -q "^Uid:[[:space:]]*65534[[:space:]]" <<<"$st" || fail+=("$label: uid is not 65534")
		for f in CapInh CapPrm CapEff CapBnd CapAmb; do
			grep -q "^$f:[[:space:]]*0000000000000000$" <<<"$st" || fail+=("$label: $f is not 0")
		done
		grep -q "^NoNewPrivs:[[:space:]]*1$" <<<"$st" || fail+=("$label: no_new_privs is not set")
		for t in /proc/$pid/task/*; do
			name=$(cat "$t/comm")
			sec=$(awk '/^Seccomp:/ { print $2 }' "$t/status")
			cpus=$(awk '/^Cpus_allowed_list:/ { print $2 }' "$t/status")
			echo "thread $(basename "$t") $name Seccomp: $sec CapEff: $(awk '/^CapEff:/ { print $2 }' "$t/status") CPUs: $cpus"
			# With --vcpu-affinity 0 --device-affinity 1: vCPU threads on CPU 0 only, device threads on 1.
			if [ -n "$AFFINITY" ]; then
				case $name in
				moat-vcpu*) [ "$cpus" = 0 ] || fail+=("$label: thread $name may run on CPUs $cpus, not just 0") ;;
				moat-rng) [ "$cpus" = 1 ] || fail+=("$label: thread $name may run on CPUs $cpus, not just 1") ;;
				esac
			fi
			threads=$((threads + 1))
			[ "$sec" = 2 ] || fail+=("$label: thread $name has Seccomp: $sec")
			grep -q "^CapEff:[[:space:]]*0000000000000000$" "$t/status" || fail+=("$label: thread $name has capabilities")
		done
		[ $threads -ge "$min_threads" ] || fail+=("$label: expected at least $min_threads threads (main, vCPUs, device), saw $threads")
		grep -q '^moat-rng$' /proc/$pid/task/*/comm || fail+=("$label: no moat-rng device thread")
		grep -q '^moat-vcpu0$' /proc/$pid/task/*/comm || fail+=("$label: no moat-vcpu0 thread")
		if [ -n "$jail" ]; then
			local want got inside ns abi
			grep -E '^moat: .*(jail|landlock):' "$err" || true
			grep -q 'jail: new mount, IPC, UTS and network namespaces' "$err" ||
				fail+=("$label: moat did not report entering the jail (--log-level info)")
			abi=$(landlock_abi)
			if [ "$abi" = unknown ]; then
				echo "Landlock not checked: no python3 here to ask the kernel for its Landlock ABI"
			elif [ "$abi" -gt 0 ]; then
				grep -q "landlock: ABI $abi: no file-system access" "$err" ||
					fail+=("$label: this kernel has Landlock ABI $abi but moat did not restrict itself with it")
			else
				echo "this kernel has no Landlock"
				grep -q 'landlock: not available' "$err" ||
					fail+=("$label: moat did not say that Landlock is unavailable")
			fi
			want=$(stat -c %d:%i "$jail")
			got=$(stat -L -c %d:%i "/proc/$pid/root" 2>&1) || true
			inside=$(ls -A "/proc/$pid/root/" 2>&1 | tr '\n' ' ') || true
			echo "root: /proc/$pid/root is $got (the jail $jail is $want); inside: '${inside}'"
			[ "$got" = "$want" ] || fail+=("$label: moat's root is not the jail directory ($got, want $want)")
			[ -z "$inside" ] || fail+=("$label: moat's root is not the empty jail: $inside")
			for ns in mnt ipc uts net; do
				echo "namespace $ns: moat $(readlink "/proc/$pid/ns/$ns"), here $(readlink "/proc/self/ns/$ns")"
				[ "$(readlink "/proc/$pid/ns/$ns")" != "$(readlink "/proc/self/ns/$ns")" ] ||
					fail+=("$label: moat shares this shell's $ns namespace")
			done
		fi
		kill -TERM "$pid"
	fi
	local rc=0
	wait "$pid" || rc=$?
	pid=
	echo "moat exit status $rc"
	[ "$rc" = 143 ] || fail+=("$label: exit status $rc after SIGTERM, expected 143; stderr: $(tail -n 3 "$err" | tr '\n' ' ')")
}

# Thread placement too, where there are two CPUs to place threads on.
AFFINITY=
aff_args=()
if [ "$(nproc)" -ge 2 ]; then
	AFFINITY=1
	aff_args=(--vcpu-affinity 0 --device-affinity 1)
else
	echo "thread placement not checked: this machine has one CPU"
fi
check user 4 '' -- --cpus 2 ${aff_args[@]+"${aff_args[@]}"}
AFFINITY=
mkdir "$W/jail"
check jail 3 "$W/jail" -- --cpus 1 --jail "$W/jail" --log-level info

if [ ${#fail[@]} -gt 0 ]; then
	printf 'sandbox check failed: %s\n' "${fail[@]}"
	exit 1
fi
echo "sandbox check passed"
