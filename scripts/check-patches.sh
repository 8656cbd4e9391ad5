#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the kernel patch series in tree (make check-patches, and the
# "intree" boot of make check): the patches `make patches` wrote into
# build/patches/ are applied with git am to a clean copy of the pristine
# linux-source-7.3 tree, the kernel is built with the hmm-rs config plus
# CONFIG_TEST_HMM_RUST=m, and the tests are built the kselftest way from
# that tree. scripts/run-vm.sh then boots it (boot intree kernel=intree of
# scripts/plans/check) with rust_test_hmm.ko and test_hmm.ko from that
# build.
#
# The copy is a worktree of the repository make patches keeps
# ($HMM_RS_CACHE/git-7.3), at $HMM_RS_CACHE/intree/linux; every run resets
# it to the pristine commit (git checkout -f, git clean -fdx) and applies
# the series again. Its build directory is kept, keyed like the
# out-of-tree kernel's (fragments, toolchain, package) plus
# scripts/config/intree.config, so only what the series changed since the
# last good build is rebuilt: git am gives every file it writes a new
# mtime, so a file whose content is the same as in the last successful
# build gets its old mtime back (the build records its tree; a failed or
# interrupted build records none, and then everything the series touches
# is rebuilt). The same tree as the last good build builds nothing.
#
# --full (make check-patches FULL=1): first every patch in turn, in a
# build directory of its own (so the main one stays warm): patch 1, then
# 1-2, ... each must build (bzImage and modules, CONFIG_TEST_HMM_RUST=m
# once the patch that adds it is in) with no compiler warning in a file the
# series touches; then the whole series once more with the mm options it
# uses off (scripts/config/intree-off.config, a third build directory);
# the time of each step is printed.
#
# Besides the kernel: `make rustdoc` (warnings in the series' files fail),
# the kselftests (make -C tools/testing/selftests TARGETS=hmm-rs install)
# and hmm-tests (the mm selftests' Makefile), static, into
# KDIR/kselftest-install/, rebuilt from scratch when the tree changed.
#
# What the boot needs (bzImage, the two modules, the tests) is copied to
# build/intree/ of this tree before the lock is released: the boot of
# scripts/plans/check's "boot intree kernel=intree" reads it from there
# (run-vm.sh --kernel intree=build/intree --tests intree=build/intree/tests).
#
# Usage: check-patches.sh [--full]
#        (DEBUG=1: on top of the debug kernel's config)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export LC_ALL=C

DEBUG=${DEBUG:-0}
FULL=0
case "${1:-}" in
--full) FULL=1 ;;
'') ;;
*) die "check-patches: unknown argument $1" ;;
esac

PATCHDIR=$HMM_RS_ROOT/build/patches
KGIT=$HMM_RS_CACHE/git-$HMM_RS_KVER
WT=$HMM_RS_CACHE/intree/linux
O=$(intree_dir "$DEBUG")
TESTS=$O/kselftest-install
OUT=$HMM_RS_ROOT/build/intree
T0=$SECONDS

mapfile -t PATCHES < <(ls "$PATCHDIR"/[0-9][0-9][0-9][0-9]-*.patch 2>/dev/null |
	grep -v '/0000-cover-letter\.patch$')
[ "${#PATCHES[@]}" -gt 0 ] || die "check-patches: no series in $PATCHDIR (make patches)"
BASE=$(git --git-dir="$KGIT" rev-parse -q --verify "refs/heads/$(pristine_branch)^{commit}") ||
	die "check-patches: no pristine tree in $KGIT (make patches)"

# One run at a time: the worktree and build directories are shared by
# every clone of this repository on the machine.
mkdir -p "$HMM_RS_CACHE/intree"
exec 9>"$HMM_RS_CACHE/intree/lock"
flock -n 9 || { log "check-patches: waiting for another run ($HMM_RS_CACHE/intree/lock)"; flock 9; }

wt() {
	env -u GIT_DIR -u GIT_INDEX_FILE -u GIT_WORK_TREE \
		GIT_COMMITTER_NAME=hmm-rs GIT_COMMITTER_EMAIL=hmm-rs@localhost \
		GIT_COMMITTER_DATE="$(git --git-dir="$KGIT" log -1 --format=%cI "$BASE")" \
		git -C "$WT" "$@"
}

# apply N: the worktree is the pristine tree plus the first N patches,
# applied with git am.
apply() {
	if [ ! -e "$WT/.git" ]; then
		log "check-patches: checking the pristine tree out into $WT (once)"
		git --git-dir="$KGIT" worktree prune
		rm -rf "$WT"
		git --git-dir="$KGIT" worktree add -q --detach "$WT" "$BASE"
	fi
	wt am --abort >/dev/null 2>&1 || true
	wt checkout -q -f --detach "$BASE"
	wt clean -q -ffdx
	# As mailed: whatever the user's git config says about am.
	wt -c am.threeWay=false -c apply.whitespace=nowarn -c commit.gpgSign=false \
		-c core.hooksPath=/dev/null am -q --no-3way "${PATCHES[@]:0:$1}" ||
		die "check-patches: git am failed on the pristine tree (above)"
}

# restore_mtimes DIR: the files the series writes whose content is what
# DIR's last good build compiled get their old mtime back.
OLD_MTIME="@$(git --git-dir="$KGIT" log -1 --format=%ct "$BASE")"
restore_mtimes() {
	local stamp=$1/.hmm-rs-built-tree built n=0 f now then
	[ -f "$stamp" ] || return 0
	built=$(cat "$stamp")
	git --git-dir="$KGIT" cat-file -e "$built^{tree}" 2>/dev/null || return 0
	while IFS= read -r f; do
		[ -f "$WT/$f" ] || continue
		now=$(wt rev-parse -q --verify "HEAD:$f" || true)
		then=$(git --git-dir="$KGIT" rev-parse -q --verify "$built:$f" 2>/dev/null || true)
		[ -n "$now" ] && [ "$now" = "$then" ] || continue
		touch -h -d "$OLD_MTIME" "$WT/$f"
		n=$((n + 1))
	done < <(wt diff --name-only "$BASE" HEAD)
	log "check-patches: $n file(s) of the series unchanged since the last build of $1"
}

KMAKE=(make -C "$WT" LLVM=1 RUSTC="$RUSTC" RUSTDOC="$RUSTDOC" BINDGEN="$BINDGEN")

# has_driver: whether the worktree has the patch that adds TEST_HMM_RUST.
has_driver() { grep -q '^config TEST_HMM_RUST$' "$WT/lib/Kconfig.debug"; }

# configure DIR [FRAGMENT...]: tinyconfig, then the fragments (default:
# the kernel's and intree.config), checked to be in .config (the driver's
# option once the tree has it) after every call.
configure() {
	local o=$1 frags intree=$HMM_RS_ROOT/scripts/config/intree.config
	shift
	frags="${*:-$(kfrags "$DEBUG") $intree}"
	if [ -f "$o/.config" ]; then
		# A bisection step gets CONFIG_TEST_HMM_RUST once its Kconfig is in.
		if [ $# = 0 ] && has_driver && ! grep -q '^CONFIG_TEST_HMM_RUST=' "$o/.config"; then
			grep '^CONFIG_' "$intree" >>"$o/.config"
			"${KMAKE[@]}" O="$o" -s olddefconfig
		fi
	else
		mkdir -p "$o"
		"${KMAKE[@]}" O="$o" -s tinyconfig
		# shellcheck disable=SC2086
		cat $frags >>"$o/.config"
		"${KMAKE[@]}" O="$o" -s olddefconfig 2> >(grep -v 'override: reassigning' >&2)
	fi
	# A bisection step before the patch that adds TEST_HMM_RUST lacks it.
	if [ $# = 0 ] && ! has_driver; then
		# shellcheck disable=SC2046
		verify_config "$o/.config" $(kfrags "$DEBUG") || die "check-patches: config (above)"
	else
		# shellcheck disable=SC2086
		verify_config "$o/.config" $frags || die "check-patches: config (above)"
	fi
}

# build DIR WHAT: the kernel (WHAT: bzImage and modules) with no compiler
# warning in a file the series touches.
build() {
	local o=$1 what=$2 start=$SECONDS tree
	tree=$(wt rev-parse HEAD^{tree})
	restore_mtimes "$o"
	if [ "$(cat "$o/.hmm-rs-built-tree" 2>/dev/null)" = "$tree" ] &&
	   [ -f "$o/arch/x86/boot/bzImage" ]; then
		log "check-patches: $what: this tree is built already ($o)"
		return 0
	fi
	rm -f "$o/.hmm-rs-built-tree" "$o/.hmm-rs-tests-tree"
	# A module the build no longer makes must not be booted from before.
	rm -f "$o"/lib/test_hmm_rs/*.ko
	log "check-patches: $what: building in $o with $(nproc) jobs"
	if ! "${KMAKE[@]}" O="$o" -j"$(nproc)" bzImage modules >"$o/.hmm-rs-build.log" 2>&1; then
		{ grep -E -A12 'warning:|error(:|\[)' "$o/.hmm-rs-build.log" || tail -20 "$o/.hmm-rs-build.log"; } |
			head -60 >&2 || true
		die "check-patches: $what: the build failed (log: $o/.hmm-rs-build.log)"
	fi
	check_warnings "$o/.hmm-rs-build.log" "$what"
	if grep -q '^CONFIG_TEST_HMM_RUST=m' "$o/.config"; then
		grep -qx 'lib/test_hmm_rs/rust_test_hmm.o' "$o/modules.order" &&
			[ -f "$o/lib/test_hmm_rs/rust_test_hmm.ko" ] ||
			die "check-patches: $what: CONFIG_TEST_HMM_RUST=m built no lib/test_hmm_rs/rust_test_hmm.ko"
	fi
	echo "$tree" >"$o/.hmm-rs-built-tree"
	log "check-patches: $what: built in $((SECONDS - start)) s"
}

# check_warnings LOG WHAT: a warning that names a file the series adds or
# changes fails the step: "path:line:col: warning:" (C), "warning: ..."
# then " --> path:line:col" (Rust, rustdoc), "path.o: warning: objtool:",
# "WARNING: modpost: ... path.o", "path/Kconfig:N:warning:"; paths absolute
# or relative, an object file standing for its source.
check_warnings() {
	local files
	files=$(wt diff --name-only "$BASE" HEAD) && [ -n "$files" ] ||
		die "check-patches: $2: cannot list the series' files"
	FILES=$files WT=$WT python3 - "$1" "$2" <<'PY' || die "check-patches: $2: warnings in the series' files (above; log: $1)"
import os, re, sys
log, what = sys.argv[1], sys.argv[2]
files = set(os.environ["FILES"].split("\n"))
stems = {os.path.splitext(f)[0]: f for f in files}
wt = os.environ["WT"].rstrip("/") + "/"
lines = open(log, errors="replace").read().split("\n")
path = re.compile(r"[A-Za-z0-9_./+-]+")
bad = set()
for i, line in enumerate(lines):
    if not re.search(r"warning|error", line, re.I):
        continue
    # The line itself, and the " --> path" under a Rust diagnostic.
    ctxs = [line] + [l for l in lines[i + 1:i + 4] if re.match(r"\s*--> ", l)][:1]
    for ctx in ctxs:
        for p in path.findall(ctx):
            p = p.split(":")[0]
            if p.startswith(wt):
                p = p[len(wt):]
            while p.startswith(("./", "../")):
                p = p.split("/", 1)[1]
            stem, ext = os.path.splitext(p)
            if p in files or p in stems or (ext in (".o", ".ko") and stem in stems):
                bad.add(p)
for p in sorted(bad):
    print(f"[hmm-rs] check-patches: {what}: a warning names {p}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

if [ "$FULL" = 1 ]; then
	B=$O-bisect
	# Same source path, same config: a copy of the main build is a warm
	# start (Kbuild then rebuilds what the first step changes).
	if [ ! -d "$B" ] && [ -f "$O/.hmm-rs-built-tree" ]; then
		log "check-patches: FULL=1: $B starts as a copy of $O"
		cp -a --reflink=auto "$O" "$B"
	fi
	log "check-patches: FULL=1: each of the ${#PATCHES[@]} patches in turn, in $B"
	times=()
	for i in $(seq 1 "${#PATCHES[@]}"); do
		apply "$i"
		start=$SECONDS
		configure "$B"
		build "$B" "patch $i/${#PATCHES[@]} ($(wt log -1 --format=%s))"
		times+=("$(printf '%2d/%d %5d s  %s' "$i" "${#PATCHES[@]}" $((SECONDS - start)) "$(wt log -1 --format=%s)")")
	done
	# The whole series with the mm options off (intree-off.config): every
	# #[cfg] and #ifdef gate compiled out.
	start=$SECONDS
	OFFCFG=$HMM_RS_ROOT/scripts/config/intree-off.config
	OFF=$O-off-$(sha256sum "$OFFCFG" | cut -c1-12)
	configure "$OFF" "$OFFCFG"
	build "$OFF" "the series with the mm options off"
	times+=("$(printf '      %5d s  %s' $((SECONDS - start)) "the series, mm options off (intree-off.config)")")
	log "check-patches: FULL=1: every patch builds on its own:"
	printf '[hmm-rs]   %s\n' "${times[@]}" >&2
fi

apply "${#PATCHES[@]}"
log "check-patches: ${#PATCHES[@]} patches applied with git am to the pristine tree ($WT)"
configure "$O"
build "$O" "the series"

# rustdoc of the kernel crate, with the series' modules.
if [ ! -f "$O/.hmm-rs-rustdoc-tree" ] || [ "$(cat "$O/.hmm-rs-rustdoc-tree")" != "$(cat "$O/.hmm-rs-built-tree")" ]; then
	log "check-patches: make rustdoc"
	"${KMAKE[@]}" O="$O" -j"$(nproc)" rustdoc >"$O/.hmm-rs-rustdoc.log" 2>&1 ||
		{ tail -20 "$O/.hmm-rs-rustdoc.log" >&2; die "check-patches: make rustdoc failed (log: $O/.hmm-rs-rustdoc.log)"; }
	check_warnings "$O/.hmm-rs-rustdoc.log" "make rustdoc"
	cp "$O/.hmm-rs-built-tree" "$O/.hmm-rs-rustdoc-tree"
fi

# The tests, built from the tree the kselftest way (static: the guest has
# no libc), from scratch whenever the tree changed.
if [ "$(cat "$O/.hmm-rs-tests-tree" 2>/dev/null)" != "$(cat "$O/.hmm-rs-built-tree")" ] ||
   [ ! -x "$TESTS/hmm-rs/hmm-tests" ]; then
	log "check-patches: kselftests: make -C tools/testing/selftests TARGETS=hmm-rs install"
	rm -rf "$TESTS" "$O/kselftest" "$O/.hmm-rs-tests-tree"
	"${KMAKE[@]}" O="$O" -s headers
	make -C "$WT/tools/testing/selftests" O="$O" CC="gcc -static" -s TARGETS=hmm-rs \
		FORCE_TARGETS=1 INSTALL_PATH="$TESTS" install >/dev/null ||
		die "check-patches: the hmm-rs kselftests do not build"
	mkdir -p "$O/kselftest/mm"
	make -C "$WT/tools/testing/selftests/mm" O="$O" CC="gcc -static" -s \
		OUTPUT="$O/kselftest/mm" "$O/kselftest/mm/hmm-tests" >/dev/null ||
		die "check-patches: hmm-tests does not build"
	cp "$O/kselftest/mm/hmm-tests" "$TESTS/hmm-rs/"
	cp "$O/.hmm-rs-built-tree" "$O/.hmm-rs-tests-tree"
fi

# What the boot uses, copied out while the lock is held: another clone's
# run may rebuild $O while this one's guest runs.
rm -rf "$OUT"
mkdir -p "$OUT/arch/x86/boot" "$OUT/lib/test_hmm_rs"
cp "$O/arch/x86/boot/bzImage" "$OUT/arch/x86/boot/"
cp "$O/lib/test_hmm_rs/rust_test_hmm.ko" "$OUT/lib/test_hmm_rs/"
cp "$O/lib/test_hmm.ko" "$OUT/lib/"
cp -r "$TESTS/hmm-rs" "$OUT/tests"
log "check-patches: the series is built; kernel, modules and tests in $OUT ($((SECONDS - T0)) s)"
