# SPDX-License-Identifier: GPL-2.0
#
# hmm-rs: the two commands a fresh machine needs are `make run` and
# `make check`; everything else is a step of those.
#
#   make            build the module (installs and builds what is missing)
#   make run        ... boot QEMU, load the module, show it working
#   make check      ... run every test the project claims (DEBUG=1: debug kernel)
#   make check-c    the C reference test_hmm alone, every hmm-tests case
#   make compare    C test_hmm and rust_test_hmm on every hmm-tests case, side by side
#   make bench      speed of rust_test_hmm against test_hmm, exact (QEMU -icount)
#                   (PROFILE=1: where the time goes, on a profiling kernel)
#   make fuzz SECS=3600  the ioctl fuzzer alone for that long (SEED=N: replay)
#   make lint       rustfmt, clippy and checkpatch on the module
#   make patches    the kernel patch series, from this tree, into build/patches/
#   make check-patches  ... applied to linux-source-7.3 with git am, built in
#                   tree, booted, every rust_test_hmm suite run on it (FULL=1:
#                   first each patch built in turn); make check does the same
#
# KDIR=<kernel build dir> builds against another kernel (default: the cached
# one scripts/build-kernel.sh makes).

DEBUG ?= 0
export DEBUG
# PROFILE=1: the kernel of scripts/config/profile.config (make bench).
PROFILE ?= 0
export PROFILE
SHELL := /bin/bash
ROOT := $(CURDIR)
BUILD := $(ROOT)/build
ENV = source $(ROOT)/scripts/lib.sh &&

KDIR ?= $(shell $(ENV) DEBUG=$(DEBUG) PROFILE=$(PROFILE) scripts/build-kernel.sh --print-kdir)
# The in-tree build of the series and its tests, as scripts/check-patches.sh
# leaves them, for the plans' "boot intree kernel=intree".
INTREE_VM = --kernel intree=$(BUILD)/intree --tests intree=$(BUILD)/intree/tests
KMAKE = $(ENV) $(MAKE) -C $(KDIR) M=$(ROOT) LLVM=1 RUSTC=$$RUSTC \
	RUSTDOC=$$RUSTDOC BINDGEN=$$BINDGEN CLIPPY_DRIVER=$$CLIPPY_DRIVER

.PHONY: all setup kernel module tests run check check-c compare bench fuzz lint \
	rustfmt rustfmtcheck clippy checkpatch patches intree check-patches clean distclean

all: module

setup:
	@scripts/setup.sh

kernel: setup
	@scripts/build-kernel.sh

module: kernel
	@+$(KMAKE) modules

tests: setup
	@scripts/build-tests.sh $(BUILD)/tests

run: module tests
	@scripts/run-vm.sh --plan scripts/plans/demo --kdir $(KDIR)

# The check boot takes about 1100 s (the fuzzer about 185 s, the 1000
# load/unload cycles about 240 s, pressure 90-180 s, stress 50-145 s) and
# the debug kernel's longer (KASAN; 100 cycles at 1.7 s; a kmemleak scan
# after each suite): more than run-vm.sh's default 600 s, and the guest
# kills a suite a minute before the timeout. Both get about twice what
# they take. The reference boots of the plan set their own timeouts.
CHECK_TIMEOUT := --timeout $(if $(filter 1,$(DEBUG)),3600,2400)

check: module tests lint intree
	@scripts/run-vm.sh --plan scripts/plans/check --kdir $(KDIR) $(CHECK_TIMEOUT) $(INTREE_VM)

check-c: kernel tests
	@scripts/run-vm.sh --plan scripts/plans/reference --kdir $(KDIR)

compare: module tests
	@scripts/run-vm.sh --plan scripts/plans/compare --kdir $(KDIR)

# About 15 minutes (1 GiB operations under TCG); PROFILE=1 about 10, and a
# kernel build of its own the first time.
bench: module tests
	@scripts/run-vm.sh --icount --kdir $(KDIR) \
		--plan scripts/plans/$(if $(filter 1,$(PROFILE)),profile,bench)

# The fuzzer for SECS seconds, no call limit (make check runs 100000
# calls); the boot gets 5 minutes more. SEED=N replays a seed's operations.
SECS ?= 600
fuzz: module tests
	@[[ "$(SECS)" =~ ^[0-9]+$$ ]] || { echo "make fuzz: SECS must be a number of seconds" >&2; exit 2; }
	@scripts/run-vm.sh --plan scripts/plans/fuzz --kdir $(KDIR) \
		--timeout $$(( $(SECS) + 300 )) --env HMM_RS_FUZZ_SECS=$(SECS) \
		$(if $(SEED),--env HMM_RS_FUZZ_SEED=$(SEED))

lint: rustfmtcheck clippy checkpatch

rustfmt:
	@$(ENV) find rust -name '*.rs' -not -name '*_generated.rs' | \
		xargs rustfmt --edition 2021 --config-path $$KSRC/.rustfmt.toml

rustfmtcheck:
	@$(ENV) find rust -name '*.rs' -not -name '*_generated.rs' | \
		xargs rustfmt --check --edition 2021 --config-path $$KSRC/.rustfmt.toml

clippy: kernel
	@+$(KMAKE) CLIPPY=1 modules

checkpatch:
	@$(ENV) find rust include tools -name '*.[ch]' -o -name '*.rs' | \
		grep -v '_generated.rs' | xargs $$KSRC/scripts/checkpatch.pl \
		--no-tree --terse -f --ignore SPDX_LICENSE_TAG,FILE_PATH_CHANGES

# The series against the extracted linux-source-7.3 (scripts/mkpatches.sh,
# patches/series/README): no kernel build; fails on a checkpatch --strict
# report patches/series/checkpatch-exceptions does not list.
patches: setup
	@scripts/mkpatches.sh $(BUILD)/patches

# The series applied with git am to a clean copy of the pristine tree and
# built there with CONFIG_TEST_HMM_RUST=m, with its kselftests
# (scripts/check-patches.sh); only what changed since the last build is
# rebuilt. check-patches boots it and runs the plan's in-tree boot alone.
intree: patches
	@scripts/check-patches.sh

check-patches: patches
	@scripts/check-patches.sh $(if $(filter 1,$(FULL)),--full)
	@scripts/run-vm.sh --plan scripts/plans/check --boot intree $(INTREE_VM) $(CHECK_TIMEOUT)

clean:
	@+$(KMAKE) clean 2>/dev/null || true
	rm -rf $(BUILD)

# Also drops the cached kernel builds, in-tree ones included (not the
# extracted source, bindgen or the pristine tree's repository).
distclean: clean
	$(ENV) rm -rf $$HMM_RS_CACHE/build $$HMM_RS_CACHE/intree
	$(ENV) git --git-dir=$$HMM_RS_CACHE/git-$$HMM_RS_KVER worktree prune 2>/dev/null || true
