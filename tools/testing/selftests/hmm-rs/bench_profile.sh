#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# hmm_rs_bench under the ftrace function profiler (make bench PROFILE=1):
# each timed operation runs once, and the functions it spent most time in
# follow its figure ("# profile:" lines). A function's time excludes its
# callees' (graph-time off) and the time its task slept (sleep-time off).
# Under QEMU -icount the times count instructions, the profiler's own
# included.
#
# Usage: bench_profile.sh [hmm_rs_bench arguments]

dir=/sys/kernel/tracing
[ -e "$dir/trace_stat" ] || mount -t tracefs nodev "$dir" 2>/dev/null
if [ ! -w "$dir/function_profile_enabled" ]; then
	echo "1..1"
	echo "not ok 1 bench_profile # no $dir/function_profile_enabled: not the profiling kernel"
	exit 1
fi
echo 0 >"$dir/options/graph-time" || exit 1
echo 0 >"$dir/options/sleep-time" || exit 1
HMM_RS_BENCH_PROFILE=$dir exec "$(dirname "$0")/hmm_rs_bench" "$@"
