# Shared by the device scenario scripts (tests/e2e/net.sh, tests/e2e/blk.sh); sourced, not run.

# device_args ARGS...: the scenario's extra arguments go to moat (EXTRA), except cmdline+=STR, appended to the
# guest's command line (CMDLINE), and dev+=OPTS, appended to the device's option (DEVOPTS, e.g. ",vhost=on").
# --iommu sets IOMMU=1 and asks moat for its exit report (--log-level info).
device_args() {
	EXTRA=()
	IOMMU=0
	DEVOPTS=
	for a in "$@"; do
		case $a in
		cmdline+=*) CMDLINE="$CMDLINE ${a#cmdline+=}" ;;
		dev+=*) DEVOPTS="$DEVOPTS,${a#dev+=}" ;;
		--iommu) IOMMU=1; EXTRA+=("$a") ;;
		*) EXTRA+=("$a") ;;
		esac
	done
	[ $IOMMU = 0 ] || EXTRA+=(--log-level info)
}

# check_iommu CONSOLE STDERR: with IOMMU=1, every device the guest listed must be in an IOMMU group and moat's
# report must show MAP requests; failures are appended to the caller's fail array.
check_iommu() {
	local console=$1 err=$2
	[ "$IOMMU" = 1 ] || return 0
	tr -d '\r' <"$console" | grep -qE 'IOMMU_GROUP=[0-9]+' ||
		fail+=("the device is in no IOMMU group (is the virtio-iommu driver bound?)")
	! tr -d '\r' <"$console" | grep -qE 'IOMMU_GROUP=( |$)' || fail+=("a device is in no IOMMU group")
	echo "iommu stats: $(grep 'stats: virtio-iommu' "$err" | tail -n 1)"
	grep -qE 'requests: [0-9]+ attach, [0-9]+ detach, [1-9][0-9]* map' "$err" ||
		fail+=("moat's exit report shows no MAP requests")
}
