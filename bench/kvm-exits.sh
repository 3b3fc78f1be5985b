#!/usr/bin/env bash
# Count a KVM host's VM exits for a while, with the port I/O and MSR exits among them and the interrupts KVM
# injected: how often guests leave for the hypervisor.
#
#   bench/kvm-exits.sh [SECONDS] [LABEL]
#
# Counts the kvm:kvm_exit, kvm:kvm_pio, kvm:kvm_msr, kvm:kvm_mmio and kvm:kvm_inj_virq tracepoints system-wide
# with "perf stat" for SECONDS (default 4): counting only, so it hardly slows what it measures (recording
# every exit slowed a nested guest's network 3x). Prints one line, LABEL in front. Needs root, perf
# (Debian's linux-perf) and tracefs (mounted here if it is not). bench/net.sh runs it during each iperf3 with
# MOAT_BENCH_PROFILE="bench/kvm-exits.sh 6". Caution in the nested test bed: turning tracepoints on patches
# L1's kernel code, and once L1 then died of an int3 oops under the emulator (a session lost, nothing else).
set -euo pipefail
SECS=${1:-4}
LABEL=${2:-kvm-exits}
[[ $SECS =~ ^[0-9]+$ ]] && [ "$SECS" -ge 1 ] || { echo "kvm-exits.sh: SECONDS must be a positive number" >&2; exit 2; }
command -v perf >/dev/null || { echo "kvm-exits.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
if [ ! -e /sys/kernel/tracing/events/kvm ]; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
[ -e /sys/kernel/tracing/events/kvm ] || { echo "kvm-exits.sh: no kvm tracepoints (kvm not loaded, or no tracefs)" >&2; exit 1; }
out=$(perf stat -x, -a -e kvm:kvm_exit -e kvm:kvm_pio -e kvm:kvm_msr -e kvm:kvm_mmio -e kvm:kvm_inj_virq \
	-- sleep "$SECS" 2>&1 >/dev/null) || { echo "kvm-exits.sh: perf stat failed: $out" >&2; exit 1; }
# perf stat -x,: COUNT,UNIT,EVENT,...
awk -F, -v secs="$SECS" -v label="$LABEL" '
	$3 ~ /^kvm:/ { sub(/^kvm:kvm_/, "", $3); line = line sprintf("%s %s (%.0f/s); ", $3, $1, $1 / secs) }
	END { sub(/; $/, "", line); printf "%s: in %d s: %s\n", label, secs, line }' <<<"$out"
