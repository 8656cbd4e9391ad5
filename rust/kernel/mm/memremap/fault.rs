// SPDX-License-Identifier: GPL-2.0

//! [`DeviceFault`]: a CPU fault on a device-private page.

use super::{
    DevicePage,
    DevicePagemap,
    DevicePagemapOps, //
};
use crate::bindings;
use core::ptr::NonNull;
use kernel::{
    mm::virt::VmaRef,
    types::ForeignOwnable, //
};

/// A CPU fault on a device-private page: the argument of [`DevicePagemapOps::migrate_to_ram`]
/// (`struct vm_fault`).
///
/// # Invariants
///
/// For `'a`: `vmf` is valid, the mmap lock of `vmf->vma`'s mm is held for reading, and `vmf->page`
/// is a locked, referenced in-use page of the `DevicePagemap<T>` `pagemap`.
pub struct DeviceFault<'a, T: DevicePagemapOps> {
    vmf: NonNull<bindings::vm_fault>,
    pagemap: &'a DevicePagemap<T>,
}

impl<'a, T: DevicePagemapOps> DeviceFault<'a, T> {
    /// # Safety
    ///
    /// `vmf` must be a `migrate_to_ram()` fault on a page of a `DevicePagemap<T>`, valid for `'a`,
    /// with the locks and reference the core holds during the callback.
    pub(super) unsafe fn from_raw(vmf: *mut bindings::vm_fault) -> Self {
        // SAFETY: `vmf` is valid and `vmf->page` an in-use page of a `DevicePagemap<T>`, referenced
        // for `'a` (function safety requirements).
        let page = unsafe { DevicePage::<T>::from_raw((*vmf).page) };
        let pagemap: *const DevicePagemap<T> = page.pagemap();
        // INVARIANT: By the function safety requirements; the page's pagemap.
        Self {
            // SAFETY: `vmf` is valid, hence not null.
            vmf: unsafe { NonNull::new_unchecked(vmf) },
            // SAFETY: The faulting page is an in-use page of this pagemap for `'a`, and
            // `memunmap_pages()` waits until none of its pages is in use before the pagemap goes.
            pagemap: unsafe { &*pagemap },
        }
    }

    /// The raw `struct vm_fault`.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut bindings::vm_fault {
        self.vmf.as_ptr()
    }

    /// The faulting page, as the raw pointer `migrate_vma::fault_page` takes.
    pub(crate) fn fault_page(&self) -> *mut bindings::page {
        // SAFETY: `vmf` is valid (type invariant).
        unsafe { (*self.as_raw()).page }
    }

    /// The device page the CPU faulted on.
    pub fn page(&self) -> &DevicePage<T> {
        // SAFETY: `vmf->page` is an in-use page of a `DevicePagemap<T>` whose reference the core
        // holds for the whole callback (type invariant).
        unsafe { DevicePage::from_raw(self.fault_page()) }
    }

    /// The data of the faulting page ([`DevicePage::data`]).
    #[inline]
    pub fn data(&self) -> <T::PageData as ForeignOwnable>::Borrowed<'_> {
        self.page().data()
    }

    /// The pagemap of the faulting page, for the whole callback: it outlives the fault (a pagemap
    /// is torn down only once none of its pages is in use), so a driver can hold on to it while
    /// the fault is lent to a migration ([`MigrateVma::setup_from_fault`]).
    ///
    /// [`MigrateVma::setup_from_fault`]: crate::mm::migrate::MigrateVma::setup_from_fault
    #[inline]
    pub fn pagemap(&self) -> &'a DevicePagemap<T> {
        self.pagemap
    }

    /// Whether the faulting page is mapped by a PMD (a large folio mapped whole) rather than a PTE:
    /// only then can the fault migrate the whole folio; a PTE-mapped large folio is being split.
    pub fn is_pmd_mapped(&self) -> bool {
        // SAFETY: `vmf` is valid (type invariant); the core sets `pte` before the callback and
        // does not change it during it.
        unsafe { (*self.as_raw()).pte }.is_null()
    }

    /// The faulting user address.
    pub fn address(&self) -> usize {
        // SAFETY: `vmf` is valid (type invariant).
        unsafe { (*self.as_raw()).__bindgen_anon_1.address }
    }

    /// The VMA the fault is in; the mmap lock is held for reading.
    pub fn vma(&self) -> &VmaRef {
        // SAFETY: `vmf` is valid (type invariant).
        let vma = unsafe { (*self.as_raw()).__bindgen_anon_1.vma };
        // SAFETY: The VMA is valid and its mm's mmap lock is held for reading for the whole
        // callback, which outlives the borrow of `self`.
        unsafe { VmaRef::from_raw(vma) }
    }
}
