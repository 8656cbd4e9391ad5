// SPDX-License-Identifier: GPL-2.0
/*
 * Non-trivial C macros cannot be used in Rust. Similarly, inlined C functions
 * cannot be called either. The files included here explicitly create
 * functions ("helpers") that wrap those so that the hmm-rs abstractions can
 * call them from Rust: one file per C header, named as the kernel's
 * rust/helpers/ names them, with the kernel's `rust_helper_` prefix, which
 * the module's bindgen step drops again (see Kbuild). Upstream, these files
 * would join rust/helpers/ and be included from its helpers.c.
 *
 * A helper the kernel's rust/helpers/ already has (alloc_pages(),
 * get_current(), ...) is not repeated here: Rust code calls the kernel's
 * through kernel::bindings. A rust_helper_*() defined here is local to the
 * module (it is not exported), so it cannot clash with vmlinux's exported
 * rust_helper_*() at modpost or load time; but the module's own references
 * to a name both define would bind to one of them (ours, or the kernel's
 * with CONFIG_RUST_INLINE_HELPERS), so a name must not be defined in both.
 *
 * Sorted alphabetically.
 */

#include <linux/compiler_types.h>

/*
 * The kernel's helpers.c makes this `__always_inline` outside bindgen, so
 * that CONFIG_RUST_INLINE_HELPERS can inline helpers into Rust code. The
 * module's helpers are an ordinary object linked next to its Rust code:
 * here it only marks them.
 */
#define __rust_helper

#include "hmm.c"
#include "memremap.c"
#include "migrate.c"
#include "mm.c"
#include "mmu_notifier.c"
#include "nodemask.c"
#include "page.c"
#include "percpu-refcount.c"
#include "signal.c"
