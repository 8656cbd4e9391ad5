// SPDX-License-Identifier: GPL-2.0

//! Device memory: `struct dev_pagemap` and `memremap_pages()`.
//!
//! C header: [`include/linux/memremap.h`](srctree/include/linux/memremap.h)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use kernel::{ffi::c_void, prelude::*, sync::Arc, types::Opaque};

/// The identity of the owner of a set of device pages.
///
/// The C API compares an untyped `void *owner` in four places:
/// `dev_pagemap::owner`, `migrate_vma::pgmap_owner`,
/// `hmm_range::dev_private_owner` and `mmu_notifier_range::owner`. Here that
/// pointer is the address of a `PagemapOwner`, which lives in an [`Arc`] so
/// that it cannot move while a pagemap, a migration or a notifier uses it.
/// Every API taking an owner takes a `&PagemapOwner`, so a pagemap and the
/// operations meant to see its pages cannot be given mismatched owners by
/// accident: they must be handed the same object.
///
/// # Invariants
///
/// `PagemapOwner`s are only ever created inside an [`Arc`], so the address
/// of one is stable and unique for as long as anyone can refer to it.
pub struct PagemapOwner {
    // One byte, so that every owner has an address of its own.
    _id: Opaque<u8>,
}

// SAFETY: A `PagemapOwner` has no contents anyone reads or writes: only its
// address is used, which is the same on every thread.
unsafe impl Send for PagemapOwner {}
// SAFETY: As above.
unsafe impl Sync for PagemapOwner {}

impl PagemapOwner {
    /// Creates a new, unique owner.
    pub fn new() -> Result<Arc<Self>> {
        // INVARIANT: The owner is created inside an `Arc`.
        Ok(Arc::new(
            PagemapOwner {
                _id: Opaque::uninit(),
            },
            GFP_KERNEL,
        )?)
    }

    /// The `void *owner` the C API compares.
    pub fn as_raw(&self) -> *mut c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// Whether `ptr` (an owner pointer read from a C structure) is this owner.
    pub fn is(&self, ptr: *const c_void) -> bool {
        core::ptr::eq(ptr, self.as_raw())
    }
}
