#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Writes the kernel patch series of hmm-rs (make patches): a git
# format-patch series with a cover letter against the pristine Debian
# linux-source-7.3 tree, generated from this repository's files, so that
# what is sent is what make check tests. patches/series/README says how
# to read it.
#
# 1. The extracted source ($KSRC, only read) becomes one commit of a bare
#    repository, $HMM_RS_CACHE/git-7.3, made once per tarball (by its
#    sha256; about a minute) and reused after.
# 2. On that commit, without a checkout (a private index, blobs written
#    with hash-object), the fixes patches/[0-9]*.patch are applied as git am
#    would, then each step patches/series/NN-name.msg runs: the function
#    step_name below copies this repository's files to their places in
#    the tree, and the commit gets NN-name.msg as its message and the
#    Signed-off-by of this repository's git identity. The branch
#    hmm-rs-series of that repository ends up on the last commit.
# 3. git format-patch --cover-letter writes OUTDIR (default
#    build/patches/); the cover letter is patches/series/cover-letter.txt
#    with its @PLACEHOLDERS@ filled in.
# 4. scripts/checkpatch.pl --strict runs on every patch (full output in
#    OUTDIR.checkpatch.log); a warning patches/series/checkpatch-exceptions
#    does not list for that patch makes the script fail, after writing the
#    series.
#
# Files are copied as they are, except for these rewrites, each checked
# (the script fails if what it rewrites is not there, or is left over):
#  - the crate root rust/rust_test_hmm_main.rs: its out-of-tree block (the
#    bindings module and the #[path] modules of rust/kernel/) becomes
#    `mod bindings;` and `use kernel::{miscdevice_data, mm, page_ext,
#    task_ext};`, so that the driver's `crate::mm::...` paths resolve in tree;
#  - bindings::HMM_RS_{HPAGE_PMD_ORDER,PMD_SHIFT,PUD_SHIFT} become
#    bindings::{PMD_ORDER,PMD_SHIFT,PUD_SHIFT} (their in-tree const helpers);
#  - migrate_pfn_of() becomes pub (the driver, a crate of its own in tree,
#    logs it at load);
#  - rust/helpers/memremap.c: rust_helper_zone_device_folio_init() gets
#    #ifdef CONFIG_ZONE_DEVICE;
#  - the driver's bindings module is new in tree
#    (patches/series/files/lib/test_hmm_rs/bindings.rs.in, with the
#    FromBytes/AsBytes impls of rust/bindings/mod.rs pasted in).
# patches/series/README lists the source edits that would drop them.
# The abstractions themselves need no path rewrite: they name the kernel
# crate `kernel::` (the kernel crate has `extern crate self as kernel`, and
# some of its files do the same) and their own modules `crate::mm::...`,
# `crate::task_ext`, which are their paths in the kernel crate too.
#
# Usage: mkpatches.sh [OUTDIR]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
export LC_ALL=C

R=$HMM_RS_ROOT
SERIES=$R/patches/series
FILES=$SERIES/files
OUT=${1:-$R/build/patches}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
PREFIX=${HMM_RS_PATCH_PREFIX:-RFC PATCH}
KGIT=$HMM_RS_CACHE/git-$HMM_RS_KVER
T0=$SECONDS

[ -f "$KSRC/.hmm-rs-extracted" ] || die "no extracted kernel source at $KSRC: run scripts/setup.sh"
[ -f "$KSRC_TARBALL" ] || die "no $KSRC_TARBALL: run scripts/setup.sh"

# This repository, whatever GIT_* the caller has set.
hgit() { env -u GIT_DIR -u GIT_INDEX_FILE -u GIT_WORK_TREE git -C "$R" "$@"; }
# The git identity, else (a CI checkout has none) the last commit's author.
NAME=$(hgit config user.name || hgit log -1 --format=%an) || die "no git identity in $R"
EMAIL=$(hgit config user.email || hgit log -1 --format=%ae) || die "no git identity in $R"
ME="$NAME <$EMAIL>"
DESCRIBE=$(hgit describe --always --dirty)
# Every date in the series is the date of this repository's last commit:
# the same tree gives the same series, byte for byte.
DATE=$(hgit log -1 --format=%cI)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hmm-rs-patches.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IDX=$WORK/index

# The kernel repository, on the series' own index; commits by A_NAME,
# A_EMAIL, A_DATE (this repository's identity and date unless set).
kgit() {
	env -u GIT_WORK_TREE GIT_INDEX_FILE="$IDX" GIT_DIR="$KGIT" \
		GIT_AUTHOR_NAME="${A_NAME:-$NAME}" GIT_AUTHOR_EMAIL="${A_EMAIL:-$EMAIL}" \
		GIT_AUTHOR_DATE="${A_DATE:-$DATE}" \
		GIT_COMMITTER_NAME="$NAME" GIT_COMMITTER_EMAIL="$EMAIL" \
		GIT_COMMITTER_DATE="$DATE" git "$@"
}

# --- 1. The pristine tree, one commit per tarball.

PRISTINE=$(pristine_branch)
PKGVER=$(dpkg-query -W -f='${Version}' "linux-source-$HMM_RS_KVER" 2>/dev/null || echo unknown)
[ -d "$KGIT" ] || git init -q --bare "$KGIT"
if ! BASE=$(kgit rev-parse -q --verify "refs/heads/$PRISTINE^{commit}"); then
	log "patches: importing $KSRC into $KGIT (once per tarball)"
	# git reads the extracted tree as its work tree and writes nothing
	# there: the index is ours, the objects go to $KGIT. -f: the tarball's
	# files, whatever the kernel's .gitignore files say.
	GIT_INDEX_FILE=$IDX GIT_WORK_TREE=$KSRC GIT_DIR=$KGIT \
		git -c core.autocrlf=false add -A -f -- . ':(exclude).hmm-rs-extracted'
	tree=$(GIT_INDEX_FILE=$IDX GIT_DIR=$KGIT git write-tree)
	rm -f "$IDX"
	tdate="@$(stat -c %Y "$KSRC_TARBALL") +0000"
	BASE=$(echo "linux-source-$HMM_RS_KVER $PKGVER (Debian), as extracted" |
		GIT_DIR=$KGIT GIT_AUTHOR_NAME=Debian GIT_AUTHOR_EMAIL=debian-kernel@lists.debian.org \
		GIT_AUTHOR_DATE="$tdate" GIT_COMMITTER_NAME=Debian \
		GIT_COMMITTER_EMAIL=debian-kernel@lists.debian.org GIT_COMMITTER_DATE="$tdate" \
		git commit-tree "$tree")
	git --git-dir="$KGIT" update-ref "refs/heads/$PRISTINE" "$BASE"
	log "patches: imported in $((SECONDS - T0)) s"
fi
kgit read-tree "$BASE"
HEAD=$BASE
KVERSION=$(kgit show "$BASE:Makefile" | awk '/^VERSION =/{v=$3} /^PATCHLEVEL =/{p=$3}
	/^SUBLEVEL =/{s=$3} END{print v "." p "." s}')

# --- Tree access: index entries, no checkout.

kget() { kgit cat-file blob ":$1"; }
khas() { kgit cat-file -e ":$1" 2>/dev/null; }
# kput PATH FILE [MODE]
kput() {
	local sha
	sha=$(kgit hash-object -w -- "$2")
	kgit update-index --add --cacheinfo "${3:-100644},$sha,$1"
}
# kedit PATH CMD...: replaces PATH's contents with CMD's output on them.
kedit() {
	local path=$1 f=$WORK/edit
	shift
	kget "$path" > "$f.in"
	"$@" < "$f.in" > "$f.out" || die "editing $path failed"
	cmp -s "$f.in" "$f.out" && die "editing $path changed nothing"
	kput "$path" "$f.out"
}
# kcopy SRC DST: a file of this repository, as it is (keeping its x bit).
kcopy() {
	local mode=100644
	[ -f "$R/$1" ] || die "no $1"
	[ -x "$R/$1" ] && mode=100755
	khas "$2" && die "$2 exists in the kernel tree already"
	kput "$2" "$R/$1" $mode
}

# --- Text edits (filters: stdin to stdout), each failing if it does not apply.

# insert_after LINE BLOCK: BLOCK after the one line that is LINE.
insert_after() {
	LINE=$1 BLOCK=$2 awk '
		{ print }
		$0 == ENVIRON["LINE"] { n++; print ENVIRON["BLOCK"] }
		END { if (n != 1) { print "insert_after: " n " lines are: " ENVIRON["LINE"] > "/dev/stderr"; exit 1 } }'
}

# insert_sorted MATCH PRE POST KEY BLOCK [AFTER]: BLOCK before the first
# line matching MATCH (after the first line matching AFTER) whose key (the
# line without PRE and POST) sorts after KEY, above the attributes,
# #if or /// lines right before it; or after the last such line.
insert_sorted() {
	MATCH=$1 PRE=$2 POST=$3 KEY=$4 BLOCK=$5 AFTER=${6:-} awk '
	{ line[NR] = $0 }
	END {
		m = ENVIRON["MATCH"]; key = ENVIRON["KEY"]; start = 1
		if (ENVIRON["AFTER"] != "") {
			for (i = 1; i <= NR && line[i] !~ ENVIRON["AFTER"]; i++) ;
			if (i > NR) { print "insert_sorted: no " ENVIRON["AFTER"] > "/dev/stderr"; exit 1 }
			start = i + 1
		}
		at = 0; last = 0
		for (i = start; i <= NR; i++) {
			if (line[i] !~ m) continue
			k = line[i]; sub(ENVIRON["PRE"], "", k); sub(ENVIRON["POST"], "", k)
			if (k == key) { print "insert_sorted: " key " is there already" > "/dev/stderr"; exit 1 }
			last = i
			if (!at && k > key) at = i
		}
		if (!last) { print "insert_sorted: nothing matches " m > "/dev/stderr"; exit 1 }
		if (at) {
			while (at > 1 && line[at - 1] ~ /^(#\[|#if|\/\/\/)/) at--
		} else {
			at = last + 1
			while (at <= NR && line[at] ~ /^#endif/) at++
		}
		for (i = 1; i < at; i++) print line[i]
		print ENVIRON["BLOCK"]
		for (i = at; i <= NR; i++) print line[i]
	}'
}

# c_helpers DROP GUARDS: a helper file without the functions DROP names
# (helper names without rust_helper_, space separated), with those GUARDS
# names (name=CONFIG_X ...) inside #ifdef CONFIG_X. A function is the
# block from the line after the previous function (its comment, and the
# blank line before it) to its closing "}".
c_helpers() {
	DROP=$1 GUARDS=$2 awk '
	BEGIN {
		n = split(ENVIRON["DROP"], d, " "); for (i = 1; i <= n; i++) drop[d[i]] = 1
		n = split(ENVIRON["GUARDS"], g, " ")
		for (i = 1; i <= n; i++) { split(g[i], kv, "="); guard[kv[1]] = kv[2]; unused[kv[1]] = 1 }
	}
	{ line[NR] = $0 }
	END {
		for (f = 1; f <= NR && line[f] !~ /^__rust_helper/; f++) ;
		for (h = f - 1; h > 0 && line[h] !~ /^#include/; h--) ;
		for (i = 1; i <= h; i++) print line[i]
		start = h + 1
		for (i = start; i <= NR; i++) {
			if (line[i] != "}") continue
			name = ""
			for (j = start; j <= i; j++)
				if (match(line[j], /rust_helper_[A-Za-z0-9_]+\(/)) {
					name = substr(line[j], RSTART + 12, RLENGTH - 13); break
				}
			if (name == "") { print "c_helpers: a block without a helper" > "/dev/stderr"; exit 1 }
			if (!(name in drop)) {
				for (j = start; j <= i && line[j] == ""; j++) print line[j]
				if (name in guard) { print "#ifdef " guard[name]; delete unused[name] }
				for (; j <= i; j++) print line[j]
				if (name in guard) print "#endif"
			}
			start = i + 1
		}
		for (j = start; j <= NR; j++) if (line[j] != "") { print "c_helpers: text after the last helper" > "/dev/stderr"; exit 1 }
		for (k in unused) { print "c_helpers: no helper " k " to guard" > "/dev/stderr"; exit 1 }
	}'
}

# c_merge THEIRS: a kernel helper file (stdin) with the helpers of THEIRS
# (one of ours, filtered) appended and their #includes merged, sorted.
c_merge() {
	awk -v ours="$1" '
	{ line[NR] = $0 }
	END {
		while ((getline l < ours) > 0) o[++no] = l
		for (i = 1; i <= no; i++) if (o[i] ~ /^#include/) { inc[o[i]] = 1; ol = i }
		for (i = 1; i <= NR && line[i] !~ /^__rust_helper/; i++) if (line[i] ~ /^#include/) { if (!fi) fi = i; li = i; inc[line[i]] = 1 }
		if (!fi || !ol) { print "c_merge: no #include" > "/dev/stderr"; exit 1 }
		n = 0; for (k in inc) s[++n] = k
		for (i = 2; i <= n; i++) for (j = i; j > 1 && s[j - 1] > s[j]; j--) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
		for (i = 1; i < fi; i++) print line[i]
		for (i = 1; i <= n; i++) print s[i]
		for (i = li + 1; i <= NR; i++) print line[i]
		for (i = ol + 1; i <= no; i++) print o[i]
	}'
}

# --- Rust files.

# In-tree names of the out-of-tree bindings' page table constants.
RENAMES=(HMM_RS_HPAGE_PMD_ORDER:PMD_ORDER HMM_RS_PMD_SHIFT:PMD_SHIFT HMM_RS_PUD_SHIFT:PUD_SHIFT)

# rs_in_tree: a Rust file as it is in tree (the renames above).
rs_in_tree() {
	local sedargs=() r
	for r in "${RENAMES[@]}"; do
		sedargs+=(-e "s/\\b${r%%:*}\\b/${r#*:}/g")
	done
	sed "${sedargs[@]}"
}

# The kernel-crate modules of this series, and the ones added so far.
MODS="task_ext page_ext miscdevice_data memremap mmu_notifier hmm migrate"
ADDED=" "

# rs_deps FILE: the modules of this series that FILE's code names.
rs_deps() {
	local m
	for m in $MODS; do
		sed -e 's|//.*||' "$1" | grep -qE "(^|[^a-z_])$m::" && echo "$m"
	done
	return 0
}

# kcopy_rs SRC DST: a Rust file of rust/kernel/ into the kernel crate;
# every module of this series it uses must be in by now or come with
# this step ($STEP_MODS).
kcopy_rs() {
	local src=$1 dst=$2 f=$WORK/rs d
	[ -f "$R/$src" ] || die "no $src"
	rs_in_tree < "$R/$src" > "$f"
	for d in $(rs_deps "$f"); do
		case "$ADDED $STEP_MODS " in
		*" $d "*) ;;
		*) die "$src uses $d, which is not in the kernel crate before this step" ;;
		esac
	done
	grep -nE '#\[path|crate::layout|HMM_RS_(HPAGE_PMD_ORDER|PMD_SHIFT|PUD_SHIFT)' "$f" &&
		die "$src: out-of-tree paths or names left (above)"
	[ "${REPLACE:-0}" = 1 ] || ! khas "$dst" || die "$dst exists in the kernel tree already"
	kput "$dst" "$f"
}

# expect_dead REASON LINE...: each LINE (an item another module uses, one
# a later patch adds) gets #[expect(dead_code, reason = REASON)] above it,
# so that the patch builds without a warning; the later patch copies the
# file again (REPLACE=1 kcopy_rs), which drops the attributes.
expect_dead() {
	local reason=$1
	shift
	REASON=$reason awk -v lines="$(printf '%s\n' "$@")" '
		BEGIN { n = split(lines, want, "\n"); for (i = 1; i <= n; i++) w[want[i]] = 1 }
		$0 in w { ind = $0; sub(/[^ ].*/, "", ind)
			print ind "#[expect(dead_code, reason = \"" ENVIRON["REASON"] "\")]"; found++ }
		{ print }
		END { if (found != n) exit 1 }'
}

# register_mod FILE MOD [CFG]: `pub mod MOD;` in FILE (rust/kernel/lib.rs
# or mm.rs), in order, under #[cfg(CFG)] if given.
register_mod() {
	local block="pub mod $2;"
	[ -n "${3:-}" ] && block="#[cfg($3)]"$'\n'"$block"
	kedit "$1" insert_sorted '^(pub )?mod [a-z_0-9]+;$' '^(pub )?mod ' ';$' "$2" "$block"
}

# The kernel configuration each mm module needs to build: what the C
# functions it calls need (memremap_pages() and request_free_mem_region()
# DEVICE_PRIVATE, migrate_pfn() MIGRATION, make_device_exclusive()
# DEVICE_PRIVATE, mmu_interval_*() MMU_NOTIFIER, hmm_range_fault()
# HMM_MIRROR).
CFG_MEMREMAP='all(CONFIG_DEVICE_PRIVATE, CONFIG_MIGRATION)'
CFG_NOTIFIER='all(CONFIG_DEVICE_PRIVATE, CONFIG_MIGRATION, CONFIG_MMU_NOTIFIER)'
CFG_HMM='all(CONFIG_DEVICE_PRIVATE, CONFIG_MIGRATION, CONFIG_HMM_MIRROR)'

# --- The steps, one per patches/series/NN-name.msg.

step_rust_helpers() {
	local f name ours dst kernel_helpers drop guards
	kernel_helpers=$(kgit grep -h -o -E 'rust_helper_[A-Za-z0-9_]+\(' "$BASE" -- rust/helpers/ |
		sed 's/^rust_helper_//; s/($//' | sort -u)
	for f in $(hgit ls-files 'rust/helpers/*.c'); do
		name=${f##*/}
		[ "$name" = helpers.c ] && continue
		dst=rust/helpers/$name
		# A helper the kernel has already is the kernel's.
		drop=$(grep -oE 'rust_helper_[A-Za-z0-9_]+\(' "$R/$f" | sed 's/^rust_helper_//; s/($//' |
			sort -u | comm -12 - <(echo "$kernel_helpers") | tr '\n' ' ')
		[ -n "$drop" ] && log "patches: $f: the kernel has $drop already"
		guards=
		[ "$name" = memremap.c ] && guards=zone_device_folio_init=CONFIG_ZONE_DEVICE
		ours=$WORK/$name
		c_helpers "$drop" "$guards" < "$R/$f" > "$ours"
		grep -q '^__rust_helper' "$ours" || continue
		if khas "$dst"; then
			kedit "$dst" c_merge "$ours"
		else
			kput "$dst" "$ours"
			local block="#include \"$name\""
			case $name in
			migrate.c) block=$'#ifdef CONFIG_MIGRATION\n'"$block"$'\n#endif' ;;
			mmu_notifier.c) block=$'#ifdef CONFIG_MMU_NOTIFIER\n'"$block"$'\n#endif' ;;
			esac
			kedit rust/helpers/helpers.c insert_sorted '^#include "[^"]*"$' '^#include "' '"$' \
				"$name" "$block"
		fi
	done
	# One definition of each helper name in the tree.
	local dups
	dups=$(kgit grep -h -o -E '^(__rust_helper .*|)rust_helper_[A-Za-z0-9_]+\(' "$(kgit write-tree)" -- rust/helpers/ |
		grep -oE 'rust_helper_[A-Za-z0-9_]+' | sort | uniq -d)
	[ -z "$dups" ] || die "helpers defined twice: $dups"
}

# The lines of include/hmm_rs_bindings.h, by what they become in tree
# (TAG<tab>line): inc (an #include for bindings_helper.h), uapi (the
# driver's headers), gfp, mm and ioctl (const helpers), geom (the page table
# constants, renamed) and layout (the layout checks: not in tree).
# Anything else stops the script: this function must learn about it.
bindings_lines() {
	awk '
	{
		l = $0
		if (incomment) { if (l ~ /\*\//) { sub(/^.*\*\//, "", l); incomment = 0 } else next }
		while (l ~ /\/\*/) {
			if (l ~ /\/\*.*\*\//) sub(/\/\*.*\*\//, "", l)
			else { sub(/\/\*.*$/, "", l); incomment = 1 }
		}
		sub(/[ \t]+$/, "", l)
		if (l == "") next
		if (cont) { cont = (l ~ /\\$/); print "layout\t" l; next }
		if (l ~ /^#include <linux\/[^>]+>$/) tag = "inc"
		else if (l ~ /^#include "/) tag = "uapi"
		else if (l ~ /^const gfp_t RUST_CONST_HELPER_/) tag = "gfp"
		else if (l ~ /^const unsigned long RUST_CONST_HELPER_(ZONES_PGSHIFT|XA_CHUNK_SHIFT) /) tag = "mm"
		else if (l ~ /^const unsigned int RUST_CONST_HELPER_(HMM_DMIRROR_|HMM_RS_MIGRATE )/) tag = "ioctl"
		else if (l ~ /^const unsigned int RUST_CONST_HELPER_HMM_RS_(PMD_SHIFT|PUD_SHIFT|HPAGE_PMD_ORDER) /) tag = "geom"
		else if (l ~ /^#define HMM_RS_(OFF|SIZE)\(/) { tag = "layout"; cont = (l ~ /\\$/) }
		else if (l ~ /^HMM_RS_(OFF|SIZE)\(/) tag = "layout"
		else { print "include/hmm_rs_bindings.h: what is this in tree? " l > "/dev/stderr"; exit 1 }
		print tag "\t" l
	}' "$R/include/hmm_rs_bindings.h"
}

# tagged TAG: the lines of bindings_lines' output (stdin) tagged TAG.
tagged() { awk -F'\t' -v t="$1" '$1 == t { print $2 }'; }

step_rust_bindings() {
	local lines inc r block key
	lines=$(bindings_lines) || die "include/hmm_rs_bindings.h: unknown lines"
	while read -r inc; do
		kget rust/bindings/bindings_helper.h > "$WORK/bh.h"
		grep -qxF "$inc" "$WORK/bh.h" && continue
		key=${inc#'#include <'}
		kedit rust/bindings/bindings_helper.h insert_sorted '^#include <linux/[^>]*>$' \
			'^#include <' '>$' "${key%>}" "$inc" '^#include <kunit/test.h>$'
	done < <(tagged inc <<< "$lines")
	block=$(tagged gfp <<< "$lines")
	[ -n "$block" ] || die "no GFP const helpers in include/hmm_rs_bindings.h"
	kedit rust/bindings/bindings_helper.h insert_after \
		'const gfp_t RUST_CONST_HELPER___GFP_NOWARN = ___GFP_NOWARN;' "$block"
	block=
	for r in "${RENAMES[@]}"; do
		[[ $'\n'$(tagged geom <<< "$lines") == *$'\n'"const unsigned int RUST_CONST_HELPER_${r%%:*} "* ]] ||
			die "include/hmm_rs_bindings.h has no ${r%%:*} any more"
		block+=${block:+$'\n'}"const unsigned int RUST_CONST_HELPER_${r#*:} = ${r#*:};"
	done
	kedit rust/bindings/bindings_helper.h insert_after \
		'const size_t RUST_CONST_HELPER_PAGE_SIZE = PAGE_SIZE;' "$block"
	block=$(tagged mm <<< "$lines")
	[ -n "$block" ] || die "no ZONES_PGSHIFT const helper in include/hmm_rs_bindings.h"
	kedit rust/bindings/bindings_helper.h insert_after \
		'const size_t RUST_CONST_HELPER_PAGE_SIZE = PAGE_SIZE;' "$block"
	block=
	for r in "${RENAMES[@]}"; do
		block+=${block:+$'\n'}"--blocklist-item ${r#*:}"
	done
	kedit rust/bindgen_parameters insert_after '--blocklist-item VM_NOHUGEPAGE' "$block"
}

step_task_ext() {
	STEP_MODS=task_ext
	kcopy_rs rust/kernel/task_ext.rs rust/kernel/task_ext.rs
	register_mod rust/kernel/lib.rs task_ext
}

step_page_ext() {
	STEP_MODS=page_ext
	kcopy_rs rust/kernel/page_ext.rs rust/kernel/page_ext.rs
	register_mod rust/kernel/lib.rs page_ext
}

step_miscdevice_data() {
	STEP_MODS=miscdevice_data
	kcopy_rs rust/kernel/miscdevice_data.rs rust/kernel/miscdevice_data.rs
	register_mod rust/kernel/lib.rs miscdevice_data
}

step_memremap() {
	local f
	STEP_MODS=memremap
	for f in $(hgit ls-files rust/kernel/mm/memremap.rs 'rust/kernel/mm/memremap/*.rs'); do
		kcopy_rs "$f" "$f"
	done
	register_mod rust/kernel/mm.rs memremap "$CFG_MEMREMAP"
}

step_mmu_notifier() {
	STEP_MODS=mmu_notifier
	kcopy_rs rust/kernel/mm/mmu_notifier.rs rust/kernel/mm/mmu_notifier.rs
	# The crate-internal API hmm (the next patch) uses.
	kedit rust/kernel/mm/mmu_notifier.rs expect_dead "used by mm::hmm" \
		'    pub(crate) unsafe fn from_raw<T: MmuIntervalNotifierOps>(' \
		'    pub(crate) fn raw(&self) -> c_ulong {' \
		"    pub(crate) fn guard(&self) -> &IntervalGuard<'a, T> {"
	register_mod rust/kernel/mm.rs mmu_notifier "$CFG_NOTIFIER"
}

# migrate_pfn_of() is pub(crate) out of tree, where the driver is in the
# same crate; in tree the driver needs it pub.
pub_migrate_pfn_of() {
	awk '$0 == "pub(crate) fn migrate_pfn_of(pfn: usize) -> usize {" { n++; sub(/^pub\(crate\)/, "pub") }
		{ print } END { if (n != 1) exit 1 }'
}

step_hmm() {
	local f
	STEP_MODS=hmm
	for f in $(hgit ls-files rust/kernel/mm/hmm.rs 'rust/kernel/mm/hmm/*.rs'); do
		kcopy_rs "$f" "$f"
	done
	# Without the #[expect(dead_code)] of step_mmu_notifier.
	REPLACE=1 kcopy_rs rust/kernel/mm/mmu_notifier.rs rust/kernel/mm/mmu_notifier.rs
	register_mod rust/kernel/mm.rs hmm "$CFG_HMM"
}

step_migrate() {
	STEP_MODS=migrate
	kcopy_rs rust/kernel/mm/migrate.rs rust/kernel/mm/migrate.rs
	kedit rust/kernel/mm/migrate.rs pub_migrate_pfn_of
	register_mod rust/kernel/mm.rs migrate "$CFG_HMM"
}

# The crate root in tree: the out-of-tree block (from the bindings module
# to "// The driver.") becomes the in-tree one, and the driver's modules
# lose their #[path]. The block must mount exactly the modules this series
# adds to the kernel crate, and layout.
driver_root() {
	awk '
	state == 0 && $0 == "#[path = \"bindings/mod.rs\"]" {
		state = 1
		print "mod bindings;"
		print ""
		print "// The abstractions, from the kernel crate, at the paths the driver names them by."
		print "use kernel::{miscdevice_data, mm, page_ext, task_ext};"
		print ""
		next
	}
	state == 1 && $0 == "// The driver." { state = 2; print; next }
	state == 1 {
		if ($0 ~ /^ *(pub )?mod [a-z_]+( \{)?;?$/) { m = $0; sub(/^ *(pub )?mod /, "", m); sub(/[ ;{]*$/, "", m); mods = mods " " m }
		next
	}
	/^#\[path = "test_hmm\/[a-z_]+\.rs"\]$/ { paths++; next }
	/#\[path/ { print "driver_root: unexpected " $0 > "/dev/stderr"; exit 1 }
	{ print }
	END {
		if (state != 2 || paths != 2) { print "driver_root: the crate root changed shape" > "/dev/stderr"; exit 1 }
		if (mods != " bindings layout miscdevice_data mm hmm memremap migrate mmu_notifier page_ext task_ext") {
			print "driver_root: it mounts" mods > "/dev/stderr"; exit 1
		}
	}'
}

# The driver's bindings module in tree: the template, with the FromBytes
# and AsBytes impls of rust/bindings/mod.rs (everything after its last
# re-export), which then name the template's wrappers.
driver_bindings() {
	local impls=$WORK/impls
	awk 'found && (n || $0 != "") { print; n++ } $0 == "pub use helpers::*;" { found++ }
		END { if (found != 1 || !n) exit 1 }' "$R/rust/bindings/mod.rs" > "$impls" ||
		die "rust/bindings/mod.rs: no impls after pub use helpers::*;"
	local t wrapped
	wrapped=$(grep -oE '^uapi_wrapper!\(.*\);' "$FILES/lib/test_hmm_rs/bindings.rs.in" |
		sed 's/^uapi_wrapper!(//; s/);$//; s/,//g')
	for t in $(grep -oE '^unsafe impl [A-Za-z:_]+ for [a-z_]+' "$impls" | awk '{print $NF}' | sort -u); do
		case " $wrapped " in
		*" $t "*) ;;
		*) die "rust/bindings/mod.rs implements a trait for $t, which bindings.rs.in does not wrap" ;;
		esac
	done
	awk -v impls="$impls" '$0 == "@UAPI_IMPLS@" { while ((getline l < impls) > 0) print l; n++; next }
		{ print } END { if (n != 1) exit 1 }' "$FILES/lib/test_hmm_rs/bindings.rs.in"
}

# insert_kconfig FRAGMENT: FRAGMENT before the config entry after TEST_HMM.
insert_kconfig() {
	FRAG=$(cat "$1") awk '
	$0 == "config TEST_HMM" { inhmm = 1; n++ }
	inhmm && /^config / && $0 != "config TEST_HMM" { print ENVIRON["FRAG"]; print ""; inhmm = 0; done = 1 }
	{ print }
	END { if (n != 1 || !done) exit 1 }'
}

step_test_hmm_rs() {
	local f d=lib/test_hmm_rs lines block
	driver_root < "$R/rust/rust_test_hmm_main.rs" | rs_in_tree > "$WORK/root.rs" ||
		die "rust/rust_test_hmm_main.rs: see above"
	kput $d/rust_test_hmm.rs "$WORK/root.rs"
	driver_bindings > "$WORK/bindings.rs"
	kput $d/bindings.rs "$WORK/bindings.rs"
	for f in $(hgit ls-files 'rust/test_hmm/*.rs'); do
		rs_in_tree < "$R/$f" > "$WORK/drv.rs"
		grep -nE 'HMM_RS_(HPAGE_PMD_ORDER|PMD_SHIFT|PUD_SHIFT)' "$WORK/drv.rs" && die "$f: names left"
		kput "$d/${f##*/}" "$WORK/drv.rs"
	done
	kcopy include/uapi/hmm_rs.h $d/uapi/hmm_rs.h
	kput $d/Makefile "$FILES/$d/Makefile"
	kedit lib/Makefile insert_after 'obj-$(CONFIG_TEST_HMM) += test_hmm.o' \
		'obj-$(CONFIG_TEST_HMM_RUST) += test_hmm_rs/'
	kedit lib/Kconfig.debug insert_kconfig "$FILES/lib/Kconfig.debug.TEST_HMM_RUST"
	# The uapi headers and the ioctl numbers, in the kernel crate's bindings.
	lines=$(bindings_lines) || die "include/hmm_rs_bindings.h: unknown lines"
	[ "$(tagged uapi <<< "$lines" | tr '\n' ' ')" = \
		'#include "test_hmm_uapi.h" #include "uapi/hmm_rs.h" ' ] ||
		die "include/hmm_rs_bindings.h: its uapi headers changed"
	block=$'\n#if IS_ENABLED(CONFIG_TEST_HMM_RUST)\n#include "../../lib/test_hmm_uapi.h"\n'
	block+=$'#include "../../lib/test_hmm_rs/uapi/hmm_rs.h"\n\n'
	block+=$(tagged ioctl <<< "$lines")$'\n#endif'
	kget rust/bindings/bindings_helper.h > "$WORK/bh.h"
	printf '%s\n' "$block" >> "$WORK/bh.h"
	kput rust/bindings/bindings_helper.h "$WORK/bh.h"
}

step_selftests() {
	local d=tools/testing/selftests/hmm-rs f progs
	for f in $(hgit ls-files "$d"); do
		kcopy "$f" "$f"
	done
	kput $d/Makefile "$FILES/$d/Makefile"
	kput $d/config "$FILES/$d/config"
	progs=$(hgit ls-files "$d/*.c" | sed 's|.*/||; s|\.c$||' | sort)
	{ echo "# SPDX-License-Identifier: GPL-2.0"; echo "$progs"; } > "$WORK/gitignore"
	kput $d/.gitignore "$WORK/gitignore"
	kedit tools/testing/selftests/Makefile insert_sorted '^TARGETS \+= [^ ]+$' '^TARGETS \+= ' '$' \
		hmm-rs 'TARGETS += hmm-rs'
}

step_docs() {
	local d=Documentation/mm/hmm-rs
	kcopy Documentation/design.rst $d/design.rst
	kcopy Documentation/migrate-reasons.rst $d/migrate-reasons.rst
	kput $d/index.rst "$FILES/$d/index.rst"
	kedit Documentation/mm/index.rst insert_after '   hmm' '   hmm-rs/index'
}

# insert_maintainers ENTRY: ENTRY after the HMM section.
insert_maintainers() {
	ENTRY=$(sed "s|@AUTHOR@|$ME|" "$1") awk '
	{ print }
	$0 == "HMM - Heterogeneous Memory Management" { inhmm = 1; n++ }
	inhmm && $0 == "" { print ENVIRON["ENTRY"]; print ""; inhmm = 0; done = 1 }
	END { if (n != 1 || !done) exit 1 }'
}

step_maintainers() {
	kedit MAINTAINERS insert_maintainers "$FILES/MAINTAINERS.entry"
}

# --- 2. The series.

# commit MSGFILE [NAME EMAIL DATE]: the index, on HEAD, with MSGFILE's
# message signed off by this repository's identity.
STEPS=()
commit() {
	local msg=$WORK/msg tree
	cp "$1" "$msg"
	if ! grep -qxF "Signed-off-by: $ME" "$msg"; then
		[ "$(grep -v '^$' "$msg" | tail -1 | cut -c1-14)" = Signed-off-by: ] || echo >> "$msg"
		echo "Signed-off-by: $ME" >> "$msg"
	fi
	tree=$(kgit write-tree)
	[ "$tree" != "$(kgit rev-parse "$HEAD^{tree}")" ] || die "$STEP changes nothing"
	HEAD=$(A_NAME=${2:-} A_EMAIL=${3:-} A_DATE=${4:-} kgit commit-tree "$tree" -p "$HEAD" -F "$msg")
	STEPS+=("$STEP")
}

# The fixes, as git am would apply them (their author and date kept).
for p in $(hgit ls-files 'patches/[0-9][0-9][0-9][0-9]-*.patch'); do
	STEP=$(basename "$p" .patch)
	git mailinfo "$WORK/m" "$WORK/p" < "$R/$p" > "$WORK/info"
	kgit apply --cached "$WORK/p" || die "$p does not apply"
	{ sed -n 's/^Subject: //p' "$WORK/info"; echo; cat "$WORK/m"; } > "$WORK/m2"
	commit "$WORK/m2" "$(sed -n 's/^Author: //p' "$WORK/info")" \
		"$(sed -n 's/^Email: //p' "$WORK/info")" \
		"$(sed -n 's/^Date: //p' "$WORK/info" | grep . || echo "$DATE")"
done

# Then each step, its function and its message.
declare -A HAVE=()
for m in "$SERIES"/[0-9][0-9]-*.msg; do
	STEP=$(basename "$m" .msg)
	fn=step_${STEP#[0-9][0-9]-}
	fn=${fn//-/_}
	declare -F "$fn" > /dev/null || die "$m: no function $fn in $0"
	HAVE[$fn]=1
	STEP_MODS=
	"$fn"
	ADDED+="$STEP_MODS "
	commit "$m"
done
for fn in $(declare -F | awk '$3 ~ /^step_/ {print $3}'); do
	[ -n "${HAVE[$fn]:-}" ] || die "$fn has no patches/series/NN-*.msg"
done

# The series as a branch of the kernel repository, to look at or build;
# each run moves it.
git --git-dir="$KGIT" update-ref refs/heads/hmm-rs-series "$HEAD"

# --- 3. format-patch and the cover letter.

rm -f "$OUT"/*.patch
kgit format-patch -q --cover-letter --subject-prefix="$PREFIX" --signature="hmm-rs $DESCRIBE" \
	-o "$OUT" "$BASE..$HEAD"
TOTAL=${#STEPS[@]}
PATCHES=$(kgit log --reverse --format=%s "$BASE..$HEAD" |
	awk -v t="$TOTAL" '{ printf "%*d/%d  %s\n", length(t), NR, t, $0 }')
SELFTESTS=0
for i in "${!STEPS[@]}"; do
	[[ ${STEPS[$i]} == *-selftests ]] && SELFTESTS=$((i + 1))
done
# make check's summary, as README.md shows it.
awk '/^What `make check` shows today/ { want = 1 } want && /^```$/ { if (inblock) exit; inblock = 1; next }
	inblock { print "  " $0 }' "$R/README.md" > "$WORK/results"
grep -qE 'passed, [0-9]+ failed' "$WORK/results" || die "README.md: no make check summary found"
printf '%s\n' "$PATCHES" > "$WORK/patchlist"
sed -e "s|@KERNELVERSION@|$KVERSION|g" -e "s|@PKGVERSION@|$PKGVER|g" \
	-e "s|@HMMRS@|$DESCRIBE|g" -e "s|@SELFTESTS@|$SELFTESTS|g" "$SERIES/cover-letter.txt" > "$WORK/cover"
grep -n '@[A-Z_]*@' "$WORK/cover" | grep -vE '^[0-9]+:@(TEST_RESULTS|PATCHES)@$' &&
	die "cover-letter.txt: unknown placeholder (above)"
cover=$(ls "$OUT"/0000-cover-letter.patch)
awk -v tmpl="$WORK/cover" -v results="$WORK/results" -v patches="$WORK/patchlist" '
	function cat(f,   l) { while ((getline l < f) > 0) print l; close(f) }
	/\*\*\* SUBJECT HERE \*\*\*/ {
		getline subj < tmpl; sub(/\*\*\* SUBJECT HERE \*\*\*/, subj); print; s++; next
	}
	$0 == "*** BLURB HERE ***" {
		getline l < tmpl
		while ((getline l < tmpl) > 0) {
			if (l == "@TEST_RESULTS@") cat(results)
			else if (l == "@PATCHES@") cat(patches)
			else print l
		}
		b++; next
	}
	{ print }
	END { if (s != 1 || b != 1) exit 1 }' "$cover" > "$WORK/cover.patch" ||
	die "the cover letter format-patch wrote has no SUBJECT or BLURB"
mv "$WORK/cover.patch" "$cover"
# The mailed patches, applied to the pristine tree, give the series' tree.
kgit read-tree "$BASE"
for p in "$OUT"/[0-9][0-9][0-9][0-9]-*.patch; do
	[ "${p##*/}" = 0000-cover-letter.patch ] || kgit apply --cached "$p" || die "${p##*/} does not apply"
done
[ "$(kgit write-tree)" = "$(kgit rev-parse "$HEAD^{tree}")" ] || die "the patches do not give the series' tree"
log "patches: $TOTAL patches and a cover letter in $OUT, checked to apply ($((SECONDS - T0)) s)"

# --- 4. checkpatch.

CPLOG=$OUT.checkpatch.log
EXC=$SERIES/checkpatch-exceptions
: > "$CPLOG"
bad=0
i=0
for p in "$OUT"/[0-9][0-9][0-9][0-9]-*.patch; do
	[ "${p##*/}" = 0000-cover-letter.patch ] && continue
	step=${STEPS[$i]}
	i=$((i + 1))
	# From a directory without .git: checkpatch then looks up no commit ids
	# and skips scripts/spdxcheck.py (which needs python3-ply and GitPython).
	out=$(cd "$WORK" && perl "$KSRC/scripts/checkpatch.pl" --strict --show-types \
		--no-summary-file --color=never "$p" 2>&1) || true
	{ echo "=== ${p##*/} ($step)"; echo "$out"; echo; } >> "$CPLOG"
	summary=$(grep -E '^total: ' <<< "$out" || echo "total: checkpatch failed")
	# Types checkpatch reports, less those patches/series/checkpatch-exceptions allows here.
	types=$(grep -oE '^(ERROR|WARNING|CHECK):[A-Z_0-9]+:' <<< "$out" | cut -d: -f2 | sort | uniq -c |
		awk '{print $2 "(" $1 ")"}' | tr '\n' ' ' || true)
	unexpected=
	for t in $(grep -oE '^(ERROR|WARNING|CHECK):[A-Z_0-9]+:' <<< "$out" | cut -d: -f2 | sort -u); do
		awk -v s="$step" -v t="$t" '!/^#/ && ($1 == s || $1 == "*") && $2 == t { ok = 1 } END { exit !ok }' \
			"$EXC" 2>/dev/null || unexpected+="$t "
	done
	printf '[hmm-rs] checkpatch %-58s %s %s\n' "${p##*/}" "${summary#total: }" \
		"${unexpected:+UNEXPECTED: $unexpected}" >&2
	[ -n "$types" ] && printf '[hmm-rs]            %s\n' "$types" >&2
	[ -z "$unexpected" ] || bad=1
done
log "patches: checkpatch --strict output in $CPLOG; done in $((SECONDS - T0)) s"
[ "$bad" = 0 ] || die "checkpatch found what patches/series/checkpatch-exceptions does not allow"
