#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the guest's static test binaries into OUTDIR:
#  - hmm-tests, the kernel's own tools/testing/selftests/mm/hmm-tests.c,
#    compiled unchanged from the extracted kernel source;
#  - the project's kselftests, tools/testing/selftests/hmm-rs/*.c.
#
# Usage: build-tests.sh OUTDIR
set -euo pipefail
. "$(dirname "$0")/lib.sh"

OUT=${1:?usage: build-tests.sh OUTDIR}
mkdir -p "$OUT"
CC=${TEST_CC:-gcc}
CFLAGS=(-static -O2 -D_GNU_SOURCE -I"$KSRC/tools/testing/selftests"
	-I"$KSRC/tools/testing/selftests/mm" -I"$KSRC" -I"$KSRC/tools/include/uapi"
	-I"$HMM_RS_ROOT/include")

# build OUT SRC... : rebuilds OUT when a source is newer.
build() {
	local out=$1; shift
	local src
	for src in "$@"; do
		if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
			log "tests: building $(basename "$out")"
			"$CC" "${CFLAGS[@]}" "${EXTRA[@]}" -o "$out" "$@" -lpthread
			return
		fi
	done
}

MM=$KSRC/tools/testing/selftests/mm
# Upstream code: its warnings are not ours to fix here.
EXTRA=(-w)
build "$OUT/hmm-tests" "$MM/hmm-tests.c" "$MM/vm_util.c" "$MM/hugepage_settings.c"

EXTRA=(-Wall -Werror)
HDR=$HMM_RS_ROOT/tools/testing/selftests/hmm-rs/hmm_rs.h
for src in "$HMM_RS_ROOT"/tools/testing/selftests/hmm-rs/*.c; do
	[ -e "$src" ] || continue
	out=$OUT/$(basename "$src" .c)
	# The shared header is a dependency of every test.
	[ -e "$out" ] && [ "$HDR" -nt "$out" ] && rm -f "$out"
	build "$out" "$src"
done

# Scripts run in the guest as they are.
for src in "$HMM_RS_ROOT"/tools/testing/selftests/hmm-rs/*.sh; do
	[ -e "$src" ] || continue
	install -m 755 "$src" "$OUT/$(basename "$src")"
done
