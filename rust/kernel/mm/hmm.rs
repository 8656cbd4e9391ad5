// SPDX-License-Identifier: GPL-2.0

//! Heterogeneous memory management: `hmm_range_fault()`.
//!
//! [`Range::fault()`] and [`Range::snapshot()`] run the `hmm_range_fault()` retry loop of
//! `Documentation/mm/hmm.rst` (sequence, `mmap_lock`, `-EBUSY`, timeout, `read_retry` under the
//! notifier's lock) over a range of an [`MmuIntervalNotifier`], and hand the result, as [`HmmPfn`]
//! entries, to a closure that runs with the notifier locked and the result known to be current.
//!
//! [`mirror::Mirror`] is a software device page table on top, as `lib/test_hmm.c` keeps one.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use crate::{
    bindings,
    mm::{
        memremap::PagemapOwner,
        mmu_notifier::{Locked, MmuIntervalNotifier, MmuIntervalNotifierOps, ReadSeq},
    },
    task_ext::TaskExt,
};
use core::{ops::Deref, ptr::NonNull};
use kernel::{
    error::to_result,
    ffi::c_ulong,
    mm::{MmWithUser, MmapReadGuard},
    page::{BorrowedPage, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
};

pub mod mirror;

/// The number of pages [`Range::fault()`] and [`Range::snapshot()`] ask `hmm_range_fault()` for at
/// a time (the size of the on-stack `hmm_pfns` array).
pub const CHUNK_PAGES: usize = 64;

/// How [`Range::run()`] walks: under the mmap lock, taken for each walk (`Locked`) or held by the
/// caller (`Held`, snapshots only), or with `hmm_range_fault_unlocked_timeout()` (`Unlocked`).
#[derive(Clone, Copy)]
enum Walk {
    Locked,
    Held,
    Unlocked(Option<Delta>),
}

const PFN_VALID: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_VALID as c_ulong;
const PFN_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_WRITE as c_ulong;
const PFN_ERROR: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_ERROR as c_ulong;
const PFN_REQ_FAULT: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as c_ulong;
const PFN_REQ_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as c_ulong;
/// Where the map order sits in an `hmm_pfn` (`HMM_PFN_ORDER_SHIFT`).
const ORDER_SHIFT: u32 = bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as u32;

/// `hmm_pfn_to_page()`: the page of an `hmm_pfn` (the bits below its flags and order), as the C
/// inline function computes it.
#[inline]
fn hmm_pfn_to_page(hmm_pfn: c_ulong) -> *mut bindings::page {
    crate::page_ext::pfn_to_page(hmm_pfn & ((1 << ORDER_SHIFT) - 1))
}

/// Corrects the pfns `hmm_range_fault()` reports for device-private pages mapped by a PMD.
///
/// In 7.3, `hmm_vma_handle_absent_pmd()` numbers them from the folio's head pfn at the start of the
/// walk, not at the start of the PMD (as `hmm_vma_handle_pmd()` does for a present THP): for a
/// range that begins inside such a mapping, every pfn is off by the offset of the range's start in
/// the PMD. The page at an address is page `address / PAGE_SIZE % HPAGE_PMD_NR` of the folio, which
/// is what this writes, right with the bug and without it.
///
/// Must run with the notifier's lock held and the walk current (`mmu_interval_read_retry()` false),
/// so that the folios are still mapped.
fn fix_device_pmd_pfns(range: &bindings::hmm_range, npages: usize) {
    const PMD_ORDER: u32 = bindings::HMM_RS_HPAGE_PMD_ORDER;
    const FLAGS: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_FLAGS as c_ulong;
    // SAFETY: The fault filled `npages` entries of `hmm_pfns`, which nothing else accesses now.
    let pfns = unsafe { core::slice::from_raw_parts_mut(range.hmm_pfns, npages) };
    for (i, p) in pfns.iter_mut().enumerate() {
        if *p & PFN_VALID == 0 || HmmPfn(*p).map_order() != PMD_ORDER {
            continue;
        }
        let page = hmm_pfn_to_page(*p);
        // SAFETY: The page is mapped (see above), hence valid.
        if !unsafe { bindings::is_device_private_page(page) } {
            continue;
        }
        // SAFETY: The page is mapped (the walk is current), hence valid; a valid page's folio is
        // valid, and starts with its head page.
        let head = unsafe { crate::page_ext::page_to_pfn(bindings::page_folio(page).cast()) };
        let vpn = (range.start >> PAGE_SHIFT) + i;
        let pfn = head + (vpn & ((1 << PMD_ORDER) - 1));
        *p = (*p & FLAGS) | pfn as c_ulong;
    }
}

/// One entry of the result of `hmm_range_fault()`: the state of the CPU mapping of one page.
///
/// Only seen by reference, inside the closure passed to [`Range::fault()`] or
/// [`Range::snapshot()`]; it can be neither created nor copied elsewhere, so a page it names cannot
/// be used once the mapping may have changed.
///
/// # Invariants
///
/// A `&HmmPfn` only exists while the lock of the [`MmuIntervalNotifier`] whose interval it lies in
/// is held, after `mmu_interval_read_retry()` found no invalidation since the walk started. So if
/// `HMM_PFN_VALID` is set, the pfn names a `struct page` that is mapped at the entry's address and
/// stays so for as long as the reference lives.
#[repr(transparent)]
pub struct HmmPfn(c_ulong);

impl HmmPfn {
    /// The raw value (`HMM_PFN_*` flags, map order and pfn).
    #[inline]
    pub fn raw(&self) -> c_ulong {
        self.0
    }

    /// Whether a page is mapped (`HMM_PFN_VALID`).
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.0 & PFN_VALID != 0
    }

    /// Whether the page is mapped writable (`HMM_PFN_WRITE`).
    #[inline]
    pub fn is_write(&self) -> bool {
        self.0 & PFN_WRITE != 0
    }

    /// Whether the address cannot be accessed (`HMM_PFN_ERROR`): no VMA, a special mapping,
    /// poisoned memory, ...
    #[inline]
    pub fn is_error(&self) -> bool {
        self.0 & PFN_ERROR != 0
    }

    /// The order of the CPU mapping (`hmm_pfn_to_map_order()`): the page is part of a mapping of
    /// `PAGE_SIZE << order` bytes at an address aligned to that size.
    #[inline]
    pub fn map_order(&self) -> u32 {
        // `hmm_pfn_to_map_order()`'s arithmetic, without a helper call per entry (KUnit checks
        // that the two agree).
        ((self.0 >> ORDER_SHIFT) & 0x1f) as u32
    }

    /// The mapped `struct page`, if `HMM_PFN_VALID` is set.
    pub(crate) fn raw_page(&self) -> Option<NonNull<bindings::page>> {
        if !self.is_valid() {
            return None;
        }
        NonNull::new(hmm_pfn_to_page(self.0))
    }

    /// The mapped page, if valid and not device-private.
    pub(crate) fn mapped_page(&self) -> Option<NonNull<bindings::page>> {
        let page = self.raw_page()?;
        // SAFETY: By the type invariants the page is valid while `self` is borrowed.
        if unsafe { bindings::is_device_private_page(page.as_ptr()) } {
            return None;
        }
        Some(page)
    }

    /// The mapped page, if there is one whose contents the CPU can access.
    ///
    /// Returns [`None`] if no page is mapped and for device-private pages, which have no
    /// CPU-accessible contents (see [`HmmPfn::kind()`]).
    pub fn page(&self) -> Option<BorrowedPage<'_>> {
        let page = self.mapped_page()?;
        // SAFETY: By the type invariants the page stays mapped, hence valid, while `self` is
        // borrowed.
        Some(unsafe { BorrowedPage::from_raw(page) })
    }

    /// Whether the mapped page is a device page of the pagemap owned by `owner`
    /// (`page_pgmap(page)->owner == owner`).
    pub fn pgmap_owner_is(&self, owner: &PagemapOwner) -> bool {
        let Some(page) = self.raw_page() else {
            return false;
        };
        // SAFETY: By the type invariants the page is valid while `self` is borrowed.
        if !unsafe { crate::page_ext::is_zone_device_page(page.as_ptr()) } {
            return false;
        }
        // SAFETY: The page is a valid ZONE_DEVICE page, so it has a pagemap, which lives as long as
        // the page is mapped.
        owner.is(unsafe { (*bindings::page_pgmap(page.as_ptr())).owner })
    }

    /// What kind of page is mapped, `None` if none: device-private or device-coherent (and whether
    /// `owner`'s), the zero page, or other memory, in one lookup of the page.
    pub fn kind(&self, owner: &PagemapOwner) -> Option<PageKind> {
        let page = self.raw_page()?.as_ptr();
        // SAFETY: By the type invariants the page is valid while `self` is borrowed.
        if !unsafe { crate::page_ext::is_zone_device_page(page) } {
            // The shared zero page is never mapped writable: a writable entry is not it, and
            // needs no lookup to tell (a snapshot of written memory has one per page).
            // SAFETY: By the type invariants the page is valid while `self` is borrowed.
            let zero = !self.is_write() && unsafe { bindings::is_zero_page(page) };
            return Some(if zero {
                PageKind::Zero
            } else {
                PageKind::System
            });
        }
        // SAFETY: A valid `ZONE_DEVICE` page has a pagemap, which lives as long as the page is
        // mapped.
        let local = owner.is(unsafe { (*bindings::page_pgmap(page)).owner });
        // SAFETY: The page is valid while `self` is borrowed (type invariants).
        if unsafe { bindings::is_device_private_page(page) } {
            return Some(PageKind::DevicePrivate { local });
        }
        // SAFETY: The page is valid while `self` is borrowed (type invariants).
        if unsafe { bindings::is_device_coherent_page(page) } {
            return Some(PageKind::DeviceCoherent { local });
        }
        Some(PageKind::System)
    }

    /// What the entry shows, relative to `owner`, as a migration's [`Reason::of_uncollected`] takes
    /// it: no page, an error, or a page with its kind and whether it is pinned or part of a large
    /// folio.
    ///
    /// [`Reason::of_uncollected`]: crate::mm::migrate::Reason::of_uncollected
    pub fn seen(&self, owner: &PagemapOwner) -> Seen {
        if self.is_error() {
            return Seen::Error;
        }
        let (Some(page), Some(kind)) = (self.raw_page(), self.kind(owner)) else {
            return Seen::NotPresent;
        };
        // SAFETY: By the type invariants the page is valid while `self` is borrowed.
        let folio = unsafe { bindings::page_folio(page.as_ptr()) };
        // SAFETY: `folio` is the valid folio of a mapped page; both only read it.
        let (pinned, large) = unsafe {
            (
                bindings::folio_maybe_dma_pinned(folio),
                bindings::folio_order(folio) > 0,
            )
        };
        Seen::Page {
            kind,
            pinned,
            large,
        }
    }
}

/// What kind of page an [`HmmPfn`] maps: [`HmmPfn::kind()`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// A page of system memory (or of another `ZONE_DEVICE` type).
    System,
    /// The shared zero page.
    Zero,
    /// A device-private page; `local` if its pagemap's owner is the one asked about.
    DevicePrivate {
        /// Whether the page belongs to the given owner.
        local: bool,
    },
    /// A device-coherent page; `local` as for [`PageKind::DevicePrivate`].
    DeviceCoherent {
        /// Whether the page belongs to the given owner.
        local: bool,
    },
}

/// What a look at the page table found at an address, relative to an owner: [`HmmPfn::seen()`]
/// makes one from a snapshot. A migration that looked before it was set up gets the reason of an
/// entry it did not collect from it ([`Reason::of_uncollected`]).
///
/// [`Reason::of_uncollected`]: crate::mm::migrate::Reason::of_uncollected
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// No page present (or, for a device-private page, none of the owner's).
    NotPresent,
    /// A mapping the look could not report.
    Error,
    /// A page.
    Page {
        /// Its kind, relative to the migration's owner.
        kind: PageKind,
        /// Whether it may be pinned (`folio_maybe_dma_pinned()`).
        pinned: bool,
        /// Whether it is part of a large folio.
        large: bool,
    },
}

/// The result of one chunk of [`Range::fault()`] or [`Range::snapshot()`]: one [`HmmPfn`] per page
/// from [`HmmPfns::start()`] on (through [`Deref`] to a slice).
///
/// # Invariants
///
/// `pfns[i]` describes the page at `start + i * PAGE_SIZE` of the mm of `notifier`, inside its
/// interval, and satisfies the invariants of [`HmmPfn`] for `'a`.
pub struct HmmPfns<'a> {
    notifier: *const bindings::mmu_interval_notifier,
    start: usize,
    pfns: &'a [HmmPfn],
}

impl HmmPfns<'_> {
    /// The address of the first page.
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    /// The address just past the last page.
    #[inline]
    pub fn end(&self) -> usize {
        self.start + (self.pfns.len() << PAGE_SHIFT)
    }

    /// The virtual page number (address `>> PAGE_SHIFT`) of entry `index`.
    #[inline]
    pub fn vpn(&self, index: usize) -> usize {
        (self.start >> PAGE_SHIFT) + index
    }

    /// Whether these entries were produced under the lock of `notifier`.
    #[inline]
    pub(crate) fn is_from(&self, notifier: *const bindings::mmu_interval_notifier) -> bool {
        core::ptr::eq(self.notifier, notifier)
    }
}

impl Deref for HmmPfns<'_> {
    type Target = [HmmPfn];

    fn deref(&self) -> &[HmmPfn] {
        self.pfns
    }
}

/// A range of the interval of an [`MmuIntervalNotifier`], to fault in or snapshot with
/// `hmm_range_fault()`.
///
/// [`Range::fault()`] and [`Range::snapshot()`] run the `hmm_range_fault()` retry loop of
/// `Documentation/mm/hmm.rst` in chunks of [`CHUNK_PAGES`] pages: take a [`ReadSeq`], walk the CPU
/// page tables with the mmap lock held, retry on `-EBUSY`; then lock the notifier and, if
/// [`Locked::is_current()`], hand the chunk's [`HmmPfns`] to a closure, which may use them until it
/// returns (the guard is held meanwhile); otherwise walk again.
///
/// # Examples
///
/// A device with a page table of its own maps what a fault finds (see [`MmuIntervalNotifier`] for
/// the notifier):
///
/// ```ignore
/// let mm = notifier.mm().mmget_not_zero().ok_or(EFAULT)?;
/// Range::new(&notifier, start, end)?
///     .with_owner(&owner)
///     .fault(&mm, write, |gpu, pfns| {
///         for (i, pfn) in pfns.iter().enumerate() {
///             // Map `pfns.vpn(i)` to the page in the device, through `gpu`.
///         }
///         Ok(())
///     })?;
/// ```
pub struct Range<'a, T: MmuIntervalNotifierOps> {
    notifier: &'a MmuIntervalNotifier<T>,
    start: usize,
    end: usize,
    owner: Option<&'a PagemapOwner>,
}

impl<'a, T: MmuIntervalNotifierOps> Range<'a, T> {
    /// The range `start..end` of the interval of `notifier`.
    ///
    /// `EINVAL` unless `start` and `end` are page aligned, `start <= end`, and the range lies
    /// inside the notifier's interval: the notifier's sequence only covers its interval, so a page
    /// outside it could change without the result becoming stale.
    pub fn new(notifier: &'a MmuIntervalNotifier<T>, start: usize, end: usize) -> Result<Self> {
        if start & !PAGE_MASK != 0
            || end & !PAGE_MASK != 0
            || end < start
            || start < notifier.start()
            || end > notifier.end()
        {
            return Err(EINVAL);
        }
        Ok(Self {
            notifier,
            start,
            end,
            owner: None,
        })
    }

    /// Reports the device-private pages of `owner` as they are, instead of faulting them back to
    /// system memory (`hmm_range::dev_private_owner`).
    pub fn with_owner(mut self, owner: &'a PagemapOwner) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Faults in the range and hands the result to `commit`, chunk by chunk.
    ///
    /// Every page is faulted in (for writing if `write`) except the device-private pages of the
    /// owner given to [`Range::with_owner()`], which are returned as they are. Unlike a bare
    /// `hmm_range_fault()`, which on 7.3 also faults (migrates back to system memory) the owner's
    /// pages that follow a page needing a fault, this never moves them: each chunk is walked
    /// without faulting first, then each run of pages that needs a fault is faulted as a range of
    /// its own that stops short of the next page of the owner. For each chunk, `commit` is called
    /// with the notifier locked and the chunk's [`HmmPfns`], all valid (and writable if `write`). A
    /// chunk is walked again if an invalidation raced with it, and the fault fails with `EBUSY` if
    /// a chunk cannot be faulted within `HMM_RANGE_DEFAULT_TIMEOUT` milliseconds.
    ///
    /// `mm` must be the notifier's mm (else `EINVAL`). Errors of `hmm_range_fault()` and of
    /// `commit` are returned as they are; chunks committed before an error stay committed. `EINTR`
    /// if the task is being killed: it is checked before every chunk, so a huge range stops
    /// quickly. A device-private page of the owner that is mapped read-only (after a fork or an
    /// `mprotect()`) and is to be written is faulted as a CPU write would fault it, back into
    /// system memory: the device cannot break copy-on-write. (`lib/test_hmm.c` fails such a write
    /// with `EFAULT`, after a `WARN_ON`.)
    ///
    /// Must not be called with the notifier's lock held, nor with the mmap lock of `mm` held (an
    /// [`kernel::mm::MmapReadGuard`] alive): it takes that lock itself, and taking it again could
    /// deadlock behind a waiting writer.
    pub fn fault(
        &self,
        mm: &MmWithUser,
        write: bool,
        commit: impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        let want = PFN_REQ_FAULT | if write { PFN_REQ_WRITE } else { 0 };
        self.run(mm, want, Walk::Locked, commit)
    }

    /// As [`Range::fault()`], but with `hmm_range_fault_unlocked_timeout()`: the mmap lock is taken
    /// inside and may be dropped while a fault is handled, so that faults which need it released
    /// (userfaultfd) can make progress.
    ///
    /// `timeout` bounds the retries after invalidations (`EBUSY` once it expires); `None` retries
    /// until a fatal signal (`EINTR`). The same lock rules as for [`Range::fault()`] apply.
    pub fn fault_unlocked(
        &self,
        mm: &MmWithUser,
        write: bool,
        timeout: Option<Delta>,
        commit: impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        let want = PFN_REQ_FAULT | if write { PFN_REQ_WRITE } else { 0 };
        self.run(mm, want, Walk::Unlocked(timeout), commit)
    }

    /// Takes a snapshot of the CPU mappings of the range, without faulting.
    ///
    /// For each chunk, `f` is called with the notifier locked and the chunk's [`HmmPfns`], which
    /// may be invalid ([`HmmPfn::is_valid()`]) or errors ([`HmmPfn::is_error()`]). Any invalidation
    /// of the chunk makes it walk again.
    ///
    /// The arguments and errors are as for [`Range::fault()`]. `f` must not touch user memory (copy
    /// the result out after this returns).
    pub fn snapshot(
        &self,
        mm: &MmWithUser,
        f: impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        self.run(mm, 0, Walk::Locked, f)
    }

    /// As [`Range::snapshot()`], under the mmap lock the caller holds with `mmap`, so that what it
    /// sees and what the caller does next under the same lock (set up a migration, say) happen
    /// without the VMAs changing in between.
    ///
    /// `mmap` must be a guard of the notifier's mm: that is checked through the VMA at the range's
    /// start (`EFAULT` if there is none, `EINVAL` if it is of another mm). A snapshot does not
    /// fault, so `hmm_range_fault()` never drops the lock.
    pub fn snapshot_locked(
        &self,
        mmap: &MmapReadGuard<'_>,
        f: impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        let vma = mmap.vma_lookup(self.start).ok_or(EFAULT)?;
        self.run(vma.mm(), 0, Walk::Held, f)
    }

    /// The `hmm_range_fault()` retry loop over the range, in chunks.
    ///
    /// `want` is what the caller asks of every page: `0` for a snapshot, `HMM_PFN_REQ_FAULT` (with
    /// `HMM_PFN_REQ_WRITE`) for a fault.
    fn run(
        &self,
        mm: &MmWithUser,
        want: c_ulong,
        how: Walk,
        mut commit: impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        if !core::ptr::eq(mm.as_raw(), self.notifier.mm().as_raw()) {
            return Err(EINVAL);
        }

        let mut pfns: [c_ulong; CHUNK_PAGES] = [0; CHUNK_PAGES];
        let mut range = bindings::hmm_range {
            notifier: self.notifier.as_raw(),
            notifier_seq: 0,
            start: 0,
            end: 0,
            hmm_pfns: pfns.as_mut_ptr(),
            // Each chunk is first walked without faulting; see `commit_if_current()`.
            default_flags: 0,
            pfn_flags_mask: 0,
            dev_private_owner: self.owner.map_or(core::ptr::null_mut(), |o| o.as_raw()),
        };

        let mut addr = self.start;
        while addr < self.end {
            if current!().fatal_signal_pending() {
                return Err(EINTR);
            }
            let next = if self.end - addr > CHUNK_PAGES * PAGE_SIZE {
                addr + CHUNK_PAGES * PAGE_SIZE
            } else {
                self.end
            };
            range.start = addr;
            range.end = next;
            match how {
                Walk::Locked => self.chunk(Some(mm), &mut range, want, &mut commit)?,
                Walk::Held => self.chunk(None, &mut range, want, &mut commit)?,
                Walk::Unlocked(timeout) => {
                    self.chunk_unlocked(&mut range, want, timeout, &mut commit)?
                }
            }
            addr = next;
        }
        Ok(())
    }

    /// `dmirror_range_fault()`: walks `range` until it is current and faults in what `want` asks
    /// for, then commits it.
    ///
    /// An attempt takes one sequence: it walks without faulting, faults in what is missing with the
    /// same sequence and walks again, so an invalidation at any point (one that a fault itself
    /// causes included) ends the attempt. Only a new attempt checks the timeout, as
    /// `dmirror_range_fault()` checks it only before retrying: a slow fault does not fail.
    ///
    /// `mm` is the notifier's mm, whose mmap lock each walk takes, or `None` if the caller holds it
    /// (then `want` must be `0`: a fault could drop it).
    fn chunk(
        &self,
        mm: Option<&MmWithUser>,
        range: &mut bindings::hmm_range,
        want: c_ulong,
        commit: &mut impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        let npages = (range.end - range.start) >> PAGE_SHIFT;
        let timeout = Delta::from_millis(bindings::HMM_RANGE_DEFAULT_TIMEOUT.into());
        let begin = Instant::<Monotonic>::now();
        // `Ok(false)`: the sequence went stale, start a new attempt.
        let walk = |range: &mut bindings::hmm_range| {
            let _mmap = mm.map(|mm| mm.mmap_read_lock());
            // SAFETY: `range` is fully initialised: its notifier is inserted on its mm, whose
            // `mmap_lock` is held (here, or by the caller of `snapshot_locked()`), its sequence
            // comes from `read_begin()` on that notifier, and `hmm_pfns` has room for the pages of
            // `range.start..range.end` (`run()` and `fault_missing()` make sure).
            match to_result(unsafe { bindings::hmm_range_fault(range) }) {
                Err(e) if e == EBUSY => Ok(false),
                Err(e) => Err(e),
                Ok(()) => Ok(true),
            }
        };

        'attempt: loop {
            if begin.elapsed() > timeout {
                return Err(EBUSY);
            }
            if current!().fatal_signal_pending() {
                return Err(EINTR);
            }
            range.notifier_seq = self.notifier.read_begin().raw();
            // With the sequence unchanged, what a fault mapped stays mapped, so the second walk
            // finds it; a few more rounds cover nothing but oddities, then a new attempt.
            for _ in 0..ATTEMPT_WALKS {
                if !walk(range)? {
                    continue 'attempt;
                }
                match self.commit_if_current(range, npages, want, commit) {
                    None => continue 'attempt,
                    Some(ChunkStep::Done(ret)) => return ret,
                    Some(ChunkStep::Fault { missing, own }) => {
                        let seq = range.notifier_seq;
                        let mut stale = false;
                        fault_missing(range, npages, want, missing, own, |sub| {
                            sub.notifier_seq = seq;
                            stale |= !walk(sub)?;
                            Ok(!stale)
                        })?;
                        if stale {
                            continue 'attempt;
                        }
                    }
                }
                if current!().fatal_signal_pending() {
                    return Err(EINTR);
                }
            }
        }
    }

    /// `dmirror_range_fault_unlocked()`: as [`Range::chunk()`] with
    /// `hmm_range_fault_unlocked_timeout()`, which takes the mmap lock itself (and a new sequence
    /// whenever it drops it). `timeout` bounds the whole chunk.
    fn chunk_unlocked(
        &self,
        range: &mut bindings::hmm_range,
        want: c_ulong,
        timeout: Option<Delta>,
        commit: &mut impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Result {
        let npages = (range.end - range.start) >> PAGE_SHIFT;
        let begin = Instant::<Monotonic>::now();
        // `0` means "no timeout" to the C function: round a zero timeout up.
        let jiffies = timeout.map_or(0, |t| {
            msecs_to_jiffies(u32::try_from(t.as_millis()).unwrap_or(u32::MAX)).max(1)
        });
        let walk = |range: &mut bindings::hmm_range| {
            // SAFETY: `range` is fully initialised: its notifier is inserted on the notifier's mm,
            // which has a user (the caller's `MmWithUser`), and `hmm_pfns` has room for the pages
            // of `range.start..range.end` (`run()` and `fault_missing()` make sure). The function
            // reads the sequence and takes the mmap lock itself (killably); that the caller must
            // not hold it already is a rule against deadlock, documented on `fault_unlocked()`, not
            // a condition of memory safety: a caller's read lock would only keep the VMAs alive
            // longer.
            to_result(unsafe { bindings::hmm_range_fault_unlocked_timeout(range, jiffies) })
        };
        loop {
            if current!().fatal_signal_pending() {
                return Err(EINTR);
            }
            if timeout.is_some_and(|t| begin.elapsed() > t) {
                return Err(EBUSY);
            }
            walk(range)?;
            match self.commit_if_current(range, npages, want, commit) {
                None => {}
                Some(ChunkStep::Done(ret)) => return ret,
                Some(ChunkStep::Fault { missing, own }) => {
                    fault_missing(range, npages, want, missing, own, |sub| {
                        walk(sub).map(|()| true)
                    })?
                }
            }
        }
    }

    /// Locks the notifier and, unless an invalidation raced with the walk of `range` (then `None`:
    /// walk again), either hands its entries to `commit` or says which pages must be faulted in
    /// first for `want`.
    fn commit_if_current(
        &self,
        range: &bindings::hmm_range,
        npages: usize,
        want: c_ulong,
        commit: &mut impl FnMut(Locked<'_, '_, T>, &HmmPfns<'_>) -> Result,
    ) -> Option<ChunkStep> {
        let mut guard = self.notifier.lock();
        // SAFETY: The walk's `hmm_range_fault()` or `hmm_range_fault_unlocked_timeout()` ran with
        // `range.notifier_seq` from `mmu_interval_read_begin()` on this notifier (the latter reads
        // it itself).
        let seq = unsafe { ReadSeq::from_raw(self.notifier, range.notifier_seq) };
        if !guard.is_current(&seq) {
            return None;
        }
        fix_device_pmd_pfns(range, npages);

        // SAFETY: The walk filled `npages` entries of `hmm_pfns`; `HmmPfn` is a transparent wrapper
        // of `unsigned long`. The array is not written while the slice lives.
        let pfns = unsafe {
            core::slice::from_raw_parts(range.hmm_pfns.cast::<HmmPfn>().cast_const(), npages)
        };
        if want & PFN_REQ_FAULT != 0 {
            let write = want & PFN_REQ_WRITE != 0;
            let missing = pfns.iter().enumerate().fold(0u64, |m, (i, p)| {
                if !p.is_valid() || (write && !p.is_write()) {
                    m | 1 << i
                } else {
                    m
                }
            });
            if missing != 0 {
                let own = pfns.iter().enumerate().fold(0u64, |m, (i, p)| {
                    match self.owner.and_then(|owner| p.kind(owner)) {
                        Some(PageKind::DevicePrivate { local: true }) => m | 1 << i,
                        _ => m,
                    }
                });
                return Some(ChunkStep::Fault { missing, own });
            }
        }
        // INVARIANT: The entries describe `range.start..range.end` of the notifier's mm, inside its
        // interval; its lock is held and no invalidation ran since the walk began; the entries are
        // only lent to `commit`, which cannot keep them past the guard.
        let pfns = HmmPfns {
            notifier: self.notifier.as_raw(),
            start: range.start,
            pfns,
        };
        Some(ChunkStep::Done(commit(Locked::new(&mut guard), &pfns)))
    }
}

/// Faults in the pages of `range` whose bits are set in `missing` with `fault`, which returns
/// `Ok(false)` to stop early (the walk went stale).
///
/// The pages whose bits are set in `own` are device-private pages of the range's owner.
/// `hmm_range_fault()` reports such a page as it is, but once a page of its walk needs a fault,
/// 7.3's `hmm_do_fault()` calls `handle_mm_fault()` on every page from that one to the end of the
/// walk, and a fault on a device-private page migrates it back to system memory. So each run of
/// missing pages is faulted as a range of its own that stops short of the next page of the owner. A
/// page of the owner that is itself missing (read-only, and to be written: after a fork, or
/// `mprotect()`) is faulted on its own and without the owner, as a CPU write would fault it: the
/// device cannot break copy-on-write, so the page comes back to system memory.
fn fault_missing(
    range: &bindings::hmm_range,
    npages: usize,
    want: c_ulong,
    mut missing: u64,
    own: u64,
    mut fault: impl FnMut(&mut bindings::hmm_range) -> Result<bool>,
) -> Result {
    while missing != 0 {
        let first = missing.trailing_zeros() as usize;
        let (end, owner) = if own & (1 << first) != 0 {
            (first + 1, core::ptr::null_mut())
        } else {
            let later_own = own & !low_bits(first + 1);
            let end = if later_own == 0 {
                npages
            } else {
                later_own.trailing_zeros() as usize
            };
            (end, range.dev_private_owner)
        };
        let mut sub = bindings::hmm_range {
            notifier: range.notifier,
            notifier_seq: 0,
            start: range.start + (first << PAGE_SHIFT),
            end: range.start + (end << PAGE_SHIFT),
            // In bounds: `first < end <= npages`, the length of the array.
            hmm_pfns: range.hmm_pfns.wrapping_add(first),
            default_flags: want,
            pfn_flags_mask: 0,
            dev_private_owner: owner,
        };
        if !fault(&mut sub)? {
            break;
        }
        missing &= !low_bits(end);
    }
    Ok(())
}

/// How many times [`Range::chunk()`] walks and faults with one sequence before it starts a new
/// attempt (and checks its timeout): a walk, a fault and a walk that finds everything is the common
/// case.
const ATTEMPT_WALKS: usize = 4;

/// What [`Range::commit_if_current()`] did with a chunk.
enum ChunkStep {
    /// Committed (or failed): the chunk is done.
    Done(Result),
    /// Nothing committed: the pages whose bits are set in `missing` must be faulted in first, and
    /// those set in `own` are device-private pages of the range's owner, which must not be.
    Fault { missing: u64, own: u64 },
}

// The per-page masks of a chunk are `u64`s.
const _: () = assert!(CHUNK_PAGES <= u64::BITS as usize);

/// A mask of the `n <= 64` lowest bits.
#[inline]
fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

#[kunit_tests(rust_hmm_hmm)]
mod tests {
    use super::*;

    #[test]
    fn pfn_flags_decode() {
        let none = HmmPfn(0);
        assert!(!none.is_valid() && !none.is_write() && !none.is_error());
        let rw = HmmPfn(PFN_VALID | PFN_WRITE | 0x1234);
        assert!(rw.is_valid() && rw.is_write() && !rw.is_error());
        assert!(HmmPfn(PFN_ERROR).is_error());
        assert_eq!(rw.raw(), PFN_VALID | PFN_WRITE | 0x1234);
    }

    #[test]
    fn map_order_is_the_c_one() {
        for order in [0 as c_ulong, 9, 18, 31] {
            let pfn = PFN_VALID | PFN_WRITE | (order << ORDER_SHIFT) | 0x1234;
            assert_eq!(HmmPfn(pfn).map_order(), order as u32);
            // SAFETY: `hmm_pfn_to_map_order()` only does arithmetic on its argument.
            assert_eq!(HmmPfn(pfn).map_order(), unsafe {
                bindings::hmm_pfn_to_map_order(pfn)
            });
        }
    }

    /// The sub-ranges `fault_missing()` faults for `missing` and `own` in a chunk of `npages`, and
    /// whether each is faulted without the owner.
    fn runs(npages: usize, missing: u64, own: u64) -> KVec<(usize, usize, bool)> {
        let mut pfns = [0 as c_ulong; CHUNK_PAGES];
        let base = pfns.as_mut_ptr();
        let range = bindings::hmm_range {
            notifier: core::ptr::null_mut(),
            notifier_seq: 0,
            start: 0x10_0000,
            end: 0x10_0000 + (npages << PAGE_SHIFT),
            hmm_pfns: base,
            default_flags: 0,
            pfn_flags_mask: 0,
            dev_private_owner: NonNull::<u8>::dangling().as_ptr().cast(),
        };
        let mut runs = KVec::new();
        let ret = fault_missing(&range, npages, PFN_REQ_FAULT, missing, own, |sub| {
            assert_eq!(sub.default_flags, PFN_REQ_FAULT);
            let first = (sub.start - range.start) >> PAGE_SHIFT;
            assert!(core::ptr::eq(sub.hmm_pfns, base.wrapping_add(first)));
            let last = (sub.end - range.start) >> PAGE_SHIFT;
            runs.push((first, last, sub.dev_private_owner.is_null()), GFP_KERNEL)?;
            Ok(true)
        });
        assert!(ret.is_ok());
        runs
    }

    #[test]
    fn faults_stop_short_of_the_owners_pages() {
        // Nothing missing: no fault.
        assert!(runs(64, 0, 0b1111).is_empty());
        // No page of the owner: one fault from the first missing page to the end.
        assert_eq!(&runs(64, 0b1010_0000, 0)[..], &[(5, 64, false)]);
        // Pages 4 and 5 are the owner's: 0..4 (page 3 is present, faulted harmlessly), then 6..64.
        assert_eq!(
            &runs(64, 0b1100_1001, 0b11_0000)[..],
            &[(0, 4, false), (6, 64, false)]
        );
        // A chunk shorter than 64 pages, the last page missing.
        assert_eq!(&runs(10, 1 << 9, 1 << 8)[..], &[(9, 10, false)]);
        // Page 63 missing, 62 the owner's.
        assert_eq!(&runs(64, 1 << 63, 1 << 62)[..], &[(63, 64, false)]);
        // All missing but page 0.
        assert_eq!(&runs(64, !1, 1)[..], &[(1, 64, false)]);
        // Page 2 of the owner is missing itself (to be written, read-only): alone, without the
        // owner, and the run before it stops short of it.
        assert_eq!(
            &runs(64, 0b1101, 0b100)[..],
            &[(0, 2, false), (2, 3, true), (3, 64, false)]
        );
    }

    #[test]
    fn map_order_round_trips() {
        let shift = bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT;
        for order in [0u32, 9, 18] {
            let pfn = HmmPfn(PFN_VALID | ((order as c_ulong) << shift));
            assert_eq!(pfn.map_order(), order);
        }
    }
}
