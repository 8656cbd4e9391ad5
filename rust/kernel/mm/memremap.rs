// SPDX-License-Identifier: GPL-2.0

//! Device memory: `struct dev_pagemap` and `memremap_pages()`.
//!
//! A [`DevicePagemap`] gives a range of device memory `struct page`s (`ZONE_DEVICE`) so that
//! anonymous memory can be migrated to it: device-private memory the CPU cannot access
//! (`MEMORY_DEVICE_PRIVATE`) or device-coherent memory it can (`MEMORY_DEVICE_COHERENT`). The
//! driver's callbacks are a [`DevicePagemapOps`] implementation.
//!
//! # Page ownership
//!
//! Device pages are owned through tokens, which replace the C convention of a free list threaded
//! through `page->zone_device_data`:
//!
//! - [`FreeDeviceFolio`]: an idle page (refcount 0), owned by the driver's allocator.
//!   [`DevicePagemap::take_free_pages`] hands out every page of a new pagemap once; afterwards idle
//!   pages come back through [`DevicePagemapOps::folio_free`].
//! - [`LockedDeviceFolio`]: made by [`FreeDeviceFolio::activate`], which stores the driver's
//!   [`DevicePagemapOps::PageData`] in the page. It holds the page's only reference and its lock:
//!   it is a migration destination ([`LockedDeviceFolio::into_migrate_pfn`]). Dropping it instead
//!   unlocks and puts the page, which frees it back to `folio_free`.
//! - `&`[`DevicePage`]: a borrowed page in use, with access to its data, in callbacks and wherever
//!   the page is known to be live.
//!
//! # Large folios
//!
//! Pages can be handed out and put in use as naturally aligned blocks of `1 << order` pages
//! ([`DevicePagemap::take_free_pages`], [`FreeDeviceFolio::split`]): large device folios, which a
//! migration maps with one PMD. The driver's data is per folio, in its head page. When the core
//! splits a device-private folio (a partial unmap, a migration that falls back to single pages),
//! [`DevicePagemapOps::folio_split`] gives each new folio its data. The core calls that op for
//! device-private folios only, so only device-private pagemaps whose driver implements it hand out
//! large blocks.
//!
//! When the last reference to an in-use page goes, the kernel calls `folio_free`; the abstraction
//! takes the `PageData` back out of the page and hands both to [`DevicePagemapOps::folio_free`]
//! with a new [`FreeDeviceFolio`]. If a migration does not use a destination page,
//! `migrate_vma_finalize()` unlocks and puts it, so it too comes back through `folio_free`.
//!
//! # Lifetime of a pagemap
//!
//! Every [`FreeDeviceFolio`] and every in-use page holds a reference on the pagemap's `percpu_ref`,
//! so the pagemap (and its `struct page`s) cannot go away under a token. `memunmap_pages()` waits,
//! uninterruptibly, until every such reference is gone, so the pagemap counts the pages that hold
//! one ([`DevicePagemap::pages_held`]) and unregisters only once none is left:
//!
//! - [`DevicePagemap::begin_removal`] stops freed pages from going back to the driver; the driver
//!   then drops the [`FreeDeviceFolio`]s it holds (e.g. drains its free list): they are counted
//!   like pages in use, and only the driver can give them up;
//! - [`DevicePagemap::evict_all`] migrates the pages still in use back to system memory
//!   ([`DevicePagemap::evict`]) in rounds, for a bounded time, and fails with `EBUSY` if some could
//!   not be moved (locked or pinned by someone else at the time, a large folio with no free system
//!   folio to move to, a [`LockedDeviceFolio`] someone holds): a driver can report that and keep
//!   the pagemap, or drop it, which then does not wait;
//! - dropping a [`DevicePagemap`] evicts until no page is left, logging what it still waits for
//!   every 10 s.
//!
//! C header: [`include/linux/memremap.h`](srctree/include/linux/memremap.h)
//!
//! C implementation: [`mm/memremap.c`](srctree/mm/memremap.c)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

mod fault;
mod page;
mod pagemap;

pub use self::{
    fault::DeviceFault,
    page::{AnyDevicePage, DevicePage, FreeDeviceFolio, LockedDeviceFolio, PageRef, SplitPages},
    pagemap::{CoherentMemory, DevicePagemap},
};

use crate::bindings;
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::Ordering, //
};
use kernel::{
    alloc::flags::GFP_KERNEL,
    ffi::c_void,
    page::Page,
    prelude::*,
    sync::Arc,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};

/// The identity of the owner of a set of device pages.
///
/// The C API compares an untyped `void *owner` in four places: `dev_pagemap::owner`,
/// `migrate_vma::pgmap_owner`, `hmm_range::dev_private_owner` and `mmu_notifier_range::owner`. Here
/// that pointer is the address of a `PagemapOwner`, which lives in an [`Arc`] so that it cannot
/// move while a pagemap, a migration or a notifier uses it. Every API taking an owner takes a
/// `&PagemapOwner`, so a pagemap and the operations meant to see its pages cannot be given
/// mismatched owners by accident: they must be handed the same object.
///
/// # Examples
///
/// ```ignore
/// let owner = PagemapOwner::new()?;
/// // The same owner for the pagemap, the migrations that collect its pages and the ranges that
/// // must see them as they are.
/// let pagemap = DevicePagemap::new_private(size, owner.clone(), None, mem);
/// MigrateVma::setup(&mmap, start, end, Select::DevicePrivate.into(), Some(&owner), &mut pfns)?;
/// hmm::Range::new(&notifier, start, end)?.with_owner(&owner).fault(&mm, false, commit)?;
/// ```
///
/// # Invariants
///
/// `PagemapOwner`s are only ever created inside an [`Arc`], so the address of one is stable and
/// unique for as long as anyone can refer to it. Only [`DevicePagemap`] registers a `dev_pagemap`
/// with a `PagemapOwner` as its owner (other users only compare the address).
pub struct PagemapOwner {
    // One byte, so that every owner has an address of its own.
    _id: Opaque<u8>,
}

// SAFETY: A `PagemapOwner` has no contents anyone reads or writes: only its address is used, which
// is the same on every thread.
unsafe impl Send for PagemapOwner {}
// SAFETY: Through `&PagemapOwner` nothing is read or written but the address, which any thread may
// compare.
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
    #[inline]
    pub fn as_raw(&self) -> *mut c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }

    /// Whether `ptr` (an owner pointer read from a C structure) is this owner.
    #[inline]
    pub fn is(&self, ptr: *const c_void) -> bool {
        core::ptr::eq(ptr, self.as_raw())
    }
}

/// The result of [`DevicePagemapOps::migrate_to_ram`] (a `vm_fault_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFaultResult {
    /// The fault was handled: the page was migrated, or there was nothing to do (for example,
    /// another thread migrated it first). The CPU retries the access.
    Ok,
    /// Out of memory (`VM_FAULT_OOM`).
    Oom,
    /// The access cannot be satisfied (`VM_FAULT_SIGBUS`).
    SigBus,
}

impl VmFaultResult {
    /// The `vm_fault_t` the C callback returns.
    fn into_raw(self) -> bindings::vm_fault_t {
        match self {
            Self::Ok => 0,
            Self::Oom => bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t,
            Self::SigBus => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
        }
    }
}

/// The driver's side of a [`DevicePagemap`]: its per-pagemap data and the `struct dev_pagemap_ops`
/// callbacks.
///
/// The callbacks may run on any CPU, concurrently with each other and with any method of the
/// pagemap.
///
/// # Examples
///
/// A device-private pagemap whose pages are backed by system pages (as `lib/test_hmm.c` does):
///
/// ```ignore
/// struct Mem { free: SpinLock<KVec<FreeDeviceFolio<Mem>>> }
///
/// #[vtable]
/// impl DevicePagemapOps for Mem {
///     type PageData = KBox<Backing>;
///
///     fn folio_free(
///         pagemap: &DevicePagemap<Self>,
///         page: FreeDeviceFolio<Self>,
///         _: KBox<Backing>,
///     ) {
///         if !pagemap.is_removing() {
///             let _ = pagemap.data().free.lock().push_within_capacity(page);
///         }
///     }
///
///     fn migrate_to_ram(fault: &mut DeviceFault<'_, Self>) -> VmFaultResult {
///         // `MigrateVma::setup_from_fault()` over the faulting page, copy back, finalize.
///         VmFaultResult::Ok
///     }
///
///     fn copy_to_ram(src: &DevicePage<Self>, data: &Backing, dst: &Page) {
///         data.copy_to(dst);
///     }
/// }
/// ```
#[vtable]
pub trait DevicePagemapOps: Sized + Send + Sync + 'static {
    /// What the driver keeps in each in-use device page (`page->zone_device_data`), e.g. a `KBox`
    /// holding the system page that backs a device-private page and the mirror that owns it.
    ///
    /// It is dropped where the page is freed: in the `folio_free` callback, which runs in whatever
    /// context put the last reference to the page (atomic context included), or in
    /// [`DevicePagemapOps::folio_free`]. Its destructor must therefore not sleep: no mutex, no
    /// `vfree()`, no `synchronize_rcu()`. Freeing pages and `kmalloc()`ed memory is fine.
    type PageData: ForeignOwnable + Send + Sync + 'static;

    /// The last reference to `page` was dropped (`dev_pagemap_ops::folio_free`).
    ///
    /// `data` is what [`FreeDeviceFolio::activate`] stored in the page; `page` is the now idle
    /// page, to be put back on the driver's free list or dropped. Called in whatever context
    /// dropped the last reference, so it must not sleep. Not called for pages freed once the
    /// pagemap is being removed ([`DevicePagemap::begin_removal`]), except by a call that was
    /// already under way: drop the page if [`DevicePagemap::is_removing`], testing it under the
    /// lock that guards the free list.
    fn folio_free(pagemap: &DevicePagemap<Self>, page: FreeDeviceFolio<Self>, data: Self::PageData);

    /// The CPU accessed a device-private page (`dev_pagemap_ops::migrate_to_ram`).
    ///
    /// Migrate [`DeviceFault::page`] back to system memory (with `migrate_vma`, using
    /// [`DeviceFault::vma`] and the fault page). The mmap lock is held for reading and the faulting
    /// page is locked, with a reference held, for the whole call.
    ///
    /// Return [`VmFaultResult::Ok`] only if the page left the device (or an invalidation of the
    /// address happened, as `migrate_vma_setup()` makes): the core, and `hmm_range_fault()` on
    /// behalf of a device, fault again until the entry changes, without checking for signals in
    /// between, so an `Ok` that leaves the page in place makes them spin.
    fn migrate_to_ram(fault: &mut DeviceFault<'_, Self>) -> VmFaultResult;

    /// Copies the contents of the device page `src` to the system page `dst`.
    ///
    /// Used by [`DevicePagemap::evict`] (and so by the pagemap's destructor) to move pages that are
    /// still in use back to system memory. `src` and `dst` are both locked. May sleep.
    fn copy_to_ram(
        src: &DevicePage<Self>,
        data: <Self::PageData as ForeignOwnable>::Borrowed<'_>,
        dst: &Page,
    );

    /// A large folio of the pagemap is being split (`dev_pagemap_ops::folio_split`): returns the
    /// data of the new folio of `1 << order` pages that starts `offset` pages into the old one.
    ///
    /// `data` is the old folio's, which its first page keeps (the old folio becomes the first of
    /// the new ones). Called once per new folio but the first, with the folio frozen and locked,
    /// possibly under spinlocks: it must neither sleep nor fail (e.g. share the data by reference
    /// count instead of allocating). Only device-private pagemaps whose driver implements this op
    /// hand out large blocks of pages.
    fn folio_split(
        data: <Self::PageData as ForeignOwnable>::Borrowed<'_>,
        offset: usize,
        order: u32,
    ) -> Self::PageData {
        let _ = (data, offset, order);
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The `struct dev_pagemap_ops` of `T`, and its trampolines.
struct OpsTable<T>(PhantomData<T>);

impl<T: DevicePagemapOps> OpsTable<T> {
    const OPS: bindings::dev_pagemap_ops = bindings::dev_pagemap_ops {
        folio_free: Some(Self::folio_free),
        migrate_to_ram: Some(Self::migrate_to_ram),
        memory_failure: None,
        folio_split: if T::HAS_FOLIO_SPLIT {
            Some(Self::folio_split)
        } else {
            None
        },
    };

    /// # Safety
    ///
    /// Only to be called by the core (`free_zone_device_folio()`), for a folio of a pagemap
    /// registered with `Self::OPS`, when its refcount dropped to zero.
    unsafe extern "C" fn folio_free(folio: *mut bindings::folio) {
        // `struct folio` starts with its head page.
        let page = folio.cast::<bindings::page>();
        // SAFETY: The folio is a valid `ZONE_DEVICE` folio (function safety requirements).
        let order = unsafe { bindings::folio_order(folio) };
        // SAFETY: The folio's head page is a valid `ZONE_DEVICE` page (function safety
        // requirements), which has a pagemap.
        let pgmap = unsafe { bindings::page_pgmap(page) };
        // SAFETY: Only `DevicePagemap<T>` registers pagemaps with `OpsTable::<T>::OPS`, so `pgmap`
        // is the `pgmap` field of a `DevicePagemap<T>`. The core puts the folio's references on the
        // pagemap only after this returns, so it stays alive meanwhile.
        let pagemap = unsafe { DevicePagemap::<T>::from_raw(pgmap) };

        // SAFETY: `page` is valid and nobody else uses an idle page.
        let ptr = unsafe { bindings::page_zone_device_data(page) };
        // SAFETY: `page` is valid and nobody else uses an idle page.
        unsafe { bindings::page_set_zone_device_data(page, core::ptr::null_mut()) };
        // SAFETY: A page that had references was activated by `FreeDeviceFolio::activate()`, which
        // stored `into_foreign()` of a `T::PageData` here (type invariant of `DevicePage`); the
        // refcount is zero, so no borrow of it is left, and it was cleared above so it is taken
        // back only once.
        let Some(data) = (unsafe { T::PageData::try_from_foreign(ptr) }) else {
            // Unreachable (see above); leak the page rather than invent data.
            return;
        };

        if pagemap.is_removing() {
            // The pagemap is being removed: nobody is to allocate from it. The core puts the
            // folio's references after this returns. INVARIANT: The pages are no longer in use, and
            // no token owns them.
            pagemap.held.fetch_sub(nr_pages(order), Ordering::AcqRel);
            drop(data);
            return;
        }

        // SAFETY: The pagemap's `percpu_ref` is initialised and the folio's own references keep it
        // above zero.
        unsafe { bindings::percpu_ref_get_many(pagemap.percpu_ref(), nr_pages(order)) };
        // INVARIANT: The page is idle and nobody else owns it; we took the pagemap references the
        // token puts on drop.
        let page = FreeDeviceFolio {
            // SAFETY: `folio` is not null (function safety requirements).
            page: unsafe { NonNull::new_unchecked(page) },
            pagemap: NonNull::from(pagemap),
            order,
        };
        T::folio_free(pagemap, page, data);
    }

    /// # Safety
    ///
    /// Only to be called by the core (`zone_device_private_split_cb()`), for an in-use
    /// device-private folio `head` of a pagemap registered with `Self::OPS` that is being split,
    /// frozen and locked: once for every new folio `tail` but the first, then with `tail` null.
    unsafe extern "C" fn folio_split(head: *mut bindings::folio, tail: *mut bindings::folio) {
        if tail.is_null() {
            // The first new folio keeps the old one's page and data.
            return;
        }
        // SAFETY: Both folios are valid (function safety requirements).
        unsafe { bindings::folio_split_inherit(head, tail) };
        let (head, tail) = (head.cast::<bindings::page>(), tail.cast::<bindings::page>());
        // SAFETY: Both folios are valid (function safety requirements), and a folio starts with its
        // head page.
        let (hpfn, tpfn, order) = unsafe {
            (
                crate::page_ext::page_to_pfn(head),
                crate::page_ext::page_to_pfn(tail),
                bindings::folio_order(bindings::page_folio(tail)),
            )
        };
        // SAFETY: `head` is in use, so it carries the `into_foreign()` data `activate()` (or an
        // earlier split) stored (type invariant of `DevicePage`); the folio is frozen and locked
        // for this call, so the data cannot be taken back meanwhile.
        let data = unsafe { T::PageData::borrow(bindings::page_zone_device_data(head)) };
        let new = T::folio_split(data, tpfn - hpfn, order);
        // SAFETY: `tail` heads a new folio nobody else uses yet; from now on it carries its own
        // data, taken back by `folio_free` as any other.
        unsafe { bindings::page_set_zone_device_data(tail, new.into_foreign()) };
    }

    /// # Safety
    ///
    /// Only to be called by the core (`do_swap_page()`, `do_huge_pmd_device_private()`), for a
    /// fault on a device-private page of a pagemap registered with `Self::OPS`, with the mmap lock
    /// held for reading and the page locked and referenced.
    unsafe extern "C" fn migrate_to_ram(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: `vmf` is valid for the duration of this call (function safety requirements),
        // which satisfies `DeviceFault::from_raw()`.
        let mut fault = unsafe { DeviceFault::<T>::from_raw(vmf) };
        T::migrate_to_ram(&mut fault).into_raw()
    }
}

/// The number of pages in a folio of `order` (at most `MAX_PAGE_ORDER`, so the shift cannot
/// overflow).
fn nr_pages(order: u32) -> usize {
    1usize.wrapping_shl(order)
}

#[kunit_tests(rust_hmm_memremap)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_identities() -> Result {
        let a = PagemapOwner::new()?;
        let b = PagemapOwner::new()?;
        let a2 = a.clone();
        assert!(a.is(a2.as_raw()));
        assert!(!a.is(b.as_raw()));
        assert!(!a.is(core::ptr::null()));
        Ok(())
    }

    #[test]
    fn fault_results_are_the_c_values() {
        assert_eq!(VmFaultResult::Ok.into_raw(), 0);
        assert_eq!(
            VmFaultResult::Oom.into_raw(),
            bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t
        );
        assert_eq!(
            VmFaultResult::SigBus.into_raw(),
            bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t
        );
    }

    #[test]
    fn folio_sizes() {
        assert_eq!(nr_pages(0), 1);
        assert_eq!(nr_pages(9), 512);
    }
}
