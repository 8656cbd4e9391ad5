// SPDX-License-Identifier: GPL-2.0

//! A Rust port of `lib/test_hmm.c`: HMM mirror and device-memory migration test driver.
//!
//! The crate has two halves. `rust/kernel/` holds the safe abstractions over the kernel's
//! device-memory API (`linux/migrate.h`, `linux/memremap.h`, `linux/hmm.h`,
//! `linux/mmu_notifier.h`), laid out as they would sit in the kernel crate; `rust/test_hmm/` holds
//! the driver, which composes them and holds no `unsafe` code (`#![forbid(unsafe_code)]` in each of
//! its files). This file has one `unsafe` block: the word of whoever loads the module that the
//! `spm_addr_dev*` ranges are memory kept for it.
//!
//! C header: [`lib/test_hmm_uapi.h`](srctree/lib/test_hmm_uapi.h)

use kernel::{miscdevice::MiscDeviceOptions, prelude::*, sync::Arc};

#[path = "bindings/mod.rs"]
mod bindings;

// The abstractions: would-be modules of the kernel crate, at the paths they would have there
// (`kernel::mm::migrate` is `rust/kernel/mm/migrate.rs`).
#[path = "kernel/layout.rs"]
mod layout;
#[path = "kernel/miscdevice_data.rs"]
pub mod miscdevice_data;
/// Memory management: what `kernel::mm` would gain.
#[path = "kernel/mm"]
pub mod mm {
    pub mod hmm;
    pub mod memremap;
    pub mod migrate;
    pub mod mmu_notifier;
}
#[path = "kernel/page_ext.rs"]
pub mod page_ext;
#[path = "kernel/task_ext.rs"]
pub mod task_ext;

// The driver.
#[path = "test_hmm/devmem.rs"]
mod devmem;
#[path = "test_hmm/dmirror.rs"]
mod dmirror;

use devmem::MemKind;
use dmirror::{DmirrorDevice, DmirrorFile};
use miscdevice_data::DataRegistration;

module! {
    type: RustTestHmm,
    name: "rust_test_hmm",
    authors: ["hmm-rs developers"],
    description: "Rust HMM mirror and device memory migration test driver",
    license: "GPL",
    params: {
        spm_addr_dev0: u64 {
            default: 0,
            description: "Start address of the special purpose memory of device 0 (device-coherent hmm_dmirror2); needs spm_addr_dev1 too",
        },
        spm_addr_dev1: u64 {
            default: 0,
            description: "Start address of the special purpose memory of device 1 (device-coherent hmm_dmirror3); needs spm_addr_dev0 too",
        },
    },
}

/// Names of the device nodes, `/dev/hmm_dmirror<N>`.
const NAMES: [&CStr; 4] = [
    c"hmm_dmirror0",
    c"hmm_dmirror1",
    c"hmm_dmirror2",
    c"hmm_dmirror3",
];

/// The module: owns the devices for as long as it is loaded.
struct RustTestHmm {
    _devices: KVec<Pin<KBox<DataRegistration<DmirrorFile>>>>,
}

impl kernel::Module for RustTestHmm {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // Two device-private devices, and two device-coherent ones if both special purpose memory
        // ranges are given (as test_hmm.c).
        let spm = [
            module_parameters::spm_addr_dev0.value(),
            module_parameters::spm_addr_dev1.value(),
        ];
        // Device-coherent devices only if both ranges are given.
        let coherent = spm[0] != 0 && spm[1] != 0;
        let mut kinds = [
            MemKind::Private,
            MemKind::Private,
            MemKind::Private,
            MemKind::Private,
        ];
        if coherent {
            for (kind, addr) in kinds[2..].iter_mut().zip(spm) {
                // SAFETY: The `spm_addr_dev*` parameters name physical memory that the
                // administrator kept from the kernel for this driver (`memmap=256M$<addr>` on the
                // kernel command line): giving them to the module is that assertion, as for
                // `test_hmm.ko`. The range stays unused by anyone else while the module is loaded.
                *kind = MemKind::Coherent(unsafe {
                    mm::memremap::CoherentMemory::new(addr, devmem::CHUNK_SIZE as u64)
                });
            }
        }
        let ndevices = if coherent { 4 } else { 2 };
        let mut owners = KVec::with_capacity(ndevices, GFP_KERNEL)?;
        for _ in 0..ndevices {
            owners.push(mm::memremap::PagemapOwner::new()?, GFP_KERNEL)?;
        }
        let owners = Arc::new(owners, GFP_KERNEL)?;
        let mut devices = KVec::with_capacity(ndevices, GFP_KERNEL)?;
        for (id, (name, kind)) in NAMES.iter().zip(kinds).take(ndevices).enumerate() {
            let dev = DmirrorDevice::new(id, kind, owners.clone())?;
            devices.push(
                KBox::pin_init(
                    DataRegistration::register(MiscDeviceOptions { name }, dev),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        pr_info!(
            "loaded (bindgen: MIGRATE_PFN_VALID = {:#x}; C helper: migrate_pfn(1) = {:#x})\n",
            bindings::MIGRATE_PFN_VALID,
            mm::migrate::migrate_pfn_of(1)
        );
        Ok(RustTestHmm { _devices: devices })
    }
}

impl Drop for RustTestHmm {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
