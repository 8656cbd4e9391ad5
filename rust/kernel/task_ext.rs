// SPDX-License-Identifier: GPL-2.0

//! What the kernel crate's `Task` lacks: whether the current task is being
//! killed.
//!
//! Upstream this would be a method of `kernel::task::Task` next to
//! `signal_pending()`.
//!
//! C header: [`include/linux/sched/signal.h`](srctree/include/linux/sched/signal.h)

use crate::bindings;

/// Whether the current task has a fatal signal pending
/// (`fatal_signal_pending(current)`).
///
/// Long loops on behalf of user space check it to stop early when the task
/// is being killed: nobody is left to see their result.
pub fn fatal_signal_pending() -> bool {
    // SAFETY: `current` is always a valid task in process context, and the
    // test only reads its signal state.
    unsafe { bindings::fatal_signal_pending(bindings::get_current()) != 0 }
}
