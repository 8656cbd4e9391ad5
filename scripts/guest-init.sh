#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the hmm-rs test guest (busybox). Runs the suites of /plan, one
# line each:   name|module|module arguments|command
# loading the module (if any) before the command and unloading it after.
#
# Two channels: the kernel console is ttyS0, and everything this script
# and the suites print goes to ttyS1 alone, a serial port the kernel never
# writes to, so that no printk can cut a marker or a TAP line. On ttyS1,
# each suite is bracketed with markers the host's runner parses:
#   # hmm-rs: suite NAME begin t=T
#   # hmm-rs: suite NAME end rc=N rmmod=N time=Ns t=T
# the end preceded by the suite's kernel log lines ("# dmesg: ...", and on
# debug kernels "# kmemleak: ..."), in which the runner looks for splats.
# T is the kernel log's clock (a record "hmm-rs: mark N ..." written to
# /dev/kmsg for the purpose, read back), so that the runner can also
# place what the console showed and no dump did (a panic, a hang, a dump
# that lost lines) in the suite that ran at the time. Ends with
# "# hmm-rs: done" and a reboot, which QEMU (-no-reboot) turns into an
# exit. The console gets only "guest up" and "guest done" lines.
#
# /env (from the host) sets HMM_RS_DEBUG (1: a debug kernel, which plans
# may test), HMM_RS_SETTLE (seconds each suite waits after loading its
# module: the boot line's settle=) and HMM_RS_TIMEOUT: the host kills the
# guest after that many seconds; and exports what run-vm.sh --env asks for to the suites. A suite still running a minute before that is killed, with
# the marker
#   # hmm-rs: suite NAME timeout after N s
# so that a hung test (a reference driver's Oops can leave one) still
# lets the guest report back. What a timeout means is the host's call.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
HMM_RS_TIMEOUT=600 HMM_RS_DEBUG=0 HMM_RS_SETTLE=0
# shellcheck source=/dev/null # written by run-vm.sh
[ -r /env ] && . /env
export HMM_RS_DEBUG
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/hugepages && mount -t hugetlbfs hugetlbfs /dev/hugepages
# hmm-tests' anon_write_hugetlbfs needs a few free huge pages.
echo 16 > /proc/sys/vm/nr_hugepages

up="# hmm-rs: guest up: $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu(s), $(sed -n 's/MemTotal: *//p' /proc/meminfo)"
echo "$up; the suites' output on ttyS1"
# From here on, all output to ttyS1 (raw: no \r added, nothing echoed).
if ! { [ -c /dev/ttyS1 ] && stty -F /dev/ttyS1 raw -echo; } 2>/dev/null; then
	echo "# hmm-rs: no serial port ttyS1 for the suites' output: giving up"
	reboot -f
fi
exec >/dev/ttyS1 2>&1 </dev/null
echo "$up"
# The detectors this kernel runs (scripts/config/hmm-rs.config), as the
# kernel reports them ("-": not in this kernel).
sysval() { cat "$1" 2>/dev/null || echo -; }
echo "# hmm-rs: guest detectors: soft lockup $(sysval /proc/sys/kernel/soft_watchdog)," \
	"hard lockup $(sysval /proc/sys/kernel/nmi_watchdog)," \
	"watchdog_thresh $(sysval /proc/sys/kernel/watchdog_thresh) s," \
	"hung task $(sysval /proc/sys/kernel/hung_task_timeout_secs) s," \
	"kfence sample $(sysval /sys/module/kfence/parameters/sample_interval) ms," \
	"kmemleak $([ -e /sys/kernel/debug/kmemleak ] && echo 1 || echo -)"
dmesg -c >/dev/null

# ktime TEXT: sets kt to the kernel log's clock now, in seconds: the
# timestamp of a record written for the purpose ("hmm-rs: mark N TEXT",
# at KERN_INFO: in the suite's dmesg dump, not on the console). Falls back
# to /proc/uptime, which runs some 40 ms ahead of that clock.
mark_n=0
ktime() {
	mark_n=$((mark_n + 1))
	echo "<6>hmm-rs: mark $mark_n $1" >/dev/kmsg 2>/dev/null
	kt=$(dmesg | sed -n "s/^\[ *\([0-9]*\.[0-9]*\)\] hmm-rs: mark $mark_n .*/\1/p" | tail -n 1)
	[ -n "$kt" ] || kt=$(cut -d' ' -f1 /proc/uptime)
}

# Debug kernels: a kmemleak scan, its reports as "# kmemleak:" lines, then
# cleared, so that each report shows once, in the suite whose end found it
# (the module of the suite is unloaded by then). kmemleak ignores objects
# younger than 5 s, and greys an object the first time it checksums it
# (the checksum changes from 0), reporting it only at the next scan: wait
# out the age, then scan twice.
kmemleak_scan() {
	[ -w /sys/kernel/debug/kmemleak ] || return 0
	sleep 6
	echo scan > /sys/kernel/debug/kmemleak
	sleep 1
	echo scan > /sys/kernel/debug/kmemleak
	echo "# hmm-rs: kmemleak scan: $(grep -c 'unreferenced object' /sys/kernel/debug/kmemleak) report(s)"
	sed 's/^/# kmemleak: /' /sys/kernel/debug/kmemleak
	echo clear > /sys/kernel/debug/kmemleak
}

dump_dmesg() {
	dmesg -c | sed 's/^/# dmesg: /'
}

deadline=$((HMM_RS_TIMEOUT - 60))
uptime_s() {
	cut -d. -f1 /proc/uptime
}

# run_suite NAME COMMAND: runs COMMAND in /tmp in a session of its own,
# killed as a whole when the deadline comes; returns its exit status.
run_suite() {
	run_limit=$((deadline - $(uptime_s)))
	[ "$run_limit" -gt 0 ] || run_limit=1
	(cd /tmp && exec setsid sh -c "$2") </dev/null &
	run_pid=$!
	setsid sh -c "sleep $run_limit; echo '# hmm-rs: suite $1 timeout after $run_limit s'; kill -KILL -$run_pid" </dev/null &
	run_wd=$!
	wait "$run_pid"
	run_rc=$?
	# Its session too, and the process itself: a suite that ends at once
	# can end before the watchdog's setsid, which then would go on to
	# sleep out its time, and the boot with it.
	kill -KILL "-$run_wd" "$run_wd" 2>/dev/null
	wait "$run_wd" 2>/dev/null
	return "$run_rc"
}

while IFS='|' read -r name mod args cmd; do
	case "$name" in ''|'#'*) continue ;; esac
	ktime "suite $name begin"
	echo "# hmm-rs: suite $name begin t=$kt"
	start=$(uptime_s)
	rmmod_rc=-
	if [ -n "$mod" ]; then
		# shellcheck disable=SC2086 # the arguments are words on purpose
		if ! insmod "/lib/modules/$mod.ko" $args; then
			echo "# hmm-rs: suite $name insmod $mod failed"
			dump_dmesg
			ktime "suite $name end"
			echo "# hmm-rs: suite $name end rc=125 rmmod=- t=$kt"
			continue
		fi
		[ "$HMM_RS_SETTLE" -gt 0 ] && sleep "$HMM_RS_SETTLE"
	fi
	run_suite "$name" "$cmd"
	rc=$?
	if [ -n "$mod" ]; then
		# A test the harness killed may still be exiting (its files
		# hold the module): give it up to 30 s before calling it a leak.
		for _ in $(seq 30); do
			rmmod "$mod" 2>/dev/null && break
			sleep 1
		done
		rmmod "$mod" 2>/dev/null
		grep -q "^$mod " /proc/modules
		rmmod_rc=$((1 - $?))
	fi
	dump_dmesg
	kmemleak_scan
	ktime "suite $name end"
	echo "# hmm-rs: suite $name end rc=$rc rmmod=$rmmod_rc time=$(( $(uptime_s) - start ))s t=$kt"
done </plan

# Debug kernels: a last kmemleak scan, outside any suite.
kmemleak_scan

echo "# hmm-rs: done"
# The last close of ttyS1 waits until its output is sent.
exec >/dev/console 2>&1
echo "# hmm-rs: guest done"
sync
reboot -f
