#!/usr/bin/env bash
# Fetch the guest kernel and build the guest and test-bed initramfs images.
#
#   tools/guest-images.sh --arch x86_64|arm64 [--out DIR]
#
# Results in DIR (default build/guest/<arch>):
#   vmlinuz               the kernel (bzImage) of the newest Debian 12 6.12 cloud kernel package
#                         (arm64: an Image, possibly gzip'd, which QEMU boots as the test bed's L1)
#   Image                 arm64 only: vmlinuz decompressed if it was, the kernel moat boots
#   modules/              its lib/modules/<version> tree
#   kernel-version        its version (uname -r)
#   config                its build configuration
#   initramfs.cpio.gz     guest userland: busybox, /init, the scenario scripts of tests/e2e/guest
#   initramfs-full.cpio.gz  the same plus mke2fs, iperf3 (with their libraries), blkio and netxfer (in /usr/local), for
#                         the device scenarios; the base image stays small for the boot benchmarks
#   l1-initramfs.cpio.gz  /init of the nested test bed's L1 (see tools/testbed/run-l1.sh)
# The kernel package and the images are cached in DIR and rebuilt only when their inputs change.
set -euo pipefail

# Kernel modules the guest's /init loads, in this order (their dependencies are added automatically).
GUEST_MODULES="pvpanic pvpanic-mmio virtio-iommu virtio_net virtio_blk virtio-rng"
# Programs (with their shared libraries) added to initramfs-full.cpio.gz for the device scenarios.
GUEST_TOOLS="/usr/sbin/mke2fs /usr/bin/iperf3"
# Kernel modules the test bed's L1 loads: required ones (L1 stops if one fails), then optional ones (a warning).
L1_MODULES_REQUIRED="irqbypass kvm kvm-amd"
L1_MODULES_OPTIONAL="vhost_iotlb vhost tun tap vhost_net veth"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/tools/guest-images.sh"
ARCH=x86_64
OUT=

die() { echo "guest-images: error: $*" >&2; exit 1; }
say() { echo "guest-images: $*"; }
usage() { echo "usage: $0 --arch x86_64|arm64 [--out DIR]" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case $1 in
	--arch) [ $# -ge 2 ] || usage; ARCH=$2; shift 2 ;;
	--arch=*) ARCH=${1#*=}; shift ;;
	--out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
	--out=*) OUT=${1#*=}; shift ;;
	-h|--help) usage ;;
	*) echo "guest-images: unknown argument: $1" >&2; usage ;;
	esac
done

case $ARCH in
x86_64) FLAVOUR=cloud-amd64; DEB_ARCH=amd64; TARGET_CC=gcc ;;
arm64)
	FLAVOUR=cloud-arm64; DEB_ARCH=arm64; TARGET_CC=aarch64-linux-gnu-gcc
	# KVM is built into the arm64 kernel; it has no pvpanic (the guest's panic is a PSCI warm reset, see
	# tests/e2e/run.sh).
	L1_MODULES_REQUIRED=""
	GUEST_MODULES="virtio-iommu virtio_net virtio_blk virtio-rng"
	# The device scenarios' tools come from Debian's :arm64 packages instead (TARGET_TOOL_DEBS, and
	# TARGET_E2FS_DEB with the packages it depends on).
	GUEST_TOOLS=""
	;;
*) die "unsupported --arch '$ARCH' (supported: x86_64, arm64)" ;;
esac
OUT=${OUT:-$REPO/build/guest/$ARCH}
mkdir -p "$OUT/cache" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=$OUT/cache

for tool in dpkg-deb cpio gzip xz zstd modinfo flock sha256sum readelf; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; run tools/install-deps.sh"
done
BUSYBOX=/bin/busybox
[ "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null || true)" = installed ] && [ -x "$BUSYBOX" ] ||
	die "busybox-static is not installed; run tools/install-deps.sh"
# The applet list comes from the host's busybox (same Debian version as the target's).
LIST_BUSYBOX=$BUSYBOX

# One run at a time per output folder.
exec 9>"$OUT/.lock"
flock 9

TMP=
cleanup() { [ -z "$TMP" ] || rm -rf --one-file-system "$TMP"; }
trap cleanup EXIT
TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")

# iperf3 with its libraries, for arm64 guests and the arm64 L1 (the host's are x86).
TARGET_TOOL_DEBS="iperf3:arm64 libiperf0:arm64 libsctp1:arm64 libssl3:arm64 libc6:arm64"
# e2fsprogs for the blk scenario: mke2fs in arm64 guests, debugfs in the arm64 L1 (where tests/e2e/blk.sh checks
# the image). Its libraries are found from the package's dependencies and the programs' ELF headers.
TARGET_E2FS_DEB=e2fsprogs

# copy_libs SRC DEST: the glibc, libtinfo, iperf and ssl libraries (and the loader) of an extracted tree.
copy_libs() {
	local src=$1 dst=$2 f
	mkdir -p "$dst/lib/aarch64-linux-gnu" "$dst/usr/lib/aarch64-linux-gnu"
	cp -a "$src/lib/ld-linux-aarch64.so.1" "$dst/lib/" || die "no arm64 loader in $src"
	for f in "$src"/lib/aarch64-linux-gnu/{ld-linux-aarch64.so.1,libc.so.6,libm.so.6,libresolv.so.2,libtinfo.so.6*} \
		"$src"/usr/lib/aarch64-linux-gnu/{libiperf.so.0*,libsctp.so.1*,libssl.so.3,libcrypto.so.3}; do
		[ -e "$f" ] || continue
		cp -a "$f" "$dst/${f#"$src"/}"
	done
}

# cached_deb NAME ARCH [VERSION]: prints the cached .deb of NAME for ARCH (an Architecture: all package
# also matches), downloading the candidate version with apt-get download when none is cached; with VERSION,
# that exact version (a dependency pinned with "(= VERSION)").
cached_deb() {
	local name=$1 arch=$2 want=${3:-} f deb='' spec
	for f in "$CACHE/${name}"_*_"$arch".deb "$CACHE/${name}"_*_all.deb; do
		[ -f "$f" ] || continue
		[ -z "$want" ] || [ "$(dpkg-deb -f "$f" Version)" = "$want" ] || continue
		deb=$(printf '%s\n' ${deb:+"$deb"} "$f" | sort -V | tail -n 1)
	done
	if [ -z "$deb" ]; then
		spec=$name:$arch
		[ -z "$want" ] || spec="$spec=$want"
		say "downloading $spec" >&2
		rm -f "$TMP/dl"/*.deb
		mkdir -p "$TMP/dl"
		(cd "$TMP/dl" && apt-get download -q -o APT::Sandbox::User=root "$spec" >"$TMP/apt-download.log" 2>&1) ||
			die "apt-get download $spec failed: $(tail -n 1 "$TMP/apt-download.log") (tools/install-deps.sh adds the arm64 architecture)"
		for f in "$TMP/dl"/*.deb; do
			[ -f "$f" ] || die "apt-get download $spec left no .deb"
			mv "$f" "$CACHE/"
			deb=$CACHE/${f##*/}
		done
	fi
	echo "$deb"
}

# fetch_debs DIR PKG...: extract the newest version of each package (PKG:arch) into DIR, caching the .debs.
# For target packages that cannot be co-installed with the host's (busybox-static:arm64, bash:arm64).
fetch_debs() {
	local dir=$1 p deb
	shift
	mkdir -p "$dir"
	for p in "$@"; do
		deb=$(cached_deb "${p%%:*}" "${p#*:}") || exit 1
		dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
	done
}

# fetch_debs_with_deps DIR ARCH PKG...: extract PKG... for ARCH and every package they depend on (Depends and
# Pre-Depends, read from each .deb's control fields, first of alternatives) into DIR. So the package set
# follows what Debian's current packages declare instead of a list kept here.
fetch_debs_with_deps() {
	local dir=$1 arch=$2 deb dep name ver
	shift 2
	local -a todo=("$@")
	local -A done_pkg=()
	mkdir -p "$dir"
	while [ ${#todo[@]} -gt 0 ]; do
		dep=${todo[0]}
		todo=("${todo[@]:1}")
		# "name[:any] [(op version)]"
		name=${dep%% *}
		name=${name%%:*}
		[ -z "${done_pkg[$name]:-}" ] || continue
		done_pkg[$name]=1
		ver=
		if [[ $dep =~ \(=\ *([^\)\ ]+)\) ]]; then ver=${BASH_REMATCH[1]}; fi
		deb=$(cached_deb "$name" "$arch" "$ver") || exit 1
		dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
		while IFS= read -r dep; do
			dep=${dep%%|*}
			dep=${dep#"${dep%%[! ]*}"}
			[ -z "$dep" ] || todo+=("$dep")
		done < <(dpkg-deb -f "$deb" Pre-Depends Depends | sed -n 's/^[A-Za-z-]*: //p' | tr ',' '\n')
	done
}

# copy_needed SRC DST PROG...: copies into DST, at the same paths as in the extracted tree SRC, the loader and
# the shared libraries the (arm64) programs PROG... need, as listed in their ELF headers (DT_NEEDED,
# recursively). Fails if one is not in SRC.
copy_needed() {
	local src=$1 dst=$2 f lib dir found interp
	shift 2
	local -a todo=("$@")
	local -A seen=()
	interp=$(readelf -lW "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
	[ -n "$interp" ] && [ -e "$src$interp" ] || die "no program interpreter '$interp' of $1 in $src"
	if [ ! -e "$dst$interp" ]; then
		mkdir -p "$dst$(dirname "$interp")"
		cp -L "$src$interp" "$dst$interp"
	fi
	while [ ${#todo[@]} -gt 0 ]; do
		f=${todo[0]}
		todo=("${todo[@]:1}")
		while IFS= read -r lib; do
			[ -z "${seen[$lib]:-}" ] || continue
			seen[$lib]=1
			found=
			for dir in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib usr/lib; do
				[ -e "$src/$dir/$lib" ] || continue
				found=$dir/$lib
				break
			done
			[ -n "$found" ] || die "$lib (needed by ${f#"$src"/}) is in none of the extracted packages"
			if [ ! -e "$dst/$found" ]; then
				mkdir -p "$dst/$(dirname "$found")"
				cp -L "$src/$found" "$dst/$found"
			fi
			todo+=("$src/$found")
		done < <(readelf -dW "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
	done
}

# copy_prog SRC ROOT DIR NAME: copies the program NAME of the extracted tree SRC (from its sbin or bin folders)
# to ROOT/DIR/NAME, and the loader and libraries it needs into ROOT.
copy_prog() {
	local src=$1 root=$2 dir=$3 name=$4 d
	for d in sbin usr/sbin bin usr/bin; do
		[ -f "$src/$d/$name" ] || continue
		mkdir -p "$root/$dir"
		cp -L "$src/$d/$name" "$root/$dir/$name"
		copy_needed "$src" "$root" "$src/$d/$name"
		return 0
	done
	die "no program $name in the extracted packages"
}

if [ "$ARCH" = arm64 ]; then
	# busybox-static:arm64 replaces the host's busybox-static if installed: take it from its .deb.
	if [ ! -x "$CACHE/target/bin/busybox" ]; then
		rm -rf "$CACHE/target"
		fetch_debs "$CACHE/target" busybox-static:arm64
	fi
	BUSYBOX=$CACHE/target/bin/busybox
	[ -x "$BUSYBOX" ] || die "busybox-static:arm64 has no bin/busybox"
fi

# ---------------------------------------------------------------- kernel package
PKG_RE="^linux-image-6\\.12\\.[0-9]+\\+deb12-$FLAVOUR-unsigned\$"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
	else return 1
	fi
}

# Prints the newest available package name, or nothing. (search lists only packages that have a
# downloadable version, unlike pkgnames.)
newest_pkg() {
	apt-cache search --names-only "$PKG_RE" 2>/dev/null | awk '{ print $1 }' | grep -E "$PKG_RE" | sort -V | tail -n 1
}

cached_kver=
if [ -s "$OUT/kernel-version" ] && [ -s "$OUT/vmlinuz" ] && [ -d "$OUT/modules/kernel" ] &&
	{ [ "$ARCH" != arm64 ] || [ -s "$OUT/Image" ]; }; then
	cached_kver=$(cat "$OUT/kernel-version")
fi

pkg=$(newest_pkg || true)
if [ -z "$pkg" ]; then
	if as_root apt-get update -q >"$TMP/apt-update.log" 2>&1; then
		pkg=$(newest_pkg || true)
	else
		say "warning: apt-get update failed or is not permitted (not root): $(tail -n 1 "$TMP/apt-update.log" 2>/dev/null)" >&2
	fi
fi

if [ -n "$pkg" ]; then
	want_kver=${pkg#linux-image-}
	want_kver=${want_kver%-unsigned}
else
	want_kver=
fi

extract_deb() {
	local deb=$1 kver
	say "extracting $(basename "$deb")"
	rm -rf "$TMP/x"
	dpkg-deb -x "$deb" "$TMP/x" || die "dpkg-deb -x $deb failed"
	kver=$(ls "$TMP/x/lib/modules" 2>/dev/null | head -n 1)
	[ -n "$kver" ] && [ -d "$TMP/x/lib/modules/$kver/kernel" ] || die "$deb has no lib/modules/<version>/kernel"
	[ -f "$TMP/x/boot/vmlinuz-$kver" ] || die "$deb has no boot/vmlinuz-$kver"
	rm -f "$OUT/kernel-version"
	rm -rf "$OUT/modules"
	mv "$TMP/x/lib/modules/$kver" "$OUT/modules"
	mv "$TMP/x/boot/vmlinuz-$kver" "$OUT/vmlinuz"
	if [ -f "$TMP/x/boot/config-$kver" ]; then mv "$TMP/x/boot/config-$kver" "$OUT/config"; fi
	rm -rf "$TMP/x"
	if [ "$ARCH" = arm64 ]; then
		# Debian's arm64 vmlinuz has been a gzip'd Image in some releases and a plain Image in others.
		rm -f "$OUT/Image"
		if gzip -t "$OUT/vmlinuz" 2>/dev/null; then
			gzip -dc "$OUT/vmlinuz" >"$OUT/Image.tmp" || die "cannot decompress the arm64 vmlinuz"
			mv "$OUT/Image.tmp" "$OUT/Image"
		else
			ln "$OUT/vmlinuz" "$OUT/Image" || die "cannot link $OUT/Image"
		fi
	fi
	echo "$kver" >"$OUT/kernel-version"
}

if [ -n "$want_kver" ] && [ "$want_kver" = "$cached_kver" ]; then
	: # up to date
elif [ -n "$pkg" ]; then
	deb=$(ls "$CACHE/${pkg}"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
	if [ -z "$deb" ]; then
		say "downloading $pkg"
		if (cd "$TMP" && apt-get download -q -o APT::Sandbox::User=root "$pkg:$DEB_ARCH" >"$TMP/apt-download.log" 2>&1); then
			mv "$TMP/${pkg}"_*.deb "$CACHE/"
			deb=$(ls "$CACHE/${pkg}"_*.deb | sort -V | tail -n 1)
		else
			say "warning: apt-get download $pkg failed: $(tail -n 1 "$TMP/apt-download.log")" >&2
		fi
	fi
	if [ -n "$deb" ]; then
		extract_deb "$deb"
		# Keep only the package in use.
		for old in "$CACHE"/linux-image-*.deb; do
			[ "$old" = "$deb" ] || rm -f "$old"
		done
	elif [ -n "$cached_kver" ]; then
		say "warning: using the cached kernel $cached_kver (download of $pkg failed)" >&2
	else
		die "cannot download $pkg and no cached kernel in $OUT"
	fi
else
	# apt cannot tell us the newest package: fall back to what we have.
	if [ -n "$cached_kver" ]; then
		say "warning: apt lookup of linux-image-6.12.*+deb12-$FLAVOUR-unsigned failed; using the cached kernel $cached_kver" >&2
	else
		deb=$(ls "$CACHE"/linux-image-6.12.*+deb12-"$FLAVOUR"-unsigned_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
		[ -n "$deb" ] || die "cannot find linux-image-6.12.*+deb12-$FLAVOUR-unsigned with apt-cache (is Debian 12's security suite in the apt sources?) and no cached copy in $CACHE"
		say "warning: apt lookup failed; using the cached package $(basename "$deb")" >&2
		extract_deb "$deb"
	fi
fi
KVER=$(cat "$OUT/kernel-version")
MODDIR=$OUT/modules

# ---------------------------------------------------------------- module resolution
declare -A MODPATH=() BUILTIN=() SEEN=()
INDEXED=
index_modules() {
	local f n
	while IFS= read -r f; do
		n=${f##*/}
		n=${n%%.ko*}
		MODPATH[${n//-/_}]=$f
	done < <(cd "$MODDIR" && find kernel -name '*.ko*' -type f)
	if [ -f "$MODDIR/modules.builtin" ]; then
		while IFS= read -r f; do
			n=${f##*/}
			n=${n%%.ko*}
			BUILTIN[${n//-/_}]=1
		done <"$MODDIR/modules.builtin"
	fi
	INDEXED=1
}

# resolve NAME: appends NAME's dependencies, then NAME, to ORDER (paths relative to the modules tree).
# Returns 1 if NAME or one of its dependencies does not exist as a module.
ORDER=()
resolve() {
	local n=${1//-/_} p d deps
	[ -n "$INDEXED" ] || index_modules
	[ -z "${SEEN[$n]:-}" ] || return 0
	if [ -n "${BUILTIN[$n]:-}" ]; then SEEN[$n]=1; return 0; fi
	p=${MODPATH[$n]:-}
	[ -n "$p" ] || { echo "guest-images: module '$1' not found in kernel $KVER" >&2; return 1; }
	deps=$(modinfo -F depends "$MODDIR/$p") || { echo "guest-images: modinfo $p failed" >&2; return 1; }
	for d in ${deps//,/ }; do
		resolve "$d" || return 1
	done
	SEEN[$n]=1
	ORDER+=("$p")
}

# copy_modules ROOT LISTFILE PATH...: copies module files, decompressed (the kernel logs an error when
# insmod first offers it a compressed file), into ROOT/lib/modules/KVER/ and lists them in load order in LISTFILE.
copy_modules() {
	local root=$1 list=$2 p dst
	shift 2
	: >"$list"
	for p in "$@"; do
		dst=${p%.ko*}.ko
		mkdir -p "$root/lib/modules/$KVER/$(dirname "$p")"
		case $p in
		*.ko.xz) xz -dc "$MODDIR/$p" ;;
		*.ko.zst) zstd -qdc "$MODDIR/$p" ;;
		*.ko.gz) gzip -dc "$MODDIR/$p" ;;
		*) cat "$MODDIR/$p" ;;
		esac >"$root/lib/modules/$KVER/$dst" || die "cannot decompress $p"
		echo "$dst" >>"$list"
	done
}

# base_root ROOT: busybox userland with applet links and the usual folders.
base_root() {
	local root=$1 a
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,root,lib/modules/"$KVER"}
	cp "$BUSYBOX" "$root/bin/busybox"
	for a in $("$LIST_BUSYBOX" --list-full); do
		[ "$a" = bin/busybox ] || [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
	done
	chmod 1777 "$root/tmp"
	chmod 700 "$root/root"
}

# pack ROOT OUTFILE
pack() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n >"$2.tmp"
	mv "$2.tmp" "$2"
}

inputs_hash() {
	{
		sha256sum "$SELF" "$BUSYBOX" | cut -d' ' -f1
		echo "$KVER"
		printf '%s\n' "$@"
	} | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------- guest initramfs
SCEN_DIR=$REPO/tests/e2e/guest
scen_files=()
if [ -d "$SCEN_DIR" ]; then
	while IFS= read -r f; do scen_files+=("$f"); done < <(find "$SCEN_DIR" -maxdepth 1 -name '*.sh' -type f | LC_ALL=C sort)
fi
scen_sum=$( (for f in ${scen_files[@]+"${scen_files[@]}"}; do echo "== ${f##*/}"; cat "$f"; done) | sha256sum | cut -d' ' -f1)
guest_hash=$(inputs_hash guest "$GUEST_MODULES" "$scen_sum" "$GUEST_TOOLS" "$(sha256sum "$REPO/bench/blkio.c")" \
	"$(sha256sum "$REPO/tests/e2e/netxfer.c")" "$( [ "$ARCH" != arm64 ] || echo "$TARGET_TOOL_DEBS $TARGET_E2FS_DEB")")

if [ -f "$OUT/initramfs.cpio.gz" ] && [ -f "$OUT/initramfs-full.cpio.gz" ] && [ -x "$OUT/netxfer" ] &&
	[ "$(cat "$OUT/initramfs.stamp" 2>/dev/null)" = "$guest_hash" ]; then
	guest_state="up to date"
else
	R=$TMP/guest
	base_root "$R"
	ORDER=()
	for m in $GUEST_MODULES; do resolve "$m" || die "cannot resolve the guest module '$m'"; done
	copy_modules "$R" "$R/etc/moat-modules" "${ORDER[@]}"
	mkdir -p "$R/scenarios"
	for f in ${scen_files[@]+"${scen_files[@]}"}; do
		install -m 755 "$f" "$R/scenarios/${f##*/}"
	done
	cat >"$R/init" <<'EOF'
#!/bin/sh
# moat test guest: load modules, print the marker, run the scenario named by moat.scenario=NAME, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

kver=$(uname -r)
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$kver/$m" || echo "moat-init: cannot load module $m"
done </etc/moat-modules

echo MOAT_INIT_OK
# Where each module landed (name, size, base; after the marker, which boot benchmarks time): a hung vCPU's
# rip in module space is looked up with these.
awk '{ print "MOAT_MODULE", $1, $2, $6 }' /proc/modules

scenario=
for arg in $(cat /proc/cmdline); do
	case $arg in
	moat.scenario=*) scenario=${arg#moat.scenario=} ;;
	esac
done

if [ -n "$scenario" ]; then
	case $scenario in
	*[!A-Za-z0-9_-]*) echo "moat-init: bad scenario name '$scenario'" ;;
	*)
		if [ -f "/scenarios/$scenario.sh" ]; then
			sh "/scenarios/$scenario.sh"
			echo "moat-init: scenario $scenario returned $?"
		else
			echo "moat-init: no scenario '$scenario' in /scenarios"
		fi
		;;
	esac
else
	uname -r
	echo "CPUS=$(nproc)"
fi

poweroff -f
echo "moat-init: poweroff failed"
while :; do sleep 3600; done
EOF
	chmod 755 "$R/init"
	pack "$R" "$OUT/initramfs.cpio.gz"
	# The full image: a second archive appended (the kernel unpacks concatenated archives in order).
	T2=$TMP/tools
	mkdir -p "$T2/usr/local/sbin" "$T2/usr/local/bin"
	if [ "$ARCH" = arm64 ]; then
		fetch_debs "$TMP/tooldeb" $TARGET_TOOL_DEBS
		mkdir -p "$T2/usr/bin"
		cp -a "$TMP/tooldeb/usr/bin/iperf3" "$T2/usr/local/bin/" || die "iperf3:arm64 has no usr/bin/iperf3"
		copy_libs "$TMP/tooldeb" "$T2"
		rm -rf "$TMP/tooldeb"
		fetch_debs_with_deps "$TMP/e2fsdeb" arm64 "$TARGET_E2FS_DEB"
		copy_prog "$TMP/e2fsdeb" "$T2" usr/local/sbin mke2fs
		rm -rf "$TMP/e2fsdeb"
	fi
	for prog in $GUEST_TOOLS; do
		[ -x "$prog" ] || die "$prog not found; run tools/install-deps.sh"
		case $prog in */sbin/*) dst=usr/local/sbin ;; *) dst=usr/local/bin ;; esac
		cp -L "$prog" "$T2/$dst/"
		# Shared libraries at the same paths as on this machine, the loader included.
		while IFS= read -r lib; do
			mkdir -p "$T2$(dirname "$lib")"
			cp -L "$lib" "$T2$lib"
		done < <(ldd "$prog" | awk '/=> \// { print $3 } /^\t\/[^ ]* \(/ { print $1 }')
	done
	# The block I/O load of bench/blk.sh, linked statically.
	"$TARGET_CC" -O2 -static -Wall -Wextra -o "$T2/usr/local/bin/blkio" "$REPO/bench/blkio.c" || die "cannot build bench/blkio.c"
	# The checksummed TCP transfer of the network scenarios; the host side (the test bed's L1 for arm64) runs
	# the same binary from $OUT.
	"$TARGET_CC" -O2 -static -Wall -Wextra -o "$T2/usr/local/bin/netxfer" "$REPO/tests/e2e/netxfer.c" ||
		die "cannot build tests/e2e/netxfer.c"
	cp "$T2/usr/local/bin/netxfer" "$OUT/netxfer"
	pack "$T2" "$TMP/tools.cpio.gz"
	cat "$OUT/initramfs.cpio.gz" "$TMP/tools.cpio.gz" >"$OUT/initramfs-full.cpio.gz.tmp"
	mv "$OUT/initramfs-full.cpio.gz.tmp" "$OUT/initramfs-full.cpio.gz"
	echo "$guest_hash" >"$OUT/initramfs.stamp"
	rm -rf "$R" "$T2"
	guest_state="built"
fi

# ---------------------------------------------------------------- L1 (test bed) initramfs
l1_hash=$(inputs_hash l1 "$L1_MODULES_REQUIRED" "$L1_MODULES_OPTIONAL")
if [ -f "$OUT/l1-initramfs.cpio.gz" ] && [ "$(cat "$OUT/l1-initramfs.stamp" 2>/dev/null)" = "$l1_hash" ]; then
	l1_state="up to date"
else
	R=$TMP/l1
	base_root "$R"
	mkdir -p "$R/host" "$R/stash"
	ORDER=()
	for m in $L1_MODULES_REQUIRED; do resolve "$m" || die "cannot resolve the L1 module '$m'"; done
	required=("${ORDER[@]}")
	ORDER=()
	: >"$R/etc/l1-modules.missing"
	for m in $L1_MODULES_OPTIONAL; do
		if ! resolve "$m"; then
			say "warning: optional L1 module '$m' is not available in $KVER" >&2
			echo "$m" >>"$R/etc/l1-modules.missing"
		fi
	done
	optional=(${ORDER[@]+"${ORDER[@]}"})
	copy_modules "$R" "$R/etc/l1-modules.required" "${required[@]}"
	copy_modules "$R" "$R/etc/l1-modules.optional" ${optional[@]+"${optional[@]}"}
	# What both arches' /init do first (sourced, after the console is set up): fatal(), the job path, the modules.
	cat >"$R/etc/l1-init-common.sh" <<'EOF'
# Sourced by the test-bed L1's /init.
say() { echo "l1-init: $*"; }
fatal() {
	say "FATAL: $*"
	echo "L1_SETUP_FAILED"
	poweroff -f
	while :; do sleep 3600; done
}

job=
for arg in $(cat /proc/cmdline); do
	case $arg in
	moat.l1job=*) job=${arg#moat.l1job=} ;;
	esac
done
[ -n "$job" ] || fatal "no moat.l1job=PATH on the kernel command line"

kver=$(uname -r)
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$kver/$m" || fatal "cannot load the kernel module $m"
done </etc/l1-modules.required
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$kver/$m" || say "warning: cannot load the kernel module $m"
done </etc/l1-modules.optional
while read -r m; do
	[ -n "$m" ] && say "warning: the kernel module $m is not in this kernel"
done </etc/l1-modules.missing
EOF
	if [ "$ARCH" = x86_64 ]; then
	cat >"$R/init" <<'EOF'
#!/bin/sh
# Test-bed L1: load KVM, mount the host's root (virtio-fs, read-only), run one command in it, report its status.
# ttyS0 carries this script's and the command's output; the kernel's console is on ttyS1.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/ttyS0 2>&1

. /etc/l1-init-common.sh
[ -c /dev/kvm ] || fatal "/dev/kvm is missing after loading the KVM modules (does the emulated CPU offer SVM?)"

mount -t virtiofs -o ro hostroot /host || fatal "cannot mount the host's root (virtio-fs tag hostroot)"
[ -f "/host$job/env" ] || fatal "job file /host$job/env not found in the host's root"
. "/host$job/env"
[ -n "$L1_REPO" ] && [ -d "/host$L1_REPO" ] || fatal "repository '$L1_REPO' not visible in the host's root"

# Writable scratch space; the repository stays visible even if it lives below one of these folders.
mount --bind "/host$L1_REPO" /stash || fatal "cannot bind $L1_REPO"
for d in tmp:1777 run:755 var/tmp:1777 root:700; do
	p=${d%%:*}
	[ -d "/host/$p" ] || continue
	mount -t tmpfs -o "mode=${d#*:}" tmpfs "/host/$p" || fatal "cannot mount tmpfs on /$p"
done
mount -t proc proc /host/proc || fatal "cannot mount /proc"
mount -t sysfs sysfs /host/sys || fatal "cannot mount /sys"
mount -t devtmpfs devtmpfs /host/dev || fatal "cannot mount /dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts || fatal "cannot mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm || fatal "cannot mount /dev/shm"
ln -sfn /proc/self/fd /host/dev/fd
ln -sfn /proc/self/fd/0 /host/dev/stdin
ln -sfn /proc/self/fd/1 /host/dev/stdout
ln -sfn /proc/self/fd/2 /host/dev/stderr
if [ ! -f "/host$job/env" ]; then
	# A tmpfs above hid the repository: put it back.
	mkdir -p "/host$L1_REPO" || fatal "cannot recreate $L1_REPO"
	mount --move /stash "/host$L1_REPO" || fatal "cannot move $L1_REPO back"
else
	umount /stash
fi
hostname moat-l1
ip link set lo up 2>/dev/null || true

# One idle VM for the whole session (see kvm-hold.c).
chroot /host "$L1_KVM_HOLD" || fatal "$L1_KVM_HOLD could not create the idle KVM VM"

echo "L1_CMD_START"
chroot /host /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/bash "$job/cmd.sh" </dev/null
rc=$?
printf '\nL1_EXIT_STATUS=%d\n' "$rc"
poweroff -f
while :; do sleep 3600; done
EOF
	else
	# arm64 L1: the host's root is x86, so the command runs in this initramfs (arm64 busybox, bash, iperf3,
	# debugfs and their libraries from Debian's :arm64 packages) with the repository bind-mounted from the
	# host's root.
	fetch_debs "$TMP/l1deb" bash:arm64 libtinfo6:arm64 $TARGET_TOOL_DEBS
	rm -f "$R/bin/bash"
	cp -a "$TMP/l1deb/bin/bash" "$R/bin/bash"
	mkdir -p "$R/usr/local/bin"
	cp -a "$TMP/l1deb/usr/bin/iperf3" "$R/usr/local/bin/"
	copy_libs "$TMP/l1deb" "$R"
	[ -e "$R/lib/aarch64-linux-gnu/libtinfo.so.6" ] || die "libtinfo6:arm64 has no libtinfo.so.6"
	rm -rf "$TMP/l1deb"
	fetch_debs_with_deps "$TMP/e2fsdeb" arm64 "$TARGET_E2FS_DEB"
	copy_prog "$TMP/e2fsdeb" "$R" usr/local/sbin debugfs
	rm -rf "$TMP/e2fsdeb"
	cat >"$R/init" <<'EOF'
#!/bin/sh
# Test-bed L1 (arm64): mount the host's root (virtio-fs, read-only), run one command from the repository with
# this initramfs's userland, report its status. ttyAMA0 carries this script's and the command's output; the
# kernel's console is hvc0.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/ttyAMA0 2>&1

. /etc/l1-init-common.sh
[ -c /dev/kvm ] || fatal "/dev/kvm is missing (does the emulated CPU offer EL2? QEMU needs virtualization=on)"

mkdir -p /host
mount -t virtiofs -o ro hostroot /host || fatal "cannot mount the host's root (virtio-fs tag hostroot)"
[ -f "/host$job/env" ] || fatal "job file /host$job/env not found in the host's root"
. "/host$job/env"
[ -n "$L1_REPO" ] && [ -d "/host$L1_REPO" ] || fatal "repository '$L1_REPO' not visible in the host's root"
# /tmp first: a repository under /tmp (a clone in /tmp/x) is then bound on top of it, not hidden by it.
mount -t tmpfs -o mode=1777 tmpfs /tmp || fatal "cannot mount /tmp"
mkdir -p "$L1_REPO" || fatal "cannot create $L1_REPO"
mount --bind "/host$L1_REPO" "$L1_REPO" || fatal "cannot bind $L1_REPO"
mkdir -p /dev/pts /dev/shm /var/tmp /run
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fatal "cannot mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fatal "cannot mount /dev/shm"
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
hostname moat-l1
ip link set lo up 2>/dev/null || true

# One idle VM for the whole session (see kvm-hold.c).
"$L1_KVM_HOLD" || fatal "$L1_KVM_HOLD could not create the idle KVM VM"

echo "L1_CMD_START"
env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/bash "$job/cmd.sh" </dev/null
rc=$?
printf '\nL1_EXIT_STATUS=%d\n' "$rc"
poweroff -f
while :; do sleep 3600; done
EOF
	fi
	chmod 755 "$R/init"
	pack "$R" "$OUT/l1-initramfs.cpio.gz"
	echo "$l1_hash" >"$OUT/l1-initramfs.stamp"
	rm -rf "$R"
	l1_state="built"
fi

say "kernel $KVER; initramfs $guest_state; l1-initramfs $l1_state ($OUT)"
