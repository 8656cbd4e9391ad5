// SPDX-License-Identifier: GPL-2.0

//! Device memory: `struct dev_pagemap` and `memremap_pages()`.
//!
//! A [`DevicePagemap`] gives a range of device memory `struct page`s
//! (`ZONE_DEVICE`) so that anonymous memory can be migrated to it:
//! device-private memory the CPU cannot access (`MEMORY_DEVICE_PRIVATE`) or
//! device-coherent memory it can (`MEMORY_DEVICE_COHERENT`). The driver's
//! callbacks are a [`DevicePagemapOps`] implementation.
//!
//! # Page ownership
//!
//! Device pages are owned through tokens, which replace the C convention
//! of a free list threaded through `page->zone_device_data`:
//!
//! - [`FreeDevicePage`]: an idle page (refcount 0), owned by the driver's
//!   allocator. [`DevicePagemap::take_free_pages`] hands out every page of a
//!   new pagemap once; afterwards idle pages come back through
//!   [`DevicePagemapOps::folio_free`].
//! - [`LockedDevicePage`]: made by [`FreeDevicePage::activate`], which stores
//!   the driver's [`DevicePagemapOps::PageData`] in the page. It holds the
//!   page's only reference and its lock: it is a migration destination
//!   ([`LockedDevicePage::into_migrate_pfn`]). Dropping it instead unlocks
//!   and puts the page, which frees it back to `folio_free`.
//! - `&`[`DevicePage`]: a borrowed page in use, with access to its data, in
//!   callbacks and wherever the page is known to be live.
//!
//! # Large folios
//!
//! Pages can be handed out and put in use as naturally aligned blocks of
//! `1 << order` pages ([`DevicePagemap::take_free_pages`],
//! [`FreeDevicePage::split`]): large device folios, which a migration maps
//! with one PMD. The driver's data is per folio, in its head page. When the
//! core splits a device-private folio (a partial unmap, a migration that
//! falls back to single pages), [`DevicePagemapOps::folio_split`] gives each
//! new folio its data. The core calls that op for device-private folios
//! only, so only device-private pagemaps whose driver implements it hand
//! out large blocks.
//!
//! When the last reference to an in-use page goes, the kernel calls
//! `folio_free`; the abstraction takes the `PageData` back out of the page
//! and hands both to [`DevicePagemapOps::folio_free`] with a new
//! [`FreeDevicePage`]. If a migration does not use a destination page,
//! `migrate_vma_finalize()` unlocks and puts it, so it too comes back
//! through `folio_free`.
//!
//! # Lifetime of a pagemap
//!
//! Every [`FreeDevicePage`] and every in-use page holds a reference on the
//! pagemap's `percpu_ref`, so the pagemap (and its `struct page`s) cannot go
//! away under a token. `memunmap_pages()` waits, uninterruptibly, until every
//! such reference is gone, so the pagemap counts the pages that hold one
//! ([`DevicePagemap::pages_held`]) and unregisters only once none is left:
//!
//! - [`DevicePagemap::begin_removal`] stops freed pages from going back to
//!   the driver; the driver then drops the [`FreeDevicePage`]s it holds (e.g.
//!   drains its free list): they are counted like pages in use, and only the
//!   driver can give them up;
//! - [`DevicePagemap::evict_all`] migrates the pages still in use back to
//!   system memory ([`DevicePagemap::evict`]) in rounds, for a bounded time,
//!   and fails with `EBUSY` if some could not be moved (locked or pinned by
//!   someone else at the time, a large folio with no free system folio to
//!   move to, a [`LockedDevicePage`] someone holds): a driver can report
//!   that and keep the pagemap, or drop it, which then does not wait;
//! - dropping a [`DevicePagemap`] evicts until no page is left, logging what
//!   it still waits for every 10 s.
//!
//! C header: [`include/linux/memremap.h`](srctree/include/linux/memremap.h)
//!
//! C implementation: [`mm/memremap.c`](srctree/mm/memremap.c)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use crate::bindings;
use core::{
    any::TypeId,
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::{Deref, Range},
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};
use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    new_mutex,
    sync::Mutex,
    time::{delay::fsleep, Delta, Instant, Monotonic},
};
use kernel::{
    container_of,
    error::from_err_ptr,
    ffi::c_void,
    mm::virt::VmaRef,
    page::{BorrowedPage, Page, PAGE_SHIFT},
    prelude::*,
    sync::Arc,
    types::{ForeignOwnable, Opaque},
};

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
/// of one is stable and unique for as long as anyone can refer to it. Only
/// [`DevicePagemap`] registers a `dev_pagemap` with a `PagemapOwner` as its
/// owner (other users only compare the address).
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

/// The result of [`DevicePagemapOps::migrate_to_ram`] (a `vm_fault_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFaultResult {
    /// The fault was handled: the page was migrated, or there was nothing to
    /// do (for example, another thread migrated it first). The CPU retries the
    /// access.
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

/// The driver's side of a [`DevicePagemap`]: its per-pagemap data and the
/// `struct dev_pagemap_ops` callbacks.
///
/// The callbacks may run on any CPU, concurrently with each other and with
/// any method of the pagemap.
#[vtable]
pub trait DevicePagemapOps: Sized + Send + Sync + 'static {
    /// What the driver keeps in each in-use device page
    /// (`page->zone_device_data`), e.g. a `KBox` holding the system page that
    /// backs a device-private page and the mirror that owns it.
    ///
    /// It is dropped where the page is freed: in the `folio_free` callback,
    /// which runs in whatever context put the last reference to the page
    /// (atomic context included), or in [`DevicePagemapOps::folio_free`]. Its
    /// destructor must therefore not sleep: no mutex, no `vfree()`, no
    /// `synchronize_rcu()`. Freeing pages and `kmalloc()`ed memory is fine.
    type PageData: ForeignOwnable + Send + Sync + 'static;

    /// The last reference to `page` was dropped (`dev_pagemap_ops::folio_free`).
    ///
    /// `data` is what [`FreeDevicePage::activate`] stored in the page; `page`
    /// is the now idle page, to be put back on the driver's free list or
    /// dropped. Called in whatever context dropped the last reference, so it
    /// must not sleep. Not called for pages freed once the pagemap is being
    /// removed ([`DevicePagemap::begin_removal`]), except by a call that was
    /// already under way: drop the page if [`DevicePagemap::is_removing`],
    /// testing it under the lock that guards the free list.
    fn folio_free(pagemap: &DevicePagemap<Self>, page: FreeDevicePage<Self>, data: Self::PageData);

    /// The CPU accessed a device-private page (`dev_pagemap_ops::migrate_to_ram`).
    ///
    /// Migrate [`DeviceFault::page`] back to system memory (with
    /// `migrate_vma`, using [`DeviceFault::vma`] and the fault page). The
    /// mmap lock is held for reading and the faulting page is locked, with a
    /// reference held, for the whole call.
    fn migrate_to_ram(fault: &mut DeviceFault<'_, Self>) -> VmFaultResult;

    /// Copies the contents of the device page `src` to the system page `dst`.
    ///
    /// Used by [`DevicePagemap::evict`] (and so by the pagemap's destructor)
    /// to move pages that are still in use back to system memory. `src` and
    /// `dst` are both locked. May sleep.
    fn copy_to_ram(
        src: &DevicePage<Self>,
        data: <Self::PageData as ForeignOwnable>::Borrowed<'_>,
        dst: &Page,
    );

    /// A large folio of the pagemap is being split
    /// (`dev_pagemap_ops::folio_split`): returns the data of the new folio
    /// of `1 << order` pages that starts `offset` pages into the old one.
    ///
    /// `data` is the old folio's, which its first page keeps (the old folio
    /// becomes the first of the new ones). Called once per new folio but the
    /// first, with the folio frozen and locked, possibly under spinlocks: it
    /// must neither sleep nor fail (e.g. share the data by reference count
    /// instead of allocating). Only device-private pagemaps whose driver
    /// implements this op hand out large blocks of pages.
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
    /// Only to be called by the core (`free_zone_device_folio()`), for a
    /// folio of a pagemap registered with `Self::OPS`, when its refcount
    /// dropped to zero.
    unsafe extern "C" fn folio_free(folio: *mut bindings::folio) {
        // `struct folio` starts with its head page.
        let page = folio.cast::<bindings::page>();
        // SAFETY: The folio is a valid `ZONE_DEVICE` folio (function safety
        // requirements).
        let order = unsafe { bindings::page_folio_order(page) };
        // SAFETY: As above.
        let pgmap = unsafe { bindings::page_pgmap(page) };
        // SAFETY: Only `DevicePagemap<T>` registers pagemaps with
        // `OpsTable::<T>::OPS`, so `pgmap` is the `pgmap` field of a
        // `DevicePagemap<T>`. The core puts the folio's references on the
        // pagemap only after this returns, so it stays alive meanwhile.
        let pagemap = unsafe { DevicePagemap::<T>::from_raw(pgmap) };

        // SAFETY: `page` is valid and nobody else uses an idle page.
        let ptr = unsafe { bindings::page_zone_device_data(page) };
        // SAFETY: As above.
        unsafe { bindings::page_set_zone_device_data(page, core::ptr::null_mut()) };
        // SAFETY: A page that had references was activated by
        // `FreeDevicePage::activate()`, which stored `into_foreign()` of a
        // `T::PageData` here (type invariant of `DevicePage`); the refcount is
        // zero, so no borrow of it is left, and it was cleared above so it is
        // taken back only once.
        let Some(data) = (unsafe { T::PageData::try_from_foreign(ptr) }) else {
            // Unreachable (see above); leak the page rather than invent data.
            return;
        };

        if pagemap.is_removing() {
            // The pagemap is being removed: nobody is to allocate from it.
            // The core puts the folio's references after this returns.
            // INVARIANT: The pages are no longer in use, and no token owns
            // them.
            pagemap.held.fetch_sub(nr_pages(order), Ordering::AcqRel);
            drop(data);
            return;
        }

        // SAFETY: The pagemap's `percpu_ref` is initialised and the folio's
        // own references keep it above zero.
        unsafe { bindings::percpu_ref_get_many(pagemap.percpu_ref(), nr_pages(order)) };
        // INVARIANT: The page is idle and nobody else owns it; we took the
        // pagemap references the token puts on drop.
        let page = FreeDevicePage {
            // SAFETY: `folio` is not null (function safety requirements).
            page: unsafe { NonNull::new_unchecked(page) },
            pagemap: NonNull::from(pagemap),
            order,
        };
        T::folio_free(pagemap, page, data);
    }

    /// # Safety
    ///
    /// Only to be called by the core (`zone_device_private_split_cb()`), for
    /// an in-use device-private folio `head` of a pagemap registered with
    /// `Self::OPS` that is being split, frozen and locked: once for every new
    /// folio `tail` but the first, then with `tail` null.
    unsafe extern "C" fn folio_split(head: *mut bindings::folio, tail: *mut bindings::folio) {
        if tail.is_null() {
            // The first new folio keeps the old one's page and data.
            return;
        }
        // SAFETY: Both folios are valid (function safety requirements).
        unsafe { bindings::folio_split_inherit(head, tail) };
        let (head, tail) = (head.cast::<bindings::page>(), tail.cast::<bindings::page>());
        // SAFETY: As above; a folio starts with its head page.
        let (hpfn, tpfn, order) = unsafe {
            (
                bindings::page_to_pfn(head),
                bindings::page_to_pfn(tail),
                bindings::page_folio_order(tail),
            )
        };
        // SAFETY: `head` is in use, so it carries the `into_foreign()` data
        // `activate()` (or an earlier split) stored (type invariant of
        // `DevicePage`); the folio is frozen and locked for this call, so the
        // data cannot be taken back meanwhile.
        let data = unsafe { T::PageData::borrow(bindings::page_zone_device_data(head)) };
        let new = T::folio_split(data, tpfn - hpfn, order);
        // SAFETY: `tail` heads a new folio nobody else uses yet; from now on
        // it carries its own data, taken back by `folio_free` as any other.
        unsafe { bindings::page_set_zone_device_data(tail, new.into_foreign()) };
    }

    /// # Safety
    ///
    /// Only to be called by the core (`do_swap_page()`,
    /// `do_huge_pmd_device_private()`), for a fault on a device-private page
    /// of a pagemap registered with `Self::OPS`, with the mmap lock held for
    /// reading and the page locked and referenced.
    unsafe extern "C" fn migrate_to_ram(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: `vmf` is valid for the duration of this call (function
        // safety requirements), which satisfies `DeviceFault::from_raw()`.
        let mut fault = unsafe { DeviceFault::<T>::from_raw(vmf) };
        T::migrate_to_ram(&mut fault).into_raw()
    }
}

/// The name `/proc/iomem` shows for the regions of device-private pagemaps.
const REGION_NAME: &CStr = c"rust_dev_pagemap";

/// A range of physical address space claimed in `iomem_resource`.
///
/// # Invariants
///
/// `[start, start + size)` was claimed in `iomem_resource` (by
/// `request_free_mem_region()` or `request_mem_region()`) and is released
/// once, on drop.
struct MemRegion {
    start: u64,
    size: u64,
}

impl MemRegion {
    /// Claims a free range of `size` bytes (`request_free_mem_region()`).
    fn request_free(size: usize) -> Result<Self> {
        // SAFETY: `iomem_resource` is the static root of the iomem tree,
        // which `request_free_mem_region()` locks; the name is static.
        let res = unsafe {
            bindings::request_free_mem_region(
                &raw mut bindings::iomem_resource,
                size,
                REGION_NAME.as_char_ptr(),
            )
        };
        let res = from_err_ptr(res)?;
        if res.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `res` is the resource just inserted in the tree; it stays
        // valid until released.
        let (start, end) = unsafe { ((*res).start, (*res).end) };
        // INVARIANT: The range was just claimed.
        Ok(Self {
            start,
            size: end - start + 1,
        })
    }

    /// Claims `[start, start + size)`, which must not be claimed by anyone
    /// else (`request_mem_region()`).
    fn request(start: u64, size: u64) -> Result<Self> {
        // SAFETY: As in `request_free()`.
        let res = unsafe {
            bindings::__request_region(
                &raw mut bindings::iomem_resource,
                start,
                size,
                REGION_NAME.as_char_ptr(),
                0,
            )
        };
        if res.is_null() {
            return Err(EBUSY);
        }
        // INVARIANT: The range was just claimed.
        Ok(Self { start, size })
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // SAFETY: The range was claimed in `iomem_resource` and is released
        // only here (type invariant); this is `release_mem_region()`.
        unsafe {
            bindings::__release_region(&raw mut bindings::iomem_resource, self.start, self.size)
        };
    }
}

/// CPU-addressable physical memory that its owner hands to
/// [`DevicePagemap::new_coherent`]: the proof that registering it as
/// device-coherent memory takes nothing from anyone.
///
/// `memremap_pages()` gives every page of the range a `struct page` in the
/// kernel's linear map (write-back cached) and hands the pages to user
/// space through migrations. Done on a range that is firmware memory
/// (ACPI tables, e820 reserved areas), unclaimed MMIO or memory another
/// agent uses, that corrupts it, and nothing in the range's resource tree
/// tells such a range apart from real device memory. So the range comes
/// with the caller's word, in an `unsafe` constructor.
///
/// # Invariants
///
/// `[start, start + size)` is cache-coherent, CPU-addressable memory that
/// only the holder of this value uses, for as long as a pagemap made from
/// it is registered.
///
/// The value may be copied: it vouches for the range, not for one
/// registration (a driver registers the same range again after removing
/// it), and registering a range twice at once fails in
/// `request_mem_region()` (`EBUSY`).
#[derive(Clone, Copy, Debug)]
pub struct CoherentMemory {
    start: u64,
    size: u64,
}

impl CoherentMemory {
    /// Declares `[start, start + size)` device memory of the caller.
    ///
    /// # Safety
    ///
    /// The range must be cache-coherent, CPU-addressable memory that nobody
    /// but the caller uses (not System RAM the kernel manages, not firmware
    /// or MMIO space, not another device's memory), and must stay so for as
    /// long as a [`DevicePagemap`] made from it is registered. For example:
    /// memory of the caller's device, or a range kept from the kernel for
    /// the purpose with `memmap=nn$ss`, as `lib/test_hmm.c`'s `spm_addr_dev*`
    /// parameters are.
    pub unsafe fn new(start: u64, size: u64) -> Self {
        // INVARIANT: By the function safety requirements.
        Self { start, size }
    }

    /// The physical address of the first byte.
    #[inline]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The size in bytes.
    #[inline]
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Number of pages [`DevicePagemap::evict`] migrates per batch: the
/// largest folio it can migrate whole (`HPAGE_PMD_NR`).
const EVICT_BATCH: usize = 1 << bindings::HMM_RS_HPAGE_PMD_ORDER;

/// Device memory registered with `memremap_pages()`: a `struct dev_pagemap`
/// and the driver's per-pagemap data `T`.
///
/// See the [module documentation](self) for how its pages are owned and how
/// it is torn down.
///
/// # Invariants
///
/// - `pgmap` was registered with `memremap_pages()` with `OpsTable::<T>::OPS`
///   as ops, `owner` as owner and one range, `region`, and is unregistered
///   (`memunmap_pages()`) exactly once, in `drop`.
/// - `type_id` is `TypeId::of::<T>()`. The type is `repr(C)` and
///   `pgmap` and `type_id` come first, so both are at the same offset in
///   every `DevicePagemap<U>`: code that knows only the `dev_pagemap` can read
///   which `T` the pagemap was made with.
/// - Once `pages_taken` is set, [`FreeDevicePage`]s may exist for the
///   pagemap's pages; before, every page is idle and unowned.
/// - `held` counts the pages that hold a reference on the `percpu_ref`,
///   `memunmap_pages()` waits for: pages owned by a [`FreeDevicePage`] or a
///   [`SplitPages`] iterator, and pages in use. It is zero only once no such
///   page is left (the core may still be putting the references of a page
///   whose `folio_free` ran: that does not wait on anyone).
// `repr(C)`, with `pgmap` and `type_id` first: `AnyDevicePage::downcast()`
// reads `type_id` through a `DevicePagemap<T>` of possibly another `T`.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct DevicePagemap<T: DevicePagemapOps> {
    #[pin]
    pgmap: Opaque<bindings::dev_pagemap>,
    type_id: TypeId,
    region: MemRegion,
    owner: Arc<PagemapOwner>,
    pages_taken: AtomicBool,
    removing: AtomicBool,
    held: AtomicUsize,
    /// The pfn arrays of [`DevicePagemap::evict_with`]: `2 * EVICT_BATCH`.
    #[pin]
    evict_buf: Mutex<KVec<usize>>,
    data: T,
}

// SAFETY: The `dev_pagemap` is used through the C API, which synchronises
// itself, and may be unregistered from any thread; the other fields are
// `Send` (`T: Send`).
unsafe impl<T: DevicePagemapOps> Send for DevicePagemap<T> {}
// SAFETY: The `&self` methods only call C functions that may run
// concurrently (`memremap`, `percpu_ref`, `migrate_device_*`), use atomics,
// or hand out `&T` (`T: Sync`).
unsafe impl<T: DevicePagemapOps> Sync for DevicePagemap<T> {}

impl<T: DevicePagemapOps> DevicePagemap<T> {
    /// Registers `size` bytes of device-private memory
    /// (`MEMORY_DEVICE_PRIVATE`) at a free physical range, on NUMA node `nid`
    /// (`None`: the current node).
    ///
    /// `size` must be a multiple of `memremap_compat_align()` (2 MiB on
    /// x86_64). Its pages are device-private: the CPU faults on them, which
    /// calls [`DevicePagemapOps::migrate_to_ram`].
    pub fn new_private(
        size: usize,
        owner: Arc<PagemapOwner>,
        nid: Option<i32>,
        data: T,
    ) -> impl PinInit<Self, Error> {
        let region = move || {
            check_size(size as u64)?;
            MemRegion::request_free(size)
        };
        Self::new_in(
            bindings::memory_type_MEMORY_DEVICE_PRIVATE,
            region,
            owner,
            nid,
            data,
        )
    }

    /// Registers the CPU-addressable device memory `mem` as device-coherent
    /// (`MEMORY_DEVICE_COHERENT`), on NUMA node `nid` (`None`: the current
    /// node).
    ///
    /// `mem` is the caller's proof that the range is device memory it owns
    /// ([`CoherentMemory::new`]). The range is also claimed in
    /// `iomem_resource`, so it must not be claimed by another driver
    /// (`EBUSY`); `memremap_pages()` refuses ranges that overlap System RAM
    /// or another pagemap. Its start and size must be multiples of
    /// `memremap_compat_align()` (`EINVAL`).
    pub fn new_coherent(
        mem: CoherentMemory,
        owner: Arc<PagemapOwner>,
        nid: Option<i32>,
        data: T,
    ) -> impl PinInit<Self, Error> {
        let region = move || {
            check_size(mem.size)?;
            check_size(mem.start)?;
            MemRegion::request(mem.start, mem.size)
        };
        Self::new_in(
            bindings::memory_type_MEMORY_DEVICE_COHERENT,
            region,
            owner,
            nid,
            data,
        )
    }

    /// Claims the region `region` returns and registers it as `kind`.
    fn new_in(
        kind: bindings::memory_type,
        region: impl FnOnce() -> Result<MemRegion>,
        owner: Arc<PagemapOwner>,
        nid: Option<i32>,
        data: T,
    ) -> impl PinInit<Self, Error> {
        // The pagemap is registered last: everything that can fail comes
        // before `memremap_pages()` (a failure after it would drop the fields
        // without unregistering the pagemap), and every field that its pages
        // and callbacks read (`type_id`, `data`, ...) is initialised before
        // anyone can see a page.
        try_pin_init!(Self {
            region: region()?,
            owner,
            evict_buf <- new_mutex!(evict_buf()?),
            type_id: TypeId::of::<T>(),
            pages_taken: AtomicBool::new(false),
            removing: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            data,
            pgmap <- Self::register(kind, region, owner, nid),
        }? Error)
    }

    /// Initialises the `dev_pagemap` and registers it (`memremap_pages()`).
    fn register(
        kind: bindings::memory_type,
        region: &MemRegion,
        owner: &PagemapOwner,
        nid: Option<i32>,
    ) -> impl PinInit<Opaque<bindings::dev_pagemap>, Error> {
        let (start, size, owner) = (region.start, region.size, owner.as_raw());
        Opaque::try_ffi_init(move |slot: *mut bindings::dev_pagemap| {
            let nid = match nid {
                None => bindings::NUMA_NO_NODE,
                Some(n) if (0..bindings::MAX_NUMNODES as i32).contains(&n) => {
                    // SAFETY: `node_online()` tests a bit of a static bitmap;
                    // `n` is in its bounds.
                    if !unsafe { bindings::node_online(n) } {
                        return Err(EINVAL);
                    }
                    n
                }
                Some(_) => return Err(EINVAL),
            };

            // SAFETY: `struct dev_pagemap` is plain data (integers, pointers,
            // an unused `percpu_ref` and `completion`), for which all zeroes
            // is valid: it is how C drivers allocate it.
            let mut pgmap: bindings::dev_pagemap = unsafe { core::mem::zeroed() };
            pgmap.type_ = kind;
            pgmap.ops = &OpsTable::<T>::OPS;
            pgmap.owner = owner;
            pgmap.nr_range = 1;
            // SAFETY: `range` is the member of the union used when
            // `nr_range == 1`; writing it is writing plain integers.
            unsafe {
                *pgmap.__bindgen_anon_1.range.as_mut() = bindings::range {
                    start,
                    end: start + size - 1,
                }
            };
            // SAFETY: `slot` is valid for writes (`try_ffi_init`).
            unsafe { slot.write(pgmap) };

            // SAFETY: `slot` is an initialised `dev_pagemap` for a range this
            // pagemap claimed, with the ops `memremap_pages()` requires for
            // the type (both callbacks) and an owner; it is pinned, and the
            // `DevicePagemap` it is in unregisters it before it is freed.
            // INVARIANT: On success the pagemap is registered as documented.
            let ret = unsafe { bindings::memremap_pages(slot, nid) };
            // `IS_ERR_OR_NULL()`, as test_hmm checks it.
            if from_err_ptr(ret)?.is_null() {
                return Err(EFAULT);
            }
            Ok(())
        })
    }

    /// The pagemap whose `dev_pagemap` is `pgmap`.
    ///
    /// # Safety
    ///
    /// `pgmap` must be the `pgmap` field of a live `DevicePagemap<T>` that
    /// stays alive for `'a`.
    unsafe fn from_raw<'a>(pgmap: *mut bindings::dev_pagemap) -> &'a Self {
        let field = Opaque::cast_from(pgmap).cast_mut();
        // SAFETY: `field` is the `pgmap` field of a `DevicePagemap<T>`
        // (function safety requirements), so the container is in the same
        // allocation.
        let this = unsafe { container_of!(field, Self, pgmap) };
        // SAFETY: The pagemap is alive for `'a` (function safety
        // requirements) and only ever accessed through shared references
        // once pinned.
        unsafe { &*this }
    }

    /// The raw `struct dev_pagemap`.
    pub(crate) fn as_raw(&self) -> *mut bindings::dev_pagemap {
        self.pgmap.get()
    }

    /// The pagemap's `percpu_ref`.
    fn percpu_ref(&self) -> *mut bindings::percpu_ref {
        // SAFETY: The `dev_pagemap` is initialised (type invariant); this
        // only computes a field address.
        unsafe { &raw mut (*self.as_raw()).ref_ }
    }

    /// The driver's per-pagemap data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The owner the pagemap was registered with (`dev_pagemap::owner`).
    pub fn owner(&self) -> &Arc<PagemapOwner> {
        &self.owner
    }

    /// Whether this is device-private memory (else device-coherent).
    pub fn is_private(&self) -> bool {
        // SAFETY: The `dev_pagemap` is initialised and `type` never changes
        // after registration.
        unsafe { (*self.as_raw()).type_ == bindings::memory_type_MEMORY_DEVICE_PRIVATE }
    }

    /// The pfns of the pagemap's pages.
    pub fn pfn_range(&self) -> Range<usize> {
        let start = (self.region.start >> PAGE_SHIFT) as usize;
        start..start + self.npages()
    }

    /// The number of pages of the pagemap.
    pub fn npages(&self) -> usize {
        (self.region.size >> PAGE_SHIFT) as usize
    }

    /// Whether the pagemap hands out blocks of `order` (see the
    /// [module documentation](self#large-folios)): 0 always; larger orders
    /// up to `HPAGE_PMD_ORDER` (what a migration maps) for device-private
    /// memory whose driver
    /// implements [`DevicePagemapOps::folio_split`].
    pub fn supports_order(&self, order: u32) -> bool {
        order == 0
            || (order <= bindings::HMM_RS_HPAGE_PMD_ORDER
                && self.is_private()
                && T::HAS_FOLIO_SPLIT)
    }

    /// Takes ownership of every page of the pagemap, all idle after
    /// registration, as naturally aligned blocks of `order` where they fit
    /// and single pages elsewhere. `EINVAL` if the pagemap does not support
    /// `order` ([`DevicePagemap::supports_order`]).
    ///
    /// Only the first call yields pages; later calls yield none. Pages the
    /// iterator does not get to are never handed out.
    pub fn take_free_pages(
        &self,
        order: u32,
    ) -> Result<impl Iterator<Item = FreeDevicePage<T>> + '_> {
        if !self.supports_order(order) {
            return Err(EINVAL);
        }
        let range = if self.pages_taken.swap(true, Ordering::AcqRel) {
            0..0
        } else {
            self.pfn_range()
        };
        let mut pfn = range.start;
        Ok(core::iter::from_fn(move || {
            if pfn >= range.end {
                return None;
            }
            let n = nr_pages(order);
            let order = if pfn % n == 0 && range.end - pfn >= n {
                order
            } else {
                0
            };
            // SAFETY: `pfn` is in the pagemap, whose memmap exists while it is
            // registered (`&self`).
            let page = NonNull::new(unsafe { bindings::pfn_to_page(pfn) })?;
            pfn += nr_pages(order);
            // SAFETY: The `percpu_ref` is live: it is killed only when the
            // pagemap is dropped.
            unsafe { bindings::percpu_ref_get_many(self.percpu_ref(), nr_pages(order)) };
            self.held.fetch_add(nr_pages(order), Ordering::AcqRel);
            // INVARIANT: `pages_taken` was clear, so the pages are idle and
            // this is the only token for them; we took their pagemap
            // references and counted them in `held`. A block of `order` is
            // only made where supported.
            Some(FreeDevicePage {
                page,
                pagemap: NonNull::from(self),
                order,
            })
        }))
    }

    /// Migrates the pagemap's pages that are in use back to system memory,
    /// copying each with [`DevicePagemapOps::copy_to_ram`].
    ///
    /// See [`DevicePagemap::evict_with`].
    pub fn evict(&self) {
        self.evict_with(T::copy_to_ram)
    }

    /// The number of the pagemap's pages that are in use or owned by a
    /// [`FreeDevicePage`]: what unregistering the pagemap waits for.
    #[inline]
    pub fn pages_held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// One eviction round of a pagemap being removed: whether no page is
    /// held any more.
    fn evict_round(&self) -> bool {
        if self.pages_held() == 0 {
            return true;
        }
        self.evict();
        self.pages_held() == 0
    }

    /// Starts removing the pagemap: from now on its freed pages go back to no
    /// one, not to the driver.
    ///
    /// A `folio_free` that started before this may still deliver a page to
    /// [`DevicePagemapOps::folio_free`]: the driver checks
    /// [`DevicePagemap::is_removing`] there, under the lock that guards its
    /// free list, and drains that list under the same lock after calling
    /// this, so that no [`FreeDevicePage`] of the pagemap is left.
    #[inline]
    pub fn begin_removal(&self) {
        self.removing.store(true, Ordering::Release);
    }

    /// Whether [`DevicePagemap::begin_removal`] was called.
    #[inline]
    pub fn is_removing(&self) -> bool {
        self.removing.load(Ordering::Acquire)
    }

    /// Evicts the pages of a pagemap being removed until none is held, for at
    /// most `timeout`.
    ///
    /// The pages in use are evicted ([`DevicePagemap::evict`]) in rounds.
    /// Once this succeeds no page is held, and none can be again (no page is
    /// handed out once removal began): dropping the pagemap then does not
    /// wait. `EBUSY` if pages are still held when the time is up: they could
    /// not be evicted yet (locked or pinned by someone else, a large folio
    /// with no free system folio to move to, [`FreeDevicePage`]s the driver
    /// still owns); `EINTR` if the current task is being killed. Calls
    /// [`DevicePagemap::begin_removal`] first. May sleep.
    pub fn evict_all(&self, timeout: Delta) -> Result {
        self.begin_removal();
        let start = Instant::<Monotonic>::now();
        while !self.evict_round() {
            if crate::task_ext::fatal_signal_pending() {
                return Err(EINTR);
            }
            if start.elapsed() > timeout {
                return Err(EBUSY);
            }
            fsleep(UNREGISTER_RETRY_INTERVAL);
        }
        Ok(())
    }

    /// Migrates the pagemap's pages that are in use back to system memory
    /// (`migrate_device_range()`), as test_hmm's
    /// `dmirror_device_evict_chunk()` does.
    ///
    /// For each page in use, `copy` gets the locked device page, its data and
    /// a locked, freshly allocated system page; the system page then replaces
    /// the device page in every page table mapping it, and the device page
    /// is freed (to [`DevicePagemapOps::folio_free`]).
    ///
    /// Pages that are locked by someone else at the time (e.g. a
    /// [`LockedDevicePage`] or a concurrent migration) or that cannot be
    /// unmapped are skipped. May sleep.
    pub fn evict_with(
        &self,
        mut copy: impl FnMut(&DevicePage<T>, <T::PageData as ForeignOwnable>::Borrowed<'_>, &Page),
    ) {
        // Allocated with the pagemap, so that dropping it cannot fail.
        let mut buf = self.evict_buf.lock();
        let (src, dst) = buf.split_at_mut(EVICT_BATCH);
        let range = self.pfn_range();
        let mut pfn = range.start;
        while pfn < range.end {
            // Batches end on multiples of `EVICT_BATCH` pages, so that no
            // folio (naturally aligned, at most that large) straddles two:
            // `migrate_device_range()` would skip it.
            let n = (EVICT_BATCH - pfn % EVICT_BATCH).min(range.end - pfn);
            src[..n].fill(0);
            dst[..n].fill(0);
            // SAFETY: `src` has room for `n` entries; `[pfn, pfn + n)` are
            // pages of this pagemap, which is registered (`&self`).
            unsafe { bindings::migrate_device_range(src.as_mut_ptr(), pfn, n) };
            for i in 0..n {
                dst[i] = self.evict_one(src[i], &mut copy);
            }
            // SAFETY: `src` was filled by `migrate_device_range()` for `n`
            // pages; `dst` holds a locked destination folio of the source's
            // order for the entries we migrate, 0 for the others.
            unsafe {
                bindings::migrate_device_pages(src.as_mut_ptr(), dst.as_mut_ptr(), n);
                bindings::migrate_device_finalize(src.as_mut_ptr(), dst.as_mut_ptr(), n);
            }
            pfn += n;
        }
    }

    /// The destination entry for the source entry `s` of an eviction: a
    /// locked system folio of the source's order holding its contents, or 0
    /// to leave it.
    fn evict_one(
        &self,
        s: usize,
        copy: &mut impl FnMut(&DevicePage<T>, <T::PageData as ForeignOwnable>::Borrowed<'_>, &Page),
    ) -> usize {
        if s & bindings::MIGRATE_PFN_MIGRATE as usize == 0 {
            return 0;
        }
        // SAFETY: `migrate_pfn_to_page()` decodes the entry.
        let Some(spage) = NonNull::new(unsafe { bindings::migrate_pfn_to_page(s) }) else {
            return 0;
        };
        // A page between `zone_device_page_init()` (reference) and the end
        // of `activate()` (data) has no data yet: leave it. The page lock
        // orders the two: `zone_device_page_init()` sets the refcount before
        // it locks the page, so `migrate_device_range()` may get and lock the
        // page first. It then sees no data (`folio_free` cleared it, or it
        // is zero since `memremap_pages()`) and leaves the page, while
        // `activate()` sleeps in `lock_page()` until
        // `migrate_device_finalize()` unlocks it. Otherwise `activate()`
        // holds the lock until the data is stored, `migrate_device_range()`'s
        // trylock fails and the page is evicted in a later round.
        // SAFETY: `spage` is a locked, referenced page of this pagemap.
        if unsafe { bindings::page_zone_device_data(spage.as_ptr()) }.is_null() {
            return 0;
        }
        // SAFETY: `migrate_device_range()` took a reference to the folio and
        // locked it, and keeps both until `migrate_device_finalize()`; it
        // carries page data, so it is an in-use folio of this pagemap.
        let spage = unsafe { DevicePage::<T>::from_raw(spage.as_ptr()) };
        let order = spage.order();
        let dpage = if order == 0 {
            // SAFETY: Allocating may sleep; `evict` may sleep.
            unsafe {
                bindings::alloc_pages(bindings::GFP_HIGHUSER_MOVABLE | bindings::__GFP_NOFAIL, 0)
            }
        } else {
            // `__GFP_NOFAIL` is not for large folios: without one, this
            // folio stays (it cannot be split without a VMA).
            let gfp = bindings::GFP_HIGHUSER_MOVABLE
                | bindings::__GFP_RETRY_MAYFAIL
                | bindings::__GFP_NOWARN;
            // SAFETY: As above; the order is a folio's.
            unsafe { bindings::folio_alloc(gfp, order) }
        };
        let Some(dpage) = NonNull::new(dpage) else {
            return 0;
        };
        // SAFETY: We own the new folio; nobody else can see it.
        unsafe { bindings::lock_page(dpage.as_ptr()) };
        // SAFETY: `dpage` is a valid page.
        let dpfn = unsafe { bindings::page_to_pfn(dpage.as_ptr()) };
        for i in 0..nr_pages(order) {
            // SAFETY: Page `i` of the two folios, both of `order` pages and
            // contiguous in the memmap; both stay locked and referenced
            // until `migrate_device_finalize()`, after `copy` returns.
            let (sub, dsub) = unsafe {
                (
                    DevicePage::<T>::from_raw(spage.as_raw().add(i)),
                    NonNull::new_unchecked(dpage.as_ptr().add(i)),
                )
            };
            // SAFETY: We own a reference to the destination folio until it
            // is passed to the migration; `BorrowedPage` does not free it.
            let dsub = unsafe { BorrowedPage::from_raw(dsub) };
            copy(sub, spage.data(), &dsub);
        }
        let compound = if order > 0 {
            bindings::MIGRATE_PFN_COMPOUND as usize
        } else {
            0
        };
        // SAFETY: `migrate_pfn()` is arithmetic. Our reference and lock on
        // `dpage` pass to the migration, which unlocks and puts it in
        // `migrate_device_finalize()`.
        let mpfn = unsafe { bindings::migrate_pfn(dpfn) };
        mpfn | (s & bindings::MIGRATE_PFN_WRITE as usize) | compound
    }
}

/// The number of pages in a folio of `order` (at most `MAX_PAGE_ORDER`, so
/// the shift cannot overflow).
fn nr_pages(order: u32) -> usize {
    1usize.wrapping_shl(order)
}

/// The pfn arrays of [`DevicePagemap::evict_with`], zeroed.
fn evict_buf() -> Result<KVec<usize>> {
    let mut buf = KVec::with_capacity(2 * EVICT_BATCH, GFP_KERNEL)?;
    buf.resize(2 * EVICT_BATCH, 0, GFP_KERNEL)?;
    Ok(buf)
}

/// Checks that `x` is a non-zero multiple of `memremap_compat_align()`.
fn check_size(x: u64) -> Result {
    // SAFETY: `memremap_compat_align()` returns a constant.
    let align = unsafe { bindings::memremap_compat_align() } as u64;
    match x.checked_rem(align) {
        Some(0) if x != 0 => Ok(()),
        _ => Err(EINVAL),
    }
}

#[pinned_drop]
impl<T: DevicePagemapOps> PinnedDrop for DevicePagemap<T> {
    fn drop(self: Pin<&mut Self>) {
        // Callbacks on other CPUs may hold `&Self` while this runs; that is
        // allowed because `Self` is `!Unpin`, and only `&Self` is used here.
        let this = self.into_ref().get_ref();
        // Pages freed from now on (by the eviction below, for one) are not
        // handed to the driver, whose free list would keep the pagemap alive.
        this.begin_removal();
        // `memunmap_pages()` waits, uninterruptibly and without a word, for
        // every page that holds a reference: evict until none is left, and
        // say so while some are.
        let start = Instant::<Monotonic>::now();
        let mut next_report = DROP_REPORT_INTERVAL;
        while !this.evict_round() {
            if start.elapsed() >= next_report {
                pr_warn!(
                    "dev_pagemap pfns {:#x}..{:#x}: {} page(s) still held after {} s \
                     (in use and not evictable now, or free-page tokens not dropped); retrying\n",
                    this.pfn_range().start,
                    this.pfn_range().end,
                    this.pages_held(),
                    start.elapsed().as_millis() / 1000,
                );
                next_report += DROP_REPORT_INTERVAL;
            }
            fsleep(DROP_RETRY_INTERVAL);
        }
        // SAFETY: The pagemap is registered and this is the only place that
        // unregisters it (type invariant). `memunmap_pages()` waits until every
        // reference to the pagemap is gone; `held` is zero, so at most the
        // core's own putting of a just freed folio is left. The claimed
        // region is released afterwards, when the fields are dropped.
        unsafe { bindings::memunmap_pages(this.as_raw()) };
    }
}

/// How long [`DevicePagemap`]'s destructor sleeps between eviction rounds.
const DROP_RETRY_INTERVAL: Delta = Delta::from_millis(100);
/// How often it reports the pages it is still waiting for.
const DROP_REPORT_INTERVAL: Delta = Delta::from_secs(10);
/// How long [`DevicePagemap::evict_all`] sleeps between rounds.
const UNREGISTER_RETRY_INTERVAL: Delta = Delta::from_millis(10);

/// An idle device page of a [`DevicePagemap<T>`], owned by the driver.
///
/// # Invariants
///
/// - `page` is a page of the pagemap `pagemap` with refcount 0 that nobody
///   else owns or uses; for `order > 0` it heads `1 << order` such pages,
///   naturally aligned, and the pagemap supports `order`
///   ([`DevicePagemap::supports_order`]).
/// - The token holds `1 << order` references on the pagemap's `percpu_ref`,
///   which keep `pagemap` alive.
pub struct FreeDevicePage<T: DevicePagemapOps> {
    page: NonNull<bindings::page>,
    pagemap: NonNull<DevicePagemap<T>>,
    order: u32,
}

// SAFETY: The token is exclusive ownership of an idle page; nothing about it
// is tied to a thread, and the pagemap it refers to is `Sync`.
unsafe impl<T: DevicePagemapOps> Send for FreeDevicePage<T> {}
// SAFETY: `&self` methods only read.
unsafe impl<T: DevicePagemapOps> Sync for FreeDevicePage<T> {}

impl<T: DevicePagemapOps> FreeDevicePage<T> {
    /// The page's pfn.
    pub fn pfn(&self) -> usize {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::page_to_pfn(self.page.as_ptr()) }
    }

    /// The order of the block of pages (0: a single page).
    pub fn order(&self) -> u32 {
        self.order
    }

    /// The pagemap the page belongs to.
    pub fn pagemap(&self) -> &DevicePagemap<T> {
        // SAFETY: The token's references keep the pagemap alive (type
        // invariant).
        unsafe { self.pagemap.as_ref() }
    }

    /// Splits an idle block into tokens for each of its pages.
    ///
    /// Pages the iterator is not driven to are released with it.
    pub fn split(self) -> SplitPages<T> {
        let this = ManuallyDrop::new(self);
        // INVARIANT: The block's references pass to the iterator.
        SplitPages {
            next: this.pfn(),
            end: this.pfn() + nr_pages(this.order),
            pagemap: this.pagemap,
        }
    }

    /// Puts the page in use: initialises it as a folio of `order()` with one
    /// reference (`zone_device_folio_init()`), locked, and stores `data` in
    /// it.
    ///
    /// The result is a migration destination. May sleep (`lock_page()`, on a
    /// page nobody else can see, so it does not wait).
    pub fn activate(self, data: T::PageData) -> LockedDevicePage<T> {
        let this = ManuallyDrop::new(self);
        let page = this.page.as_ptr();
        let pgmap = this.pagemap().as_raw();
        // SAFETY: The page is an idle page of `pgmap` that we own (type
        // invariant), so it may be initialised; our references keep `pgmap`'s
        // `percpu_ref` above zero, so the reference the page takes succeeds.
        unsafe { bindings::zone_device_folio_init(page.cast(), pgmap, this.order) };
        // SAFETY: We own the page; nobody reads its data before this.
        unsafe { bindings::page_set_zone_device_data(page, data.into_foreign()) };
        // SAFETY: The token's references; the page now holds its own.
        unsafe { bindings::percpu_ref_put_many(this.pagemap().percpu_ref(), nr_pages(this.order)) };
        // INVARIANT: The page is initialised with one reference, which is
        // ours, locked by us, and carries `data`.
        LockedDevicePage {
            page: this.page,
            _t: PhantomData,
        }
    }
}

impl<T: DevicePagemapOps> Drop for FreeDevicePage<T> {
    fn drop(&mut self) {
        let n = nr_pages(self.order);
        // INVARIANT: The pages are given up; our references, which keep the
        // pagemap alive until the put below, go next.
        self.pagemap().held.fetch_sub(n, Ordering::AcqRel);
        // SAFETY: The token's references (type invariant). The pagemap may be
        // freed right after this; it is not touched again.
        unsafe { bindings::percpu_ref_put_many(self.pagemap().percpu_ref(), n) };
    }
}

/// The pages of a split [`FreeDevicePage`] block: [`FreeDevicePage::split`].
///
/// # Invariants
///
/// `[next, end)` are idle pages of `pagemap` that nobody else owns, and the
/// iterator holds one pagemap reference for each.
pub struct SplitPages<T: DevicePagemapOps> {
    next: usize,
    end: usize,
    pagemap: NonNull<DevicePagemap<T>>,
}

impl<T: DevicePagemapOps> Iterator for SplitPages<T> {
    type Item = FreeDevicePage<T>;

    fn next(&mut self) -> Option<FreeDevicePage<T>> {
        if self.next >= self.end {
            return None;
        }
        // SAFETY: `next` is a pfn of the pagemap, which our references keep
        // registered (type invariant).
        let page = NonNull::new(unsafe { bindings::pfn_to_page(self.next) })?;
        self.next += 1;
        // INVARIANT: The page and its reference pass from the iterator to
        // the token.
        Some(FreeDevicePage {
            page,
            pagemap: self.pagemap,
            order: 0,
        })
    }
}

impl<T: DevicePagemapOps> Drop for SplitPages<T> {
    fn drop(&mut self) {
        let left = self.end.saturating_sub(self.next);
        if left > 0 {
            // SAFETY: Our references keep the pagemap alive (type invariant).
            let pagemap = unsafe { self.pagemap.as_ref() };
            // INVARIANT: As in `FreeDevicePage::drop()`.
            pagemap.held.fetch_sub(left, Ordering::AcqRel);
            // SAFETY: The references of the pages not handed out (type
            // invariant); the pagemap may go away right after.
            unsafe { bindings::percpu_ref_put_many(pagemap.percpu_ref(), left) };
        }
    }
}

/// A device page just put in use: locked, with the only reference, which the
/// token owns.
///
/// Pass it to a migration as a destination with
/// [`LockedDevicePage::into_migrate_pfn`]. Dropping it unlocks and puts the
/// page, which frees it to [`DevicePagemapOps::folio_free`] (so do not drop it
/// while holding a lock `folio_free` takes).
///
/// # Invariants
///
/// `page` is an in-use page of a `DevicePagemap<T>` (see [`DevicePage`]),
/// locked by us, and the token owns one reference to it.
pub struct LockedDevicePage<T: DevicePagemapOps> {
    page: NonNull<bindings::page>,
    _t: PhantomData<T>,
}

// SAFETY: A page lock and a page reference may be released on any thread.
unsafe impl<T: DevicePagemapOps> Send for LockedDevicePage<T> {}
// SAFETY: Shared access only reads (`&DevicePage<T>` methods).
unsafe impl<T: DevicePagemapOps> Sync for LockedDevicePage<T> {}

impl<T: DevicePagemapOps> LockedDevicePage<T> {
    /// The `migrate_pfn()` entry for this page as a migration destination
    /// (`migrate_vma::dst`); the caller adds `MIGRATE_PFN_WRITE` as needed.
    ///
    /// The page's lock and reference pass to the migration:
    /// `migrate_vma_finalize()` unlocks and puts the page, whether it was used
    /// (it is then mapped in its place) or not (it is then freed to
    /// [`DevicePagemapOps::folio_free`]).
    pub fn into_migrate_pfn(self) -> usize {
        let this = ManuallyDrop::new(self);
        // SAFETY: `migrate_pfn()` is arithmetic on the page's pfn.
        unsafe { bindings::migrate_pfn(this.pfn()) }
    }
}

impl<T: DevicePagemapOps> Deref for LockedDevicePage<T> {
    type Target = DevicePage<T>;

    fn deref(&self) -> &DevicePage<T> {
        // SAFETY: The page is in use and we hold a reference to it for as
        // long as `self` is borrowed (type invariant).
        unsafe { DevicePage::from_raw(self.page.as_ptr()) }
    }
}

impl<T: DevicePagemapOps> Drop for LockedDevicePage<T> {
    fn drop(&mut self) {
        // SAFETY: We locked the page and own a reference (type invariant).
        unsafe {
            bindings::unlock_page(self.page.as_ptr());
            bindings::put_page(self.page.as_ptr());
        }
    }
}

/// A device page in use, borrowed: `&DevicePage<T>`.
///
/// # Invariants
///
/// The page is a page of a `DevicePagemap<T>` that was put in use by
/// [`FreeDevicePage::activate`]: the head page of its folio holds in
/// `zone_device_data` a pointer from `T::PageData::into_foreign()`. A
/// reference to the page (or a lock that keeps one in place) is held for as
/// long as the `&DevicePage<T>` exists, so the page is not freed, its data
/// is not taken back, and its pagemap is alive.
#[repr(transparent)]
pub struct DevicePage<T: DevicePagemapOps> {
    page: Opaque<bindings::page>,
    _t: PhantomData<T>,
}

// SAFETY: A `&DevicePage<T>` only reads the page through the C accessors,
// which may run concurrently, and lends out its data as
// `T::PageData::Borrowed`, which may be shared (`T::PageData: Sync`).
unsafe impl<T: DevicePagemapOps> Sync for DevicePage<T> {}

impl<T: DevicePagemapOps> Deref for DevicePage<T> {
    type Target = AnyDevicePage;

    #[inline]
    fn deref(&self) -> &AnyDevicePage {
        // SAFETY: Both are transparent wrappers of `struct page`; an in-use
        // page of a `DevicePagemap<T>` (type invariant) is an in-use
        // device-private or -coherent page, kept in use as long as `self`.
        unsafe { &*core::ptr::from_ref(self).cast::<AnyDevicePage>() }
    }
}

impl<T: DevicePagemapOps> DevicePage<T> {
    /// Views a page as a device page of a `DevicePagemap<T>`.
    ///
    /// # Safety
    ///
    /// `page` must be an in-use page of a `DevicePagemap<T>` (i.e. it has
    /// references, so it was activated by [`FreeDevicePage::activate`]), and
    /// a reference to it must be held for `'a`.
    pub(crate) unsafe fn from_raw<'a>(page: *mut bindings::page) -> &'a Self {
        // SAFETY: `DevicePage` is a transparent wrapper of `struct page`;
        // the invariants hold by the function safety requirements.
        unsafe { &*page.cast() }
    }

    /// The order of the folio the page belongs to.
    pub fn order(&self) -> u32 {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::page_folio_order(self.as_raw()) }
    }

    /// Page `i` of the folio the page belongs to; `None` past its end.
    pub fn folio_page(&self, i: usize) -> Option<&DevicePage<T>> {
        if i >= nr_pages(self.order()) {
            return None;
        }
        // SAFETY: The page is valid (type invariant).
        let head = unsafe { bindings::page_folio(self.as_raw()) }.cast::<bindings::page>();
        // SAFETY: A folio's `struct page`s are contiguous in the memmap
        // (`folio_page()`); `i` is in it.
        let page = unsafe { head.add(i) };
        // SAFETY: A page of the same in-use folio, kept in use by what keeps
        // `self` in use for the borrow.
        Some(unsafe { Self::from_raw(page) })
    }

    /// The driver data stored in the page by [`FreeDevicePage::activate`].
    pub fn data(&self) -> <T::PageData as ForeignOwnable>::Borrowed<'_> {
        // SAFETY: The page is valid (type invariant).
        let head = unsafe { bindings::page_folio(self.as_raw()) }.cast::<bindings::page>();
        // SAFETY: `head` is the page's folio's head page, valid with it.
        let ptr = unsafe { bindings::page_zone_device_data(head) };
        // SAFETY: `ptr` came from `T::PageData::into_foreign()` (type
        // invariant) and is taken back (`from_foreign()`) only once the page
        // is freed, which cannot happen while `self` is borrowed.
        unsafe { T::PageData::borrow(ptr) }
    }

    /// The pagemap the page belongs to.
    pub fn pagemap(&self) -> &DevicePagemap<T> {
        // SAFETY: The page is valid (type invariant).
        let pgmap = unsafe { bindings::page_pgmap(self.as_raw()) };
        // SAFETY: The page belongs to a `DevicePagemap<T>`, kept alive by the
        // page's references while `self` is borrowed (type invariant).
        unsafe { DevicePagemap::from_raw(pgmap) }
    }
}

/// A device page in use, of any pagemap: `&AnyDevicePage`.
///
/// What a migration or a device page table finds when it meets a
/// device-private or device-coherent page without knowing whose it is.
/// [`AnyDevicePage::downcast`] recognises the pages of a
/// [`DevicePagemap<T>`] with a given owner and returns their typed view.
///
/// # Invariants
///
/// The page is a `ZONE_DEVICE` page of type `MEMORY_DEVICE_PRIVATE` or
/// `MEMORY_DEVICE_COHERENT` that is in use (it has references), and stays in
/// use while the `&AnyDevicePage` exists (a reference, a page lock or a page
/// table lock holds it), so its pagemap is alive.
#[repr(transparent)]
pub struct AnyDevicePage(Opaque<bindings::page>);

// SAFETY: A `&AnyDevicePage` only reads the page through C accessors that may
// run concurrently.
unsafe impl Sync for AnyDevicePage {}

impl AnyDevicePage {
    /// The raw `struct page`.
    #[inline]
    pub fn as_raw(&self) -> *mut bindings::page {
        self.0.get()
    }

    /// The page's pfn.
    #[inline]
    pub fn pfn(&self) -> usize {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::page_to_pfn(self.as_raw()) }
    }

    /// Whether the page is device-private (else device-coherent).
    #[inline]
    pub fn is_private(&self) -> bool {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::is_device_private_page(self.as_raw()) }
    }

    /// Whether the page's pagemap was registered with `owner`.
    #[inline]
    pub fn is_owned_by(&self, owner: &PagemapOwner) -> bool {
        // SAFETY: The page is an in-use `ZONE_DEVICE` page (type invariant):
        // its pagemap is valid while the page is.
        owner.is(unsafe { (*bindings::page_pgmap(self.as_raw())).owner })
    }

    /// The page itself, if the CPU can access it (device-coherent memory).
    pub fn cpu_page(&self) -> Option<BorrowedPage<'_>> {
        if self.is_private() {
            return None;
        }
        // SAFETY: The page is valid while `self` is borrowed (type
        // invariant), and a device-coherent page is mapped in the kernel's
        // linear map like system memory.
        Some(unsafe { BorrowedPage::from_raw(NonNull::from(&self.0).cast()) })
    }

    /// The page as a page of a [`DevicePagemap<T>`] registered with `owner`.
    ///
    /// `None` if the page's pagemap has another owner, or was made with
    /// another type than `T`.
    pub fn downcast<T: DevicePagemapOps>(&self, owner: &PagemapOwner) -> Option<&DevicePage<T>> {
        if !self.is_owned_by(owner) {
            return None;
        }
        // SAFETY: The page is valid (type invariant).
        let pgmap = unsafe { bindings::page_pgmap(self.as_raw()) };
        // The owner is a `PagemapOwner`, which only `DevicePagemap`
        // registers pagemaps with: `pgmap` is the `pgmap` field of a
        // `DevicePagemap<U>` for some `U`, and `type_id` is at the same
        // offset for every `U` (type invariant of `DevicePagemap`).
        let field = Opaque::cast_from(pgmap).cast_mut();
        // SAFETY: `field` is the `pgmap` field of a `DevicePagemap<U>`, laid
        // out as a `DevicePagemap<T>` up to and including `type_id`.
        let container = unsafe { container_of!(field, DevicePagemap<T>, pgmap) };
        // SAFETY: The pagemap is alive (the page is in use, type invariant),
        // and `type_id` is initialised before the pagemap is registered and
        // never written after.
        let type_id = unsafe { (&raw const (*container).type_id).read() };
        if type_id != TypeId::of::<T>() {
            return None;
        }
        // SAFETY: The page is an in-use page of a `DevicePagemap<T>`
        // (checked above), kept in use for the borrow of `self` (type
        // invariant).
        Some(unsafe { DevicePage::from_raw(self.as_raw()) })
    }
}

/// A page that a migration entry or a device page table entry names, by
/// what it is.
///
/// A device-private page has a `struct page` but no memory the CPU can
/// reach, so it is never handed out as a plain [`Page`]: it comes as
/// [`PageRef::Device`], and its contents are the driver's business.
pub enum PageRef<'a> {
    /// A page of system memory (or of another `ZONE_DEVICE` type whose
    /// contents are in the kernel's linear map).
    System(BorrowedPage<'a>),
    /// A device-private or device-coherent page.
    Device(&'a AnyDevicePage),
}

impl<'a> PageRef<'a> {
    /// Classifies `page`.
    ///
    /// # Safety
    ///
    /// `page` must be a valid `struct page` that stays in use (referenced, or
    /// mapped under a lock that keeps it so) for `'a`.
    pub(crate) unsafe fn from_raw(page: NonNull<bindings::page>) -> Self {
        let raw = page.as_ptr();
        // SAFETY: `page` is valid (function safety requirements).
        let device = unsafe {
            bindings::is_device_private_page(raw) || bindings::is_device_coherent_page(raw)
        };
        if device {
            // SAFETY: `AnyDevicePage` is a transparent wrapper of `struct page`;
            // the page is an in-use device-private or -coherent page, kept
            // in use for `'a` (function safety requirements).
            Self::Device(unsafe { &*raw.cast::<AnyDevicePage>() })
        } else {
            // SAFETY: The page is valid and stays so for `'a` (function safety
            // requirements); `BorrowedPage` does not free it.
            Self::System(unsafe { BorrowedPage::from_raw(page) })
        }
    }

    /// The page, if the CPU can access its contents: a system page or a
    /// device-coherent one. `None` for a device-private page.
    pub fn cpu_page(&self) -> Option<BorrowedPage<'a>> {
        match self {
            Self::System(page) => {
                // SAFETY: The same page, valid for `'a`.
                Some(unsafe { BorrowedPage::from_raw(NonNull::new(page.as_ptr())?) })
            }
            Self::Device(page) => page.cpu_page(),
        }
    }

    /// The device page, if it is one.
    #[inline]
    pub fn device(&self) -> Option<&'a AnyDevicePage> {
        match self {
            Self::System(_) => None,
            Self::Device(page) => Some(page),
        }
    }
}

/// A CPU fault on a device-private page: the argument of
/// [`DevicePagemapOps::migrate_to_ram`] (`struct vm_fault`).
///
/// # Invariants
///
/// For `'a`: `vmf` is valid, the mmap lock of `vmf->vma`'s mm is held for
/// reading, and `vmf->page` is a locked, referenced in-use page of a
/// `DevicePagemap<T>`.
pub struct DeviceFault<'a, T: DevicePagemapOps> {
    vmf: NonNull<bindings::vm_fault>,
    _p: PhantomData<(&'a bindings::vm_fault, T)>,
}

impl<'a, T: DevicePagemapOps> DeviceFault<'a, T> {
    /// # Safety
    ///
    /// `vmf` must be a `migrate_to_ram()` fault on a page of a
    /// `DevicePagemap<T>`, valid for `'a`, with the locks and reference the
    /// core holds during the callback.
    unsafe fn from_raw(vmf: *mut bindings::vm_fault) -> Self {
        // INVARIANT: By the function safety requirements.
        Self {
            // SAFETY: `vmf` is valid, hence not null.
            vmf: unsafe { NonNull::new_unchecked(vmf) },
            _p: PhantomData,
        }
    }

    /// The raw `struct vm_fault`.
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
        // SAFETY: `vmf->page` is an in-use page of a `DevicePagemap<T>` whose
        // reference the core holds for the whole callback (type invariant).
        unsafe { DevicePage::from_raw(self.fault_page()) }
    }

    /// The data of the faulting page ([`DevicePage::data`]).
    pub fn data(&self) -> <T::PageData as ForeignOwnable>::Borrowed<'_> {
        self.page().data()
    }

    /// The pagemap of the faulting page.
    pub fn pagemap(&self) -> &DevicePagemap<T> {
        self.page().pagemap()
    }

    /// Whether the faulting page is mapped by a PMD (a large folio mapped
    /// whole) rather than a PTE: only then can the fault migrate the whole
    /// folio; a PTE-mapped large folio is being split.
    pub fn is_pmd_mapped(&self) -> bool {
        // SAFETY: `vmf` is valid (type invariant).
        !unsafe { bindings::vm_fault_is_pte(self.as_raw()) }
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
        // SAFETY: The VMA is valid and its mm's mmap lock is held for reading
        // for the whole callback, which outlives the borrow of `self`.
        unsafe { VmaRef::from_raw(vma) }
    }
}
