#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The results of KUnit suites that ran when their module was loaded
# (rust_test_hmm's #[kunit_tests] suites), read from
# /sys/kernel/debug/kunit/SUITE/results and printed as kselftest TAP: one
# case per KUnit test case, named SUITE.CASE, so that the runner counts
# them like any other suite. A suite with no results file is a failed
# case of its own: a suite that did not run cannot pass.
#
# Usage: kunit_tap.sh SUITE...

dir=/sys/kernel/debug/kunit
out=$(for suite in "$@"; do
	f=$dir/$suite/results
	if [ ! -r "$f" ]; then
		echo "not ok $suite.results # no $f: the suite did not run"
		continue
	fi
	# Test cases are the result lines one level in (4 spaces); deeper
	# ones are parameters of a case, the last line the suite's own.
	awk -v s="$suite" '
		/^    (not )?ok [0-9]+ / {
			line = substr($0, 5)
			res = (line ~ /^not ok/) ? "not ok" : "ok"
			sub(/^(not )?ok [0-9]+ /, "", line)
			name = line; sub(/ .*/, "", name)
			rest = line; sub(/^[^ ]*/, "", rest)
			print res " " s "." name rest
		}
		/^ +# / { line = $0; sub(/^ +/, "", line); print line }
	' "$f"
done)
n=$(printf '%s\n' "$out" | grep -cE '^(not )?ok ')
echo "TAP version 13"
echo "1..$n"
i=0
printf '%s\n' "$out" | while IFS= read -r line; do
	case $line in
	"not ok "*) i=$((i + 1)); echo "not ok $i ${line#not ok }" ;;
	"ok "*) i=$((i + 1)); echo "ok $i ${line#ok }" ;;
	*) echo "$line" ;;
	esac
done
printf '%s\n' "$out" | grep -q '^not ok ' && exit 1
exit 0
