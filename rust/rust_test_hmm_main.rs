// SPDX-License-Identifier: GPL-2.0

//! A Rust port of `lib/test_hmm.c`: HMM mirror and device-memory migration
//! test driver.
//!
//! The crate has two halves. `rust/kernel/` holds the safe abstractions over
//! the kernel's device-memory API (`linux/migrate.h`, `linux/memremap.h`,
//! `linux/hmm.h`, `linux/mmu_notifier.h`), laid out as they would sit in the
//! kernel crate; `rust/test_hmm/` holds the driver, which composes them and
//! holds no `unsafe` code (enforced with `#[deny(unsafe_code)]` below).
//!
//! C header: [`lib/test_hmm_uapi.h`](srctree/lib/test_hmm_uapi.h)

use kernel::prelude::*;

#[path = "bindings/mod.rs"]
mod bindings;

// The abstractions: would-be modules of the kernel crate.
#[path = "kernel/hmm.rs"]
pub mod hmm;
#[path = "kernel/memremap.rs"]
pub mod memremap;
#[path = "kernel/mmu_notifier.rs"]
pub mod mmu_notifier;
#[path = "kernel/page_ext.rs"]
pub mod page_ext;

module! {
    type: RustTestHmm,
    name: "rust_test_hmm",
    authors: ["hmm-rs developers"],
    description: "Rust HMM mirror and device memory migration test driver",
    license: "GPL",
}

/// The module: owns the devices for as long as it is loaded.
struct RustTestHmm;

impl kernel::Module for RustTestHmm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!(
            "loaded (bindgen: MIGRATE_PFN_VALID = {:#x}; C helper: migrate_pfn(1) = {:#x})\n",
            bindings::MIGRATE_PFN_VALID,
            kernel_helpers::migrate_pfn(1)
        );
        Ok(RustTestHmm)
    }
}

impl Drop for RustTestHmm {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}

mod kernel_helpers {
    use crate::bindings;

    /// Encodes `pfn` as a valid `migrate_pfn` entry (`migrate_pfn()` in C).
    pub(crate) fn migrate_pfn(pfn: usize) -> usize {
        // SAFETY: `migrate_pfn()` is pure arithmetic on its argument.
        unsafe { bindings::migrate_pfn(pfn as _) as usize }
    }
}
