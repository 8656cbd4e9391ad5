// SPDX-License-Identifier: GPL-2.0

//! A software device page table over an address space: what `lib/test_hmm.c` keeps per open file.
//!
//! [`Mirror`] is an [`MmuIntervalNotifier`] over the whole address space of an mm whose state is a
//! device page table (virtual page number to page, with a [`Perm`]) and the driver's `T`. The
//! invalidate callback clears the invalidated range from the table, so an entry always names a page
//! that is still mapped at its address, and the driver may read and write the page through the
//! entry while it holds the lock.
//!
//! Entries are added from the result of `hmm_range_fault()` ([`Mirror::fault()`], which runs a
//! [`Range`] over the mirror), by [`Mirror::make_exclusive()`], or, by code that can prove the page
//! is mapped, through [`MirrorGuard::pt_insert_raw()`].
//!
//! A device with a page table of its own needs none of this: it uses [`MmuIntervalNotifier`] and
//! [`Range`] directly, as their examples show.

use super::{HmmPfns, Range};
use crate::{
    bindings,
    mm::{
        memremap::{PageRef, PagemapOwner},
        mmu_notifier::{
            IntervalGuard, InvalidateRange, MmuIntervalNotifier, MmuIntervalNotifierOps,
        },
    },
};
use core::{
    cell::Cell,
    marker::PhantomData,
    ops::{Deref, Range as Span},
    ptr::NonNull,
};
use kernel::{
    error::to_result,
    ffi::{c_ulong, c_void},
    mm::{Mm, MmWithUser, MmapReadGuard},
    page::{Page, PAGE_MASK, PAGE_SHIFT},
    prelude::*,
    sync::Arc,
    time::Delta,
    types::Opaque,
};

/// The driver side of a [`Mirror`]: its state and its invalidate hook.
///
/// The state is kept under the mirror's lock together with the device page table; it is reached
/// through a [`MirrorGuard`], and by the invalidate callback. The callback runs on whichever thread
/// changes the address space, hence `Send`.
///
/// Invalidations cannot be skipped: `lib/test_hmm.c` ignores the `MMU_NOTIFY_MIGRATE` events of its
/// own migrations and leaves their entries in place, but an entry that outlives the mapping of its
/// page would be a use-after-free once the page is freed. A driver's own migration thus clears the
/// migrated range like any other invalidation, and the driver maps the destination pages again;
/// [`InvalidateRange::is_migration_by()`] tells such events apart.
pub trait MirrorOps: Sized + Send {
    /// Called when a range of the mirrored address space is invalidated, with the mirror lock held,
    /// after the sequence has been set and the range has been cleared from the device page table.
    ///
    /// It may sleep only if `range.is_blockable()`. It must not drop a [`Mirror`] (removing an
    /// interval notifier from a notifier callback deadlocks). It is not called for the mirror's own
    /// [`Mirror::make_exclusive()`] conversions, which leave the page mapped.
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

// The tags `lib/test_hmm.c` stores in the low bits of its page table entries (`DPT_XA_TAG_*`).
// Pointers tagged 1 and 3 are ordinary XArray entries; 2 would be an internal entry, so read-only
// pages carry no tag.
const TAG_READ: usize = 0;
const TAG_ATOMIC: usize = 1;
const TAG_WRITE: usize = 3;
const TAG_MASK: usize = 3;

/// `xa_tag_pointer()`: the entry for `page` with `perm`. A `struct page` is at least word aligned,
/// so the tag bits are free.
fn encode(page: NonNull<bindings::page>, perm: Perm) -> *mut c_void {
    (page.as_ptr() as usize | perm.tag()) as *mut c_void
}

/// `xa_untag_pointer()` and `xa_pointer_tag()`: the page and permission of `entry`, if any.
fn decode(entry: *mut c_void) -> Option<(NonNull<bindings::page>, Perm)> {
    let entry = entry as usize;
    let page = NonNull::new((entry & !TAG_MASK) as *mut bindings::page)?;
    Some((page, Perm::from_tag(entry & TAG_MASK)))
}

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

/// The entries of consecutive virtual page numbers, from [`MirrorGuard::pt_run()`], `None` where
/// there is none: one walk down the device page table and then a step per entry (`xas_load()`,
/// then `xas_next()`), where [`MirrorGuard::pt_get()`] looks each up from the root.
///
/// # Invariants
///
/// - Only this thread changes `pt` for `'a` (the mirror lock is held, or no one else sees the
///   table), and only through its methods.
/// - `xas` walks the XArray of `pt`. If `started` and `pt.gen == gen`, the XArray has not changed
///   since `xas` last moved, so `xas` is where it left it: at index `next - 1`.
pub struct PtRun<'a> {
    pt: &'a PageTable,
    xas: bindings::xa_state,
    gen: u64,
    started: bool,
    next: usize,
    end: usize,
}

impl<'a> Iterator for PtRun<'a> {
    type Item = Option<PtEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let gen = self.pt.gen.get();
        let rcu = kernel::sync::rcu::read_lock();
        let entry = if self.started && gen == self.gen {
            // SAFETY: `xas` walks an unchanged XArray and is at index `next - 1` (type invariants);
            // `__xas_next()` moves it to `next` under the RCU read lock, as it must be called.
            unsafe { bindings::__xas_next(&mut self.xas) }
        } else {
            self.xas.xa_index = self.next;
            self.xas.xa_node = XAS_RESTART;
            self.gen = gen;
            self.started = true;
            // SAFETY: `xas` is a walk of `pt`'s initialised XArray (type invariants) that starts
            // again from the root at `next`; `xas_load()` is called under the RCU read lock.
            unsafe { bindings::xas_load(&mut self.xas) }
        };
        drop(rcu);
        // INVARIANT: `xas` is at index `next`, `gen` is the current one.
        self.next += 1;
        // INVARIANT: As in `MirrorGuard::pt_get()`: the page is mapped at the address while the
        // lock, held for `'a`, is held.
        Some(decode(entry).map(|(page, perm)| PtEntry {
            page,
            perm,
            _guard: PhantomData,
        }))
    }
}

/// `XAS_RESTART`: the `xa_node` of an `xa_state` whose walk has not started (a special pointer
/// value the bindings cannot carry).
const XAS_RESTART: *mut bindings::xa_node = core::ptr::without_provenance_mut(3);

/// How many entries [`PageTable::clear`] and [`PageTable::store_run`] visit under one hold of the
/// XArray lock.
const CLEAR_BATCH: usize = 4096;

/// The number of entries in a leaf node of an XArray (`XA_CHUNK_SHIFT`, `XA_CHUNK_SIZE`).
const XA_CHUNK_SHIFT: u32 = bindings::XA_CHUNK_SHIFT as u32;
const XA_CHUNK_SIZE: usize = 1 << XA_CHUNK_SHIFT;

/// Whether the XArray takes stores of more than one index at a time (`CONFIG_XARRAY_MULTI`), which
/// [`PageTable::clear`] uses to drop a whole leaf node at once.
const XA_MULTI: bool = cfg!(CONFIG_XARRAY_MULTI);

/// How the device page table allocates its nodes. The caller holds the mirror lock, which the
/// invalidate callback takes: an allocation that entered reclaim (which may invalidate this mm)
/// could deadlock, so the allocation must not sleep. `lib/test_hmm.c` uses `GFP_ATOMIC`; the
/// entries are as many as the pages user space had faulted, so they must not drain the atomic
/// reserves either, and are charged to the user's memory cgroup: the XArray has
/// `XA_FLAGS_ACCOUNT`, which the allocations inside `xas_store()` honour, and the retries of
/// `xas_nomem()` and `xa_store()` take `__GFP_ACCOUNT` from here. Failing is `ENOMEM`
/// (`GFP_NOWAIT` does not warn).
const STORE_GFP: bindings::gfp_t = bindings::GFP_NOWAIT | bindings::__GFP_ACCOUNT;

/// `xas_error()`: whether the walk stopped on an error (its `xa_node` is an error entry).
fn xas_is_error(xas: &bindings::xa_state) -> bool {
    // `xa_is_err()`: an internal entry (low bits `10`) from `xa_mk_internal(-MAX_ERRNO)` on.
    let node = xas.xa_node as usize;
    node & 3 == 2 && node >= ((-(bindings::MAX_ERRNO as isize) << 2) | 2) as usize
}

/// The device page table: an XArray from virtual page number to tagged `struct page *`.
///
/// Entries hold no reference on their page; the mirror's invalidate callback removes them before
/// the page can go away.
///
/// # Invariants
///
/// - `xa` is an initialised XArray whose entries are `struct page` pointers tagged with a [`Perm`]
///   tag.
/// - `gen` changes whenever the XArray does (every store and erase goes through this type), so
///   that a [`PtRun`] that saw the same `gen` may go on from where its `xa_state` points.
#[pin_data(PinnedDrop)]
struct PageTable {
    #[pin]
    xa: Opaque<bindings::xarray>,
    gen: Cell<u64>,
}

// SAFETY: The XArray serialises its updates with its own lock and may be used from any thread; its
// entries are plain pointers that own nothing.
unsafe impl Send for PageTable {}

impl PageTable {
    fn new() -> impl PinInit<Self> {
        // INVARIANT: `xa_init_flags()` initialises an empty XArray.
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned; `xa_init_flags()` initialises it.
            // `XA_FLAGS_ACCOUNT`: its nodes are charged to the memory cgroup of the task that adds
            // the entries (see `STORE_GFP`).
            xa <- Opaque::ffi_init(|slot| unsafe {
                bindings::xa_init_flags(slot, bindings::XA_FLAGS_ACCOUNT)
            }),
            gen: Cell::new(0),
        })
    }

    /// `XA_STATE(xas, xa, index)`: a walk from `index` that has not started (`XAS_RESTART`).
    fn xas(&self, index: usize) -> bindings::xa_state {
        bindings::xa_state {
            xa: self.xa.get(),
            xa_index: index,
            xa_node: XAS_RESTART,
            ..Default::default()
        }
    }

    /// A walk over the entries of `vpns`. The caller keeps the table from changing but through
    /// this thread for the walk's lifetime (the mirror lock, or a table no one else sees).
    fn run(&self, vpns: Span<usize>) -> PtRun<'_> {
        // INVARIANT: Not started; the caller keeps other threads out.
        PtRun {
            pt: self,
            xas: self.xas(vpns.start),
            gen: 0,
            started: false,
            next: vpns.start,
            end: vpns.end,
        }
    }

    /// Records a change of the XArray (type invariant).
    fn changed(&self) {
        self.gen.set(self.gen.get().wrapping_add(1));
    }

    fn load(&self, vpn: usize) -> Option<(NonNull<bindings::page>, Perm)> {
        // SAFETY: By the type invariants `xa` is initialised.
        decode(unsafe { bindings::xa_load(self.xa.get(), vpn) })
    }

    fn store(&self, vpn: usize, page: NonNull<bindings::page>, perm: Perm) -> Result {
        let entry = encode(page, perm);
        self.changed();
        // SAFETY: By the type invariants `xa` is initialised.
        let old = unsafe { bindings::xa_store(self.xa.get(), vpn, entry, STORE_GFP) };
        // SAFETY: `xa_err()` only inspects the value of the pointer.
        to_result(unsafe { bindings::xa_err(old) })
    }

    /// Stores `entry(i)` at `first + i` for each `i` in `0..n` where it is `Some`, in one walk
    /// under the XArray lock (`xas_store()`, then `xas_next()`), not one lookup from the root and
    /// one lock round trip per entry. Stops at the first error, `entry`'s or `ENOMEM`; the
    /// entries stored before it stay. `entry` runs under the XArray's spinlock: it must not
    /// sleep.
    fn store_run(
        &self,
        first: usize,
        n: usize,
        mut entry: impl FnMut(usize) -> Result<Option<(NonNull<bindings::page>, Perm)>>,
    ) -> Result {
        let xa = self.xa.get();
        let mut xas = self.xas(first);
        // The index `xas` was left at by the last store, if the walk can go on from there.
        let mut at = None;
        let mut ret = Ok(());
        self.changed();
        // SAFETY: By the type invariants `xa` is initialised. `xas_store()`, `__xas_next()` and
        // `xas_nomem()` need the XArray lock, held around every call to them. `__xas_next()` moves
        // on by one index from where a store left the walk, and only then (`at`); a walk that has
        // not stored yet, skipped an index or dropped the lock starts again from the root at its
        // index. `xas_nomem()` allocates with `STORE_GFP`, which does not sleep, and once no error
        // is left frees what it allocated and the walk did not use.
        unsafe {
            bindings::xa_lock(xa);
            for i in 0..n {
                if i > 0 && i % CLEAR_BATCH == 0 {
                    // As in `clear()`: the spinlock is let go now and then.
                    bindings::xa_unlock(xa);
                    bindings::xa_lock(xa);
                    at = None;
                }
                let (page, perm) = match entry(i) {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(e) => {
                        ret = Err(e);
                        break;
                    }
                };
                let index = first + i;
                if at.map(|a| a + 1) == Some(index) {
                    bindings::__xas_next(&mut xas);
                } else {
                    // `xas_set()`.
                    xas.xa_index = index;
                    xas.xa_node = XAS_RESTART;
                }
                let entry = encode(page, perm);
                loop {
                    bindings::xas_store(&mut xas, entry);
                    if !xas_is_error(&xas) || !bindings::xas_nomem(&mut xas, STORE_GFP) {
                        break;
                    }
                }
                if xas_is_error(&xas) {
                    ret = Err(ENOMEM);
                    break;
                }
                at = Some(index);
            }
            // Without an error left, frees a node `xas_nomem()` allocated that the walk did not
            // use (`xas_destroy()`); with one, it failed to allocate and holds none.
            if !xas_is_error(&xas) {
                bindings::xas_nomem(&mut xas, STORE_GFP);
            }
            bindings::xa_unlock(xa);
        }
        ret
    }

    /// Removes the entries of the virtual page numbers `first..=last`, in one walk under the XArray
    /// lock (`xas_for_each()` and `xas_store(NULL)`), not one lookup and one erase per entry: a
    /// migration back of a THP clears 512 of them. Where the range covers a whole leaf node of
    /// the XArray (`XA_CHUNK_SIZE` entries, aligned), one store of `NULL` over the node's slot in
    /// its parent drops all of its entries and frees it, as `xa_store_range()` does.
    fn clear(&self, first: usize, last: usize) {
        let xa = self.xa.get();
        self.changed();
        if first == last {
            // One page, as a fault moves back: one call.
            // SAFETY: By the type invariants `xa` is initialised; `xa_erase()` takes its lock.
            // Entries hold no reference on their page, so there is nothing to release.
            unsafe { bindings::xa_erase(xa, first) };
            return;
        }
        let mut xas = self.xas(first);
        let mut batch = 0;
        // SAFETY: By the type invariants `xa` is initialised. `xas_find()` and `xas_store()` need
        // its lock, held around every call to them (`xas_pause()` lets the walk resume after the
        // lock was dropped, as does a walk set to start again from the root at an index); storing
        // `NULL` never allocates. A store of order `XA_CHUNK_SHIFT` at an index aligned to it
        // covers exactly the `XA_CHUNK_SIZE` indices from there, all in the range (tested); it
        // frees the leaf node that held them (`xas_free_nodes()`, RCU-deferred). Entries hold no
        // reference on their page, so there is nothing to release.
        unsafe {
            bindings::xa_lock(xa);
            while !bindings::xas_find(&mut xas, last).is_null() {
                let index = xas.xa_index;
                if XA_MULTI && index % XA_CHUNK_SIZE == 0 && last - index >= XA_CHUNK_SIZE - 1 {
                    // `xas_set_order(&xas, index, XA_CHUNK_SHIFT)`.
                    xas.xa_shift = XA_CHUNK_SHIFT as u8;
                    xas.xa_node = XAS_RESTART;
                    bindings::xas_store(&mut xas, core::ptr::null_mut());
                    batch += XA_CHUNK_SIZE;
                    if last - index == XA_CHUNK_SIZE - 1 {
                        break;
                    }
                    // `xas_set_order(&xas, index + XA_CHUNK_SIZE, 0)`.
                    xas.xa_shift = 0;
                    xas.xa_index = index + XA_CHUNK_SIZE;
                    xas.xa_node = XAS_RESTART;
                } else {
                    bindings::xas_store(&mut xas, core::ptr::null_mut());
                    batch += 1;
                }
                // The range can be the whole address space: the spinlock (and preemption) is let
                // go now and then, as when each entry was erased on its own.
                if batch >= CLEAR_BATCH {
                    batch = 0;
                    bindings::xas_pause(&mut xas);
                    bindings::xa_unlock(xa);
                    bindings::xa_lock(xa);
                }
            }
            bindings::xa_unlock(xa);
        }
    }

    /// The first entry whose index is in `first..=last`, with its index.
    fn find(&self, first: usize, last: usize) -> Option<(usize, NonNull<bindings::page>, Perm)> {
        let mut index: c_ulong = first;
        // SAFETY: By the type invariants `xa` is initialised; `index` is a valid location.
        let entry =
            unsafe { bindings::xa_find(self.xa.get(), &mut index, last, bindings::XA_PRESENT) };
        let (page, perm) = decode(entry)?;
        Some((index, page, perm))
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

/// The state behind a [`Mirror`]'s lock: the device page table and the driver's `T`.
///
/// # Invariants
///
/// - Only ever the state of the notifier of a [`Mirror<T>`].
/// - Every entry of `pt` names a `struct page` that is mapped in the mm at the entry's address (or
///   is the backing storage of the device page mapped there, kept alive as long as that device page
///   is); the invalidate callback removes the entries of a range before the pages can be unmapped.
#[pin_data]
struct MirrorState<T> {
    #[pin]
    pt: PageTable,
    data: T,
}

impl<T: MirrorOps> MmuIntervalNotifierOps for MirrorState<T> {
    fn invalidate(self: Pin<&mut Self>, range: &InvalidateRange) {
        let this = self.project();
        // INVARIANT: The pages of the range are about to be unmapped: drop their entries.
        if let Some((first, last)) = vpn_span(range.start(), range.end()) {
            this.pt.clear(first, last);
        }
        this.data.invalidate(range);
    }
}

/// A device mirror of a process address space.
///
/// An [`MmuIntervalNotifier`] over the whole address space of an mm whose state is the driver's `T`
/// and a device page table. The invalidate callback clears the invalidated range from the device
/// page table and then calls [`MirrorOps::invalidate()`]. [`Mirror::fault()`] is the
/// `hmm_range_fault()` retry loop that fills the device page table.
///
/// The lock rules are those of [`MmuIntervalNotifier`]: do not hold the mirror lock
/// ([`MirrorGuard`]) while calling anything that may fault or invalidate the mirrored mm, or wait
/// for a folio lock.
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
#[pin_data]
pub struct Mirror<T: MirrorOps> {
    // First, so that it is removed (its callbacks done) before the other fields are dropped.
    #[pin]
    notifier: MmuIntervalNotifier<MirrorState<T>>,
    owner: Arc<PagemapOwner>,
}

impl<T: MirrorOps> Mirror<T> {
    /// Creates a mirror of the address space of `mm`.
    ///
    /// `owner` identifies the device pages of the mirroring device: `hmm_range_fault()` returns
    /// them as they are (rather than faulting them back to system memory), and the migrations it
    /// performs are recognised by [`InvalidateRange::is_migration_by()`].
    pub fn new<'a>(
        mm: &'a MmWithUser,
        owner: Arc<PagemapOwner>,
        data: T,
    ) -> impl PinInit<Self, Error> + 'a
    where
        T: 'a,
    {
        // INVARIANT: The state is created here only, as the state of a mirror's notifier.
        let state = pin_init!(MirrorState {
            pt <- PageTable::new(),
            data,
        });
        try_pin_init!(Self {
            notifier <- MmuIntervalNotifier::new(mm, 0, usize::MAX & PAGE_MASK, state),
            owner,
        }? Error)
    }

    /// The mirrored mm.
    ///
    /// Get a user reference with [`Mm::mmget_not_zero()`] before faulting.
    #[inline]
    pub fn mm(&self) -> &Mm {
        self.notifier.mm()
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
            held: Held::Owned(self.notifier.lock()),
        }
    }

    /// Like [`Mirror::lock()`], but returns [`None`] instead of blocking.
    pub fn try_lock(&self) -> Option<MirrorGuard<'_, T>> {
        Some(MirrorGuard {
            mirror: self,
            held: Held::Owned(self.notifier.try_lock()?),
        })
    }

    /// Calls `f` with a [`MirrorGuard`] of `guard`, a guard of this mirror's notifier that a caller
    /// further up holds.
    fn with_lent<R>(
        &self,
        guard: &IntervalGuard<'_, MirrorState<T>>,
        f: impl FnOnce(&MirrorGuard<'_, T>) -> R,
    ) -> R {
        f(&MirrorGuard {
            mirror: self,
            held: Held::Lent(guard),
        })
    }

    /// A [`Range`] of `start..end` over this mirror's notifier, device pages of its owner reported
    /// as they are.
    fn range(&self, start: usize, end: usize) -> Result<Range<'_, MirrorState<T>>> {
        Ok(Range::new(&self.notifier, start, end)?.with_owner(&self.owner))
    }

    /// Faults in `start..end` of the mirrored mm and hands the result to `commit`.
    ///
    /// Like `dmirror_fault()` in `lib/test_hmm.c`: [`Range::fault()`] over the mirror, device pages
    /// of [`Mirror::owner()`] being returned as they are (and never faulted back to system memory).
    /// For each chunk, `commit` is called with the mirror locked and the chunk's [`HmmPfns`], all
    /// valid (and writable if `write`), current while the closure runs; typically it maps them with
    /// [`MirrorGuard::pt_insert_all()`].
    ///
    /// `mm` must be the mirrored mm ([`Mirror::mm()`]), and `start` and `end` page aligned;
    /// otherwise this fails with `EINVAL`. The other errors are those of [`Range::fault()`].
    ///
    /// Must not be called with the mirror lock held, nor with the mmap lock of `mm` held (an
    /// [`MmapReadGuard`] alive): it takes that lock itself, and taking it again could deadlock
    /// behind a waiting writer.
    pub fn fault(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        write: bool,
        mut commit: impl FnMut(&MirrorGuard<'_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        self.range(start, end)?.fault(mm, write, |g, pfns| {
            self.with_lent(g.guard(), |g| commit(g, pfns))
        })
    }

    /// As [`Mirror::fault()`], but with [`Range::fault_unlocked()`]: the mmap lock is taken inside
    /// and may be dropped while a fault is handled, so that faults which need it released
    /// (userfaultfd) can make progress (`HMM_DMIRROR_READ_UNLOCKED`).
    ///
    /// `timeout` bounds the retries after invalidations (`EBUSY` once it expires); `None` retries
    /// until a fatal signal (`EINTR`). The same lock rules as for [`Mirror::fault()`] apply.
    pub fn fault_unlocked(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        write: bool,
        timeout: Option<Delta>,
        mut commit: impl FnMut(&MirrorGuard<'_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        self.range(start, end)?
            .fault_unlocked(mm, write, timeout, |g, pfns| {
                self.with_lent(g.guard(), |g| commit(g, pfns))
            })
    }

    /// Takes a snapshot of the CPU mappings of `start..end` of the mirrored mm, without faulting
    /// ([`Range::snapshot()`], as `dmirror_snapshot()` in `lib/test_hmm.c`).
    ///
    /// `f` is called for each chunk with the mirror locked and the chunk's [`HmmPfns`], which may
    /// be invalid or errors. The arguments, errors and lock rules are as for [`Mirror::fault()`];
    /// `f` must not touch user memory (copy the result out after this returns).
    pub fn snapshot(
        &self,
        mm: &MmWithUser,
        start: usize,
        end: usize,
        mut f: impl FnMut(&MirrorGuard<'_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        self.range(start, end)?
            .snapshot(mm, |g, pfns| self.with_lent(g.guard(), |g| f(g, pfns)))
    }

    /// As [`Mirror::snapshot()`], under the mmap lock the caller holds with `mmap`
    /// ([`Range::snapshot_locked()`]), so that the caller can act on what it saw (set up a
    /// migration of the range, say) under the same lock.
    ///
    /// `owner`'s device-private pages are reported as they are; it need not be the mirror's owner
    /// (a move from another device looks at that device's pages).
    pub fn snapshot_locked(
        &self,
        mmap: &MmapReadGuard<'_>,
        start: usize,
        end: usize,
        owner: &PagemapOwner,
        mut f: impl FnMut(&MirrorGuard<'_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        Range::new(&self.notifier, start, end)?
            .with_owner(owner)
            .snapshot_locked(mmap, |g, pfns| self.with_lent(g.guard(), |g| f(g, pfns)))
    }

    /// Makes the page at `addr` of the mirrored mm exclusive to the device
    /// (`make_device_exclusive()`: the CPU faults it back on access) and maps it in the device page
    /// table with [`Perm::Atomic`] (`dmirror_exclusive()`).
    ///
    /// The arguments and errors are those of [`MmuIntervalNotifier::make_device_exclusive()`], and
    /// `ENOMEM` if the page table cannot grow. Must not be called with the mirror lock held.
    pub fn make_exclusive(&self, mmap: &MmapReadGuard<'_>, addr: usize) -> Result {
        self.notifier
            .make_device_exclusive(mmap, addr, |guard, page| {
                // `Page::as_ptr()` is never null.
                let page = NonNull::new(page.as_ptr()).ok_or(EINVAL)?;
                // INVARIANT: The page is mapped at `addr` until an invalidation of it, which waits
                // for the lock held by `guard` and then clears the entry.
                guard.pt.store(addr >> PAGE_SHIFT, page, Perm::Atomic)
            })
    }
}

/// The locked state of a [`Mirror`]: the driver's `T` (through [`Deref`]) and the device page
/// table.
///
/// While it exists, invalidations of the mirrored mm wait, so every page table entry stays mapped.
/// The closures of [`Mirror::fault()`] and the like get it by shared reference, so they cannot swap
/// it for the guard of another mirror.
pub struct MirrorGuard<'a, T: MirrorOps> {
    mirror: &'a Mirror<T>,
    held: Held<'a, T>,
}

/// How a [`MirrorGuard`] holds the lock of its mirror's notifier.
enum Held<'a, T: MirrorOps> {
    /// Taken by [`Mirror::lock()`].
    Owned(IntervalGuard<'a, MirrorState<T>>),
    /// Held further up, for at least `'a`.
    Lent(&'a IntervalGuard<'a, MirrorState<T>>),
}

impl<'a, T: MirrorOps> MirrorGuard<'a, T> {
    /// The mirror this guard locks.
    #[inline]
    pub fn mirror(&self) -> &'a Mirror<T> {
        self.mirror
    }

    fn state(&self) -> &MirrorState<T> {
        match &self.held {
            Held::Owned(guard) => guard,
            Held::Lent(guard) => guard,
        }
    }

    fn pt(&self) -> &PageTable {
        &self.state().pt
    }

    /// The entry for virtual page number `vpn` (address `vpn << PAGE_SHIFT`), if any.
    pub fn pt_get(&self, vpn: usize) -> Option<PtEntry<'_>> {
        let (page, perm) = self.pt().load(vpn)?;
        // INVARIANT: By the invariants of `MirrorState`, the page is mapped at the address, and it
        // stays so while the lock, held for the lifetime of `self`, is held.
        Some(PtEntry {
            page,
            perm,
            _guard: PhantomData,
        })
    }

    /// The entries of the virtual page numbers `vpns`, in order, `None` where there is none.
    ///
    /// One walk of the device page table: a loop over consecutive entries costs a step per entry,
    /// where [`MirrorGuard::pt_get()`] costs a lookup from the root.
    pub fn pt_run(&self, vpns: Span<usize>) -> PtRun<'_> {
        // The guard is held for the borrow of `self`.
        self.pt().run(vpns)
    }

    /// The first entry whose virtual page number is in `vpns`, with that number.
    ///
    /// Costs what the entries cost, not the size of `vpns`: a loop over a huge range can visit the
    /// entries a batch at a time, dropping the lock in between.
    pub fn pt_find(&self, vpns: Span<usize>) -> Option<(usize, PtEntry<'_>)> {
        if vpns.start >= vpns.end {
            return None;
        }
        let (vpn, page, perm) = self.pt().find(vpns.start, vpns.end - 1)?;
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

    /// What [`MirrorGuard::pt_insert()`] maps for entry `index` of `pfns` (known to come from
    /// this mirror), or `None` if `own_device` and it is not a device page of this mirror's owner.
    fn insert_entry(
        &self,
        pfns: &HmmPfns<'_>,
        index: usize,
        own_device: bool,
    ) -> Result<Option<(NonNull<bindings::page>, Perm)>> {
        let mirror = self.mirror();
        let pfn = pfns.get(index).ok_or(EINVAL)?;
        let page = if own_device {
            if !pfn.pgmap_owner_is(mirror.owner()) {
                return Ok(None);
            }
            pfn.raw_page().ok_or(EINVAL)?
        } else {
            match pfn.mapped_page() {
                Some(page) => page,
                None if pfn.pgmap_owner_is(mirror.owner()) => pfn.raw_page().ok_or(EINVAL)?,
                None => return Err(EINVAL),
            }
        };
        let perm = if pfn.is_write() {
            Perm::Write
        } else {
            Perm::Read
        };
        // INVARIANT: `pfns` was handed out for this mirror's notifier (checked by the callers),
        // with its lock held after a successful `mmu_interval_read_retry()`, so the page is still
        // mapped at the entry's address; any later invalidation must take the lock held by `self`
        // to clear the entry. A device page of this mirror's owner, private or not, is one
        // `pt_insert()` maps too.
        Ok(Some((page, perm)))
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
    pub fn pt_insert(&self, pfns: &HmmPfns<'_>, index: usize) -> Result {
        if !pfns.is_from(self.mirror().notifier.as_raw()) {
            return Err(EINVAL);
        }
        match self.insert_entry(pfns, index, false)? {
            Some((page, perm)) => self.pt().store(pfns.vpn(index), page, perm),
            None => Err(EINVAL),
        }
    }

    /// Maps every entry of `pfns` as [`MirrorGuard::pt_insert()`] does (`dmirror_do_fault()`), in
    /// one walk of the device page table.
    ///
    /// Stops at the first error; the entries mapped before it stay mapped.
    pub fn pt_insert_all(&self, pfns: &HmmPfns<'_>) -> Result {
        if !pfns.is_from(self.mirror().notifier.as_raw()) {
            return Err(EINVAL);
        }
        self.pt().store_run(pfns.vpn(0), pfns.len(), |i| {
            self.insert_entry(pfns, i, false)?.map(Some).ok_or(EINVAL)
        })
    }

    /// Maps the entries of `pfns` that are device pages of this mirror's owner (what a migration to
    /// the device left there) as [`MirrorGuard::pt_insert()`] does, in one walk of the device page
    /// table; other entries are left alone.
    ///
    /// Fails with `EINVAL` if `pfns` comes from another mirror, and with `ENOMEM` if the page table
    /// cannot grow; the entries mapped before the error stay mapped.
    pub fn pt_insert_own_device(&self, pfns: &HmmPfns<'_>) -> Result {
        if !pfns.is_from(self.mirror().notifier.as_raw()) {
            return Err(EINVAL);
        }
        self.pt().store_run(pfns.vpn(0), pfns.len(), |i| {
            self.insert_entry(pfns, i, true)
        })
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
    pub unsafe fn pt_insert_raw(&self, vpn: usize, page: &Page, perm: Perm) -> Result {
        // INVARIANT: The caller guarantees that the page is mapped at the address and that no
        // invalidation of it has run; any later one takes the lock held by `self`. `Page::as_ptr()`
        // is never null.
        match NonNull::new(page.as_ptr()) {
            Some(page) => self.pt().store(vpn, page, perm),
            None => Err(EINVAL),
        }
    }
}

impl<T: MirrorOps> Deref for MirrorGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.state().data
    }
}

#[kunit_tests(rust_hmm_mirror)]
mod tests {
    use super::*;

    /// A made-up `struct page` pointer for entry `i`: the page table stores and returns its entries
    /// without looking at what they point to.
    fn fake(i: usize) -> NonNull<bindings::page> {
        NonNull::new((0x1000_0000 + i * 64) as *mut bindings::page).unwrap()
    }

    /// The entries the tests store: gaps at the start, every third index and a run longer than a
    /// leaf node (64 entries), so that the walks restart, skip and cross nodes.
    fn expected(i: usize, n: usize) -> Option<(NonNull<bindings::page>, Perm)> {
        let kept = i < n && i % 3 != 1 && i != 0 && !(200..330).contains(&i);
        let perm = if i % 2 == 0 { Perm::Write } else { Perm::Read };
        kept.then(|| (fake(i), perm))
    }

    /// A user-space-like virtual page number, 100 entries below a 4096-entry node boundary.
    const FIRST: usize = (0x7f12_3400_0000 >> PAGE_SHIFT) - 100;
    /// More than `CLEAR_BATCH`, so that `store_run()` drops and retakes the lock once.
    const N: usize = 5000;

    fn walk(pt: &PageTable, start: usize, end: usize) -> PtRun<'_> {
        pt.run(start..end)
    }

    #[test]
    fn store_run_stores_at_each_index() -> Result {
        let pt = KBox::pin_init(PageTable::new(), GFP_KERNEL)?;
        pt.store_run(FIRST, N, |i| Ok(expected(i, N)))?;
        for i in 0..N + 70 {
            assert_eq!((i, pt.load(FIRST + i)), (i, expected(i, N)));
        }
        assert_eq!(pt.load(FIRST - 1), None);
        Ok(())
    }

    #[test]
    fn store_run_stops_at_an_error() -> Result {
        let pt = KBox::pin_init(PageTable::new(), GFP_KERNEL)?;
        let r = pt.store_run(FIRST, N, |i| match i {
            1000 => Err(EINVAL),
            _ => Ok(expected(i, N)),
        });
        assert_eq!(r, Err(EINVAL));
        for i in 0..1100 {
            assert_eq!((i, pt.load(FIRST + i)), (i, expected(i, 1000)));
        }
        Ok(())
    }

    #[test]
    fn clear_drops_the_range_only() -> Result {
        let pt = KBox::pin_init(PageTable::new(), GFP_KERNEL)?;
        let all = |i: usize| Some((fake(i), Perm::Write));
        pt.store_run(FIRST, N, |i| Ok(all(i)))?;
        // The first whole leaf node in the table.
        let leaf = FIRST.div_ceil(XA_CHUNK_SIZE) * XA_CHUNK_SIZE - FIRST;
        let cleared = [
            // One entry; a few inside a leaf; exactly two leaves; a leaf and a half; then most of
            // the rest, unaligned at both ends and more than `CLEAR_BATCH` entries.
            (7, 7),
            (leaf - 10, leaf - 3),
            (leaf, leaf + 2 * XA_CHUNK_SIZE - 1),
            (leaf + 3 * XA_CHUNK_SIZE, leaf + 4 * XA_CHUNK_SIZE + 40),
            (leaf + 6 * XA_CHUNK_SIZE - 5, N - 9),
        ];
        for (a, b) in cleared {
            pt.clear(FIRST + a, FIRST + b);
        }
        for i in 0..N {
            let gone = cleared.iter().any(|&(a, b)| (a..=b).contains(&i));
            assert_eq!(
                (i, pt.load(FIRST + i)),
                (i, if gone { None } else { all(i) })
            );
        }
        // And the table still takes entries where it dropped whole nodes.
        pt.store_run(FIRST, N, |i| Ok(all(i)))?;
        assert!((0..N).all(|i| pt.load(FIRST + i) == all(i)));
        Ok(())
    }

    #[test]
    fn pt_run_matches_lookups() -> Result {
        let pt = KBox::pin_init(PageTable::new(), GFP_KERNEL)?;
        let got = |e: Option<PtEntry<'_>>| e.map(|e| (e.page, e.perm));
        // An empty table, then the stored one, from below its first entry to past its last.
        assert!(walk(&pt, FIRST, FIRST + 300).all(|e| e.is_none()));
        pt.store_run(FIRST, N, |i| Ok(expected(i, N)))?;
        let mut run = walk(&pt, FIRST - 70, FIRST + N + 70);
        for i in 0..N + 140 {
            let want = (i >= 70).then(|| expected(i - 70, N)).flatten();
            assert_eq!((i, run.next().map(got)), (i, Some(want)));
        }
        assert!(run.next().is_none());
        // A change of the table in the middle of a walk: the walk starts again from the root and
        // sees it.
        let mut run = walk(&pt, FIRST, FIRST + N);
        assert!(run.by_ref().take(1931).count() == 1931);
        pt.clear(FIRST + 1931, FIRST + 2200);
        pt.store(FIRST + 2300, fake(9999), Perm::Atomic)?;
        assert!(run.by_ref().take(270).all(|e| e.is_none()));
        for i in 2201..2300 {
            assert_eq!((i, run.next().map(got)), (i, Some(expected(i, N))));
        }
        assert_eq!(run.next().map(got), Some(Some((fake(9999), Perm::Atomic))));
        assert_eq!(run.next().map(got), Some(expected(2301, N)));
        Ok(())
    }
}
