// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers: keeping a device's view of a process address space current.
//!
//! A device that maps pages of a process must stop using them whenever the CPU page tables change.
//! [`MmuIntervalNotifier`] registers a `struct mmu_interval_notifier` over an interval of an mm,
//! with a mutex around the driver's state `T`. Its invalidate callback takes the mutex, advances
//! the notifier's sequence (`mmu_interval_set_seq()`) and calls
//! [`MmuIntervalNotifierOps::invalidate()`], where the driver unmaps the range from its device.
//!
//! The other side is the read protocol of `Documentation/mm/hmm.rst`: take a [`ReadSeq`] with
//! [`MmuIntervalNotifier::read_begin()`], look the pages up (`hmm_range_fault()`, see
//! [`crate::mm::hmm::Range`]), then lock the notifier and check the sequence with
//! [`IntervalGuard::is_current()`] before using what was looked up. The check needs the guard: a
//! sequence cannot be checked without the lock that the invalidate callback takes, so it cannot be
//! checked too early, and what it vouches for stays true for as long as the guard lives.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use crate::{bindings, mm::memremap::PagemapOwner, task_ext::TaskExt};
use core::{
    marker::PhantomData,
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{
    error::to_result,
    ffi::{c_ulong, c_void},
    mm::{Mm, MmWithUser, MmapReadGuard},
    new_mutex,
    page::{BorrowedPage, PAGE_MASK},
    prelude::*,
    sync::{Mutex, MutexGuard},
    types::Opaque,
};

/// The reason for an invalidation (`enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `munmap()`, or `mremap()` moving the range (`MMU_NOTIFY_UNMAP`).
    Unmap,
    /// A page table entry is cleared (`MMU_NOTIFY_CLEAR`).
    Clear,
    /// `mprotect()` changed the protection of the range (`MMU_NOTIFY_PROTECTION_VMA`).
    ProtectionVma,
    /// The read/write permission of pages changed (`MMU_NOTIFY_PROTECTION_PAGE`).
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
/// `self.0` is a valid `struct mmu_notifier_range` that does not change while it is borrowed.
#[repr(transparent)]
pub struct InvalidateRange(Opaque<bindings::mmu_notifier_range>);

impl InvalidateRange {
    /// Creates a reference to an [`InvalidateRange`] from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct mmu_notifier_range` that stays valid and unchanged for
    /// the lifetime `'a`.
    pub unsafe fn from_raw<'a>(ptr: *const bindings::mmu_notifier_range) -> &'a Self {
        // SAFETY: `InvalidateRange` is a transparent wrapper of the C struct, and the caller
        // guarantees that it is valid and unchanged for `'a`.
        unsafe { &*ptr.cast() }
    }

    fn raw(&self) -> &bindings::mmu_notifier_range {
        // SAFETY: By the type invariants the range is valid and does not change while `self` is
        // borrowed.
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

/// The driver side of an [`MmuIntervalNotifier`]: the state its lock protects, and what to do when
/// the CPU page tables of the interval change.
///
/// The callback runs on whichever thread changes the address space, hence `Send`.
pub trait MmuIntervalNotifierOps: Sized + Send {
    /// Called when `range`, which intersects the notifier's interval, is invalidated.
    ///
    /// It runs with the notifier's lock held and the sequence already advanced: every [`ReadSeq`]
    /// taken before is stale, so [`IntervalGuard::is_current()`] no longer vouches for what was
    /// looked up with it. Before returning, the driver must stop using the pages of `range` that it
    /// had looked up (unmap them from the device): once this returns, the CPU page tables change
    /// and the pages may be freed.
    ///
    /// It may sleep only if `range.is_blockable()`; when it is not and the lock is contended, it is
    /// not called and the invalidation fails (the OOM reaper retries later). It must not drop an
    /// [`MmuIntervalNotifier`] (removing an interval notifier from a notifier callback deadlocks).
    /// It is not called for the notifier's own [`MmuIntervalNotifier::make_device_exclusive()`]
    /// conversions, which leave the pages mapped.
    fn invalidate(self: Pin<&mut Self>, range: &InvalidateRange);
}

/// An `mmu_interval_notifier` over an interval of an mm, with a mutex around the driver's state.
///
/// Lock order: `mmap_lock` → the notifier's exclusive-conversion mutex → folio lock → the
/// notifier's lock. Do not hold the notifier's lock ([`IntervalGuard`]) while calling anything that
/// may fault or invalidate the mm (`copy_to_user()`, `hmm_range_fault()`, `migrate_vma_setup()`,
/// ...), or wait for a folio lock: the invalidate callback takes the lock, sometimes with a folio
/// locked (migrations, [`MmuIntervalNotifier::make_device_exclusive()`]).
///
/// # Examples
///
/// A driver that maps the pages of `start..end` in its device (the device page table programming is
/// left out):
///
/// ```ignore
/// use crate::mm::{hmm, mmu_notifier::*};
///
/// struct Gpu { /* the device page table of the interval */ }
///
/// impl MmuIntervalNotifierOps for Gpu {
///     fn invalidate(self: Pin<&mut Self>, range: &InvalidateRange) {
///         // Unmap `range.start()..range.end()` from the device, flush its TLB.
///     }
/// }
///
/// let notifier = KBox::pin_init(
///     MmuIntervalNotifier::new(&mm, start, end - start, Gpu { /* ... */ }),
///     GFP_KERNEL,
/// )?;
/// hmm::Range::new(&notifier, start, end)?.fault(&mm, true, |gpu, pfns| {
///     // The notifier's lock is held and no invalidation ran since the pages were looked up:
///     // map `pfns` in the device. The next invalidation of the range unmaps them.
///     Ok(())
/// })?;
/// ```
///
/// # Invariants
///
/// - `notifier` is inserted with `mmu_interval_notifier_insert()` on an mm, with `OpsTable::<T>`
///   as its ops; it is removed exactly once, in `PinnedDrop::drop()`. While inserted it holds a
///   reference (`mmgrab()`) on its mm.
/// - The invalidate callback calls `mmu_interval_set_seq()` with `data` locked, for every
///   invalidation except the notifier's own device-exclusive conversions (which leave every page
///   mapped), before the page tables change.
#[pin_data(PinnedDrop)]
pub struct MmuIntervalNotifier<T: MmuIntervalNotifierOps> {
    #[pin]
    data: Mutex<T>,
    /// Serialises [`MmuIntervalNotifier::make_device_exclusive()`], so that `excl_seq` belongs to
    /// the one conversion in flight.
    #[pin]
    excl: Mutex<()>,
    /// What the invalidate callback saw at the conversion in flight: see
    /// [`MmuIntervalNotifier::make_device_exclusive()`]. Written and read with `data` locked.
    excl_seq: AtomicUsize,
    #[pin]
    notifier: Opaque<bindings::mmu_interval_notifier>,
}

// SAFETY: The notifier may be dropped (`mmu_interval_notifier_remove()`) on any thread. `T` is only
// reached under the mutex, and `T: Send`.
unsafe impl<T: MmuIntervalNotifierOps> Send for MmuIntervalNotifier<T> {}

// SAFETY: The `&self` methods only reach `T` with the mutex held, and the invalidate callback
// already runs on arbitrary threads; `T: Send` is enough. The C notifier is only read through
// `&self`, in fields written at insertion, or by functions that synchronise internally.
unsafe impl<T: MmuIntervalNotifierOps> Sync for MmuIntervalNotifier<T> {}

impl<T: MmuIntervalNotifierOps> MmuIntervalNotifier<T> {
    /// Creates a notifier over `start..start + length` of `mm`, with state `data`.
    ///
    /// Fails with `EOVERFLOW` if `length` is zero or `start + length` overflows (the interval must
    /// end at or below the top of the address space, so that [`MmuIntervalNotifier::end()`] can say
    /// where), and with `ENOMEM`.
    pub fn new<'a>(
        mm: &'a MmWithUser,
        start: usize,
        length: usize,
        data: impl PinInit<T> + 'a,
    ) -> impl PinInit<Self, Error> + 'a
    where
        T: 'a,
    {
        try_pin_init!(Self {
            data <- new_mutex!(data),
            excl <- new_mutex!(()),
            excl_seq: AtomicUsize::new(0),
            // The notifier comes last: its callback may run as soon as it is inserted, and it uses
            // the other fields.
            notifier <- Opaque::try_ffi_init(move |slot: *mut bindings::mmu_interval_notifier| {
                if start.checked_add(length).is_none() {
                    return Err(EOVERFLOW);
                }
                // SAFETY: `slot` is valid for writes and pinned: it is not moved before
                // `PinnedDrop` removes it. `mm` has a user (`MmWithUser`), as inserting requires,
                // and the ops table is `'static`. INVARIANT: On success the notifier is inserted
                // with `OpsTable::<T>`; the fields its callback uses are initialised.
                to_result(unsafe {
                    bindings::mmu_interval_notifier_insert(
                        slot,
                        mm.as_raw(),
                        start,
                        length,
                        OpsTable::<T>::build(),
                    )
                })
            }),
        }? Error)
    }

    /// The mm whose interval this notifier covers.
    ///
    /// Get a user reference with [`Mm::mmget_not_zero()`] before faulting.
    pub fn mm(&self) -> &Mm {
        // SAFETY: By the type invariants the notifier is inserted and holds a reference on its mm
        // (whose `mm` field is only written by insertion) until `self` is dropped.
        unsafe { Mm::from_raw((*self.notifier.get()).mm) }
    }

    /// The first address of the interval.
    #[inline]
    pub fn start(&self) -> usize {
        // SAFETY: The interval is written at insertion only (type invariants).
        unsafe { (*self.notifier.get()).interval_tree.start }
    }

    /// The address just past the interval.
    #[inline]
    pub fn end(&self) -> usize {
        // SAFETY: The interval is written at insertion only (type invariants). `new()` refused an
        // interval whose end overflows, so `last + 1` does not.
        unsafe { (*self.notifier.get()).interval_tree.last + 1 }
    }

    /// Starts a read of the CPU page tables of the interval (`mmu_interval_read_begin()`).
    ///
    /// Waits for a running invalidation of the interval to end. Must not be called with the
    /// notifier's lock held, nor with a lock that an invalidation waits for.
    pub fn read_begin(&self) -> ReadSeq<'_> {
        // SAFETY: The notifier is inserted (type invariants).
        let seq = unsafe { bindings::mmu_interval_read_begin(self.notifier.get()) };
        // INVARIANT: Read from this notifier, which the lifetime keeps alive.
        ReadSeq {
            notifier: self.notifier.get(),
            seq,
            _notifier: PhantomData,
        }
    }

    /// Locks the notifier: gives access to the driver's state.
    ///
    /// Blocks invalidations of the interval until the guard is dropped; see the lock rules in the
    /// [`MmuIntervalNotifier`] documentation.
    pub fn lock(&self) -> IntervalGuard<'_, T> {
        IntervalGuard {
            notifier: self,
            guard: self.data.lock(),
        }
    }

    /// Like [`MmuIntervalNotifier::lock()`], but returns [`None`] instead of blocking.
    pub fn try_lock(&self) -> Option<IntervalGuard<'_, T>> {
        Some(IntervalGuard {
            notifier: self,
            guard: self.data.try_lock()?,
        })
    }

    /// The raw interval notifier, for `struct hmm_range`.
    #[inline]
    pub(crate) fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.notifier.get()
    }

    /// The owner this notifier's own `make_device_exclusive()` calls pass, which its invalidate
    /// callback recognises: the notifier's address, unique to it (a device's [`PagemapOwner`] would
    /// be shared by every notifier of the device, and one notifier's conversion would then be
    /// skipped by the others).
    fn exclusive_owner(&self) -> *mut c_void {
        self.as_raw().cast()
    }

    /// Makes the page at `addr` of the mm exclusive to the device (`make_device_exclusive()`: the
    /// CPU faults it back on access), then calls `f` with the notifier locked and the page, which
    /// stays mapped (as a device-exclusive entry) until the next invalidation, which waits for the
    /// lock.
    ///
    /// `addr` must be inside the interval and `mmap` the mmap lock of the mm (else `EINVAL`). Only
    /// anonymous, non-hugetlb pages can be made exclusive; other errors of
    /// `make_device_exclusive()` are returned as they are. `EBUSY` if other invalidations of the
    /// page keep undoing the conversion, `EINTR` if the task is being killed meanwhile.
    ///
    /// Must not be called with the notifier's lock held.
    pub fn make_device_exclusive<R>(
        &self,
        mmap: &MmapReadGuard<'_>,
        addr: usize,
        f: impl FnOnce(Locked<'_, '_, T>, BorrowedPage<'_>) -> Result<R>,
    ) -> Result<R> {
        if addr < self.start() || addr >= self.end() {
            return Err(EINVAL);
        }
        let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
        if !core::ptr::eq(vma.mm().as_raw(), self.mm().as_raw()) {
            return Err(EINVAL);
        }
        let notifier = self.as_raw();
        let _excl = self.excl.lock();
        let mut f = Some(f);
        // An invalidation of the page after the conversion, or one still running when it happened
        // (`MADV_DONTNEED` needs only the mmap read lock, and clears the entry without the folio
        // lock held here), would make what `f` does stale. `mmu_interval_read_begin()` cannot be
        // used as usual: `make_device_exclusive()` itself invalidates the mm before converting (its
        // GUP undoes an earlier conversion of the page, or splits a THP), so a sequence read before
        // it would never be current. Instead the invalidate callback, on this notifier's own
        // `MMU_NOTIFY_EXCLUSIVE` event, records in `excl_seq` the notifier's sequence, or a value
        // that cannot match it if an invalidation of the mm is running alongside the conversion;
        // `mmu_interval_read_retry()` on it then catches those and every later one. Before each
        // try, `mmu_interval_read_begin()` waits for running invalidations to end. Others' faults
        // can undo the conversion each time: give up after a few rounds.
        for _ in 0..EXCLUSIVE_TRIES {
            if current!().fatal_signal_pending() {
                return Err(EINTR);
            }
            // SAFETY: The notifier is inserted (type invariant). Waiting here for running
            // invalidations to end cannot deadlock: none of them waits, between its start and end,
            // for what this thread holds (the mmap read lock, which no invalidation takes once
            // started; `excl`, taken only here; no folio lock yet; not the notifier's lock, whose
            // holders are documented not to be calling this). The sequence it returns is not used
            // (see above).
            unsafe { bindings::mmu_interval_read_begin(notifier) };
            let mut folio: *mut bindings::folio = core::ptr::null_mut();
            // SAFETY: The mm is the notifier's, whose mmap lock `mmap` holds; `folio` is valid for
            // writes. The owner only marks the notifier events of this call.
            let page = unsafe {
                bindings::make_device_exclusive(
                    vma.mm().as_raw(),
                    addr & PAGE_MASK,
                    self.exclusive_owner(),
                    &mut folio,
                )
            };
            let page = kernel::error::from_err_ptr(page)?;
            let done = {
                let mut guard = self.lock();
                let seq = self.excl_seq.load(Ordering::Relaxed);
                // SAFETY: The notifier is inserted and its lock, which the invalidate callback
                // holds around `mmu_interval_set_seq()`, is held.
                if unsafe { bindings::mmu_interval_read_retry(notifier, seq) } {
                    None
                } else {
                    // No invalidation of the mm set the sequence in the period of the conversion or
                    // since (ours is the only conversion in flight, `excl`), so none that ran
                    // alongside it has reached this notifier yet: the page is mapped (as a
                    // device-exclusive entry) at `addr`, and any invalidation still to reach this
                    // notifier takes the lock held here.
                    NonNull::new(page).zip(f.take()).map(|(page, f)| {
                        // SAFETY: The page is mapped at `addr` until an invalidation, which waits
                        // for `guard`, and it is locked and referenced until `folio_put()` below;
                        // the borrow ends before either.
                        f(Locked::new(&mut guard), unsafe {
                            BorrowedPage::from_raw(page)
                        })
                    })
                }
            };
            // SAFETY: `make_device_exclusive()` returned the folio locked and referenced.
            unsafe {
                bindings::folio_unlock(folio);
                bindings::folio_put(folio);
            }
            if let Some(ret) = done {
                return ret;
            }
        }
        Err(EBUSY)
    }
}

/// Rounds [`MmuIntervalNotifier::make_device_exclusive()`] tries before `EBUSY`.
const EXCLUSIVE_TRIES: usize = 8;

#[pinned_drop]
impl<T: MmuIntervalNotifierOps> PinnedDrop for MmuIntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants the notifier is inserted and this is the only place that
        // removes it. Once this returns, no callback is running or will run, so the other fields
        // can be dropped.
        unsafe { bindings::mmu_interval_notifier_remove(self.notifier.get()) };
    }
}

/// A sequence number of an [`MmuIntervalNotifier`], taken before reading the CPU page tables
/// ([`MmuIntervalNotifier::read_begin()`]).
///
/// It can only be checked with the notifier locked ([`IntervalGuard::is_current()`]).
///
/// # Invariants
///
/// `seq` was returned by `mmu_interval_read_begin()` on `notifier`, which lives for `'a`.
pub struct ReadSeq<'a> {
    notifier: *const bindings::mmu_interval_notifier,
    seq: c_ulong,
    _notifier: PhantomData<&'a Opaque<bindings::mmu_interval_notifier>>,
}

impl<'a> ReadSeq<'a> {
    /// A sequence that C code read from `notifier` (`hmm_range_fault_unlocked_timeout()` reads
    /// `hmm_range::notifier_seq` itself).
    ///
    /// # Safety
    ///
    /// `seq` was returned by `mmu_interval_read_begin()` on `notifier`, before the page table reads
    /// it is to vouch for.
    #[inline]
    pub(crate) unsafe fn from_raw<T: MmuIntervalNotifierOps>(
        notifier: &'a MmuIntervalNotifier<T>,
        seq: c_ulong,
    ) -> Self {
        // INVARIANT: The caller guarantees where `seq` comes from; the lifetime keeps the notifier
        // alive.
        Self {
            notifier: notifier.as_raw(),
            seq,
            _notifier: PhantomData,
        }
    }

    /// The raw sequence, for `struct hmm_range`.
    #[inline]
    pub(crate) fn raw(&self) -> c_ulong {
        self.seq
    }
}

/// The locked state of an [`MmuIntervalNotifier`]: the driver's `T` (through [`Deref`], and
/// [`DerefMut`] if `T: Unpin`).
///
/// While it exists, invalidations of the interval wait.
pub struct IntervalGuard<'a, T: MmuIntervalNotifierOps> {
    notifier: &'a MmuIntervalNotifier<T>,
    guard: MutexGuard<'a, T>,
}

impl<'a, T: MmuIntervalNotifierOps> IntervalGuard<'a, T> {
    /// The notifier this guard locks.
    #[inline]
    pub fn notifier(&self) -> &'a MmuIntervalNotifier<T> {
        self.notifier
    }

    /// Whether no invalidation of the interval started since `seq` was taken
    /// (`!mmu_interval_read_retry()`): what was looked up after `seq` was taken is still mapped,
    /// and stays so while `self` lives.
    ///
    /// `false` for a sequence of another notifier.
    pub fn is_current(&self, seq: &ReadSeq<'_>) -> bool {
        if !core::ptr::eq(seq.notifier, self.notifier.as_raw()) {
            return false;
        }
        // SAFETY: The notifier is inserted, and its lock, which the invalidate callback holds
        // around `mmu_interval_set_seq()`, is held.
        !unsafe { bindings::mmu_interval_read_retry(self.notifier.as_raw(), seq.seq) }
    }

    /// The driver's state, pinned.
    #[inline]
    pub fn as_mut(&mut self) -> Pin<&mut T> {
        self.guard.as_mut()
    }
}

impl<T: MmuIntervalNotifierOps> Deref for IntervalGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: MmuIntervalNotifierOps + Unpin> DerefMut for IntervalGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// The lock of an [`MmuIntervalNotifier`], held further up and lent to a closure that uses what the
/// lock vouches for ([`crate::mm::hmm::Range::fault()`],
/// [`MmuIntervalNotifier::make_device_exclusive()`]).
///
/// It gives the driver's state (through [`Deref`], [`DerefMut`] if `T: Unpin`, and
/// [`Locked::data()`]) and the sequence check, but not the guard: a closure given the guard, even
/// pinned, could replace it (`Pin::set()`) with the guard of another notifier and so unlock this
/// one while it still used the pages the lock vouched for.
pub struct Locked<'g, 'a, T: MmuIntervalNotifierOps> {
    guard: &'g mut IntervalGuard<'a, T>,
}

impl<'g, 'a, T: MmuIntervalNotifierOps> Locked<'g, 'a, T> {
    #[inline]
    pub(crate) fn new(guard: &'g mut IntervalGuard<'a, T>) -> Self {
        Self { guard }
    }

    /// The guard, shared: what it offers through `&` cannot unlock it.
    #[inline]
    pub(crate) fn guard(&self) -> &IntervalGuard<'a, T> {
        self.guard
    }

    /// The notifier whose lock this is.
    #[inline]
    pub fn notifier(&self) -> &'a MmuIntervalNotifier<T> {
        self.guard.notifier
    }

    /// As [`IntervalGuard::is_current()`].
    #[inline]
    pub fn is_current(&self, seq: &ReadSeq<'_>) -> bool {
        self.guard.is_current(seq)
    }

    /// The driver's state, pinned.
    #[inline]
    pub fn data(&mut self) -> Pin<&mut T> {
        self.guard.as_mut()
    }
}

impl<T: MmuIntervalNotifierOps> Deref for Locked<'_, '_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.guard
    }
}

impl<T: MmuIntervalNotifierOps + Unpin> DerefMut for Locked<'_, '_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.guard
    }
}

/// The `mmu_interval_notifier_ops` of an [`MmuIntervalNotifier<T>`].
struct OpsTable<T: MmuIntervalNotifierOps>(PhantomData<T>);

impl<T: MmuIntervalNotifierOps> OpsTable<T> {
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
    /// `interval_sub` is the notifier of a live [`MmuIntervalNotifier<T>`] and `range` a valid
    /// range that does not change during the call, as the C side guarantees for `invalidate`
    /// callbacks.
    unsafe extern "C" fn invalidate(
        interval_sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        let notifier = Opaque::cast_from(interval_sub).cast_mut();
        // SAFETY: By the type invariants of `MmuIntervalNotifier`, this callback is only installed
        // for the `notifier` field of an `MmuIntervalNotifier<T>`, which cannot be dropped while a
        // callback runs (`mmu_interval_notifier_remove()` waits for it).
        let this = unsafe { &*kernel::container_of!(notifier, MmuIntervalNotifier<T>, notifier) };
        // SAFETY: The C side passes a valid range that does not change during the callback.
        let range = unsafe { InvalidateRange::from_raw(range) };

        let mut guard = if range.is_blockable() {
            this.lock()
        } else {
            match this.try_lock() {
                Some(guard) => guard,
                None => return false,
            }
        };

        // This notifier's own `make_device_exclusive()` replaces a PTE by a device-exclusive entry
        // for the same page: the page stays mapped, and the event must not bump the sequence, or
        // the conversion would never be current. It records what that needs instead: the current
        // sequence, or, if an invalidation of this period already set it (to `cur_seq`: one is
        // running alongside the conversion), a value the sequence cannot have. Every other
        // invalidation, other notifiers' conversions included, advances it.
        if range.is_exclusive_by(this.exclusive_owner()) {
            // SAFETY: `interval_sub` is valid; its `invalidate_seq` is only written at insertion
            // and by `mmu_interval_set_seq()`, which this notifier calls with its lock held, as it
            // is here.
            let seq = unsafe { (*interval_sub).invalidate_seq };
            // A notifier's sequence is always odd (`cur_seq` of a running invalidation, or odd from
            // insertion), so `cur_seq + 1` never matches it.
            let seq = if seq == cur_seq {
                cur_seq.wrapping_add(1)
            } else {
                seq
            };
            this.excl_seq.store(seq, Ordering::Relaxed);
            return true;
        }

        // `mmu_interval_set_seq()`: a `WRITE_ONCE()` of the sequence.
        // SAFETY: `interval_sub` is valid, and the notifier's lock, which readers hold around
        // `mmu_interval_read_retry()`, is held. INVARIANT: The sequence advances before the page
        // tables change.
        unsafe { (&raw mut (*interval_sub).invalidate_seq).write_volatile(cur_seq) };
        guard.guard.as_mut().invalidate(range);
        true
    }
}
