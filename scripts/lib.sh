# SPDX-License-Identifier: GPL-2.0
# Common environment for the hmm-rs scripts: sourced, never run.
#
# Everything that is not in git lives under $HMM_RS_CACHE, keyed so that
# a changed kernel, toolchain or config fragment gets a fresh build and an
# unchanged one is reused.

HMM_RS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HMM_RS_CACHE=${HMM_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hmm-rs}
HMM_RS_KVER=7.3
BINDGEN_VERSION=0.73.2
BINDGEN_ROOT=$HMM_RS_CACHE/bindgen-$BINDGEN_VERSION

export PATH=/usr/lib/llvm-19/bin:$BINDGEN_ROOT/bin:$PATH
# rustfmt and cargo come from the machine's rustup toolchain (never rustc:
# that one has no rust-src; RUSTC below is Debian's).
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && PATH=$PATH:$HOME/.cargo/bin ;; esac
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CLIPPY_DRIVER=/usr/bin/clippy-driver
export BINDGEN=$BINDGEN_ROOT/bin/bindgen
export LLVM=1

KSRC_TARBALL=/usr/src/linux-source-$HMM_RS_KVER.tar.xz
KSRC=${KSRC:-$HMM_RS_CACHE/src/linux-source-$HMM_RS_KVER}

log() { printf '[hmm-rs] %s\n' "$*" >&2; }
die() { printf '[hmm-rs] error: %s\n' "$*" >&2; exit 1; }

# kbuild_dir [debug]: the O= directory of the kernel build for the current
# source, toolchain and config fragments (PROFILE=1 in the environment: the
# profiling kernel of make bench PROFILE=1, kfrags).
kbuild_dir() {
	local debug=${1:-0} frags
	frags=$(kfrags "$debug")
	local pkgver key
	pkgver=$(dpkg-query -W -f='${Version}' "linux-source-$HMM_RS_KVER" 2>/dev/null || echo none)
	key=$( { cat $frags; echo "$pkgver"; "$RUSTC" --version 2>/dev/null;
		clang --version 2>/dev/null | head -1; echo "$BINDGEN_VERSION"; } |
		sha256sum | cut -c1-12)
	local flavour=base
	[ "$debug" = 1 ] && flavour=debug
	[ "${PROFILE:-0}" = 1 ] && flavour=$flavour-profile
	echo "$HMM_RS_CACHE/build/$pkgver-$flavour-$key"
}

# intree_dir [debug]: the O= directory of the in-tree build of the patch
# series (scripts/check-patches.sh): the key of kbuild_dir plus
# scripts/config/intree.config.
intree_dir() {
	local base key
	base=$(kbuild_dir "${1:-0}")
	key=$( { basename "$base"; cat "$HMM_RS_ROOT/scripts/config/intree.config"; } |
		sha256sum | cut -c1-12)
	echo "$HMM_RS_CACHE/intree/build-$(basename "$base" | sed -E 's/-[0-9a-f]{12}$//')-$key"
}

# pristine_branch: the branch of $HMM_RS_CACHE/git-$HMM_RS_KVER that holds
# the extracted tarball as one commit (scripts/mkpatches.sh makes it).
pristine_branch() {
	echo "pristine-$(sha256sum "$KSRC_TARBALL" | cut -c1-16)"
}

# verify_config CONFIG FRAGMENT...: every option the fragments set must
# have survived olddefconfig (a dependency that is not met silently drops
# it otherwise); lists what did not and fails.
verify_config() {
	local config=$1 f line sym have missing=0
	shift
	for f in "$@"; do
		while IFS= read -r line; do
			case "$line" in
			CONFIG_*=*)
				grep -qxF "$line" "$config" && continue ;;
			"# CONFIG_"*" is not set")
				sym=${line#\# }; sym=${sym%% *}
				grep -q "^$sym=" "$config" || continue ;;
			*) continue ;;
			esac
			sym=$(echo "$line" | sed -E 's/^# //; s/[= ].*//')
			have=$(grep -E "^(# )?$sym[= ]" "$config" || echo "$sym: not visible (unmet dependency)")
			echo "  missing: $line   (from $(basename "$f"); got: $have)" >&2
			missing=$((missing + 1))
		done <"$f"
	done
	[ "$missing" = 0 ] || { log "kernel config: $missing option(s) of the fragments did not end up in $config (unmet dependencies?)"; return 1; }
}

# kfrags [debug]: the config fragments, in the order they are applied
# (PROFILE=1 in the environment adds profile.config).
kfrags() {
	echo "$HMM_RS_ROOT/scripts/config/hmm-rs.config"
	[ "${1:-0}" = 1 ] && echo "$HMM_RS_ROOT/scripts/config/debug.config"
	[ "${PROFILE:-0}" = 1 ] && echo "$HMM_RS_ROOT/scripts/config/profile.config"
	return 0
}
