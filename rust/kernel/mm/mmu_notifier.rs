// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers: mirroring a process address space in a device.
//!
//! A device that maps pages of a process in its own page table must drop
//! those mappings whenever the CPU page table changes. [`Mirror`] registers a
//! `struct mmu_interval_notifier` over the whole address space of an mm and
//! keeps, behind one mutex, the driver's state and a device page table whose
//! entries the invalidate callback clears. An entry of the device page table
//! therefore always names a page that is still mapped at its address, and the
//! driver may read and write the page through the entry while it holds the
//! lock.
//!
//! Entries are added from the result of `hmm_range_fault()` (see
//! [`Mirror::fault()`] in [`crate::mm::hmm`]) or, by code that can prove the page
//! is mapped, through [`MirrorGuard::pt_insert_raw()`].
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use crate::{
    bindings,
    mm::{
        hmm::HmmPfns,
        memremap::{PageRef, PagemapOwner},
    },
};
use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ops::{Deref, DerefMut, Range},
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{
    error::to_result,
    ffi::{c_ulong, c_void},
    mm::{Mm, MmWithUser, MmapReadGuard},
    new_mutex,
    page::{Page, PAGE_MASK, PAGE_SHIFT},
    prelude::*,
    sync::{Arc, Mutex, MutexGuard},
    types::Opaque,
};
use pin_init::Wrapper;

/// The reason for an invalidation (`enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `munmap()`, or `mremap()` moving the range (`MMU_NOTIFY_UNMAP`).
    Unmap,
    /// A page table entry is cleared (`MMU_NOTIFY_CLEAR`).
    Clear,
    /// `mprotect()` changed the protection of the range
    /// (`MMU_NOTIFY_PROTECTION_VMA`).
    ProtectionVma,
    /// The read/write permission of pages changed
    /// (`MMU_NOTIFY_PROTECTION_PAGE`).
    ProtectionPage,
    /// Soft-dirty accounting (`MMU_NOTIFY_SOFT_DIRTY`).
    SoftDirty,
    /// The mm is being torn down (`MMU_NOTIFY_RELEASE`).
    Release,
    /// `migrate_vma_setup()` is migrating the range (`MMU_NOTIFY_MIGRATE`).
    Migrate,
    /// Entries are being made device-exclusive (`MMU_NOTIFY_EXCLUSIVE`).
    Exclusive,
    /// An event this abstraction does not know about.
    Other(u32),
}

impl Event {
    fn from_raw(event: bindings::mmu_notifier_event) -> Self {
        match event {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Self::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR => Self::Clear,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Self::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Self::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Self::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Self::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Self::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Self::Exclusive,
            other => Self::Other(other),
        }
    }
}

/// The range an invalidation covers (`struct mmu_notifier_range`).
///
/// Only ever seen by reference, inside the invalidate callback.
///
/// # Invariants
///
/// `self.0` is a valid `struct mmu_notifier_range` that does not change while
/// it is borrowed.
#[repr(transparent)]
pub struct InvalidateRange(Opaque<bindings::mmu_notifier_range>);

impl InvalidateRange {
    /// Creates a reference to an [`InvalidateRange`] from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct mmu_notifier_range` that stays
    /// valid and unchanged for the lifetime `'a`.
    unsafe fn from_raw<'a>(ptr: *const bindings::mmu_notifier_range) -> &'a Self {
        // SAFETY: `InvalidateRange` is a transparent wrapper of the C struct, and the caller
        // guarantees that it is valid and unchanged for `'a`.
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> &bindings::mmu_notifier_range {
        // SAFETY: By the type invariants the range is valid and does not change while `self`
        // is borrowed.
        unsafe { &*self.0.get() }
    }

    /// The first address of the range.
    #[inline]
    pub fn start(&self) -> usize {
        self.raw().start
    }

    /// The address just past the end of the range.
    #[inline]
    pub fn end(&self) -> usize {
        self.raw().end
    }

    /// Why the range is being invalidated.
    #[inline]
    pub fn event(&self) -> Event {
        Event::from_raw(self.raw().event)
    }

    /// Whether the callback is allowed to sleep (`mmu_notifier_range_blockable()`).
    pub fn is_blockable(&self) -> bool {
        // SAFETY: By the type invariants the range is valid.
        unsafe { bindings::mmu_notifier_range_blockable(self.0.get()) }
    }

    /// Whether this invalidation comes from `make_device_exclusive()` called with `owner` as the
    /// owner.
    fn is_exclusive_by(&self, owner: *const c_void) -> bool {
        let range = self.raw();
        range.event == bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE
            && core::ptr::eq(range.owner, owner)
    }

    /// Whether this invalidation comes from a migration of the pages of `owner`: the event is
    /// `MMU_NOTIFY_MIGRATE` and the migration's `pgmap_owner` is `owner`.
    pub fn is_migration_by(&self, owner: &PagemapOwner) -> bool {
        let range = self.raw();
        range.event == bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE && owner.is(range.owner)
    }
}

/// The driver side of a [`Mirror`]: its state and its invalidate hook.
///
/// The state is kept in the mirror's mutex together with the device page table; it is reached
/// through a [`MirrorGuard`], and by the invalidate callback. The callback runs on whichever
/// thread changes the address space, hence `Send`.
///
/// Invalidations cannot be skipped: `lib/test_hmm.c` ignores the `MMU_NOTIFY_MIGRATE` events of
/// its own migrations and leaves their entries in place, but an entry that outlives the mapping
/// of its page would be a use-after-free once the page is freed. A driver's own migration thus
/// clears the migrated range like any other invalidation, and the driver maps the destination
/// pages again; [`InvalidateRange::is_migration_by()`] tells such events apart.
pub trait MirrorOps: Sized + Send + Unpin {
    /// Called when a range of the mirrored address space is invalidated, with the mirror lock
    /// held, after the sequence has been set and the range has been cleared from the device page
    /// table.
    ///
    /// It may sleep only if `range.is_blockable()`. It must not drop a [`Mirror`] (removing an
    /// interval notifier from a notifier callback deadlocks). It is not called for the mirror's
    /// own [`Mirror::make_exclusive()`] conversions, which leave the page mapped.
    fn invalidate(&mut self, _range: &InvalidateRange) {}
}

/// The access the device has to a page mapped in its page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// The device may read the page.
    Read,
    /// The device may read and write the page.
    Write,
    /// The device has atomic (exclusive) access to the page, see `make_device_exclusive()`.
    Atomic,
}

// The tags `lib/test_hmm.c` stores in the low bits of its page table entries
// (`DPT_XA_TAG_*`). Pointers tagged 1 and 3 are ordinary XArray entries; 2 would
// be an internal entry, so read-only pages carry no tag.
const TAG_READ: usize = 0;
const TAG_ATOMIC: usize = 1;
const TAG_WRITE: usize = 3;
const TAG_MASK: usize = 3;

impl Perm {
    fn tag(self) -> usize {
        match self {
            Self::Read => TAG_READ,
            Self::Write => TAG_WRITE,
            Self::Atomic => TAG_ATOMIC,
        }
    }

    fn from_tag(tag: usize) -> Self {
        match tag {
            TAG_WRITE => Self::Write,
            TAG_ATOMIC => Self::Atomic,
            _ => Self::Read,
        }
    }
}

/// A device page table entry, borrowed from a [`MirrorGuard`].
///
/// # Invariants
///
/// `page` is a valid `struct page` mapped in the mirrored mm (or the backing storage of a device
/// page mapped there) for as long as the mirror lock is held, which it is for `'a`.
pub struct PtEntry<'a> {
    page: NonNull<bindings::page>,
    perm: Perm,
    _guard: PhantomData<&'a ()>,
}

impl<'a> PtEntry<'a> {
    /// The page the entry maps: a system page, or a device page (whose contents, if it is
    /// device-private, only its driver can reach).
    pub fn page(&self) -> PageRef<'a> {
        // SAFETY: By the type invariants the page is valid and stays mapped for `'a`.
        unsafe { PageRef::from_raw(self.page) }
    }

    /// The access the device has to the page.
    #[inline]
    pub fn perm(&self) -> Perm {
        self.perm
    }
}

/// The device page table: an XArray from virtual page number to tagged `struct page *`.
///
/// Entries hold no reference on their page; the mirror's invalidate callback
/// removes them before the page can go away.
///
/// # Invariants
///
/// `xa` is an initialised XArray whose entries are `struct page` pointers tagged with a
/// [`Perm`] tag.
#[pin_data(PinnedDrop)]
struct PageTable {
    #[pin]
    xa: Opaque<bindings::xarray>,
}

impl PageTable {
    fn new() -> impl PinInit<Self> {
        // INVARIANT: `xa_init_flags()` initialises an empty XArray.
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned; `xa_init_flags()` initialises it.
            xa <- Opaque::ffi_init(|slot| unsafe { bindings::xa_init_flags(slot, 0) }),
        })
    }

    fn load(&self, vpn: usize) -> Option<(NonNull<bindings::page>, Perm)> {
        // SAFETY: By the type invariants `xa` is initialised.
        let entry = unsafe { bindings::xa_load(self.xa.get(), vpn) } as usize;
        // `xa_untag_pointer()` and `xa_pointer_tag()`.
        let page = NonNull::new((entry & !TAG_MASK) as *mut bindings::page)?;
        Some((page, Perm::from_tag(entry & TAG_MASK)))
    }

    fn store(&self, vpn: usize, page: NonNull<bindings::page>, perm: Perm) -> Result {
        // `xa_tag_pointer()`: a `struct page` is at least word aligned, so the tag bits are free.
        let entry = (page.as_ptr() as usize | perm.tag()) as *mut c_void;
        // The caller holds the mirror lock, which the invalidate callback takes: an allocation
        // that entered reclaim (which may invalidate this mm) could deadlock, so the allocation
        // must not sleep. `lib/test_hmm.c` uses `GFP_ATOMIC`; the entries are as many as the
        // pages user space had faulted, so they must not drain the atomic reserves either, and
        // are charged to the user's memory cgroup. Failing is `ENOMEM` (`GFP_NOWAIT` does not
        // warn).
        let gfp = bindings::GFP_NOWAIT | bindings::__GFP_ACCOUNT;
        // SAFETY: By the type invariants `xa` is initialised.
        let old = unsafe { bindings::xa_store(self.xa.get(), vpn, entry, gfp) };
        // SAFETY: `xa_err()` only inspects the value of the pointer.
        to_result(unsafe { bindings::xa_err(old) })
    }

    /// Removes the entries of the virtual page numbers `first..=last`.
    fn clear(&self, first: usize, last: usize) {
        let mut index: c_ulong = first;
        // SAFETY: By the type invariants `xa` is initialised; `index` is a valid location.
        let mut entry =
            unsafe { bindings::xa_find(self.xa.get(), &mut index, last, bindings::XA_PRESENT) };
        while !entry.is_null() {
            // SAFETY: By the type invariants `xa` is initialised. Entries hold no reference on
            // their page, so there is nothing to release.
            unsafe { bindings::xa_erase(self.xa.get(), index) };
            // SAFETY: As above.
            entry = unsafe {
                bindings::xa_find_after(self.xa.get(), &mut index, last, bindings::XA_PRESENT)
            };
        }
    }

    /// The first entry whose index is in `first..=last`, with its index.
    fn find(&self, first: usize, last: usize) -> Option<(usize, NonNull<bindings::page>, Perm)> {
        let mut index: c_ulong = first;
        // SAFETY: By the type invariants `xa` is initialised; `index` is a valid location.
        let entry =
            unsafe { bindings::xa_find(self.xa.get(), &mut index, last, bindings::XA_PRESENT) };
        let page = NonNull::new((entry as usize & !TAG_MASK) as *mut bindings::page)?;
        Some((index, page, Perm::from_tag(entry as usize & TAG_MASK)))
    }

    fn for_each_in(
        &self,
        first: usize,
        last: usize,
        mut f: impl FnMut(usize, NonNull<bindings::page>, Perm),
    ) {
        let mut index: c_ulong = first;
        // SAFETY: By the type invariants `xa` is initialised; `index` is a valid location.
        let mut entry =
            unsafe { bindings::xa_find(self.xa.get(), &mut index, last, bindings::XA_PRESENT) };
        while let Some(page) = NonNull::new((entry as usize & !TAG_MASK) as *mut bindings::page) {
            f(index, page, Perm::from_tag(entry as usize & TAG_MASK));
            // SAFETY: As above.
            entry = unsafe {
                bindings::xa_find_after(self.xa.get(), &mut index, last, bindings::XA_PRESENT)
            };
        }
    }
}

#[pinned_drop]
impl PinnedDrop for PageTable {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants `xa` is initialised; it is not used after this. The
        // entries own nothing.
        unsafe { bindings::xa_destroy(self.xa.get()) };
    }
}

/// The inclusive range of virtual page numbers that intersect `start..end`, if not empty.
fn vpn_span(start: usize, end: usize) -> Option<(usize, usize)> {
    if start >= end {
        return None;
    }
    Some((start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT))
}

/// A device mirror of a process address space.
///
/// An `mmu_interval_notifier` over the whole address space of an mm, with a mutex around the
/// driver's state `T` and a device page table. The invalidate callback takes the mutex, records
/// the invalidation sequence (`mmu_interval_set_seq()`), clears the invalidated range from the
/// device page table and then calls [`MirrorOps::invalidate()`]. [`Mirror::fault()`] is the
/// `hmm_range_fault()` retry loop that fills the device page table.
///
/// Lock order: `mmap_lock` → the mirror's exclusive-conversion mutex → folio lock → mirror lock.
/// Do not hold the mirror lock ([`MirrorGuard`]) while calling anything that may fault or
/// invalidate the mirrored mm (`copy_to_user()`, `hmm_range_fault()`, `migrate_vma_setup()`,
/// [`Mirror::fault()`], ...) or wait for a folio lock: the invalidate callback takes the mirror
/// lock, sometimes with a folio locked (migrations, [`Mirror::make_exclusive()`]).
///
/// # Examples
///
/// ```ignore
/// let mirror = KBox::pin_init(Mirror::new(&mm, owner, MyState::new()), GFP_KERNEL)?;
/// let mm = mirror.mm().mmget_not_zero().ok_or(EFAULT)?;
/// mirror.fault(&mm, addr, addr + len, false, |guard, pfns| guard.pt_insert_all(pfns))?;
/// let guard = mirror.lock();
/// let entry = guard.pt_get(addr >> PAGE_SHIFT).ok_or(ENOENT)?;
/// ```
///
/// # Invariants
///
/// - `notifier` is an interval notifier inserted with `mmu_interval_notifier_insert()` over
///   `0..ULONG_MAX & PAGE_MASK` of an mm, with [`OpsTable::<T>`] as its ops; it is removed exactly
///   once, in [`PinnedDrop`]. While inserted it holds a reference (`mmgrab()`) on its mm.
/// - `data` and `pt` are only accessed with `lock` held.
/// - Every entry of `pt` names a `struct page` that is mapped in the mm at the entry's address (or
///   is the backing storage of the device page mapped there, kept alive as long as that device page
///   is); the invalidate callback removes the entries of a range before the pages can be unmapped.
#[pin_data(PinnedDrop)]
pub struct Mirror<T: MirrorOps> {
    #[pin]
    lock: Mutex<()>,
    #[pin]
    data: UnsafeCell<T>,
    #[pin]
    pt: PageTable,
    owner: Arc<PagemapOwner>,
    /// Serialises [`Mirror::make_exclusive()`], so that `excl_seq` belongs to the one conversion
    /// in flight.
    #[pin]
    excl: Mutex<()>,
    /// What the invalidate callback saw at the conversion in flight: see
    /// [`Mirror::make_exclusive()`]. Written and read with the mirror lock held.
    excl_seq: AtomicUsize,
    #[pin]
    notifier: Opaque<bindings::mmu_interval_notifier>,
}

// SAFETY: The mirror may be dropped (`mmu_interval_notifier_remove()`) on any thread. `T` is only
// reached under the mutex, and `T: Send`. `owner` is only used for its address, which any thread
// may compare.
unsafe impl<T: MirrorOps> Send for Mirror<T> {}

// SAFETY: The `&self` methods only reach `T` and the page table with the mutex held, and the
// invalidate callback already runs on arbitrary threads; `T: Send` is enough. `owner` is only used
// for its address.
unsafe impl<T: MirrorOps> Sync for Mirror<T> {}

impl<T: MirrorOps> Mirror<T> {
    /// Creates a mirror of the address space of `mm`.
    ///
    /// `owner` identifies the device pages of the mirroring device: `hmm_range_fault()` returns
    /// them as they are (rather than faulting them back to system memory), and the migrations it
    /// performs are recognised by [`InvalidateRange::is_migration_by()`].
    pub fn new<'a>(
        mm: &'a MmWithUser,
        owner: Arc<PagemapOwner>,
        data: impl PinInit<T, Error> + 'a,
    ) -> impl PinInit<Self, Error> + 'a
    where
        T: 'a,
    {
        try_pin_init!(Self {
            lock <- new_mutex!(()),
            data <- UnsafeCell::pin_init(data),
            pt <- PageTable::new(),
            owner,
            excl <- new_mutex!(()),
            excl_seq: AtomicUsize::new(0),
            // The notifier comes last: its callback may run as soon as it is inserted, and it
            // uses all the other fields.
            notifier <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_interval_notifier| {
                // SAFETY: `slot` is valid for writes and pinned: it is not moved before
                // `PinnedDrop` removes it. `mm` has a user (`MmWithUser`), as inserting requires,
                // and the ops table is `'static`.
                // INVARIANT: On success the notifier is inserted with `OpsTable::<T>` over the
                // whole address space; the fields its callback uses are initialised.
                to_result(unsafe {
                    bindings::mmu_interval_notifier_insert(
                        slot,
                        mm.as_raw(),
                        0,
                        (usize::MAX & PAGE_MASK) as c_ulong,
                        OpsTable::<T>::build(),
                    )
                })
            }),
        }? Error)
    }

    /// The mirrored mm.
    ///
    /// Get a user reference with [`Mm::mmget_not_zero()`] before faulting.
    pub fn mm(&self) -> &Mm {
        // SAFETY: By the type invariants the notifier is inserted and holds a reference on its
        // mm (whose `mm` field is only written by insertion) until `self` is dropped.
        unsafe { Mm::from_raw((*self.notifier.get()).mm) }
    }

    /// The owner of the device pages of this mirror's device.
    #[inline]
    pub fn owner(&self) -> &PagemapOwner {
        &self.owner
    }

    /// Locks the mirror: gives access to the driver's state and the device page table.
    ///
    /// Blocks invalidations of the mirrored mm until the guard is dropped; see the lock rules in
    /// the [`Mirror`] documentation.
    pub fn lock(&self) -> MirrorGuard<'_, T> {
        MirrorGuard {
            mirror: self,
            _guard: self.lock.lock(),
        }
    }

    /// Like [`Mirror::lock()`], but returns [`None`] instead of blocking.
    pub fn try_lock(&self) -> Option<MirrorGuard<'_, T>> {
        Some(MirrorGuard {
            mirror: self,
            _guard: self.lock.try_lock()?,
        })
    }

    /// The raw interval notifier, for `struct hmm_range`.
    #[inline]
    pub(crate) fn notifier_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.notifier.get()
    }

    /// The owner this mirror's own `make_device_exclusive()` calls pass, which its invalidate
    /// callback recognises: the notifier's address, unique to this mirror (the device's
    /// [`PagemapOwner`] would be shared by every mirror of the device, and one mirror's
    /// conversion would then be skipped by the others).
    fn exclusive_owner(&self) -> *mut c_void {
        self.notifier_raw().cast()
    }

    /// Makes the page at `addr` of the mirrored mm exclusive to the device
    /// (`make_device_exclusive()`: the CPU faults it back on access) and maps
    /// it in the device page table with [`Perm::Atomic`] (`dmirror_exclusive()`).
    ///
    /// `mmap` must be the mmap lock of the mirrored mm (else `EINVAL`). Only
    /// anonymous, non-hugetlb pages can be made exclusive; other errors of
    /// `make_device_exclusive()` are returned as they are. `EBUSY` if other
    /// invalidations of the mm keep undoing the conversion, `EINTR` if the
    /// task is being killed meanwhile.
    ///
    /// Must not be called with the mirror lock held.
    pub fn make_exclusive(&self, mmap: &MmapReadGuard<'_>, addr: usize) -> Result {
        let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
        if !core::ptr::eq(vma.mm().as_raw(), self.mm().as_raw()) {
            return Err(EINVAL);
        }
        let notifier = self.notifier_raw();
        let _excl = self.excl.lock();
        // An invalidation of the page after the conversion, or one still running when it
        // happened (`MADV_DONTNEED` needs only the mmap read lock, and clears the entry without
        // the folio lock held here), would leave a stale entry. `mmu_interval_read_begin()`
        // cannot be used as usual: `make_device_exclusive()` itself invalidates the mm before
        // converting (its GUP undoes an earlier conversion of the page, or splits a THP), so a
        // sequence read before it would never be current. Instead the invalidate callback, on
        // this mirror's own `MMU_NOTIFY_EXCLUSIVE` event, records in `excl_seq` the notifier's
        // sequence, or a value that cannot match it if an invalidation of the mm is running
        // alongside the conversion; `mmu_interval_read_retry()` on it then catches those and
        // every later one. Before each try, `mmu_interval_read_begin()` waits for running
        // invalidations to end. Others' faults can undo the conversion each time: give up after
        // a few rounds.
        for _ in 0..EXCLUSIVE_TRIES {
            if crate::task_ext::fatal_signal_pending() {
                return Err(EINTR);
            }
            // SAFETY: The notifier is inserted (type invariant). Waiting here for running
            // invalidations to end cannot deadlock: none of them waits, between its start and
            // end, for what this thread holds (the mmap read lock, which no invalidation takes
            // once started; `excl`, taken only here; no folio lock yet; not the mirror lock, whose
            // holders are documented not to be calling this). The sequence it returns is not used
            // (see above).
            unsafe { bindings::mmu_interval_read_begin(notifier) };
            let mut folio: *mut bindings::folio = core::ptr::null_mut();
            // SAFETY: The mm is the mirrored one, whose mmap lock `mmap` holds; `folio` is
            // valid for writes. The owner only marks the notifier events of this call.
            let page = unsafe {
                bindings::make_device_exclusive(
                    vma.mm().as_raw(),
                    addr & PAGE_MASK,
                    self.exclusive_owner(),
                    &mut folio,
                )
            };
            let page = kernel::error::from_err_ptr(page)?;
            let stored = {
                let guard = self.lock();
                let seq = self.excl_seq.load(Ordering::Relaxed);
                // SAFETY: The notifier is inserted and the mirror lock, which the invalidate
                // callback holds around `mmu_interval_set_seq()`, is held.
                if unsafe { bindings::mmu_interval_read_retry(notifier, seq) } {
                    None
                } else {
                    // INVARIANT: No invalidation of the mm set the sequence in the period of the
                    // conversion or since (ours is the only conversion in flight, `excl`), so none
                    // that ran alongside it has reached this mirror yet: the page is mapped (as a
                    // device-exclusive entry) at `addr`, and any invalidation still to reach this
                    // mirror takes the lock held here and clears the entry after the store.
                    NonNull::new(page)
                        .map(|p| guard.mirror.pt.store(addr >> PAGE_SHIFT, p, Perm::Atomic))
                }
            };
            // SAFETY: `make_device_exclusive()` returned the folio locked and referenced.
            unsafe {
                bindings::folio_unlock(folio);
                bindings::folio_put(folio);
            }
            if let Some(ret) = stored {
                return ret;
            }
        }
        Err(EBUSY)
    }
}

/// Rounds [`Mirror::make_exclusive()`] tries before `EBUSY`.
const EXCLUSIVE_TRIES: usize = 8;

#[pinned_drop]
impl<T: MirrorOps> PinnedDrop for Mirror<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants the notifier is inserted and this is the only place that
        // removes it. Once this returns, no callback is running or will run, so the other fields
        // can be dropped.
        unsafe { bindings::mmu_interval_notifier_remove(self.notifier.get()) };
    }
}

/// The `mmu_interval_notifier_ops` of a [`Mirror<T>`].
struct OpsTable<T: MirrorOps>(PhantomData<T>);

impl<T: MirrorOps> OpsTable<T> {
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate),
        invalidate_start: None,
        invalidate_finish: None,
    };

    const fn build() -> &'static bindings::mmu_interval_notifier_ops {
        &Self::OPS
    }

    /// # Safety
    ///
    /// `interval_sub` is the notifier of a live [`Mirror<T>`] and `range` a valid range that does
    /// not change during the call, as the C side guarantees for `invalidate` callbacks.
    unsafe extern "C" fn invalidate(
        interval_sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        let notifier = Opaque::cast_from(interval_sub).cast_mut();
        // SAFETY: By the type invariants of `Mirror`, this callback is only installed for the
        // `notifier` field of a `Mirror<T>`, which cannot be dropped while a callback runs
        // (`mmu_interval_notifier_remove()` waits for it).
        let mirror = unsafe { &*kernel::container_of!(notifier, Mirror<T>, notifier) };
        // SAFETY: The C side passes a valid range that does not change during the callback.
        let range = unsafe { InvalidateRange::from_raw(range) };

        let mut guard = if range.is_blockable() {
            mirror.lock()
        } else {
            match mirror.try_lock() {
                Some(guard) => guard,
                None => return false,
            }
        };

        // This mirror's own `make_device_exclusive()` replaces a PTE by a device-exclusive entry
        // for the same page: the entries stay valid, and the event must not bump the sequence, or
        // `make_exclusive()` would never succeed. It records what that needs instead: the current
        // sequence, or, if an invalidation of this period already set it (to `cur_seq`: one is
        // running alongside the conversion), a value the sequence cannot have. Every other
        // invalidation, other mirrors' conversions included, clears.
        if range.is_exclusive_by(mirror.exclusive_owner()) {
            // SAFETY: `interval_sub` is valid; its `invalidate_seq` is only written at insertion and
            // by `mmu_interval_set_seq()`, which this mirror calls with its lock held, as it is
            // here.
            let seq = unsafe { (*interval_sub).invalidate_seq };
            // A notifier's sequence is always odd (`cur_seq` of a running invalidation, or odd
            // from insertion), so `cur_seq + 1` never matches it.
            let seq = if seq == cur_seq {
                cur_seq.wrapping_add(1)
            } else {
                seq
            };
            mirror.excl_seq.store(seq, Ordering::Relaxed);
            return true;
        }

        // SAFETY: `interval_sub` is valid, and the mirror lock, which `Mirror::fault()` holds
        // around `mmu_interval_read_retry()`, is held.
        unsafe { bindings::mmu_interval_set_seq(interval_sub, cur_seq) };

        // INVARIANT: The pages of the range are about to be unmapped: drop their entries.
        if let Some((first, last)) = vpn_span(range.start(), range.end()) {
            mirror.pt.clear(first, last);
        }

        T::invalidate(&mut guard, range);
        true
    }
}

/// The locked state of a [`Mirror`]: the driver's `T` (through [`Deref`] and [`DerefMut`]) and
/// the device page table.
///
/// While it exists, invalidations of the mirrored mm wait, so every page table entry stays mapped.
pub struct MirrorGuard<'a, T: MirrorOps> {
    mirror: &'a Mirror<T>,
    _guard: MutexGuard<'a, ()>,
}

impl<'a, T: MirrorOps> MirrorGuard<'a, T> {
    /// The mirror this guard locks.
    #[inline]
    pub fn mirror(&self) -> &'a Mirror<T> {
        self.mirror
    }

    /// The entry for virtual page number `vpn` (address `vpn << PAGE_SHIFT`), if any.
    pub fn pt_get(&self, vpn: usize) -> Option<PtEntry<'_>> {
        let (page, perm) = self.mirror.pt.load(vpn)?;
        // INVARIANT: By the invariants of `Mirror`, the page is mapped at the address, and it stays
        // so while the lock, held for the lifetime of `self`, is held.
        Some(PtEntry {
            page,
            perm,
            _guard: PhantomData,
        })
    }

    /// The first entry whose virtual page number is in `vpns`, with that number.
    ///
    /// Costs what the entries cost, not the size of `vpns`: a loop over a huge range can visit the
    /// entries a batch at a time, dropping the lock in between.
    pub fn pt_find(&self, vpns: Range<usize>) -> Option<(usize, PtEntry<'_>)> {
        if vpns.start >= vpns.end {
            return None;
        }
        let (vpn, page, perm) = self.mirror.pt.find(vpns.start, vpns.end - 1)?;
        // INVARIANT: As in `pt_get()`.
        Some((
            vpn,
            PtEntry {
                page,
                perm,
                _guard: PhantomData,
            },
        ))
    }

    /// Calls `f` with each entry whose virtual page number is in `vpns`, in increasing order.
    pub fn pt_for_each_in(&self, vpns: Range<usize>, mut f: impl FnMut(usize, PtEntry<'_>)) {
        if vpns.start >= vpns.end {
            return;
        }
        self.mirror
            .pt
            .for_each_in(vpns.start, vpns.end - 1, |vpn, page, perm| {
                // INVARIANT: As in `pt_get()`.
                f(
                    vpn,
                    PtEntry {
                        page,
                        perm,
                        _guard: PhantomData,
                    },
                )
            });
    }

    /// Removes the entries whose virtual page numbers are in `vpns`.
    pub fn pt_clear(&mut self, vpns: Range<usize>) {
        if vpns.start < vpns.end {
            self.mirror.pt.clear(vpns.start, vpns.end - 1);
        }
    }

    /// Maps the page of entry `index` of `pfns` at its address, for writing if the entry is
    /// writable and for reading otherwise.
    ///
    /// A device-private page is mapped only if it belongs to this mirror's owner: its contents are
    /// not CPU-accessible, and the driver reaches them through its own page data
    /// ([`PtEntry::page()`], `memremap::AnyDevicePage::downcast()`).
    ///
    /// Fails with `EINVAL` if `pfns` comes from another mirror, if `index` is out of range, if the
    /// entry has no page, or if it names another owner's device-private page; and with `ENOMEM` if
    /// the page table cannot grow.
    pub fn pt_insert(&mut self, pfns: &HmmPfns<'_>, index: usize) -> Result {
        if !pfns.is_from(self.mirror.notifier_raw()) {
            return Err(EINVAL);
        }
        let pfn = pfns.get(index).ok_or(EINVAL)?;
        let page = match pfn.mapped_page() {
            Some(page) => page,
            None if pfn.pgmap_owner_is(self.mirror.owner()) => pfn.raw_page().ok_or(EINVAL)?,
            None => return Err(EINVAL),
        };
        let perm = if pfn.is_write() {
            Perm::Write
        } else {
            Perm::Read
        };
        // INVARIANT: `pfns` was handed out by this mirror, with its lock held after a successful
        // `mmu_interval_read_retry()`, so the page is still mapped at the entry's address; any
        // later invalidation must take the lock held by `self` to clear the entry.
        self.mirror.pt.store(pfns.vpn(index), page, perm)
    }

    /// Maps every entry of `pfns` as [`MirrorGuard::pt_insert()`] does (`dmirror_do_fault()`).
    ///
    /// Stops at the first error; the entries mapped before it stay mapped.
    pub fn pt_insert_all(&mut self, pfns: &HmmPfns<'_>) -> Result {
        for index in 0..pfns.len() {
            self.pt_insert(pfns, index)?;
        }
        Ok(())
    }

    /// Maps `page` at virtual page number `vpn` with permission `perm`.
    ///
    /// Fails with `ENOMEM` if the page table cannot grow.
    ///
    /// # Safety
    ///
    /// - `page` must be mapped in the mirrored mm at `vpn << PAGE_SHIFT` (or be the backing storage
    ///   of the device page mapped there, which lives as long as that device page does), and no
    ///   invalidation of that address may have run since it was mapped there: for example, the
    ///   caller holds `mmap_lock` and the page is a locked destination of a migration that has not
    ///   been finalized yet.
    /// - The contents of `page` must be accessible through its kernel mapping (it is not a
    ///   device-private page).
    /// - `perm` must not grant more than the mm's mapping grants.
    pub unsafe fn pt_insert_raw(&mut self, vpn: usize, page: &Page, perm: Perm) -> Result {
        // INVARIANT: The caller guarantees that the page is mapped at the address and that no
        // invalidation of it has run; any later one takes the lock held by `self`.
        // `Page::as_ptr()` is never null.
        match NonNull::new(page.as_ptr()) {
            Some(page) => self.mirror.pt.store(vpn, page, perm),
            None => Err(EINVAL),
        }
    }
}

impl<T: MirrorOps> Deref for MirrorGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The mirror lock is held for the lifetime of `self`.
        unsafe { &*self.mirror.data.get() }
    }
}

impl<T: MirrorOps> DerefMut for MirrorGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The mirror lock is held for the lifetime of `self`, which is borrowed mutably;
        // `T: Unpin`, so handing out `&mut T` cannot move pinned data.
        unsafe { &mut *self.mirror.data.get() }
    }
}
