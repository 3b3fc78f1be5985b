# Shared by the device scenario scripts (tests/e2e/net.sh, tests/e2e/blk.sh); sourced, not run.

# device_args ARGS...: the scenario's extra arguments go to moat (EXTRA), except cmdline+=STR, appended to the
# guest's command line (CMDLINE), dev+=OPTS, appended to the device's option (DEVOPTS, e.g. ",vhost=on"), and
# xfer=BYTES (XFER), a checksummed transfer of that size each way (net.sh).
# --iommu sets IOMMU=1 and asks moat for its exit report (--log-level info). --iommu-poll=US sets POLL.
device_args() {
	EXTRA=()
	IOMMU=0
	POLL=
	DEVOPTS=
	XFER=0
	for a in "$@"; do
		case $a in
		cmdline+=*) CMDLINE="$CMDLINE ${a#cmdline+=}" ;;
		dev+=*) DEVOPTS="$DEVOPTS,${a#dev+=}" ;;
		xfer=*) XFER=${a#xfer=} ;;
		--iommu) IOMMU=1; EXTRA+=("$a") ;;
		--iommu-poll=*) POLL=${a#--iommu-poll=}; EXTRA+=("$a") ;;
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
	# Polling (asked for, or moat's default): some requests must have been taken with the guest's notifications
	# off. The default is read from moat's --help.
	if [ -z "$POLL" ]; then
		POLL=$("$MOAT_BIN" --help | sed -n '/--iommu-poll/,/default:/p' | sed -n 's/.*\[default: \([0-9]*\)\].*/\1/p')
		[ -n "$POLL" ] || fail+=("cannot read --iommu-poll's default from moat --help")
	fi
	if [ -n "$POLL" ] && [ "$POLL" != 0 ]; then
		grep -qE 'polling: [1-9][0-9]* spells, [1-9][0-9]* requests taken without a kick' "$err" ||
			fail+=("--iommu-poll=$POLL: moat's exit report shows no request taken while polling")
	elif [ "$POLL" = 0 ]; then
		grep -qE 'polling: 0 spells, 0 requests' "$err" ||
			fail+=("--iommu-poll=0: moat's exit report shows polling")
	fi
}
