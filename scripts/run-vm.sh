#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the test kernel in QEMU once per "boot" of a plan, runs the plan's
# suites inside (scripts/guest-init.sh) and ends with scripts/tap-summary.py's
# verdict: per-suite results, C-vs-Rust tables, splats, and the line
#   N passed, N failed, N skipped
# The guest has two serial ports, each logged and streamed to the terminal:
# ttyS0, the kernel console, in build/logs/BOOT.console.log (with the
# host's "# hmm-rs: boot NAME" and "# hmm-rs: qemu exit N after N s"
# lines), and ttyS1, which only the guest's userspace writes (the runner's
# markers, the suites' TAP, their dmesg dumps), in build/logs/BOOT.log.
# The runner reads its markers and TAP from the second alone, where no
# printk can cut them, and kernel splats from both.
# Exit status: non-zero on any failure, splat, or a guest that did not
# report back within the timeout.
#
# Plan format (scripts/plans/*): "boot NAME [timeout=SECONDS]
# [settle=SECONDS]" starts a boot (each its own QEMU, so an Oops in one
# module cannot poison another's results; the timeout, if given, replaces
# --timeout for it; settle: every suite of the boot waits that long after
# loading its module, so that what the load leaves behind runs before the
# suite times anything), then one suite per line:
#   name|module|module arguments|command
# "host NAME|command" is a suite run on the host, before the boots, in the
# tree's root (tests of the runner itself); it is reported as host:NAME.
# "expect-skip SUITE CASE REASON" lets SUITE skip CASE: any other skip
# fails, and so does every suite of the plan that does not report.
# Module "rust_test_hmm" is this project's, "test_hmm" the C reference.
# Suites named c:X and rust:X are tabled side by side. A name starting
# with "ref:" (ref:c:X) makes a reference suite: its cases, exit status,
# module unload and kernel splats are shown but not counted; instead
# every case of it is one counted comparison with rust:X, which fails
# where the reference passes and rust:X does not. A reference driver can
# leave the kernel damaged (an Oops, a stuck task): run it last in its
# boot, or in a boot of its own with a timeout that bounds what a hang
# costs. A boot of reference suites only is itself a reference: that it
# never reported back is shown, not counted. A suite still running a
# minute before the timeout is killed by the guest
# (scripts/guest-init.sh), so that the boot can still report.
#
# --icount: one CPU whose clock counts instructions (-icount shift=0,
# sleep=off): timings are exact and immune to host load, and the summary
# adds the benchmark tables (make bench).
#
# --env NAME=VALUE (repeatable): exported to every suite of the guest
# (through /env), e.g. a test's budget from make's command line.
#
# "boot NAME kernel=K" boots another kernel, given as --kernel K=KDIR with
# its tests as --tests K=DIR: make check's in-tree boot (kernel=intree,
# scripts/check-patches.sh) boots the kernel the patch series builds, loads
# rust_test_hmm and test_hmm from that build (KDIR/lib/test_hmm_rs/,
# KDIR/lib/) and runs the tests built from that tree. Other boots use
# --kdir, build/tests and the out-of-tree rust_test_hmm.ko.
# --boot NAME runs that boot of the plan alone (no host suites).
#
# Usage: run-vm.sh --plan FILE [--kdir DIR] [--timeout SECONDS] [--kvm]
#                  [--icount] [--smp N] [--env NAME=VALUE]...
#                  [--kernel K=KDIR]... [--tests K=DIR]... [--boot NAME]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PLAN='' KDIR='' TIMEOUT=${HMM_RS_TIMEOUT:-600} KVM=0 ICOUNT=0 SMP=2 ONLY=''
GUEST_ENV=()
declare -A KERNELS=() KTESTS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--plan) PLAN=$2; shift ;;
	--kdir) KDIR=$2; shift ;;
	--timeout) TIMEOUT=$2; shift ;;
	--kvm) KVM=1 ;;
	--icount) ICOUNT=1 SMP=1 ;;
	--smp) SMP=$2; shift ;;
	--kernel|--tests)
		[[ "$2" =~ ^[a-z][a-z0-9-]*=/ ]] ||
			die "run-vm: $1 wants NAME=/absolute/path, not '$2'"
		if [ "$1" = --kernel ]; then KERNELS[${2%%=*}]=${2#*=}; else KTESTS[${2%%=*}]=${2#*=}; fi
		shift ;;
	--boot) ONLY=$2; shift ;;
	--env)
		[[ "$2" =~ ^[A-Z][A-Z0-9_]*=[A-Za-z0-9_.,:/+-]*$ ]] ||
			die "run-vm: --env wants NAME=VALUE (plain characters), not '$2'"
		GUEST_ENV+=("$2"); shift ;;
	*) die "run-vm: unknown argument $1" ;;
	esac
	shift
done
[ -f "$PLAN" ] || die "run-vm: no plan file '$PLAN'"
KDIR=${KDIR:-$(DEBUG=${DEBUG:-0} "$HMM_RS_ROOT/scripts/build-kernel.sh" --print-kdir)}

BUILD=$HMM_RS_ROOT/build
TESTS=$BUILD/tests
VMDIR=$BUILD/vm
LOGS=$BUILD/logs
rm -rf "$VMDIR" "$LOGS"
mkdir -p "$VMDIR" "$LOGS"

# Debian's busybox-static: one static binary, no libraries to copy.
BUSYBOX=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ||
	die "run-vm: busybox-static is not installed (scripts/setup.sh)"

# Device-coherent memory for the hmm_dmirror2/3 devices: two 256 MiB holes
# the kernel must not use, handed to the modules as spm_addr_dev0/1.
MEM=6G
KAPPEND="console=ttyS0 loglevel=${HMM_RS_LOGLEVEL:-5} panic=-1 nokaslr"
KAPPEND="$KAPPEND memmap=256M\$0x180000000 memmap=256M\$0x190000000"
# Lockup detectors (hmm-rs.config) at three times their default period:
# soft lockups after 60 s, hard ones after 30 s. A TCG vCPU that the host
# does not schedule for a while is not a kernel lockup.
KAPPEND="$KAPPEND watchdog_thresh=30"
# The debug kernel boots with 4-level paging: with la57 (QEMU's -cpu max
# has it), an interrupt that hits identify_cpu() while it has cleared
# boot_cpu_data's capabilities sees pgtable_l5_enabled() false, and KASAN
# calls every direct-map address it checks a wild access (a 7.3 bug, not
# ours: patches/README). It struck at 0.006 s, before any module loads,
# in 2 of 3 debug runs under host load.
[ "${DEBUG:-0}" = 1 ] && KAPPEND="$KAPPEND no5lvl"

# kdir_of KERNEL: the build directory of a boot's kernel.
kdir_of() {
	if [ -n "$1" ]; then echo "${KERNELS[$1]}"; else echo "$KDIR"; fi
}

# module_path MODULE KERNEL: the module for a boot of that kernel ('' is
# --kdir's, with this tree's rust_test_hmm).
module_path() {
	local kdir
	kdir=$(kdir_of "$2")
	case "$1:$2" in
	rust_test_hmm:) echo "$HMM_RS_ROOT/rust_test_hmm.ko" ;;
	rust_test_hmm:*) echo "$kdir/lib/test_hmm_rs/rust_test_hmm.ko" ;;
	test_hmm:*) echo "$kdir/lib/test_hmm.ko" ;;
	*) die "run-vm: unknown module $1" ;;
	esac
}

# mkinitramfs DIR PLANLINES TIMEOUT KERNEL SETTLE: a busybox initramfs
# with the tests, the modules the plan names and the plan itself.
mkinitramfs() {
	local dir=$1 plan=$2 timeout=$3 kernel=$4 settle=$5 root=$1/root
	local tests=$TESTS
	[ -z "$kernel" ] || tests=${KTESTS[$kernel]}
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/modules,tests}
	cp "$BUSYBOX" "$root/bin/busybox"
	for app in $("$BUSYBOX" --list | grep -vx busybox); do
		ln -sf busybox "$root/bin/$app"
	done
	cp "$HMM_RS_ROOT/scripts/guest-init.sh" "$root/init"
	cp "$plan" "$root/plan"
	printf 'HMM_RS_TIMEOUT=%s\nHMM_RS_DEBUG=%s\nHMM_RS_SETTLE=%s\n' \
		"$timeout" "${DEBUG:-0}" "$settle" >"$root/env"
	local e
	for e in "${GUEST_ENV[@]}"; do
		echo "export $e" >>"$root/env"
	done
	cp -r "$tests"/. "$root/tests/"
	local mod path
	for mod in $(cut -d'|' -f2 "$plan" | sort -u); do
		[ -n "$mod" ] || continue
		path=$(module_path "$mod" "$kernel")
		[ -f "$path" ] || die "run-vm: no $path for boot '$(basename "$dir")'"
		cp "$path" "$root/lib/modules/$mod.ko"
	done
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initramfs.cpio.gz"
}

# Split the plan into boots and host suites (with --boot, that boot alone,
# and the plan the verdict reads is cut to it).
boots=() hosts=()
declare -A boot_timeout=() boot_kernel=() boot_settle=()
cur=
if [ -n "$ONLY" ]; then
	awk -v b="$ONLY" '$1 == "boot" && $2 == b { f = 1 } END { exit !f }' "$PLAN" ||
		die "run-vm: no boot '$ONLY' in $PLAN"
	awk -v b="$ONLY" '$1 == "host" { next } $1 == "boot" { on = ($2 == b) } $1 == "expect-skip" || on' \
		"$PLAN" >"$VMDIR/plan"
	PLAN=$VMDIR/plan
fi
while IFS= read -r line; do
	case "$line" in
	''|'#'*|"expect-skip "*) continue ;;
	"host "*) hosts+=("${line#host }"); continue ;;
	"boot "*)
		read -r _ cur opts <<<"$line"
		boot_timeout[$cur]=$TIMEOUT boot_kernel[$cur]= boot_settle[$cur]=0
		for opt in $opts; do
			case "$opt" in
			timeout=[0-9]*) boot_timeout[$cur]=${opt#timeout=} ;;
			settle=[0-9]*) boot_settle[$cur]=${opt#settle=} ;;
			kernel=?*)
				k=${opt#kernel=}
				[ -n "${KERNELS[$k]:-}" ] && [ -n "${KTESTS[$k]:-}" ] ||
					die "run-vm: boot '$cur' wants kernel '$k': give --kernel $k=KDIR --tests $k=DIR (make check does)"
				boot_kernel[$cur]=$k ;;
			*) die "run-vm: bad boot line in $PLAN: $line" ;;
			esac
		done
		boots+=("$cur")
		mkdir -p "$VMDIR/$cur"
		: >"$VMDIR/$cur/plan" ;;
	*)
		[ -n "$cur" ] || die "run-vm: suite before any 'boot' line in $PLAN"
		echo "$line" >>"$VMDIR/$cur/plan" ;;
	esac
done <"$PLAN"

# Host suites: the same markers as the guest's, in a log of their own.
if [ "${#hosts[@]}" -gt 0 ]; then
	{
		echo "# hmm-rs: boot host"
		for h in "${hosts[@]}"; do
			name=${h%%|*} cmd=${h#*|}
			echo "# hmm-rs: suite host:$name begin"
			start=$(date +%s)
			rc=0
			(cd "$HMM_RS_ROOT" && bash -c "$cmd") </dev/null 2>&1 || rc=$?
			echo "# hmm-rs: suite host:$name end rc=$rc rmmod=- time=$(( $(date +%s) - start ))s"
		done
		echo "# hmm-rs: done"
	} | tee "$LOGS/host.log"
fi

accel=(-accel tcg)
if [ "$KVM" = 1 ]; then
	[ -w /dev/kvm ] || die "run-vm: --kvm given but /dev/kvm is not usable"
	accel=(-accel kvm)
fi
cpu=max
if [ "$ICOUNT" = 1 ]; then
	accel+=(-icount "shift=0,sleep=off")
	# Without ERMS and FSRM the kernel copies to and from user space with
	# rep movsq, as copy_page() does, not rep movsb: under -icount each
	# iteration of a string instruction counts as one instruction, and
	# byte by byte a copy would outweigh everything else the drivers do
	# eightfold (and take as many times longer to emulate).
	cpu=max,-erms,-fsrm
fi

# Two NUMA nodes, for moves between them (HMM_RS_DST_NODE): node 0 has the
# CPUs and guest-physical 0-3 GiB, node 1 (memory only, like a CXL
# expander) 4-7 GiB, with the device-coherent holes in it.
numa=(-object "memory-backend-ram,id=ram0,size=3G"
	-numa "node,nodeid=0,cpus=0-$((SMP - 1)),memdev=ram0"
	-object "memory-backend-ram,id=ram1,size=3G"
	-numa "node,nodeid=1,memdev=ram1")

for boot in "${boots[@]}"; do
	dir=$VMDIR/$boot
	btimeout=${boot_timeout[$boot]} kernel=${boot_kernel[$boot]}
	bzimage=$(kdir_of "$kernel")/arch/x86/boot/bzImage
	[ -f "$bzimage" ] || die "run-vm: no kernel at $bzimage (make kernel)"
	mkinitramfs "$dir" "$dir/plan" "$btimeout" "$kernel" "${boot_settle[$boot]}"
	log "vm: boot '$boot' ($(grep -c . "$dir/plan") suite(s), timeout ${btimeout}s)"
	console=$LOGS/$boot.console.log user=$LOGS/$boot.log
	echo "# hmm-rs: boot $boot" >"$console"
	: >"$user"
	# ttyS1 goes straight to its log (QEMU writes it); a tail shows it.
	tail -n +1 -s 0.2 -f "$user" &
	tail_pid=$!
	start=$(date +%s)
	set +e
	timeout -k 10 "$btimeout" qemu-system-x86_64 "${accel[@]}" -cpu "$cpu" \
		-smp "$SMP" -m "$MEM" "${numa[@]}" \
		-display none -monitor none -serial stdio \
		-chardev "file,id=ttyS1,path=$user" -serial chardev:ttyS1 \
		-no-reboot -kernel "$bzimage" -initrd "$dir/initramfs.cpio.gz" \
		-append "$KAPPEND" </dev/null 2>&1 | sed -u 's/\r$//' | tee -a "$console"
	rc=${PIPESTATUS[0]}
	set -e
	sleep 0.5
	kill "$tail_pid" 2>/dev/null || true
	wait "$tail_pid" 2>/dev/null || true
	# A console cut mid-line (QEMU killed) still gets the exit on a line.
	[ -z "$(tail -c 1 "$console")" ] || echo >>"$console"
	echo "# hmm-rs: qemu exit $rc after $(( $(date +%s) - start )) s" | tee -a "$console"
done

# Per boot, the runner reads BOOT.log and finds BOOT.console.log beside it.
logs=()
[ "${#hosts[@]}" -gt 0 ] && logs+=("$LOGS/host.log")
for boot in "${boots[@]}"; do
	logs+=("$LOGS/$boot.log")
done
# Timings mean something only when guest time counts instructions.
[ "$ICOUNT" = 1 ] && logs+=(--bench)
exec python3 "$HMM_RS_ROOT/scripts/tap-summary.py" --plan "$PLAN" "${logs[@]}"
