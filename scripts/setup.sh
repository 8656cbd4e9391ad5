#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs what hmm-rs needs on a Debian 12 (bookworm) machine: the Linux
# 7.3 source from trixie-backports (pinned low, so nothing else is taken
# from there), Debian's rustc-web 1.96 with its rust-src, LLVM 19, the
# kernel build dependencies, busybox and QEMU, and bindgen-cli from
# crates.io into the cache. Idempotent: what is present is skipped.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

step() { log "setup: $*"; }
trap 'die "setup failed in step: ${CURRENT_STEP:-?} (see the output above)"' ERR

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo

PKGS="linux-source-$HMM_RS_KVER rustc-web rust-web-src clang-19 lld-19 llvm-19
libclang-19-dev rust-web-clippy bc bison flex libelf-dev libssl-dev cpio rsync busybox-static
qemu-system-x86 xz-utils kmod gcc libc6-dev make python3"

missing=
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing="$missing $p"
done

if [ -n "$missing" ]; then
	CURRENT_STEP="apt sources"
	src=/etc/apt/sources.list.d/hmm-rs-trixie-backports.sources
	if [ ! -f "$src" ]; then
		step "adding trixie-backports (pin priority 1) for linux-source-$HMM_RS_KVER"
		$SUDO tee "$src" >/dev/null <<'EOT'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
		$SUDO tee /etc/apt/preferences.d/hmm-rs-trixie-backports >/dev/null <<'EOT'
Package: *
Pin: release n=trixie-backports
Pin-Priority: 1
EOT
	fi
	CURRENT_STEP="apt-get update"
	step "apt-get update"
	$SUDO apt-get update -q
	CURRENT_STEP="apt-get install$missing"
	step "installing:$missing"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
		--no-install-recommends $missing
else
	step "Debian packages: all present"
fi

CURRENT_STEP="bindgen-cli $BINDGEN_VERSION"
if [ -x "$BINDGEN" ] && "$BINDGEN" --version | grep -q "$BINDGEN_VERSION"; then
	step "bindgen $BINDGEN_VERSION: present"
else
	step "cargo install bindgen-cli $BINDGEN_VERSION into $BINDGEN_ROOT"
	command -v cargo >/dev/null || die "cargo not found (needed to build bindgen-cli)"
	cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked \
		--root "$BINDGEN_ROOT"
fi

CURRENT_STEP="kernel source"
if [ ! -f "$KSRC/.hmm-rs-extracted" ] ||
   [ "$KSRC_TARBALL" -nt "$KSRC/.hmm-rs-extracted" ]; then
	step "extracting $KSRC_TARBALL into $(dirname "$KSRC")"
	rm -rf "$KSRC"
	mkdir -p "$(dirname "$KSRC")"
	tar -C "$(dirname "$KSRC")" -xf "$KSRC_TARBALL"
	touch "$KSRC/.hmm-rs-extracted"
else
	step "kernel source: $KSRC"
fi
step "done"
