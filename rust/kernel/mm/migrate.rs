// SPDX-License-Identifier: GPL-2.0

//! Migration of a virtual address range between system and device memory.
//!
//! `migrate_vma_setup()`, `migrate_vma_pages()` and `migrate_vma_finalize()` are three phases that
//! must run in that order, exactly once each, with `finalize` mandatory once `setup` succeeded (it
//! unlocks the source pages and restores or replaces their CPU mappings). Here the phases are
//! types:
//!
//! - [`MigrateVma::setup`] returns a [`Collected`] migration, in which the caller inspects each
//!   collected source entry and gives it a destination;
//! - [`Collected::pages`] consumes it and returns a [`Migrated`] migration, in which the caller
//!   learns what moved;
//! - [`Migrated::finalize`] consumes that.
//!
//! Dropping either state finalizes it, so every path (errors and early returns included) finalizes
//! exactly once, and calling a phase out of order or twice does not compile. A [`Collected`]
//! migration borrows the VMA, which the caller can only get from a `MmapReadGuard` (or the
//! `migrate_to_ram` fault): the migration cannot outlive the mmap lock.
//!
//! C header: [`include/linux/migrate.h`](srctree/include/linux/migrate.h)
//!
//! Kernel documentation: [`Documentation/mm/hmm.rst`](srctree/Documentation/mm/hmm.rst)

use crate::{
    bindings,
    mm::{
        hmm::{PageKind, Seen},
        memremap::{
            DeviceFault, DevicePage, DevicePagemapOps, LockedDeviceFolio, PageRef, PagemapOwner,
        },
    },
    page_ext::CpuPage,
};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    bits::bit_u32,
    error::to_result,
    impl_flags,
    mm::{virt::VmaRef, MmWithUser, MmapReadGuard},
    page::{BorrowedPage, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    types::NotThreadSafe,
};

impl_flags!(
    /// Which source pages [`MigrateVma::setup`] collects (`MIGRATE_VMA_SELECT_*`).
    #[derive(Debug, Clone, Default, Copy, PartialEq, Eq)]
    pub struct SelectFlags(u32);

    /// One kind of source page [`MigrateVma::setup`] can collect.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Select {
        /// System memory (including not-yet-populated addresses).
        System = bit_u32(0),
        /// Device-private pages of the given owner.
        DevicePrivate = bit_u32(1),
        /// Device-coherent pages of the given owner.
        DeviceCoherent = bit_u32(2),
        /// Collect a PMD-mapped transparent huge page (or a PMD-sized hole), when the range covers
        /// all of it, as one compound entry of `1 << HPAGE_PMD_ORDER` pages (see
        /// [`Entry::is_compound`]).
        ///
        /// Not together with [`Select::DevicePrivate`] in [`MigrateVma::setup`]: it is left out
        /// there, and a device-private huge page is split and collected page by page. Collected
        /// whole, it would be unmapped to a PMD migration entry, and `zap_huge_pmd()` in 7.3 takes
        /// such an entry of a device-private folio for a mapping: an `MADV_DONTNEED` racing the
        /// migration puts a reference the mapping no longer holds and frees the folio under it.
        /// [`MigrateVma::setup_from_fault`] keeps it: there the fault's own reference keeps the
        /// folio, but the count ends one short, and a racing `MADV_DONTNEED` can miss the range and
        /// leave its data mapped (two 7.3 bugs, see `patches/README`).
        /// [`MigrateVma::setup_exclusive`] keeps it when nothing can race the migration: the mmap
        /// lock held for writing, the VMA write-locked, its anonymous memory in no other mm.
        Compound = bit_u32(3),
    }
);

// The values above are the C enum's: checked at compile time.
const _: () = {
    assert!(Select::System as u32 == bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_SYSTEM);
    assert!(
        Select::DevicePrivate as u32
            == bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE
    );
    assert!(
        Select::DeviceCoherent as u32
            == bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_COHERENT
    );
    assert!(Select::Compound as u32 == bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_COMPOUND);
};

const PFN_VALID: usize = bindings::MIGRATE_PFN_VALID as usize;
const PFN_MIGRATE: usize = bindings::MIGRATE_PFN_MIGRATE as usize;
const PFN_WRITE: usize = bindings::MIGRATE_PFN_WRITE as usize;
const PFN_COMPOUND: usize = bindings::MIGRATE_PFN_COMPOUND as usize;

/// The order of a compound entry: a PMD-mapped transparent huge page.
pub const HPAGE_PMD_ORDER: u32 = bindings::HMM_RS_HPAGE_PMD_ORDER;

/// Something a migration can move a page to.
///
/// Implemented by the locked destination page types: a device page
/// ([`crate::mm::memremap::LockedDeviceFolio`]) and a system page ([`LockedSystemFolio`]).
///
/// # Safety
///
/// [`MigrateDestination::into_migrate_pfn`] must return `migrate_pfn()` of the head page of a folio
/// of order [`MigrateDestination::order`] that is locked, holds one reference, and whose lock and
/// reference the implementer gives up: `migrate_vma_finalize()` unlocks and puts it.
pub unsafe trait MigrateDestination {
    /// The order of the destination folio (0: a single page).
    fn order(&self) -> u32;

    /// Gives up the page and returns its `migrate_pfn()` encoding.
    fn into_migrate_pfn(self) -> usize;
}

/// A NUMA node with memory: where [`LockedSystemFolio::alloc_on_node`] allocates.
///
/// The kernel crate's `NumaNode` is any id below `MAX_NUMNODES`, which may name a node the page
/// allocator has no `pg_data_t` for; this one was a node with memory (`N_MEMORY`) when it was made.
/// Memory hot-unplug can later take the memory away, but not the node (a possible node keeps its
/// `pg_data_t`): an allocation on it then fails.
///
/// # Invariants
///
/// `self.0` is a possible node (`node_possible()`): it is below `MAX_NUMNODES` and has a
/// `pg_data_t`.
///
/// # Examples
///
/// Moving a page to node 1, if it has memory:
///
/// ```ignore
/// let node = MemoryNode::new(1)?; // ENODEV: no such node, or one without memory.
/// let dst = LockedSystemFolio::alloc_on_node(node, 0)?;
/// dst.page().copy_from(&src)?;
/// entry.set_dst(dst)?;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNode(i32);

impl MemoryNode {
    /// Node `nid`, if it has memory now; `ENODEV` otherwise (as `move_pages(2)` answers).
    pub fn new(nid: i32) -> Result<Self> {
        if !(0..bindings::MAX_NUMNODES as i32).contains(&nid) {
            return Err(ENODEV);
        }
        // SAFETY: `node_state()` tests a bit of a static bitmap; `nid` is within its bounds.
        if unsafe { bindings::node_state(nid, bindings::node_states_N_MEMORY) } == 0 {
            return Err(ENODEV);
        }
        // INVARIANT: A node with memory is a possible node.
        Ok(Self(nid))
    }

    /// The node's id.
    #[inline]
    pub fn id(self) -> i32 {
        self.0
    }

    /// Whether the current task's cpuset lets it allocate on the node (`cpuset_mems_allowed`):
    /// `move_pages(2)` answers `EACCES` for a node it does not. Without cpusets, any node with
    /// memory.
    pub fn is_allowed(self) -> bool {
        // SAFETY: Reads a bit of the current task's `mems_allowed`, which only the task itself and
        // the cpuset code under `current`'s alloc lock change; a stale answer is as good as the
        // page allocator's own unlocked read of it. The id is within the bitmap (type invariant).
        unsafe { bindings::cpuset_current_mems_allowed_has(self.0) }
    }
}

/// A freshly allocated, locked system page or folio: a destination for migrations from device
/// memory back to system memory, or between nodes.
///
/// # Invariants
///
/// `page` is the head of a folio of order `order` this object holds one reference to and has
/// locked.
pub struct LockedSystemFolio {
    page: NonNull<bindings::page>,
    order: u32,
}

impl LockedSystemFolio {
    /// Allocates a page for user memory at `addr` in `vma` and locks it.
    pub fn alloc_for_vma(vma: &VmaRef, addr: usize) -> Result<Self> {
        // SAFETY: `vma` is valid (it is borrowed from an mmap lock guard or a fault);
        // `alloc_page_vma()` may sleep, which callers of this allocating function expect.
        let page =
            unsafe { bindings::alloc_page_vma(bindings::GFP_HIGHUSER_MOVABLE, vma.as_ptr(), addr) };
        Self::lock_new(page, 0)
    }

    /// Allocates a folio of `order` for user memory at `addr` in `vma` (`vma_alloc_folio()`) and
    /// locks it: the destination of a compound entry. `addr` must be aligned to the folio's size
    /// (`EINVAL`); `ENOMEM` if no such folio is free, without warning or retrying hard: the caller
    /// can fall back to single pages ([`Entry::set_dst_at`]).
    pub fn alloc_folio_for_vma(vma: &VmaRef, addr: usize, order: u32) -> Result<Self> {
        if order > HPAGE_PMD_ORDER || addr % (PAGE_SIZE << order) != 0 {
            return Err(EINVAL);
        }
        let gfp = bindings::GFP_HIGHUSER_MOVABLE | bindings::__GFP_NOWARN;
        // SAFETY: `vma` is valid (it is borrowed from an mmap lock guard or a fault);
        // `vma_alloc_folio()` may sleep, which callers of this allocating function expect; the
        // order is at most `HPAGE_PMD_ORDER`.
        let folio = unsafe { bindings::vma_alloc_folio(gfp, order as i32, vma.as_ptr(), addr) };
        // `struct folio` starts with its head page.
        Self::lock_new(folio.cast(), order)
    }

    /// Allocates a folio of `order` (0 for a page, at most [`HPAGE_PMD_ORDER`], else `EINVAL`) for
    /// user memory on `node` and nowhere else, and locks it: the destination of a move between
    /// nodes, with the flags `move_pages(2)` allocates one with (`alloc_migration_target()`).
    ///
    /// `ENOMEM` if `node` has no such folio free, or the caller's cpuset does not allow the node
    /// (`__GFP_HARDWALL`; see [`MemoryNode::is_allowed`]). A request for one node neither falls
    /// back to another nor wakes the OOM killer (`__GFP_THISNODE`), and does not warn; a page is
    /// worth reclaim (`__GFP_RETRY_MAYFAIL`), a huge page direct reclaim and compaction but no
    /// reserves (`GFP_TRANSHUGE`): the caller can fall back to pages.
    pub fn alloc_on_node(node: MemoryNode, order: u32) -> Result<Self> {
        if order > HPAGE_PMD_ORDER {
            return Err(EINVAL);
        }
        // `__folio_alloc_node()` prints a stack trace for a `__GFP_THISNODE | __GFP_NOWARN`
        // request on an offline node: one whose memory went away since `node` was made is just
        // out of memory here (a node going offline in between is memory hot-unplug racing us; it
        // costs a stack trace, nothing else).
        // SAFETY: `node_online()` tests a bit of a static bitmap; the id is within its bounds
        // (type invariant of `MemoryNode`).
        if !unsafe { bindings::node_online(node.0) } {
            return Err(ENOMEM);
        }
        let gfp = if order == 0 {
            bindings::GFP_HIGHUSER_MOVABLE | bindings::__GFP_RETRY_MAYFAIL
        } else {
            bindings::GFP_TRANSHUGE
        } | bindings::__GFP_THISNODE
            | bindings::__GFP_NOWARN;
        // SAFETY: `node` is a possible node, whose `pg_data_t` exists (type invariant of
        // `MemoryNode`); the order is at most `HPAGE_PMD_ORDER`; `__folio_alloc_node()` may sleep,
        // which callers of this allocating function expect.
        let folio = unsafe { bindings::__folio_alloc_node(gfp, order, node.0) };
        // `struct folio` starts with its head page.
        Self::lock_new(folio.cast(), order)
    }

    /// Takes over a newly allocated folio of `order` (`NULL`: `ENOMEM`) and locks it.
    fn lock_new(page: *mut bindings::page, order: u32) -> Result<Self> {
        let page = NonNull::new(page).ok_or(ENOMEM)?;
        // SAFETY: We hold the only reference to the new page.
        unsafe { bindings::lock_page(page.as_ptr()) };
        // INVARIANT: One reference from the allocation, locked just above.
        Ok(Self { page, order })
    }

    /// Borrows the (head) page, e.g. to copy data into it.
    pub fn page(&self) -> CpuPage<'_> {
        // SAFETY: The page stays valid while `self` holds its reference.
        let page = unsafe { BorrowedPage::from_raw(self.page) };
        // SAFETY: The page allocator hands out system pages, never device-private ones.
        unsafe { CpuPage::new_unchecked(page) }
    }

    /// Page `i` of the folio; `None` past its end.
    pub fn subpage(&self, i: usize) -> Option<CpuPage<'_>> {
        if i >= 1 << self.order {
            return None;
        }
        // SAFETY: A folio's `struct page`s are contiguous in the memmap (`folio_page()`); `i` is in
        // the folio.
        let page = unsafe { self.page.as_ptr().add(i) };
        // SAFETY: Page `i` of our folio, valid while `self` holds the folio.
        let page = unsafe { BorrowedPage::from_raw(NonNull::new(page)?) };
        // SAFETY: A page of a folio from the page allocator: a system page.
        Some(unsafe { CpuPage::new_unchecked(page) })
    }
}

impl Drop for LockedSystemFolio {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, we hold the lock and a reference.
        unsafe {
            bindings::unlock_page(self.page.as_ptr());
            bindings::put_page(self.page.as_ptr());
        }
    }
}

// SAFETY: `migrate_pfn()` of our locked, referenced folio of `order`; `forget` gives up both to the
// migration.
unsafe impl MigrateDestination for LockedSystemFolio {
    fn order(&self) -> u32 {
        self.order
    }

    fn into_migrate_pfn(self) -> usize {
        let pfn = crate::page_ext::page_to_pfn(self.page.as_ptr());
        core::mem::forget(self);
        migrate_pfn_of(pfn)
    }
}

// SAFETY: `LockedDeviceFolio::into_migrate_pfn()` returns `migrate_pfn()` of its page, the head of
// a folio of `order()`, which `activate()` left locked with one reference, and gives both up.
unsafe impl<T: DevicePagemapOps> MigrateDestination for LockedDeviceFolio<T> {
    fn order(&self) -> u32 {
        DevicePage::order(self)
    }

    fn into_migrate_pfn(self) -> usize {
        LockedDeviceFolio::into_migrate_pfn(self)
    }
}

/// Source and destination pfn arrays for migrations of up to `capacity` pages, allocated once and
/// reused (no per-page allocation), or for one page held inline ([`MigratePfns::one`]: no
/// allocation at all, for the fault path).
pub struct MigratePfns {
    storage: PfnStorage,
}

/// Where the arrays of [`MigratePfns`] are.
enum PfnStorage {
    Heap {
        src: KVec<usize>,
        dst: KVec<usize>,
        /// What each entry was just before `migrate_vma_pages()` (`ST_*`): the phase that follows
        /// clears what [`MigratedEntry::outcome`] needs to know.
        state: KVec<u8>,
    },
    One {
        src: [usize; 1],
        dst: [usize; 1],
        state: [u8; 1],
    },
}

impl MigratePfns {
    /// Allocates arrays for migrations of up to `capacity` pages.
    pub fn new(capacity: usize) -> Result<Self> {
        let mut src = KVec::with_capacity(capacity, GFP_KERNEL)?;
        let mut dst = KVec::with_capacity(capacity, GFP_KERNEL)?;
        let mut state = KVec::with_capacity(capacity, GFP_KERNEL)?;
        src.resize(capacity, 0, GFP_KERNEL)?;
        dst.resize(capacity, 0, GFP_KERNEL)?;
        state.resize(capacity, 0, GFP_KERNEL)?;
        Ok(Self {
            storage: PfnStorage::Heap { src, dst, state },
        })
    }

    /// Arrays for a migration of one page, held inline: nothing to allocate, so a fault on a
    /// single device page can always try to migrate it.
    pub const fn one() -> Self {
        Self {
            storage: PfnStorage::One {
                src: [0],
                dst: [0],
                state: [0],
            },
        }
    }

    /// The largest number of pages one migration with these arrays can cover.
    #[inline]
    pub fn capacity(&self) -> usize {
        match &self.storage {
            PfnStorage::Heap { src, .. } => src.len(),
            PfnStorage::One { .. } => 1,
        }
    }

    /// The source, destination and state arrays, each of `capacity()` entries.
    fn arrays(&mut self) -> (&mut [usize], &mut [usize], &mut [u8]) {
        match &mut self.storage {
            PfnStorage::Heap { src, dst, state } => (src, dst, state),
            PfnStorage::One { src, dst, state } => (src, dst, state),
        }
    }
}

/// A guard for the mmap lock held for writing: what [`MigrateVma::setup_exclusive`] needs. It would
/// sit beside `kernel::mm::MmapReadGuard`, which the kernel crate has without it.
///
/// # Invariants
///
/// This guard owns the mmap write lock of `mm`.
pub struct MmapWriteGuard<'a> {
    mm: &'a MmWithUser,
    // `mmap_write_lock` and `mmap_write_unlock` must be called on the same thread.
    _nts: NotThreadSafe,
}

impl<'a> MmapWriteGuard<'a> {
    /// Takes the mmap lock of `mm` for writing (`mmap_write_lock_killable()`); `EINTR` if a fatal
    /// signal arrives while waiting.
    pub fn lock(mm: &'a MmWithUser) -> Result<Self> {
        // SAFETY: `mm` is a valid mm with users, for `'a`.
        to_result(unsafe { bindings::mmap_write_lock_killable(mm.as_raw()) })?;
        // INVARIANT: Just locked.
        Ok(Self {
            mm,
            _nts: NotThreadSafe,
        })
    }

    /// Looks up the VMA at `addr`, as `MmapReadGuard::vma_lookup()` does.
    pub fn vma_lookup(&self, addr: usize) -> Option<&VmaRef> {
        // SAFETY: By the type invariants we hold the mmap lock. Any address is fine.
        let vma = unsafe { bindings::vma_lookup(self.mm.as_raw(), addr) };
        if vma.is_null() {
            return None;
        }
        // SAFETY: A VMA found under the mmap lock stays valid while the lock is held, which the
        // borrow of `self` ensures.
        Some(unsafe { VmaRef::from_raw(vma) })
    }
}

impl Drop for MmapWriteGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants we hold the mmap write lock.
        unsafe { bindings::mmap_write_unlock(self.mm.as_raw()) };
    }
}

/// Whether no other mm can map a folio of `vma`'s anonymous memory: the VMA's `anon_vma` is the
/// root of its tree (the VMA did not come from a fork) and has no children (no fork of it lives
/// on). An anonymous folio is only ever mapped by VMAs chained to its `anon_vma`, and only a fork
/// chains another mm's VMA to this one's: it adds a child `anon_vma`, which counts until no VMA
/// uses it.
fn anon_unshared(_mmap: &MmapWriteGuard<'_>, vma: &VmaRef) -> bool {
    // SAFETY: `vma` is valid; `anon_vma` is set under the mmap lock (held for writing, `_mmap`).
    let av = unsafe { (*vma.as_ptr()).anon_vma }.cast::<bindings::anon_vma>();
    if av.is_null() {
        // No anonymous memory yet: no device page either.
        return true;
    }
    // SAFETY: The VMA holds its `anon_vma`. `root` never changes; `num_children` grows only in a
    // fork of this mm, which the mmap write lock excludes, and another mm's exit may lower it
    // meanwhile (read with `READ_ONCE()`, a volatile read: a stale value is a larger one).
    unsafe { (*av).root == av && core::ptr::addr_of!((*av).num_children).read_volatile() <= 1 }
}

/// The entry point: [`MigrateVma::setup`].
///
/// # Examples
///
/// Moving the pages of `start..end` (one VMA, at most `pfns.capacity()` pages) to device memory:
/// the phases are types, so they cannot run out of order or twice, and dropping a migration at any
/// phase finalizes it.
///
/// ```ignore
/// let mut pfns = MigratePfns::new(64)?;
/// let mmap = mm.mmap_read_lock();
/// let mut mig = MigrateVma::setup(&mmap, start, end, Select::System.into(), Some(&owner),
///                                 &mut pfns)?;
/// mig.for_each_entry(|mut e| {
///     if !e.can_migrate() {
///         return Ok(()); // a hole, the zero page, a pinned page, ...
///     }
///     // A locked device page with the entry's data copied in: `FreeDeviceFolio::activate()`.
///     let dst = my_device.alloc_and_copy(e.src_page())?;
///     e.set_dst(dst)
/// })?;
/// let done = mig.pages();
/// let moved = done.migrated_pages();
/// done.finalize(); // Or just drop `done`.
/// ```
pub struct MigrateVma;

impl MigrateVma {
    /// Collects and unmaps the pages of `[start, end)` that `select` and `owner` match
    /// (`migrate_vma_setup()`), in the VMA at `start` of the mm whose mmap lock `mmap` holds.
    ///
    /// `start` and `end` must be page aligned, non-empty, inside one VMA, and span at most
    /// `pfns.capacity()` pages: otherwise `EINVAL`. `owner` is the owner of the device pages to
    /// collect; it is required when `select` has device pages in it and is passed to the MMU
    /// notifiers of the migration (which lets a mirror skip its own migrations).
    pub fn setup<'a>(
        mmap: &'a MmapReadGuard<'_>,
        start: usize,
        end: usize,
        select: SelectFlags,
        owner: Option<&'a PagemapOwner>,
        pfns: &'a mut MigratePfns,
    ) -> Result<Collected<'a>> {
        // The VMA comes from the mmap lock guard: `migrate_vma_setup()`'s page walk needs the mmap
        // lock itself, not a per-VMA lock.
        let vma = mmap.vma_lookup(start).ok_or(EINVAL)?;
        // SAFETY: No fault page; not exclusive.
        unsafe { Self::setup_raw(vma, (start, end), select, owner, pfns, None, false) }
    }

    /// [`MigrateVma::setup`] with the mmap lock held for writing, in which [`Select::Compound`]
    /// also collects a device-private huge page whole when no other mm can map it: then it moves
    /// to one system huge page (or device folio) instead of being split into 512 pages.
    ///
    /// The VMA is write-locked too (`vma_start_write_killable()`: `EINTR` if a fatal signal
    /// arrives while faults or `madvise()` calls under its per-VMA lock drain), so that nothing can
    /// unmap or zap the range while its huge pages are unmapped to PMD migration entries, which
    /// 7.3's `zap_huge_pmd()` mistakes for mappings (see [`Select::Compound`]). Another mm could
    /// still zap its own PMD migration entry of a folio it shares with this one (a fork child,
    /// say): if the VMA's anonymous memory may be shared at all, the device-private huge pages
    /// are split as [`MigrateVma::setup`] splits them.
    pub fn setup_exclusive<'a>(
        mmap: &'a MmapWriteGuard<'_>,
        start: usize,
        end: usize,
        select: SelectFlags,
        owner: Option<&'a PagemapOwner>,
        pfns: &'a mut MigratePfns,
    ) -> Result<Collected<'a>> {
        let vma = mmap.vma_lookup(start).ok_or(EINVAL)?;
        let exclusive =
            if select.contains(Select::DevicePrivate) && select.contains(Select::Compound) {
                // SAFETY: The mmap write lock is held (the guard), as `vma_start_write_killable()`
                // requires; the VMA is valid while it is.
                to_result(unsafe { bindings::vma_start_write_killable(vma.as_ptr()) })?;
                anon_unshared(mmap, vma)
            } else {
                false
            };
        // SAFETY: No fault page; the mmap lock is held for writing and the VMA write-locked for
        // `'a` if `exclusive`, and its anonymous memory is mapped in no other mm.
        unsafe { Self::setup_raw(vma, (start, end), select, owner, pfns, None, exclusive) }
    }

    /// [`MigrateVma::setup`] from a `migrate_to_ram` callback: migrates `[start, end)` of the
    /// faulting VMA, which must contain the faulting address, with the faulting device page as
    /// `fault_page` and its pagemap's owner.
    ///
    /// The fault is borrowed exclusively for as long as the migration lives: setting up may split
    /// the faulting folio, whose other pieces the migration then frees, so no `&DevicePage` taken
    /// from the fault before may be used during or after it.
    pub fn setup_from_fault<'a, T: DevicePagemapOps>(
        fault: &'a mut DeviceFault<'_, T>,
        start: usize,
        end: usize,
        select: SelectFlags,
        pfns: &'a mut MigratePfns,
    ) -> Result<Collected<'a>> {
        let fault: &'a DeviceFault<'_, T> = fault;
        let addr = fault.address();
        if addr < start || addr >= end {
            return Err(EINVAL);
        }
        let owner: &'a PagemapOwner = fault.pagemap().owner();
        // SAFETY: `fault_page()` is the `vm_fault::page` of the fault being handled: locked by the
        // fault path and valid while `fault` is.
        unsafe {
            Self::setup_raw(
                fault.vma(),
                (start, end),
                select,
                Some(owner),
                pfns,
                NonNull::new(fault.fault_page()),
                false,
            )
        }
    }

    /// # Safety
    ///
    /// `fault_page` is `None` or as in [`MigrateVma::setup_from_fault`]. If `exclusive`, the mmap
    /// lock is held for writing and the VMA write-locked for `'a`, and no other mm maps a folio of
    /// the VMA's anonymous memory ([`anon_unshared`]).
    unsafe fn setup_raw<'a>(
        vma: &'a VmaRef,
        (start, end): (usize, usize),
        select: SelectFlags,
        owner: Option<&'a PagemapOwner>,
        pfns: &'a mut MigratePfns,
        fault_page: Option<NonNull<bindings::page>>,
        exclusive: bool,
    ) -> Result<Collected<'a>> {
        if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 || start >= end {
            return Err(EINVAL);
        }
        if start < vma.start() || end > vma.end() {
            return Err(EINVAL);
        }
        let npages = (end - start) >> PAGE_SHIFT;
        if npages > pfns.capacity() {
            return Err(EINVAL);
        }
        let wants_device =
            select.contains(Select::DevicePrivate) || select.contains(Select::DeviceCoherent);
        if wants_device && owner.is_none() {
            return Err(EINVAL);
        }
        let select = if select.contains(Select::DevicePrivate) && fault_page.is_none() && !exclusive
        {
            // See `Select::Compound`: no migration entry holds a reference, and `zap_pte_range()`
            // puts none for a PTE one, but `zap_huge_pmd()` in 7.3 wrongly puts one for a PMD one
            // of a device-private folio. A fault cannot split its folio (its own reference makes
            // the split fail), so there it stays.
            select & !Select::Compound
        } else {
            select
        };
        // `migrate_vma_setup()` clears `src`; destinations start empty, and so does what
        // `Collected::keep_on_node()` records.
        let (src, dst, state) = pfns.arrays();
        dst[..npages].fill(0);
        state[..npages].fill(ST_UNCOLLECTED);

        let mut args = bindings::migrate_vma {
            vma: vma.as_ptr(),
            dst: dst.as_mut_ptr().cast(),
            src: src.as_mut_ptr().cast(),
            start,
            end,
            pgmap_owner: owner.map_or(core::ptr::null_mut(), |o| o.as_raw()),
            flags: u32::from(select) as usize,
            fault_page: fault_page.map_or(core::ptr::null_mut(), NonNull::as_ptr),
            ..Default::default()
        };
        // SAFETY: `args` is fully initialised: the VMA is valid and the mmap lock of its mm is held
        // for `'a` (the borrow of `vma`), which the page walk of `migrate_vma_setup()` needs (a
        // per-VMA lock would not do): `setup()` borrows it from an `MmapReadGuard`, and
        // `setup_from_fault()` from a `migrate_to_ram` fault, which `do_swap_page()` only makes
        // with the mmap lock held (it retries faults taken under a per-VMA lock); `src` and `dst`
        // have room for `npages` entries and stay borrowed, unmoved, until the migration is
        // finalized; `fault_page` is null or valid (caller's guarantee).
        kernel::error::to_result(unsafe { bindings::migrate_vma_setup(&mut args) })?;
        // INVARIANT: `setup` succeeded and nothing else has run yet.
        Ok(Collected {
            args,
            state: state.as_mut_ptr(),
            _pfns: PhantomData,
        })
    }
}

/// A collected source entry and its destination slots.
///
/// An entry is one page, or for a compound entry ([`Entry::is_compound`]) the
/// `1 << HPAGE_PMD_ORDER` pages of a transparent huge page (or of a PMD-sized hole) collected as
/// one. A compound entry migrates either whole, to a destination folio of the same order
/// ([`Entry::set_dst`]), or page by page, to one order-0 destination per page
/// ([`Entry::set_dst_at`]): the core then splits the source folio, or populates the hole with small
/// pages. A split entry migrates only if every one of its pages got a destination; otherwise
/// [`Collected::pages`] releases them and none of its pages moves.
pub struct Entry<'m> {
    index: usize,
    addr: usize,
    src: usize,
    /// The destination slots of the entry's pages: one, or for a compound entry as many as it has
    /// pages (fewer only if the range ends early).
    dst: &'m mut [usize],
    _page: PhantomData<&'m bindings::page>,
}

impl<'m> Entry<'m> {
    /// Index of the entry in the range (0 for `start`).
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The virtual address of the entry.
    #[inline]
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Whether the page can be migrated (collected and unmapped). Entries that cannot be migrated
    /// must not be given a destination.
    #[inline]
    pub fn can_migrate(&self) -> bool {
        self.src & PFN_MIGRATE != 0
    }

    /// Whether the source was mapped writable.
    #[inline]
    pub fn is_write(&self) -> bool {
        self.src & PFN_WRITE != 0
    }

    /// Whether the entry is compound: a transparent huge page (or a PMD-sized hole) collected as
    /// one entry, with [`Select::Compound`].
    #[inline]
    pub fn is_compound(&self) -> bool {
        self.src & PFN_COMPOUND != 0
    }

    /// The order of the entry: [`HPAGE_PMD_ORDER`] if compound, else 0.
    pub fn order(&self) -> u32 {
        if self.is_compound() {
            HPAGE_PMD_ORDER
        } else {
            0
        }
    }

    /// The number of pages the entry covers.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        self.dst.len()
    }

    /// The source page (the head page of a compound entry): `None` for an address with nothing
    /// mapped yet (or the shared zero page), which a destination populates.
    ///
    /// A device page comes as [`PageRef::Device`]: a device-private page has no contents the CPU
    /// can reach.
    #[inline]
    pub fn src_page(&self) -> Option<PageRef<'m>> {
        self.src_subpage(0)
    }

    /// Page `i` of the source (`i < nr_pages()`), as [`Entry::src_page`].
    pub fn src_subpage(&self, i: usize) -> Option<PageRef<'m>> {
        if self.src & PFN_VALID == 0 || i >= self.nr_pages() {
            return None;
        }
        // SAFETY: Pure pfn arithmetic on a valid entry, then page `i` of a compound source, a folio
        // of `nr_pages()` pages whose `struct page`s are contiguous in the memmap (`folio_page()`).
        let page = unsafe { crate::mm::migrate::migrate_pfn_to_page(self.src).add(i) };
        // SAFETY: A valid source entry names a folio that `migrate_vma_setup()` locked and holds a
        // reference to until `finalize`, which cannot run while `'m` borrows the migration.
        NonNull::new(page).map(|p| unsafe { PageRef::from_raw(p) })
    }

    /// Whether any destination was given.
    #[inline]
    pub fn has_dst(&self) -> bool {
        self.dst.iter().any(|d| d & PFN_VALID != 0)
    }

    /// Gives the entry a destination of the entry's order (a folio of [`HPAGE_PMD_ORDER`] for a
    /// compound entry, else a page), which the migration takes over: on success it replaces the
    /// source, otherwise `finalize` releases it.
    ///
    /// The destination is mapped writable if the source was. `EINVAL` if the entry cannot migrate,
    /// already has a destination, or the order does not match (the destination is then released
    /// right away).
    pub fn set_dst(&mut self, dst: impl MigrateDestination) -> Result {
        let order = dst.order();
        let mpfn = dst.into_migrate_pfn();
        if !self.can_migrate() || self.has_dst() || order != self.order() {
            // Hand it straight to the kernel's release path.
            release_mpfn(mpfn);
            return Err(EINVAL);
        }
        let compound = if order > 0 { PFN_COMPOUND } else { 0 };
        self.dst[0] = mpfn | (self.src & PFN_WRITE) | compound;
        Ok(())
    }

    /// Gives page `i` of the entry an order-0 destination. For a compound entry, this migrates it
    /// page by page (see [`Entry`]); for another, `set_dst_at(0, dst)` is `set_dst(dst)`.
    ///
    /// `EINVAL` (and the destination released) if the entry cannot migrate, `i` is out of range,
    /// page `i` already has a destination, the entry has a compound destination, or `dst` is not a
    /// single page.
    pub fn set_dst_at(&mut self, i: usize, dst: impl MigrateDestination) -> Result {
        let order = dst.order();
        let mpfn = dst.into_migrate_pfn();
        let whole = self.dst[0] & PFN_COMPOUND != 0;
        let taken = self.dst.get(i).is_none_or(|d| d & PFN_VALID != 0);
        if !self.can_migrate() || order != 0 || whole || taken {
            release_mpfn(mpfn);
            return Err(EINVAL);
        }
        self.dst[i] = mpfn | (self.src & PFN_WRITE);
        Ok(())
    }
}

/// The number of pages the entry `src` covers.
fn entry_pages(src: usize) -> usize {
    if src & PFN_COMPOUND != 0 {
        1 << HPAGE_PMD_ORDER
    } else {
        1
    }
}

/// Keeps the collected entry at `i`, of `len` pages, back from the migration, for the reason `why`
/// (an `ST_KEPT` state): `migrate_vma_pages()` skips an entry without `MIGRATE`, and `finalize`
/// restores its page, as they do with every entry that does not move. Its destinations, if any,
/// are released.
fn keep_back(
    src: &mut [usize],
    dst: &mut [usize],
    state: &mut [u8],
    i: usize,
    len: usize,
    why: u8,
) {
    src[i] &= !PFN_MIGRATE;
    for j in i..i + len {
        release_mpfn(dst[j]);
        dst[j] = 0;
        state[j] = why;
    }
}

/// Drops a destination that never reached a migration: unlock and put.
fn release_mpfn(mpfn: usize) {
    let page = crate::mm::migrate::migrate_pfn_to_page(mpfn);
    if !page.is_null() {
        // SAFETY: The `MigrateDestination` contract gave us the lock and a reference to this page.
        unsafe {
            bindings::unlock_page(page);
            bindings::put_page(page);
        }
    }
}

/// A migration after `migrate_vma_setup()`: source pages are collected, locked and unmapped; the
/// caller copies them and sets destinations.
///
/// # Leaking
///
/// Like a lock guard, a `Collected` (or [`Migrated`]) migration must not be leaked with
/// `mem::forget` or a reference cycle: nothing would finalize it, so the source pages would stay
/// locked behind migration entries and every task touching them would wait forever (`folio_lock()`,
/// migration entry waits). That is a hang, not undefined behaviour, which is why leaking is safe in
/// Rust; no code in this crate leaks one.
///
/// # Invariants
///
/// `args` was passed to a successful `migrate_vma_setup()` and neither `migrate_vma_pages()` nor
/// `migrate_vma_finalize()` has run on it. The arrays it points to, and `state`, which has room for
/// `args.npages` entries, are borrowed for `'a`.
pub struct Collected<'a> {
    args: bindings::migrate_vma,
    state: *mut u8,
    _pfns: PhantomData<(&'a mut MigratePfns, &'a VmaRef)>,
}

impl Collected<'_> {
    /// Whether the migration may have collected system pages (`MIGRATE_VMA_SELECT_SYSTEM`):
    /// `migrate_vma_setup()` collects none without it.
    fn selects_system(&self) -> bool {
        self.args.flags & Select::System as usize != 0
    }
}

impl<'a> Collected<'a> {
    /// Number of entries (pages) in the range.
    #[inline]
    pub fn npages(&self) -> usize {
        self.args.npages
    }

    /// Number of entries collected for migration, as `migrate_vma_setup()` counted them (entries
    /// [`Collected::keep_on_node`] keeps back still count).
    #[inline]
    pub fn cpages(&self) -> usize {
        self.args.cpages
    }

    /// Start of the range.
    #[inline]
    pub fn start(&self) -> usize {
        self.args.start
    }

    /// End of the range.
    #[inline]
    pub fn end(&self) -> usize {
        self.args.end
    }

    /// The VMA being migrated.
    pub fn vma(&self) -> &'a VmaRef {
        // SAFETY: `args.vma` came from a `&'a VmaRef` (type invariant).
        unsafe { VmaRef::from_raw(self.args.vma) }
    }

    /// The source and destination arrays.
    fn arrays(&mut self) -> (&[usize], &mut [usize]) {
        let (src, dst, _) = self.parts();
        (src, dst)
    }

    /// The source, destination and state arrays.
    fn parts(&mut self) -> (&mut [usize], &mut [usize], &mut [u8]) {
        let n = self.npages();
        // SAFETY: `src`, `dst` and `state` are three arrays of (at least) `npages` entries borrowed
        // for `'a` (type invariant), `unsigned long` has the layout of `usize`, and `&mut self`
        // gives exclusive access to them.
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.args.src.cast::<usize>(), n),
                core::slice::from_raw_parts_mut(self.args.dst.cast::<usize>(), n),
                core::slice::from_raw_parts_mut(self.state, n),
            )
        }
    }

    /// The entry at `index`, `None` past the end. The index of a page inside a compound entry
    /// (other than its first) gives an entry that cannot migrate.
    pub fn entry(&mut self, index: usize) -> Option<Entry<'_>> {
        let start = self.start();
        let (src, dst) = self.arrays();
        let s = *src.get(index)?;
        let n = entry_pages(s).min(dst.len() - index);
        Some(Entry {
            index,
            addr: start + (index << PAGE_SHIFT),
            src: s,
            dst: &mut dst[index..index + n],
            _page: PhantomData,
        })
    }

    /// Runs `f` on every entry, in order (once per compound entry).
    pub fn for_each_entry(&mut self, mut f: impl FnMut(Entry<'_>) -> Result) -> Result {
        let mut i = 0;
        while let Some(e) = self.entry(i) {
            i += e.nr_pages();
            f(e)?;
        }
        Ok(())
    }

    /// Leaves every collected system page that is already on `node` where it is: its entry gets no
    /// destination, and comes out as [`Reason::OnNode`]. Returns the number of pages left.
    ///
    /// This is the filter the July 2020 review of the select flags asked for, "migrate system
    /// memory not already on node X". 7.3's `migrate_vma_setup()` has no such filter, so it applies
    /// after collection: the pages left were unmapped, and `finalize` maps them again, as it does
    /// every page that did not move. Call it before giving destinations; one an entry it leaves
    /// already had is released.
    pub fn keep_on_node(&mut self, node: MemoryNode) -> usize {
        let (src, dst, state) = self.parts();
        let n = src.len();
        let mut kept = 0;
        let mut i = 0;
        while i < n {
            let len = entry_pages(src[i]).min(n - i);
            let page = crate::mm::migrate::migrate_pfn_to_page(src[i]);
            // SAFETY: A valid collected entry names a page the migration holds locked and
            // referenced until `finalize`; `is_zone_device_page()` and `page_to_nid()` read its
            // flags.
            let on_node = src[i] & PFN_MIGRATE != 0
                && !page.is_null()
                && unsafe { !crate::page_ext::is_zone_device_page(page) }
                && unsafe { bindings::page_to_nid(page) } == node.0;
            if on_node {
                keep_back(src, dst, state, i, len, ST_ON_NODE);
                kept += len;
            }
            i += len;
        }
        kept
    }

    /// Enforces what [`Entry`] documents of split compound entries: one whose pages did not all get
    /// a destination migrates none of them. (`migrate_vma_pages()` would otherwise map a hole's
    /// missing pages from a null destination.)
    fn check_split_entries(&mut self) {
        let (src, dst) = self.arrays();
        let mut i = 0;
        while i < src.len() {
            let n = entry_pages(src[i]).min(src.len() - i);
            let d = &mut dst[i..i + n];
            let whole = d[0] & PFN_COMPOUND != 0;
            if n > 1 && !whole && d.iter().any(|x| x & PFN_VALID == 0) {
                for x in d.iter_mut() {
                    release_mpfn(*x);
                    *x = 0;
                }
            }
            i += n;
        }
    }

    /// Records in `state` what each entry is before `migrate_vma_pages()` changes it: that phase
    /// clears `MIGRATE_PFN_MIGRATE` of every entry without a destination, and of a hole without one
    /// leaves nothing to tell it from an entry never collected.
    fn record_state(&mut self) {
        let (src, dst, state) = self.parts();
        let n = src.len();
        let mut i = 0;
        while i < n {
            let len = entry_pages(src[i]).min(n - i);
            let split = if len > 1 && dst[i] & PFN_COMPOUND == 0 {
                ST_SPLIT
            } else {
                0
            };
            let hole = if src[i] & PFN_VALID == 0 { ST_HOLE } else { 0 };
            for j in i..i + len {
                state[j] = if src[i] & PFN_MIGRATE == 0 {
                    // Not collected, or kept back, which the state says already.
                    if state[j] & ST_KEPT != 0 {
                        state[j]
                    } else {
                        ST_UNCOLLECTED
                    }
                } else if dst[j] & PFN_VALID == 0 {
                    ST_NO_DST | hole
                } else {
                    ST_DST | split | hole | if j == i { ST_HEAD } else { 0 }
                };
            }
            i += len;
        }
    }

    /// Keeps back every system page given a system destination that `migrate_vma_pages()` cannot
    /// move there: a page of a file (or shmem), or one under writeback.
    ///
    /// 7.3's `migrate_vma_pages()` refuses those only for a device destination. For a system one
    /// it calls `folio_migrate_mapping()` straight away, with no `migrate_folio` of the mapping (a
    /// file system's private data, buffer heads say, would stay on the old folio, which is then
    /// freed), after `BUG_ON(folio_test_writeback())`. Both tests are stable: the migration holds
    /// the source locked, and writeback starts only under the folio lock.
    fn keep_unmovable_to_system(&mut self) {
        if !self.selects_system() {
            // No system page to keep back (and no page to look up per entry to find that out).
            return;
        }
        let (src, dst, state) = self.parts();
        let n = src.len();
        let mut i = 0;
        while i < n {
            let len = entry_pages(src[i]).min(n - i);
            let page = crate::mm::migrate::migrate_pfn_to_page(src[i]);
            let to_system = dst[i..i + len].iter().any(|&d| {
                let dpage = crate::mm::migrate::migrate_pfn_to_page(d);
                // SAFETY: A destination is a locked, referenced page (`MigrateDestination`).
                !dpage.is_null() && !unsafe { crate::page_ext::is_zone_device_page(dpage) }
            });
            // SAFETY: A valid collected entry names a page the migration holds locked and
            // referenced until `finalize`.
            let system_src = src[i] & PFN_MIGRATE != 0
                && !page.is_null()
                && !unsafe { crate::page_ext::is_zone_device_page(page) };
            let kept = if to_system && system_src {
                // SAFETY: As above: the page is valid, and so is its folio.
                let folio = unsafe { bindings::page_folio(page) };
                // SAFETY: The folio is valid and locked; the tests read its mapping and flags.
                let (anon, writeback) = unsafe {
                    (
                        bindings::folio_test_anon(folio),
                        bindings::folio_test_writeback(folio),
                    )
                };
                if !anon {
                    ST_KEPT_FILE
                } else if writeback {
                    ST_KEPT_WRITEBACK
                } else {
                    0
                }
            } else {
                0
            };
            if kept != 0 {
                keep_back(src, dst, state, i, len, kept);
            }
            i += len;
        }
    }

    /// Moves the collected pages to their destinations (`migrate_vma_pages()`).
    ///
    /// A system page of a file, or one under writeback, given a system destination, stays where it
    /// is ([`Reason::FileBacked`], [`Reason::Busy`]): `migrate_vma_pages()` cannot move it there
    /// safely on 7.3.
    pub fn pages(mut self) -> Migrated<'a> {
        self.keep_unmovable_to_system();
        self.check_split_entries();
        self.record_state();
        // SAFETY: By the type invariants, `setup` succeeded and `pages` has not run; the
        // destinations are locked, referenced pages (`MigrateDestination`).
        unsafe { bindings::migrate_vma_pages(&mut self.args) };
        let args = self.args;
        let state = self.state;
        core::mem::forget(self);
        // INVARIANT: `pages` ran once; `finalize` has not; `state` is as in `Collected`.
        Migrated {
            args,
            state,
            _pfns: PhantomData,
        }
    }
}

impl Drop for Collected<'_> {
    fn drop(&mut self) {
        // Not migrated: release the destinations first. `finalize()` takes an entry with a
        // destination for one `migrate_vma_pages()` moved, and would restore the source's mappings
        // from the destination's (empty) rmap, leaving migration entries to a freed page.
        let (_, dst) = self.arrays();
        for d in dst.iter_mut() {
            release_mpfn(*d);
            *d = 0;
        }
        // Then restore every source page. SAFETY: By the type invariants, `setup` succeeded and
        // `finalize` has not run.
        unsafe { bindings::migrate_vma_finalize(&mut self.args) };
    }
}

/// What happened to one entry of a migration: [`MigratedEntry::outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The page moved to its destination (or, a hole, was populated with it).
    Migrated,
    /// The page stayed where it was, for this reason.
    NotMigrated(Reason),
}

/// Why an entry of a migration did not move, as the July 2020 review of the select flags asked to
/// know.
///
/// The phases of a migration leave a trace of most reasons in the entry's `src` and `dst` words and
/// in the source page, which the migration holds until `finalize`. What they do not show is why
/// `migrate_vma_setup()` left an entry out: its page table walk writes `0` for every kind of entry
/// it skips, and for the pages it collected but could not unmap. For those,
/// [`MigratedEntry::outcome`] says [`Reason::NotCollected`], and a caller that looked at the page
/// table before the setup (an [`hmm::Range`] snapshot, say) gets the reason from what it saw with
/// [`Reason::of_uncollected`]. `Documentation/migrate-reasons.rst` has the table of how each is
/// derived.
///
/// [`hmm::Range`]: crate::mm::hmm::Range
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// `migrate_vma_setup()` did not collect the entry, and nothing says why (see the type's
    /// documentation).
    NotCollected,
    /// Nothing of what the selection takes is present: nothing mapped outside an anonymous mapping
    /// (in one, `migrate_vma_setup()` collects every hole, see [`MigratedEntry::is_hole`]), a
    /// swapped-out page, a device-private page of another owner, or an entry in transition
    /// (migration, device-exclusive). A module cannot tell these apart on 7.3: `walk_page_range()`
    /// is not exported, and `hmm_range_fault()` reports each as not valid without faulting it in.
    NotPresent,
    /// The shared zero page, and [`Select::System`] not given (with it, the zero page is collected
    /// like a hole and its destination replaces it).
    ZeroPage,
    /// A page of a kind the selection leaves out: system memory without [`Select::System`], or a
    /// device page of the owner without [`Select::DevicePrivate`] or [`Select::DeviceCoherent`].
    NotSelected,
    /// A device page of another owner than the migration's.
    OtherOwner,
    /// The page is pinned (`FOLL_PIN`: DMA, `io_uring`, ...): it can move once it is unpinned.
    Pinned,
    /// The page was locked by someone else, had references besides its mappings (a `get_page()`, a
    /// pipe buffer, ...), or could not be taken off the LRU: retrying can help.
    Busy,
    /// A huge page that had to be split (collected page by page, or given page-sized destinations)
    /// could not be: it has references besides its mappings.
    SplitFailed,
    /// The entry was collected but given no destination.
    NoDestination,
    /// `migrate_vma_pages()` did not move the entry (its references changed, or its mapping would
    /// not let it go); retrying can help.
    Refused,
    /// A page of a file (or of shmem), which only anonymous memory may leave for device memory.
    FileBacked,
    /// A mapping that `hmm_range_fault()` cannot walk (`HMM_PFN_ERROR`: a special mapping, a
    /// poisoned page).
    Unsupported,
    /// A system page already on the node the migration moves to, which
    /// [`Collected::keep_on_node`] left there.
    OnNode,
}

impl Reason {
    /// Whether trying the same migration again, with nothing else changed first, can succeed: the
    /// cause is transient. [`Reason::NotPresent`] needs the page faulted in first, and
    /// [`Reason::Pinned`] the pin released.
    pub fn retry_can_help(self) -> bool {
        matches!(self, Self::Busy | Self::SplitFailed | Self::Refused)
    }

    /// The reason an entry that `migrate_vma_setup()` did not collect stayed, from what a look at
    /// the page table before the setup, with the migration's owner, `seen` there; `select` is the
    /// migration's selection.
    ///
    /// A page the selection takes, seen but not collected, was pinned (an exclusive anonymous page
    /// that is pinned cannot be shared with a migration entry; a shared one fails the reference
    /// check), a huge page that could not be split, or busy (locked, referenced, not isolated).
    /// What changed between the look and the setup is not seen: the reason is as of the look.
    pub fn of_uncollected(seen: Seen, select: SelectFlags) -> Self {
        let Seen::Page {
            kind,
            pinned,
            large,
        } = seen
        else {
            return match seen {
                Seen::Error => Self::Unsupported,
                _ => Self::NotPresent,
            };
        };
        let (own, selected) = match kind {
            PageKind::Zero if !select.contains(Select::System) => return Self::ZeroPage,
            PageKind::Zero | PageKind::System => (true, select.contains(Select::System)),
            PageKind::DevicePrivate { local } => (local, select.contains(Select::DevicePrivate)),
            PageKind::DeviceCoherent { local } => (local, select.contains(Select::DeviceCoherent)),
        };
        if !own {
            Self::OtherOwner
        } else if !selected {
            Self::NotSelected
        } else if pinned {
            Self::Pinned
        } else if large {
            Self::SplitFailed
        } else {
            Self::Busy
        }
    }
}

/// A migration after `migrate_vma_pages()`.
///
/// # Invariants
///
/// As [`Collected`], except that `migrate_vma_pages()` has run once.
pub struct Migrated<'a> {
    args: bindings::migrate_vma,
    state: *mut u8,
    _pfns: PhantomData<(&'a mut MigratePfns, &'a VmaRef)>,
}

/// An entry of a [`Migrated`] migration.
///
/// # Invariants
///
/// `src` and `dst` are the entry's words after `migrate_vma_pages()`, `state` its `ST_*` from just
/// before, and the pages they name stay locked and referenced for `'m`.
#[derive(Clone, Copy)]
pub struct MigratedEntry<'m> {
    index: usize,
    addr: usize,
    src: usize,
    dst: usize,
    state: u8,
    _m: PhantomData<&'m ()>,
}

/// `Collected::record_state()`: the entry was not collected.
const ST_UNCOLLECTED: u8 = 0;
/// It was collected and had no destination.
const ST_NO_DST: u8 = 1;
/// It was collected and had a destination.
const ST_DST: u8 = 2;
/// With [`ST_DST`]: it was a huge source with page-sized destinations, to be split.
const ST_SPLIT: u8 = 4;
/// With [`ST_SPLIT`]: the entry is the first page of the huge source.
const ST_HEAD: u8 = 8;
/// With [`ST_DST`] or [`ST_NO_DST`]: the source was a hole (no page).
const ST_HOLE: u8 = 16;
/// Not recorded, but found by [`Migrated::entry`]: a split that `migrate_vma_pages()` could not do.
/// It then clears `MIGRATE` and `COMPOUND` of the first entry and leaves the others as they were
/// (no page), where a split that worked fills each with its page.
const ST_SPLIT_FAILED: u8 = 32;
/// Set in the states recorded before `migrate_vma_setup()` returns control to `pages()`: the
/// entry was collected and kept back, `MIGRATE` cleared, for the reason the rest of the value says.
/// [`Collected::record_state`] keeps them.
const ST_KEPT: u8 = 128;
/// Kept by [`Collected::keep_on_node`]: a system page already on the node.
const ST_ON_NODE: u8 = ST_KEPT | 1;
/// Kept by `pages()`: a page of a file, given a system destination.
const ST_KEPT_FILE: u8 = ST_KEPT | 2;
/// Kept by `pages()`: a page under writeback, given a system destination.
const ST_KEPT_WRITEBACK: u8 = ST_KEPT | 3;

impl<'m> MigratedEntry<'m> {
    /// Index of the entry in the range.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The virtual address of the entry.
    #[inline]
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// What happened to the entry, and if it stayed, why (see [`Reason`] for what this can and
    /// cannot tell).
    pub fn outcome(&self) -> Outcome {
        let reason = match self.state {
            ST_UNCOLLECTED => Reason::NotCollected,
            ST_ON_NODE => Reason::OnNode,
            ST_KEPT_FILE => Reason::FileBacked,
            ST_KEPT_WRITEBACK => Reason::Busy,
            s if s & ST_NO_DST != 0 => Reason::NoDestination,
            _ if self.src & PFN_MIGRATE != 0 && self.dst & PFN_VALID != 0 => {
                return Outcome::Migrated
            }
            s if s & ST_SPLIT_FAILED != 0 => Reason::SplitFailed,
            _ if self.is_file_to_device() => Reason::FileBacked,
            _ => Reason::Refused,
        };
        Outcome::NotMigrated(reason)
    }

    /// Whether the entry is a page of a file going to device memory, which `migrate_vma_pages()`
    /// refuses (it takes only anonymous folios; an anonymous folio in the swap cache also has a
    /// `folio_mapping()`, so that is not the test).
    fn is_file_to_device(&self) -> bool {
        let Some(PageRef::Device(_)) = self.dst_page() else {
            return false;
        };
        let page = crate::mm::migrate::migrate_pfn_to_page(self.src);
        if page.is_null() {
            return false;
        }
        // SAFETY: A valid source entry names a page the migration holds until `finalize`, which
        // cannot run during `'m` (type invariant); `folio_test_anon()` reads the folio's mapping.
        !unsafe { bindings::folio_test_anon(bindings::page_folio(page)) }
    }

    /// Whether the entry was collected as a hole: nothing mapped (or, with [`Select::System`], the
    /// zero page). `migrate_vma_setup()` collects every hole of an anonymous mapping, whatever the
    /// selection; a migration that only moves device pages back gives them no destination, and
    /// [`Reason::NoDestination`] with this is nothing to move.
    #[inline]
    pub fn is_hole(&self) -> bool {
        self.state & ST_HOLE != 0
    }

    /// Whether the page moved (source entry still migrating, with a destination).
    #[inline]
    pub fn is_migrated(&self) -> bool {
        self.src & PFN_MIGRATE != 0 && self.dst & PFN_VALID != 0
    }

    /// The number of pages the entry covers: more than one for a compound entry that migrated (or
    /// stayed) whole.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        entry_pages(self.src)
    }

    /// Whether the destination was mapped writable.
    #[inline]
    pub fn is_write(&self) -> bool {
        self.dst & PFN_WRITE != 0
    }

    /// Whether the destination is a compound page.
    #[inline]
    pub fn is_compound(&self) -> bool {
        self.dst & PFN_COMPOUND != 0
    }

    /// The destination page, if any; it stays locked and referenced until `finalize`. A device page
    /// comes as [`PageRef::Device`].
    pub fn dst_page(&self) -> Option<PageRef<'m>> {
        let page = crate::mm::migrate::migrate_pfn_to_page(self.dst);
        // SAFETY: The destination is locked and referenced until `migrate_vma_finalize()`, which
        // cannot run during `'m`.
        NonNull::new(page).map(|p| unsafe { PageRef::from_raw(p) })
    }
}

impl<'a> Migrated<'a> {
    /// Number of entries.
    #[inline]
    pub fn npages(&self) -> usize {
        self.args.npages
    }

    /// The entry at `index`, `None` past the end.
    ///
    /// The index of a page inside a compound entry that stayed or moved whole gives that page's
    /// own words, which say little (its outcome is `NoDestination`, or the reason the entry was
    /// kept back): the entry is its first page, as [`Migrated::entries`] visits it.
    pub fn entry(&self, index: usize) -> Option<MigratedEntry<'_>> {
        if index >= self.npages() {
            return None;
        }
        // SAFETY: `src`, `dst` and `state` have `npages` entries (type invariant).
        let (src, dst, mut state) = unsafe {
            (
                *self.args.src.add(index),
                *self.args.dst.add(index),
                *self.state.add(index),
            )
        };
        if state & (ST_KEPT | ST_SPLIT | ST_HOLE) == ST_SPLIT && src & PFN_MIGRATE == 0 {
            // A split huge source has more than one page, so `index + 1` is in range for its head.
            let page = if state & ST_HEAD != 0 {
                index + 1
            } else {
                index
            };
            // SAFETY: `src` has `npages` entries (type invariant), and `page < npages`.
            if unsafe { *self.args.src.add(page) } & PFN_VALID == 0 {
                state |= ST_SPLIT_FAILED;
            }
        }
        // INVARIANT: The words of entry `index`; the migration holds its pages until `finalize`,
        // which cannot run while `self` is borrowed.
        Some(MigratedEntry {
            index,
            addr: self.args.start + (index << PAGE_SHIFT),
            src,
            dst,
            state,
            _m: PhantomData,
        })
    }

    /// Iterates over the entries (once per compound entry).
    pub fn entries(&self) -> impl Iterator<Item = MigratedEntry<'_>> + '_ {
        let mut i = 0;
        core::iter::from_fn(move || {
            let e = self.entry(i)?;
            i += e.nr_pages();
            Some(e)
        })
    }

    /// Number of source pages that moved (`MIGRATE_PFN_VALID` and `MIGRATE_PFN_MIGRATE` still set
    /// in the source entry; holes that were populated do not count).
    pub fn migrated_pages(&self) -> usize {
        self.entries()
            .filter(|e| e.src & PFN_VALID != 0 && e.src & PFN_MIGRATE != 0)
            .map(|e| e.nr_pages())
            .sum()
    }

    /// Restores or replaces the CPU mappings and releases the pages (`migrate_vma_finalize()`).
    /// Dropping does the same.
    #[inline]
    pub fn finalize(self) {
        drop(self)
    }
}

impl Drop for Migrated<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariants, `pages` ran and `finalize` has not.
        unsafe { bindings::migrate_vma_finalize(&mut self.args) };
    }
}

/// `migrate_pfn_to_page()`: the page a migration entry names, null if it names none; the C inline
/// function's arithmetic, without a helper call per entry.
#[inline]
pub(crate) fn migrate_pfn_to_page(mpfn: usize) -> *mut bindings::page {
    if mpfn & PFN_VALID == 0 {
        return core::ptr::null_mut();
    }
    crate::page_ext::pfn_to_page(mpfn >> bindings::MIGRATE_PFN_SHIFT)
}

/// `migrate_pfn()`: the entry encoding of a valid page frame number. The same arithmetic as the C
/// inline function, done here rather than through a helper call on every page (KUnit checks that
/// the two agree).
#[inline]
pub(crate) fn migrate_pfn_of(pfn: usize) -> usize {
    (pfn << bindings::MIGRATE_PFN_SHIFT) | PFN_VALID
}

#[kunit_tests(rust_hmm_migrate)]
mod tests {
    use super::*;

    #[test]
    fn select_flags_combine_as_the_c_enum() {
        let c = bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE
            | bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_COMPOUND;
        assert_eq!(u32::from(Select::DevicePrivate | Select::Compound), c);
        let none = SelectFlags::default();
        assert!(!none.contains(Select::System));
        let without = (Select::DevicePrivate | Select::Compound) & !Select::Compound;
        assert!(without.contains(Select::DevicePrivate));
        assert!(!without.contains(Select::Compound));
    }

    #[test]
    fn migrate_pfn_is_the_pfn_and_valid() {
        for pfn in [0usize, 1, 0x1234, 0xfcf0000] {
            let e = migrate_pfn_of(pfn);
            assert_eq!(e >> bindings::MIGRATE_PFN_SHIFT, pfn);
            assert_eq!(e & PFN_VALID, PFN_VALID);
            assert_eq!(e & (PFN_MIGRATE | PFN_WRITE | PFN_COMPOUND), 0);
            // SAFETY: `migrate_pfn()` is pure arithmetic on its argument.
            assert_eq!(e, unsafe { bindings::migrate_pfn(pfn) });
        }
    }

    #[test]
    fn a_compound_entry_covers_a_pmd() {
        assert_eq!(PAGE_SIZE << HPAGE_PMD_ORDER, 2 << 20);
        assert_eq!(entry_pages(PFN_MIGRATE), 1);
        assert_eq!(
            entry_pages(PFN_MIGRATE | PFN_COMPOUND),
            1 << HPAGE_PMD_ORDER
        );
    }

    #[test]
    fn outcomes_are_told_apart() {
        let entry = |src, dst, state| MigratedEntry {
            index: 0,
            addr: 0,
            src,
            dst,
            state,
            _m: PhantomData,
        };
        let valid = migrate_pfn_of(1);
        let moved = entry(valid | PFN_MIGRATE, valid, ST_DST);
        assert_eq!(moved.outcome(), Outcome::Migrated);
        assert!(moved.is_migrated());
        // A populated hole: no source page.
        assert_eq!(
            entry(PFN_MIGRATE, valid, ST_DST).outcome(),
            Outcome::Migrated
        );
        // `migrate_vma_pages()` clears `MIGRATE` where there is no destination: `state` tells a
        // hole without one from an entry never collected.
        assert_eq!(
            entry(0, 0, ST_NO_DST).outcome(),
            Outcome::NotMigrated(Reason::NoDestination)
        );
        assert_eq!(
            entry(0, 0, ST_UNCOLLECTED).outcome(),
            Outcome::NotMigrated(Reason::NotCollected)
        );
        assert_eq!(
            entry(valid, valid, ST_DST | ST_SPLIT | ST_SPLIT_FAILED).outcome(),
            Outcome::NotMigrated(Reason::SplitFailed)
        );
        // `keep_on_node()` clears `MIGRATE` and says why.
        assert_eq!(
            entry(valid, 0, ST_ON_NODE).outcome(),
            Outcome::NotMigrated(Reason::OnNode)
        );
        // Kept back by `pages()`: a file page or one under writeback for system memory.
        assert_eq!(
            entry(valid, 0, ST_KEPT_FILE).outcome(),
            Outcome::NotMigrated(Reason::FileBacked)
        );
        assert_eq!(
            entry(valid, 0, ST_KEPT_WRITEBACK).outcome(),
            Outcome::NotMigrated(Reason::Busy)
        );
        // Kept states are not taken for split or hole bits.
        for kept in [ST_ON_NODE, ST_KEPT_FILE, ST_KEPT_WRITEBACK] {
            assert_eq!(kept & (ST_SPLIT | ST_HOLE), 0);
        }
        assert!(!Reason::OnNode.retry_can_help());
    }

    #[test]
    fn memory_nodes_are_nodes_with_memory() {
        // Some node has memory on any machine that boots.
        let max = bindings::MAX_NUMNODES as i32;
        let node = (0..max).find_map(|nid| MemoryNode::new(nid).ok());
        assert!(node.is_some_and(|n| MemoryNode::new(n.id()) == Ok(n)));
        for nid in [-1, max, i32::MAX, i32::MIN] {
            assert_eq!(MemoryNode::new(nid), Err(ENODEV));
        }
    }

    #[test]
    fn reasons_of_uncollected_entries() {
        use PageKind::*;
        let sys = Select::System.into();
        let private = Select::DevicePrivate.into();
        let page = |kind, pinned, large| Seen::Page {
            kind,
            pinned,
            large,
        };
        let own_private = DevicePrivate { local: true };
        let own_coherent = DeviceCoherent { local: true };
        let their_coherent = DeviceCoherent { local: false };
        let cases = [
            (Seen::NotPresent, sys, Reason::NotPresent),
            (Seen::NotPresent, private, Reason::NotPresent),
            (Seen::Error, sys, Reason::Unsupported),
            (page(Zero, false, false), private, Reason::ZeroPage),
            (page(System, false, false), private, Reason::NotSelected),
            (page(System, true, false), sys, Reason::Pinned),
            (page(System, false, true), sys, Reason::SplitFailed),
            (page(System, false, false), sys, Reason::Busy),
            (page(own_private, false, false), sys, Reason::NotSelected),
            (page(own_private, false, false), private, Reason::Busy),
            (page(their_coherent, false, false), sys, Reason::OtherOwner),
            (
                page(own_coherent, false, false),
                private,
                Reason::NotSelected,
            ),
        ];
        for (seen, select, want) in cases {
            assert_eq!(Reason::of_uncollected(seen, select), want);
        }
        assert!(Reason::Busy.retry_can_help());
        assert!(!Reason::Pinned.retry_can_help());
        assert!(!Reason::NotPresent.retry_can_help());
    }

    #[test]
    fn memmap_arithmetic_is_the_c_one() -> Result {
        let page = kernel::page::Page::alloc_page(GFP_KERNEL)?;
        let raw = page.as_ptr();
        // SAFETY: `raw` is a valid page; these only compute from it or read its flags.
        let (pfn, zone_device) = unsafe {
            (
                bindings::page_to_pfn(raw),
                bindings::is_zone_device_page(raw),
            )
        };
        assert_eq!(crate::page_ext::page_to_pfn(raw), pfn);
        // SAFETY: `pfn` has a `struct page`; `pfn_to_page()` only computes its address.
        assert_eq!(crate::page_ext::pfn_to_page(pfn), unsafe {
            bindings::pfn_to_page(pfn)
        });
        // SAFETY: `raw` is a valid page.
        let rust_zone_device = unsafe { crate::page_ext::is_zone_device_page(raw) };
        assert_eq!(rust_zone_device, zone_device);
        assert!(!zone_device);
        let mpfn = migrate_pfn_of(pfn);
        // SAFETY: `migrate_pfn_to_page()` only decodes the entry.
        assert_eq!(migrate_pfn_to_page(mpfn), unsafe {
            bindings::migrate_pfn_to_page(mpfn)
        });
        assert!(migrate_pfn_to_page(mpfn & !PFN_VALID).is_null());
        Ok(())
    }

    #[test]
    fn pfn_arrays_have_their_capacity() -> Result {
        let mut pfns = MigratePfns::new(512)?;
        assert_eq!(pfns.capacity(), 512);
        let (src, dst, state) = pfns.arrays();
        assert!(src.len() == 512 && dst.len() == 512 && state.len() == 512);
        assert!(src.iter().all(|&x| x == 0) && dst.iter().all(|&x| x == 0));
        let mut one = MigratePfns::one();
        assert_eq!(one.capacity(), 1);
        let (src, dst, state) = one.arrays();
        assert!(src.len() == 1 && dst.len() == 1 && state.len() == 1);
        Ok(())
    }
}
