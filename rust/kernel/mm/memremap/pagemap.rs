// SPDX-License-Identifier: GPL-2.0

//! [`DevicePagemap`]: registering device memory, taking its pages, evicting them and unregistering
//! it.

use super::{
    nr_pages, //
    DevicePage,
    DevicePagemapOps,
    FreeDeviceFolio,
    OpsTable,
    PagemapOwner,
};
use crate::{
    bindings,
    task_ext::TaskExt, //
};
use core::{
    any::TypeId,
    ops::Range,
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        AtomicUsize,
        Ordering, //
    },
};
use kernel::{
    alloc::{
        flags::GFP_KERNEL, //
        KVec,
    },
    container_of,
    error::from_err_ptr,
    new_mutex,
    page::{
        BorrowedPage,
        Page, //
        PAGE_SHIFT,
    },
    prelude::*,
    sync::{
        Arc,
        Mutex, //
    },
    time::{
        delay::fsleep, //
        Delta,
        Instant,
        Monotonic,
    },
    types::{
        ForeignOwnable,
        Opaque, //
    },
};

/// The name `/proc/iomem` shows for the regions of device-private pagemaps.
const REGION_NAME: &CStr = c"rust_dev_pagemap";

/// A range of physical address space claimed in `iomem_resource`.
///
/// # Invariants
///
/// `[start, start + size)` was claimed in `iomem_resource` (by `request_free_mem_region()` or
/// `request_mem_region()`) and is released once, on drop. `len <= size`: the bytes from `start` on
/// that the pagemap registers.
struct MemRegion {
    start: u64,
    size: u64,
    len: u64,
}

impl MemRegion {
    /// Claims a free range of `size` bytes (`request_free_mem_region()`).
    fn request_free(size: usize) -> Result<Self> {
        // SAFETY: `iomem_resource` is the static root of the iomem tree, which
        // `request_free_mem_region()` locks; the name is static.
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
        // SAFETY: `res` is the resource just inserted in the tree; it stays valid until released.
        let (start, end) = unsafe { ((*res).start, (*res).end) };
        // INVARIANT: The range was just claimed. `request_free_mem_region()` claims a multiple of
        // the memory section size (128 MiB on x86_64), at least `size`; only `size` is registered,
        // so that the pagemap has the pages asked for and no more `struct page`s.
        Ok(Self {
            start,
            size: end - start + 1,
            len: (size as u64).min(end - start + 1),
        })
    }

    /// Claims `[start, start + size)`, which must not be claimed by anyone else
    /// (`request_mem_region()`).
    fn request(start: u64, size: u64) -> Result<Self> {
        // SAFETY: `iomem_resource` is the static root of the iomem tree, which `__request_region()`
        // locks; the name is static.
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
        // INVARIANT: The range was just claimed, and all of it is registered.
        Ok(Self {
            start,
            size,
            len: size,
        })
    }
}

impl Drop for MemRegion {
    fn drop(&mut self) {
        // SAFETY: The range was claimed in `iomem_resource` and is released only here (type
        // invariant); this is `release_mem_region()`.
        unsafe {
            bindings::__release_region(&raw mut bindings::iomem_resource, self.start, self.size)
        };
    }
}

/// CPU-addressable physical memory that its owner hands to [`DevicePagemap::new_coherent`]: the
/// proof that registering it as device-coherent memory takes nothing from anyone.
///
/// `memremap_pages()` gives every page of the range a `struct page` in the kernel's linear map
/// (write-back cached) and hands the pages to user space through migrations. Done on a range that
/// is firmware memory (ACPI tables, e820 reserved areas), unclaimed MMIO or memory another agent
/// uses, that corrupts it, and nothing in the range's resource tree tells such a range apart from
/// real device memory. So the range comes with the caller's word, in an `unsafe` constructor.
///
/// # Invariants
///
/// `[start, start + size)` is cache-coherent, CPU-addressable memory that only the holder of this
/// value uses, for as long as a pagemap made from it is registered.
///
/// The value may be copied: it vouches for the range, not for one registration (a driver registers
/// the same range again after removing it), and registering a range twice at once fails in
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
    /// The range must be cache-coherent, CPU-addressable memory that nobody but the caller uses
    /// (not System RAM the kernel manages, not firmware or MMIO space, not another device's
    /// memory), and must stay so for as long as a [`DevicePagemap`] made from it is registered. For
    /// example: memory of the caller's device, or a range kept from the kernel for the purpose with
    /// `memmap=nn$ss`, as `lib/test_hmm.c`'s `spm_addr_dev*` parameters are.
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

/// Number of pages [`DevicePagemap::evict`] migrates per batch: the largest folio it can migrate
/// whole (`HPAGE_PMD_NR`).
const EVICT_BATCH: usize = 1 << bindings::HMM_RS_HPAGE_PMD_ORDER;

/// Device memory registered with `memremap_pages()`: a `struct dev_pagemap` and the driver's
/// per-pagemap data `T`.
///
/// See the [module documentation](super) for how its pages are owned and how it is torn down.
///
/// # Invariants
///
/// - `pgmap` was registered with `memremap_pages()` with `OpsTable::<T>::OPS` as ops, `owner` as
///   owner and one range, `region`, and is unregistered (`memunmap_pages()`) exactly once, in
///   `drop`.
/// - `type_id` is `TypeId::of::<T>()`. The type is `repr(C)` and `pgmap` and `type_id` come first,
///   so both are at the same offset in every `DevicePagemap<U>`: code that knows only the
///   `dev_pagemap` can read which `T` the pagemap was made with.
/// - Once `pages_taken` is set, [`FreeDeviceFolio`]s may exist for the pagemap's pages; before,
///   every page is idle and unowned.
/// - `held` counts the pages that hold a reference on the `percpu_ref`, `memunmap_pages()` waits
///   for: pages owned by a [`FreeDeviceFolio`] or a [`SplitPages`](super::SplitPages) iterator,
///   and pages in use. It is zero only once no such page is left (the core may still be putting
///   the references of a page whose `folio_free` ran: that does not wait on anyone).
///
/// # Examples
///
/// Registering 256 MiB of device-private memory and taking its pages:
///
/// ```ignore
/// let owner = PagemapOwner::new()?;
/// let pagemap = KBox::pin_init(
///     DevicePagemap::new_private(256 << 20, owner.clone(), None, Mem::new()),
///     GFP_KERNEL,
/// )?;
/// for page in pagemap.take_free_pages(0)? {
///     pagemap.data().free.lock().push(page, GFP_KERNEL)?;
/// }
/// // A migration's destination: `free_page.activate(backing)` gives a `LockedDeviceFolio`.
/// // Dropping the pagemap evicts the pages still in use, then unregisters it.
/// ```
// `repr(C)`, with `pgmap` and `type_id` first: `AnyDevicePage::downcast()` reads `type_id` through
// a `DevicePagemap<T>` of possibly another `T`.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct DevicePagemap<T: DevicePagemapOps> {
    #[pin]
    pub(super) pgmap: Opaque<bindings::dev_pagemap>,
    pub(super) type_id: TypeId,
    region: MemRegion,
    owner: Arc<PagemapOwner>,
    pages_taken: AtomicBool,
    removing: AtomicBool,
    pub(super) held: AtomicUsize,
    /// The pfn arrays of [`DevicePagemap::evict_with`]: `2 * EVICT_BATCH`.
    #[pin]
    evict_buf: Mutex<KVec<usize>>,
    data: T,
}

// SAFETY: The `dev_pagemap` is used through the C API, which synchronises itself, and may be
// unregistered from any thread; the other fields are `Send` (`T: Send`).
unsafe impl<T: DevicePagemapOps> Send for DevicePagemap<T> {}
// SAFETY: The `&self` methods only call C functions that may run concurrently (`memremap`,
// `percpu_ref`, `migrate_device_*`), use atomics, or hand out `&T` (`T: Sync`).
unsafe impl<T: DevicePagemapOps> Sync for DevicePagemap<T> {}

impl<T: DevicePagemapOps> DevicePagemap<T> {
    /// Registers `size` bytes of device-private memory (`MEMORY_DEVICE_PRIVATE`) at a free physical
    /// range, on NUMA node `nid` (`None`: the current node).
    ///
    /// `size` must be a multiple of `memremap_compat_align()` (2 MiB on x86_64). Its pages are
    /// device-private: the CPU faults on them, which calls [`DevicePagemapOps::migrate_to_ram`].
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
    /// (`MEMORY_DEVICE_COHERENT`), on NUMA node `nid` (`None`: the current node).
    ///
    /// `mem` is the caller's proof that the range is device memory it owns
    /// ([`CoherentMemory::new`]). The range is also claimed in `iomem_resource`, so it must not be
    /// claimed by another driver (`EBUSY`); `memremap_pages()` refuses ranges that overlap System
    /// RAM or another pagemap. Its start and size must be multiples of `memremap_compat_align()`
    /// (`EINVAL`).
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
        // The pagemap is registered last: everything that can fail comes before `memremap_pages()`
        // (a failure after it would drop the fields without unregistering the pagemap), and every
        // field that its pages and callbacks read (`type_id`, `data`, ...) is initialised before
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
        let (start, size, owner) = (region.start, region.len, owner.as_raw());
        Opaque::try_ffi_init(move |slot: *mut bindings::dev_pagemap| {
            let nid = match nid {
                None => bindings::NUMA_NO_NODE,
                Some(n) if (0..bindings::MAX_NUMNODES as i32).contains(&n) => {
                    // SAFETY: `node_online()` tests a bit of a static bitmap; `n` is in its bounds.
                    if !unsafe { bindings::node_online(n) } {
                        return Err(EINVAL);
                    }
                    n
                }
                Some(_) => return Err(EINVAL),
            };

            // SAFETY: `struct dev_pagemap` is plain data (integers, pointers, an unused
            // `percpu_ref` and `completion`), for which all zeroes is valid: it is how C drivers
            // allocate it.
            let mut pgmap: bindings::dev_pagemap = unsafe { core::mem::zeroed() };
            pgmap.type_ = kind;
            pgmap.ops = &OpsTable::<T>::OPS;
            pgmap.owner = owner;
            pgmap.nr_range = 1;
            // SAFETY: `range` is the member of the union used when `nr_range == 1`; writing it is
            // writing plain integers.
            unsafe {
                *pgmap.__bindgen_anon_1.range.as_mut() = bindings::range {
                    start,
                    end: start + size - 1,
                }
            };
            // SAFETY: `slot` is valid for writes (`try_ffi_init`).
            unsafe { slot.write(pgmap) };

            // SAFETY: `slot` is an initialised `dev_pagemap` for a range this pagemap claimed, with
            // the ops `memremap_pages()` requires for the type (both callbacks) and an owner; it is
            // pinned, and the `DevicePagemap` it is in unregisters it before it is freed.
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
    /// `pgmap` must be the `pgmap` field of a live `DevicePagemap<T>` that stays alive for `'a`.
    pub(super) unsafe fn from_raw<'a>(pgmap: *mut bindings::dev_pagemap) -> &'a Self {
        let field = Opaque::cast_from(pgmap).cast_mut();
        // SAFETY: `field` is the `pgmap` field of a `DevicePagemap<T>` (function safety
        // requirements), so the container is in the same allocation.
        let this = unsafe { container_of!(field, Self, pgmap) };
        // SAFETY: The pagemap is alive for `'a` (function safety requirements) and only ever
        // accessed through shared references once pinned.
        unsafe { &*this }
    }

    /// The raw `struct dev_pagemap`.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut bindings::dev_pagemap {
        self.pgmap.get()
    }

    /// The pagemap's `percpu_ref`.
    pub(super) fn percpu_ref(&self) -> *mut bindings::percpu_ref {
        // SAFETY: The `dev_pagemap` is initialised (type invariant); this only computes a field
        // address.
        unsafe { &raw mut (*self.as_raw()).ref_ }
    }

    /// The driver's per-pagemap data.
    #[inline]
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The owner the pagemap was registered with (`dev_pagemap::owner`).
    #[inline]
    pub fn owner(&self) -> &Arc<PagemapOwner> {
        &self.owner
    }

    /// Whether this is device-private memory (else device-coherent).
    pub fn is_private(&self) -> bool {
        // SAFETY: The `dev_pagemap` is initialised and `type` never changes after registration.
        unsafe { (*self.as_raw()).type_ == bindings::memory_type_MEMORY_DEVICE_PRIVATE }
    }

    /// The pfns of the pagemap's pages.
    pub fn pfn_range(&self) -> Range<usize> {
        let start = (self.region.start >> PAGE_SHIFT) as usize;
        start..start + self.npages()
    }

    /// The number of pages of the pagemap.
    #[inline]
    pub fn npages(&self) -> usize {
        (self.region.len >> PAGE_SHIFT) as usize
    }

    /// Whether the pagemap hands out blocks of `order` (see the [module
    /// documentation](super#large-folios)): 0 always; larger orders up to `HPAGE_PMD_ORDER` (what a
    /// migration maps) for device-private memory whose driver implements
    /// [`DevicePagemapOps::folio_split`].
    pub fn supports_order(&self, order: u32) -> bool {
        order == 0
            || (order <= bindings::HMM_RS_HPAGE_PMD_ORDER
                && self.is_private()
                && T::HAS_FOLIO_SPLIT)
    }

    /// Takes ownership of every page of the pagemap, all idle after registration, as naturally
    /// aligned blocks of `order` where they fit and single pages elsewhere. `EINVAL` if the pagemap
    /// does not support `order` ([`DevicePagemap::supports_order`]).
    ///
    /// Only the first call yields pages; later calls yield none. Pages the iterator does not get to
    /// are never handed out.
    pub fn take_free_pages(
        &self,
        order: u32,
    ) -> Result<impl Iterator<Item = FreeDeviceFolio<T>> + '_> {
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
            let page = NonNull::new(crate::page_ext::pfn_to_page(pfn))?;
            pfn += nr_pages(order);
            // SAFETY: The `percpu_ref` is live: it is killed only when the pagemap is dropped.
            unsafe { bindings::percpu_ref_get_many(self.percpu_ref(), nr_pages(order)) };
            self.held.fetch_add(nr_pages(order), Ordering::AcqRel);
            // INVARIANT: `pages_taken` was clear, so the pages are idle and this is the only token
            // for them; we took their pagemap references and counted them in `held`. A block of
            // `order` is only made where supported.
            Some(FreeDeviceFolio {
                page,
                pagemap: NonNull::from(self),
                order,
            })
        }))
    }

    /// Migrates the pagemap's pages that are in use back to system memory, copying each with
    /// [`DevicePagemapOps::copy_to_ram`].
    ///
    /// See [`DevicePagemap::evict_with`].
    pub fn evict(&self) {
        self.evict_with(T::copy_to_ram)
    }

    /// The number of the pagemap's pages that are in use or owned by a [`FreeDeviceFolio`]: what
    /// unregistering the pagemap waits for.
    #[inline]
    pub fn pages_held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// One eviction round of a pagemap being removed: whether no page is held any more.
    fn evict_round(&self) -> bool {
        if self.pages_held() == 0 {
            return true;
        }
        self.evict();
        self.pages_held() == 0
    }

    /// Starts removing the pagemap: from now on its freed pages go back to no one, not to the
    /// driver.
    ///
    /// A `folio_free` that started before this may still deliver a page to
    /// [`DevicePagemapOps::folio_free`]: the driver checks [`DevicePagemap::is_removing`] there,
    /// under the lock that guards its free list, and drains that list under the same lock after
    /// calling this, so that no [`FreeDeviceFolio`] of the pagemap is left.
    #[inline]
    pub fn begin_removal(&self) {
        self.removing.store(true, Ordering::Release);
    }

    /// Whether [`DevicePagemap::begin_removal`] was called.
    #[inline]
    pub fn is_removing(&self) -> bool {
        self.removing.load(Ordering::Acquire)
    }

    /// Evicts the pages of a pagemap being removed until none is held, for at most `timeout`.
    ///
    /// The pages in use are evicted ([`DevicePagemap::evict`]) in rounds. Once this succeeds no
    /// page is held, and none can be again (no page is handed out once removal began): dropping the
    /// pagemap then does not wait. `EBUSY` if pages are still held when the time is up: they could
    /// not be evicted yet (locked or pinned by someone else, a large folio with no free system
    /// folio to move to, [`FreeDeviceFolio`]s the driver still owns); `EINTR` if the current task
    /// is being killed. Calls [`DevicePagemap::begin_removal`] first. May sleep.
    pub fn evict_all(&self, timeout: Delta) -> Result {
        self.begin_removal();
        let start = Instant::<Monotonic>::now();
        while !self.evict_round() {
            if current!().fatal_signal_pending() {
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
    /// (`migrate_device_range()`), as test_hmm's `dmirror_device_evict_chunk()` does.
    ///
    /// For each page in use, `copy` gets the locked device page, its data and a locked, freshly
    /// allocated system page; the system page then replaces the device page in every page table
    /// mapping it, and the device page is freed (to [`DevicePagemapOps::folio_free`]).
    ///
    /// Pages that are locked by someone else at the time (e.g. a
    /// [`LockedDeviceFolio`](super::LockedDeviceFolio) or a concurrent migration) or that cannot
    /// be unmapped are skipped. May sleep.
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
            // Batches end on multiples of `EVICT_BATCH` pages, so that no folio (naturally aligned,
            // at most that large) straddles two: `migrate_device_range()` would skip it.
            let n = (EVICT_BATCH - pfn % EVICT_BATCH).min(range.end - pfn);
            src[..n].fill(0);
            dst[..n].fill(0);
            // SAFETY: `src` has room for `n` entries; `[pfn, pfn + n)` are pages of this pagemap,
            // which is registered (`&self`).
            unsafe { bindings::migrate_device_range(src.as_mut_ptr(), pfn, n) };
            for i in 0..n {
                dst[i] = self.evict_one(src[i], &mut copy);
            }
            // SAFETY: `src` was filled by `migrate_device_range()` for `n` pages; `dst` holds a
            // locked destination folio of the source's order for the entries we migrate, 0 for the
            // others.
            unsafe {
                bindings::migrate_device_pages(src.as_mut_ptr(), dst.as_mut_ptr(), n);
                bindings::migrate_device_finalize(src.as_mut_ptr(), dst.as_mut_ptr(), n);
            }
            pfn += n;
        }
    }

    /// The destination entry for the source entry `s` of an eviction: a locked system folio of the
    /// source's order holding its contents, or 0 to leave it.
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
        // A page between `zone_device_page_init()` (reference) and the end of `activate()` (data)
        // has no data yet: leave it. The page lock orders the two: `zone_device_page_init()` sets
        // the refcount before it locks the page, so `migrate_device_range()` may get and lock the
        // page first. It then sees no data (`folio_free` cleared it, or it is zero since
        // `memremap_pages()`) and leaves the page, while `activate()` sleeps in `lock_page()` until
        // `migrate_device_finalize()` unlocks it. Otherwise `activate()` holds the lock until the
        // data is stored, `migrate_device_range()`'s trylock fails and the page is evicted in a
        // later round. SAFETY: `spage` is a locked, referenced page of this pagemap.
        if unsafe { bindings::page_zone_device_data(spage.as_ptr()) }.is_null() {
            return 0;
        }
        // SAFETY: `migrate_device_range()` took a reference to the folio and locked it, and keeps
        // both until `migrate_device_finalize()`; it carries page data, so it is an in-use folio of
        // this pagemap.
        let spage = unsafe { DevicePage::<T>::from_raw(spage.as_ptr()) };
        let order = spage.order();
        let dpage = if order == 0 {
            // SAFETY: Allocating may sleep; `evict` may sleep.
            unsafe {
                bindings::alloc_pages(bindings::GFP_HIGHUSER_MOVABLE | bindings::__GFP_NOFAIL, 0)
            }
        } else {
            // `__GFP_NOFAIL` is not for large folios: without one, this folio stays (it cannot be
            // split without a VMA).
            let gfp = bindings::GFP_HIGHUSER_MOVABLE
                | bindings::__GFP_RETRY_MAYFAIL
                | bindings::__GFP_NOWARN;
            // SAFETY: Allocating may sleep, and `evict` may sleep; the order is a folio's, at most
            // `HPAGE_PMD_ORDER`.
            let folio = unsafe { bindings::folio_alloc(gfp, order) };
            // `struct folio` starts with its head page.
            folio.cast()
        };
        let Some(dpage) = NonNull::new(dpage) else {
            return 0;
        };
        // SAFETY: We own the new folio; nobody else can see it.
        unsafe { bindings::lock_page(dpage.as_ptr()) };
        let dpfn = crate::page_ext::page_to_pfn(dpage.as_ptr());
        for i in 0..nr_pages(order) {
            // SAFETY: Page `i` of the two folios, both of `order` pages and contiguous in the
            // memmap; both stay locked and referenced until `migrate_device_finalize()`, after
            // `copy` returns.
            let (sub, dsub) = unsafe {
                (
                    DevicePage::<T>::from_raw(spage.as_raw().add(i)),
                    NonNull::new_unchecked(dpage.as_ptr().add(i)),
                )
            };
            // SAFETY: We own a reference to the destination folio until it is passed to the
            // migration; `BorrowedPage` does not free it.
            let dsub = unsafe { BorrowedPage::from_raw(dsub) };
            copy(sub, spage.data(), &dsub);
        }
        let compound = if order > 0 {
            bindings::MIGRATE_PFN_COMPOUND as usize
        } else {
            0
        };
        // SAFETY: `migrate_pfn()` is arithmetic. Our reference and lock on `dpage` pass to the
        // migration, which unlocks and puts it in `migrate_device_finalize()`.
        let mpfn = unsafe { bindings::migrate_pfn(dpfn) };
        mpfn | (s & bindings::MIGRATE_PFN_WRITE as usize) | compound
    }
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
        // Callbacks on other CPUs may hold `&Self` while this runs; that is allowed because `Self`
        // is `!Unpin`, and only `&Self` is used here.
        let this = self.into_ref().get_ref();
        // Pages freed from now on (by the eviction below, for one) are not handed to the driver,
        // whose free list would keep the pagemap alive.
        this.begin_removal();
        // `memunmap_pages()` waits, uninterruptibly and without a word, for every page that holds a
        // reference: evict until none is left, and say so while some are.
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
        // SAFETY: The pagemap is registered and this is the only place that unregisters it (type
        // invariant). `memunmap_pages()` waits until every reference to the pagemap is gone; `held`
        // is zero, so at most the core's own putting of a just freed folio is left. The claimed
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

#[kunit_tests(rust_hmm_pagemap)]
mod tests {
    use super::*;
    use crate::mm::memremap::{DeviceFault, VmFaultResult};
    use kernel::alloc::KBox;

    /// Pagemap data that counts what `folio_free` saw.
    struct Counter {
        freed: AtomicUsize,
    }

    #[vtable]
    impl DevicePagemapOps for Counter {
        type PageData = KBox<usize>;

        fn folio_free(
            pagemap: &DevicePagemap<Self>,
            page: FreeDeviceFolio<Self>,
            data: KBox<usize>,
        ) {
            pagemap.data().freed.fetch_add(*data, Ordering::Relaxed);
            drop(page);
        }

        fn migrate_to_ram(_fault: &mut DeviceFault<'_, Self>) -> VmFaultResult {
            VmFaultResult::SigBus
        }

        fn copy_to_ram(_src: &DevicePage<Self>, _data: &usize, _dst: &Page) {}
    }

    /// A 2 MiB device-private pagemap hands its pages out once, an activated page comes back
    /// through `folio_free` with its data when its last reference goes, and the pagemap unregisters
    /// once every token is dropped.
    #[test]
    fn pages_are_handed_out_once_and_come_back() -> Result {
        let owner = PagemapOwner::new()?;
        let data = Counter {
            freed: AtomicUsize::new(0),
        };
        let pagemap = KBox::pin_init(
            DevicePagemap::new_private(2 << 20, owner.clone(), None, data),
            GFP_KERNEL,
        )?;
        // A failed assertion ends the test thread without running destructors: everything is
        // observed first and the pagemap dropped before any assertion, so that a failure cannot
        // leave it registered with callbacks in this module's text.
        let same_owner = pagemap.owner().is(core::ptr::from_ref(&*owner).cast());
        let mut pages = KVec::new();
        for page in pagemap.take_free_pages(0)? {
            pages.push(page, GFP_KERNEL)?;
        }
        let taken = pages.len();
        let taken_again = pagemap.take_free_pages(0)?.count();
        let page = pages.pop().ok_or(EINVAL)?;
        let order = page.order();
        drop(page.activate(KBox::new(7, GFP_KERNEL)?));
        let freed = pagemap.data().freed.load(Ordering::Relaxed);
        drop(pages);
        drop(pagemap);

        assert!(same_owner);
        assert_eq!(taken, 512);
        assert_eq!(taken_again, 0);
        assert_eq!(order, 0);
        assert_eq!(freed, 7);
        Ok(())
    }
}
