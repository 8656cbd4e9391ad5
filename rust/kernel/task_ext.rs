// SPDX-License-Identifier: GPL-2.0

//! What the kernel crate's [`Task`] lacks: whether a task is being killed.
//!
//! Upstream this would be an inherent method of `kernel::task::Task` next to
//! [`Task::signal_pending()`]; out of tree it is an extension trait, so that callers already read
//! as they would then (`current!().fatal_signal_pending()`).
//!
//! C header: [`include/linux/sched/signal.h`](srctree/include/linux/sched/signal.h)

use crate::bindings;
use kernel::task::Task;

/// Methods of [`Task`] that the kernel crate does not have yet.
pub trait TaskExt {
    /// Whether the task has a fatal signal pending (`fatal_signal_pending()`).
    ///
    /// Long loops on behalf of user space check it to stop early when the task is being killed:
    /// nobody is left to see their result.
    fn fatal_signal_pending(&self) -> bool;
}

impl TaskExt for Task {
    #[inline]
    fn fatal_signal_pending(&self) -> bool {
        // SAFETY: By the type invariants of `Task`, `self.as_ptr()` is a valid task; the test only
        // reads its signal state.
        unsafe { bindings::fatal_signal_pending(self.as_ptr()) != 0 }
    }
}
