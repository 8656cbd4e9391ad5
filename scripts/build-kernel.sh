#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Configures and builds the guest kernel out of tree (O=) in the cache:
# tinyconfig + scripts/config/hmm-rs.config (+ debug.config with DEBUG=1),
# then checks that every option of the fragments really is in .config,
# and builds bzImage and the modules (test_hmm.ko is the C reference).
# A finished build is reused as long as its key (kernel package version,
# fragments, toolchain) is unchanged.
#
# Usage: build-kernel.sh [--print-kdir] [--config-only]   (DEBUG=1 for the debug kernel)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DEBUG=${DEBUG:-0}
O=$(kbuild_dir "$DEBUG")

if [ "${1:-}" = --print-kdir ]; then
	echo "$O"
	exit 0
fi

[ -f "$KSRC/Makefile" ] || die "no kernel source at $KSRC: run scripts/setup.sh"

if [ -f "$O/.hmm-rs-built" ] && [ "${1:-}" != --config-only ]; then
	log "kernel: reusing $O"
	exit 0
fi

KMAKE=(make -C "$KSRC" O="$O" LLVM=1 RUSTC="$RUSTC" RUSTDOC="$RUSTDOC"
       BINDGEN="$BINDGEN")

mkdir -p "$O"

log "kernel: configuring $O (tinyconfig + $(kfrags "$DEBUG" | xargs -n1 basename | xargs))"
"${KMAKE[@]}" -s tinyconfig
for f in $(kfrags "$DEBUG"); do
	cat "$f" >>"$O/.config"
done
# The fragments override tinyconfig on purpose: drop kconfig's notes.
"${KMAKE[@]}" -s olddefconfig 2> >(grep -v 'override: reassigning' >&2)

# Every option the fragments name must have survived olddefconfig.
# shellcheck disable=SC2046
verify_config "$O/.config" $(kfrags "$DEBUG") || die "kernel config: see above"
log "kernel: config verified (every fragment option is set)"
[ "${1:-}" = --config-only ] && exit 0

log "kernel: building bzImage and modules with $(nproc) jobs (cold: about 15 minutes on 2 cores)"
start=$(date +%s)
"${KMAKE[@]}" -j"$(nproc)" bzImage modules
touch "$O/.hmm-rs-built"
log "kernel: built in $(( $(date +%s) - start )) s: $O/arch/x86/boot/bzImage"
