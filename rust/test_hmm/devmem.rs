// SPDX-License-Identifier: GPL-2.0

//! Device memory of a dmirror device: device-private chunks of 256 MiB (`DevicePagemap`), the free
//! lists of idle device pages and of idle PMD-sized blocks (for THPs), and the callbacks the kernel
//! makes into it (`folio_free`, `migrate_to_ram`, `folio_split`).
//!
//! A device-private page has no memory of its own (the "device" is fake): each folio in use carries
//! a [`PageData`] with the block of system pages that backs it. A chunk's pages are backed in
//! PMD-sized blocks, one allocation of 512 system pages for 512 device pages, made when the first
//! of them goes into use and freed when the last is freed ([`DmirrorMem::backing`]): no page of
//! system memory is allocated or freed per device page. Locking: the chunk list mutex is taken
//! before the free-list spinlock; neither is held while a chunk is unregistered. A chunk's block
//! table has a spinlock of its own, taken with no other held.

#![forbid(unsafe_code)]

use crate::{
    mm::{
        memremap::{
            CoherentMemory, DeviceFault, DevicePage, DevicePagemap, DevicePagemapOps,
            FreeDeviceFolio, LockedDeviceFolio, PageRef, PagemapOwner, VmFaultResult,
        },
        migrate::{Collected, LockedSystemFolio, MigratePfns, MigrateVma, Select, HPAGE_PMD_ORDER},
    },
    page_ext::{CpuPage, PageBlock, PageExt},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    alloc::{flags::GFP_KERNEL, KVVec, KVec},
    new_mutex, new_spinlock,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, ArcBorrow, LockedBy, Mutex, SpinLock, UniqueArc},
    time::Delta,
};

/// Size of one chunk of device memory (`DEVMEM_CHUNK_SIZE`).
pub(crate) const CHUNK_SIZE: usize = 256 << 20;

/// `HMM_DMIRROR_FLAG_FAIL_ALLOC`: make the next device allocation fail.
pub(crate) const FLAG_FAIL_ALLOC: u64 = crate::bindings::HMM_DMIRROR_FLAG_FAIL_ALLOC as u64;

/// State of one open mirror that its device pages need after the file is gone (the fault path reads
/// the flags of the mirror that migrated a page).
pub(crate) struct MirrorShared {
    /// The `HMM_DMIRROR_FLAGS` of the mirror.
    pub(crate) flags: AtomicU64,
}

impl MirrorShared {
    /// Consumes `HMM_DMIRROR_FLAG_FAIL_ALLOC` if set.
    pub(crate) fn take_fail_alloc(&self) -> bool {
        self.flags.fetch_and(!FLAG_FAIL_ALLOC, Ordering::Relaxed) & FLAG_FAIL_ALLOC != 0
    }
}

/// What a device folio in use carries. Shared (`Arc`) by the folios a large folio is split into, so
/// that a split neither allocates nor copies.
pub(crate) struct PageData {
    /// The mirror that migrated the folio (its `HMM_DMIRROR_FLAGS`).
    pub(crate) mirror: Arc<MirrorShared>,
    /// The system pages holding a device-private folio's contents: page `i` of the block backs the
    /// device page at pfn `base_pfn + i`. `None` for device-coherent pages, which hold their
    /// contents themselves. Usually the block of its chunk that the folio lies in, shared with the
    /// other folios there; a block of the folio's own if that could not be allocated.
    backing: Option<Arc<PageBlock>>,
    /// The pfn of the first device page the block backs.
    base_pfn: usize,
}

/// Runs `f` on the page that holds the contents of `page`: a system page itself, or for a device
/// page of `owner` what [`with_contents`] gives. A device page of another owner is `EINVAL` if the
/// CPU cannot access it.
pub(crate) fn with_page_contents<R>(
    page: PageRef<'_>,
    owner: &PagemapOwner,
    f: impl FnOnce(&CpuPage<'_>) -> Result<R>,
) -> Result<R> {
    if let Some(dpage) = page.device().and_then(|d| d.downcast::<DmirrorMem>(owner)) {
        return with_contents(dpage, f);
    }
    let page = page.cpu_page().ok_or(EINVAL)?;
    f(&page)
}

/// Runs `f` on the page that holds the contents of `dpage`: its backing page if device-private, the
/// page itself if device-coherent.
pub(crate) fn with_contents<R>(
    dpage: &DevicePage<DmirrorMem>,
    f: impl FnOnce(&CpuPage<'_>) -> Result<R>,
) -> Result<R> {
    let data = dpage.data();
    if let Some(backing) = data.backing.as_ref() {
        let page = backing
            .page(dpage.pfn().wrapping_sub(data.base_pfn))
            .ok_or(EINVAL)?;
        return f(&page);
    }
    let page = dpage.cpu_page().ok_or(EINVAL)?;
    f(&page)
}

/// Runs `f(i, contents)` for each of the first `n` pages of the folio that `head` heads, whose page
/// data is `data`, as [`with_contents`] does for one page, looking the page data up once for all
/// of them (a THP has 512).
fn for_each_contents(
    head: &DevicePage<DmirrorMem>,
    data: &PageData,
    n: usize,
    mut f: impl FnMut(usize, &CpuPage<'_>) -> Result,
) -> Result {
    if let Some(backing) = data.backing.as_ref() {
        let off = head.pfn().wrapping_sub(data.base_pfn);
        for i in 0..n {
            let page = backing.page(off + i).ok_or(EINVAL)?;
            f(i, &page)?;
        }
        return Ok(());
    }
    for i in 0..n {
        let sub = match i {
            0 => head,
            _ => head.folio_page(i).ok_or(EINVAL)?,
        };
        let page = sub.cpu_page().ok_or(EINVAL)?;
        f(i, &page)?;
    }
    Ok(())
}

/// What memory a dmirror device has.
#[derive(Clone, Copy)]
pub(crate) enum MemKind {
    /// Device-private chunks, allocated as needed (`MEMORY_DEVICE_PRIVATE`).
    Private,
    /// One chunk of device-coherent memory (`MEMORY_DEVICE_COHERENT`, `spm_addr_dev*`).
    Coherent(CoherentMemory),
}

/// Idle device pages and the allocation counters.
///
/// # Invariants
///
/// `pages` has room for every page of every chunk of the device and `folios` for every
/// `HPAGE_PMD_ORDER` block of them (`add_chunk` sizes them before adding a chunk), so putting back
/// a page or block never fails: no idle page is ever dropped on the floor.
struct FreeInner {
    /// Idle single pages. Room for every page of every chunk, so that `folio_free` never allocates
    /// (it may run in atomic context).
    pages: KVVec<FreeDeviceFolio<DmirrorMem>>,
    /// Idle blocks of `HPAGE_PMD_ORDER` pages, for THPs (device-private memory only). Room for
    /// every block of every chunk.
    folios: KVVec<FreeDeviceFolio<DmirrorMem>>,
    /// The data of freed device folios, emptied, for the next ones: a small allocation is made once
    /// per device page in use at a time, not once per migration. At most one per device page
    /// (`add_chunk` reserves room for every page of every chunk), as its `struct page`.
    shells: KVVec<UniqueArc<PageData>>,
    /// Pages handed out (`calloc`).
    calloc: u64,
    /// Pages given back (`cfree`).
    cfree: u64,
}

/// The free list of a device, shared with its chunks' `folio_free`.
#[pin_data]
pub(crate) struct FreeList {
    #[pin]
    inner: SpinLock<FreeInner>,
}

/// Per-chunk data: what `folio_free` needs.
pub(crate) struct DmirrorMem {
    free: Arc<FreeList>,
    /// The system memory behind the chunk's device-private pages, one slot per PMD-sized block of
    /// them from the chunk's first pfn on (none for device-coherent memory), under the device's
    /// free-list lock, which every allocation and free of a page takes anyway.
    blocks: LockedBy<KVVec<BlockSlot>, FreeInner>,
}

/// The backing of one PMD-sized block of device-private pages.
///
/// # Invariants
///
/// `block` is `Some` only while `users > 0` (an allocation may have failed meanwhile: `None` then
/// too).
#[derive(Default)]
struct BlockSlot {
    /// The system pages backing the block, shared with the [`PageData`] of its folios in use.
    block: Option<Arc<PageBlock>>,
    /// How many pages of the block are in use.
    users: usize,
}

impl DmirrorMem {
    /// Per-chunk data for a chunk of `npages` pages; `private`: with a block table for backing.
    fn new(free: Arc<FreeList>, npages: usize, private: bool) -> Result<Self> {
        let mut slots = KVVec::new();
        if private {
            let n = npages.div_ceil(1 << HPAGE_PMD_ORDER);
            slots.reserve(n, GFP_KERNEL)?;
            for _ in 0..n {
                slots
                    .push_within_capacity(BlockSlot::default())
                    .map_err(|_| ENOMEM)?;
            }
        }
        let blocks = LockedBy::new(&free.inner, slots);
        Ok(Self { free, blocks })
    }

    /// The slot of the block holding `pfn`, in the chunk whose first pfn is `first`, with the pfn
    /// the block's first page backs; `None` for device-coherent memory.
    fn slot<'a>(
        &'a self,
        free: &'a mut FreeInner,
        first: usize,
        pfn: usize,
    ) -> Option<(&'a mut BlockSlot, usize)> {
        let index = pfn.wrapping_sub(first) >> HPAGE_PMD_ORDER;
        let slot = self.blocks.access_mut(free).get_mut(index)?;
        Some((slot, first + (index << HPAGE_PMD_ORDER)))
    }

    /// Counts the `1 << order` pages from `pfn` on as in use; returns their block's backing if it
    /// has one, with the pfn its first page backs.
    fn get_block(
        &self,
        free: &mut FreeInner,
        first: usize,
        pfn: usize,
        order: u32,
    ) -> (Option<Arc<PageBlock>>, usize) {
        match self.slot(free, first, pfn) {
            Some((slot, base)) => {
                slot.users += 1 << order;
                (slot.block.clone(), base)
            }
            None => (None, pfn),
        }
    }

    /// Gives the block holding `pfn`, some of whose pages are counted in use, the backing `new`
    /// unless a racing allocation gave it one first. Returns the backing to use, and the one to
    /// drop (outside the lock).
    fn set_block(
        &self,
        free: &mut FreeInner,
        first: usize,
        pfn: usize,
        new: Arc<PageBlock>,
    ) -> (Arc<PageBlock>, Option<Arc<PageBlock>>) {
        match self.slot(free, first, pfn) {
            Some((slot, _)) => match &slot.block {
                Some(block) => (block.clone(), Some(new)),
                None => {
                    // INVARIANT: The caller's pages are counted: `users > 0`.
                    slot.block = Some(new.clone());
                    (new, None)
                }
            },
            None => (new, None),
        }
    }

    /// The `1 << order` pages from `pfn` on are no longer in use. Returns the block's backing if
    /// none of its pages is any more, to drop outside the lock (it is freed when the last folio
    /// sharing it lets go of it too).
    fn put_block(
        &self,
        free: &mut FreeInner,
        first: usize,
        pfn: usize,
        order: u32,
    ) -> Option<Arc<PageBlock>> {
        let (slot, _) = self.slot(free, first, pfn)?;
        slot.users = slot.users.saturating_sub(1 << order);
        // INVARIANT: No page in use: no block.
        if slot.users == 0 {
            slot.block.take()
        } else {
            None
        }
    }
}

/// A device folio [`DeviceMemory::take`] handed out, not in use yet.
struct Taken {
    page: FreeDeviceFolio<DmirrorMem>,
    /// The backing of its block, if it has one yet, and the pfn its first page backs.
    block: Option<Arc<PageBlock>>,
    base_pfn: usize,
    /// An emptied [`PageData`] to fill, if one was kept.
    shell: Option<UniqueArc<PageData>>,
}

impl FreeInner {
    /// Puts an idle page or block back on its list. The lists have room for every page and block of
    /// every chunk (`add_chunk`), so this neither allocates nor fails.
    fn put(&mut self, page: FreeDeviceFolio<DmirrorMem>) {
        match page.order() {
            0 => {
                let _ = self.pages.push_within_capacity(page);
            }
            HPAGE_PMD_ORDER => {
                let _ = self.folios.push_within_capacity(page);
            }
            _ => {
                for p in page.split() {
                    let _ = self.pages.push_within_capacity(p);
                }
            }
        }
    }

    /// Puts back a page [`FreeInner::take`] handed out and that never went into use, unless its
    /// chunk is being removed: then it is returned, to be dropped outside the lock.
    fn untake(
        &mut self,
        page: FreeDeviceFolio<DmirrorMem>,
        removing: bool,
    ) -> Option<FreeDeviceFolio<DmirrorMem>> {
        self.calloc -= 1 << page.order();
        if removing {
            return Some(page);
        }
        self.put(page);
        None
    }

    /// Takes an idle block of `order` (0 or `HPAGE_PMD_ORDER`); a single page is split off a block
    /// if none is left.
    fn take(&mut self, order: u32) -> Option<FreeDeviceFolio<DmirrorMem>> {
        let page = match order {
            0 => self.pages.pop().or_else(|| {
                let mut pages = self.folios.pop()?.split();
                let first = pages.next();
                for p in pages {
                    let _ = self.pages.push_within_capacity(p);
                }
                first
            }),
            _ => self.folios.pop(),
        }?;
        self.calloc += 1 << page.order();
        Some(page)
    }
}

#[vtable]
impl DevicePagemapOps for DmirrorMem {
    type PageData = Arc<PageData>;

    fn folio_free(pagemap: &DevicePagemap<Self>, page: FreeDeviceFolio<Self>, data: Arc<PageData>) {
        let mem = pagemap.data();
        let (pfn, order) = (page.pfn(), page.order());
        // The data nobody else shares (after a split, folios share it) is emptied and kept; its
        // hold on the backing goes.
        let mut backing = None;
        let shell = Arc::into_unique_or_drop(data).map(|d| {
            let mut d = Pin::into_inner(d);
            backing = d.backing.take();
            d
        });
        let mut free = mem.free.inner.lock();
        let block = mem.put_block(&mut free, pagemap.pfn_range().start, pfn, order);
        free.cfree += 1 << order;
        let lost = shell.and_then(|d| free.shells.push_within_capacity(d).err());
        // Tested under the free-list lock, under which `begin_removal()` drains the list once it
        // has marked the chunk: a page of a chunk being removed never stays on the list.
        if !pagemap.is_removing() {
            free.put(page);
        }
        drop(free);
        // Outside the spinlock, though freeing pages and small objects does not sleep.
        drop((block, backing, lost));
    }

    fn folio_split(data: ArcBorrow<'_, PageData>, _offset: usize, _order: u32) -> Arc<PageData> {
        // The new folio shares the block: its pages' pfns index it as before.
        data.into()
    }

    fn migrate_to_ram(fault: &mut DeviceFault<'_, Self>) -> VmFaultResult {
        match fault_to_ram(fault) {
            Ok(()) => VmFaultResult::Ok,
            Err(e) if e == ENOMEM => VmFaultResult::Oom,
            Err(_) => VmFaultResult::SigBus,
        }
    }

    fn copy_to_ram(src: &DevicePage<Self>, _data: ArcBorrow<'_, PageData>, dst: &Page) {
        // Both are CPU-accessible pages: this cannot fail.
        let _ = with_contents(src, |page| dst.copy_from(page));
    }
}

/// The CPU touched a device page: bring it back (`dmirror_devmem_fault`), the whole folio if it is
/// mapped whole (by a PMD), else the one page.
fn fault_to_ram(fault: &mut DeviceFault<'_, DmirrorMem>) -> Result {
    let order = if fault.is_pmd_mapped() {
        fault.page().order()
    } else {
        0
    };
    let size = PAGE_SIZE << order;
    let start = fault.address() & !(size - 1);
    let mut pfns = match order {
        0 => MigratePfns::one(),
        _ => MigratePfns::new(1 << order)?,
    };
    let mut select = Select::DevicePrivate.into();
    if order > 0 {
        select |= Select::Compound;
    }
    let owner = fault.pagemap().owner();
    let mut mig = MigrateVma::setup_from_fault(fault, start, start + size, select, &mut pfns)?;
    copy_back(&mut mig, owner, None, false)?;
    mig.pages().finalize();
    Ok(())
}

/// Gives every collected device page of `mig` system memory with its contents
/// (`dmirror_devmem_fault_alloc_and_copy`): a device THP moves to a system THP, or page by page if
/// none is free or `mirror` (if `None`, the one that migrated the page to the device, as for a CPU
/// fault) has `HMM_DMIRROR_FLAG_FAIL_ALLOC` set (consumed; for a single page,
/// that page stays on the device and the migration goes on, where test_hmm.c fails it with
/// `ENOMEM`: a device-coherent THP is 512 single pages here, and hmm-tests' migrate_anon_huge_err
/// expects the migration back to succeed).
///
/// Out of system memory, the copy fails with `ENOMEM` (a fault then returns `VM_FAULT_OOM`, as
/// test_hmm.c's does), or with `partial` the entry stays on the device and the copy goes on, for a
/// caller that reports per page why (`HMM_RS_MIGRATE`: `NO_MEMORY`).
pub(crate) fn copy_back(
    mig: &mut Collected<'_>,
    owner: &PagemapOwner,
    mirror: Option<&MirrorShared>,
    partial: bool,
) -> Result {
    let vma = mig.vma();
    mig.for_each_entry(|mut e| {
        if !e.can_migrate() {
            return Ok(());
        }
        let Some(PageRef::Device(src)) = e.src_page() else {
            return Ok(());
        };
        let Some(dpage) = src.downcast::<DmirrorMem>(owner) else {
            return Ok(());
        };
        let data = dpage.data();
        let fail = mirror.unwrap_or(&data.mirror).take_fail_alloc();
        let n = e.nr_pages();
        if e.is_compound() && !fail {
            if let Ok(dst) = LockedSystemFolio::alloc_folio_for_vma(vma, e.addr(), e.order()) {
                for_each_contents(dpage, &data, n, |i, src| {
                    dst.subpage(i).ok_or(EINVAL)?.copy_from(src);
                    Ok(())
                })?;
                return e.set_dst(dst);
            }
        } else if fail && !e.is_compound() {
            return Ok(());
        }
        let addr = e.addr();
        let copied = for_each_contents(dpage, &data, n, |i, src| {
            let dst = LockedSystemFolio::alloc_for_vma(vma, addr + i * PAGE_SIZE)?;
            dst.page().copy_from(src);
            e.set_dst_at(i, dst)
        });
        match copied {
            // The pages of a huge entry given a destination so far are released by `pages()`.
            Err(err) if partial && err == ENOMEM => Ok(()),
            r => r,
        }
    })
}

/// The chunks of a device and, shared with them, its free list.
struct Chunks {
    /// Shared, so that `HMM_DMIRROR_RELEASE` can evict them without the lock.
    pagemaps: KVec<Arc<DevicePagemap<DmirrorMem>>>,
    free: Arc<FreeList>,
}

/// How long `HMM_DMIRROR_RELEASE` tries to evict a chunk's pages before it gives up with `EBUSY`.
const RELEASE_TIMEOUT: Delta = Delta::from_secs(1);

impl Chunks {
    /// Starts removing every chunk: from now on their freed pages go back to no one, and their idle
    /// pages, each of which holds a reference on its chunk, are dropped.
    fn begin_removal(&mut self) {
        for chunk in self.pagemaps.iter() {
            chunk.begin_removal();
        }
        // Under the lock `folio_free` tests `is_removing()` with.
        let mut free = self.free.inner.lock();
        let pages = core::mem::take(&mut free.pages);
        let folios = core::mem::take(&mut free.folios);
        let shells = core::mem::take(&mut free.shells);
        drop(free);
        // Dropped outside the spinlock.
        drop((pages, folios, shells));
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // Module unload: dropping a chunk evicts its pages in use until none is left, saying so in
        // the log while it waits.
        self.begin_removal();
    }
}

/// The device memory of one dmirror device.
#[pin_data]
pub(crate) struct DeviceMemory {
    kind: MemKind,
    owner: Arc<PagemapOwner>,
    free: Arc<FreeList>,
    #[pin]
    chunks: Mutex<Chunks>,
}

impl DeviceMemory {
    /// Device memory for pages owned by `owner`, without chunks yet.
    pub(crate) fn new(
        kind: MemKind,
        owner: Arc<PagemapOwner>,
    ) -> Result<impl PinInit<Self, Error>> {
        let free = Arc::pin_init(
            pin_init!(FreeList {
                inner <- new_spinlock!(FreeInner {
                    pages: KVVec::new(),
                    folios: KVVec::new(),
                    shells: KVVec::new(),
                    calloc: 0,
                    cfree: 0,
                }),
            }),
            GFP_KERNEL,
        )?;
        Ok(try_pin_init!(Self {
            kind,
            owner,
            chunks <- new_mutex!(Chunks {
                pagemaps: KVec::new(),
                free: free.clone(),
            }),
            free,
        }))
    }

    /// The owner of this memory's pages.
    pub(crate) fn owner(&self) -> &PagemapOwner {
        &self.owner
    }

    /// What memory this is.
    pub(crate) fn kind(&self) -> MemKind {
        self.kind
    }

    /// The owner of this memory's pages, shared.
    pub(crate) fn owner_arc(&self) -> Arc<PagemapOwner> {
        self.owner.clone()
    }

    /// Adds one chunk of device memory and puts its pages on the free list
    /// (`dmirror_allocate_chunk`). A device-coherent device has exactly one chunk, its special
    /// purpose memory: asking for a second is `ENOMEM` (where test_hmm.c remaps the same range,
    /// WARNs and later Oopses).
    pub(crate) fn add_chunk(&self) -> Result {
        let mut chunks = self.chunks.lock();
        let npages = CHUNK_SIZE / PAGE_SIZE;
        // Free lists with room for every page and block of every chunk, the new one included,
        // allocated before the spinlock is taken.
        let total = (chunks.pagemaps.len() + 1) * npages;
        let mut pages = KVVec::with_capacity(total, GFP_KERNEL)?;
        let mut folios = KVVec::with_capacity(total >> HPAGE_PMD_ORDER, GFP_KERNEL)?;
        let mut shells = KVVec::with_capacity(total, GFP_KERNEL)?;
        chunks.pagemaps.reserve(1, GFP_KERNEL)?;
        let private = matches!(self.kind, MemKind::Private);
        let mem = DmirrorMem::new(self.free.clone(), npages, private)?;
        let pagemap = match self.kind {
            MemKind::Private => Arc::pin_init(
                DevicePagemap::new_private(CHUNK_SIZE, self.owner.clone(), None, mem),
                GFP_KERNEL,
            )?,
            MemKind::Coherent(_) if !chunks.pagemaps.is_empty() => return Err(ENOMEM),
            MemKind::Coherent(range) => Arc::pin_init(
                DevicePagemap::new_coherent(range, self.owner.clone(), None, mem),
                GFP_KERNEL,
            )?,
        };
        // Device-private chunks come in THP-sized blocks, split into single pages on demand;
        // device-coherent memory in single pages (the core cannot split device-coherent folios for
        // us).
        let order = if pagemap.supports_order(HPAGE_PMD_ORDER) {
            HPAGE_PMD_ORDER
        } else {
            0
        };
        for page in pagemap.take_free_pages(order)? {
            // Cannot fail: the lists have room for every page and block.
            let _ = match page.order() {
                0 => pages.push_within_capacity(page),
                _ => folios.push_within_capacity(page),
            };
        }
        let old = {
            let mut free = self.free.inner.lock();
            while let Some(page) = free.pages.pop() {
                let _ = pages.push_within_capacity(page);
            }
            while let Some(page) = free.folios.pop() {
                let _ = folios.push_within_capacity(page);
            }
            while let Some(shell) = free.shells.pop() {
                let _ = shells.push_within_capacity(shell);
            }
            (
                core::mem::replace(&mut free.pages, pages),
                core::mem::replace(&mut free.folios, folios),
                core::mem::replace(&mut free.shells, shells),
            )
        };
        // Freed outside the spinlock.
        drop(old);
        let (first, last) = (pagemap.pfn_range().start, pagemap.pfn_range().end);
        chunks.pagemaps.push(pagemap, GFP_KERNEL)?;
        pr_info!(
            "added new {} MB chunk (total {} chunks, {} MB) PFNs [{:#x} {:#x})\n",
            CHUNK_SIZE >> 20,
            chunks.pagemaps.len(),
            chunks.pagemaps.len() * (CHUNK_SIZE >> 20),
            first,
            last
        );
        Ok(())
    }

    /// Whether this memory has device folios of `order`: single pages always, THPs
    /// (`HPAGE_PMD_ORDER`) if device-private.
    pub(crate) fn has_order(&self, order: u32) -> bool {
        order == 0 || (order == HPAGE_PMD_ORDER && matches!(self.kind, MemKind::Private))
    }

    /// Takes an idle device folio of `order` (0 or `HPAGE_PMD_ORDER`), adding a chunk if none is
    /// free (`dmirror_devmem_alloc_page`), and counts it in use in its block. `ENOMEM` for an
    /// order the memory does not have ([`DeviceMemory::has_order`]). [`DeviceMemory::untake`]
    /// undoes it.
    fn take(&self, order: u32) -> Result<Taken> {
        if !self.has_order(order) {
            return Err(ENOMEM);
        }
        for retry in [false, true] {
            if retry {
                self.add_chunk()?;
            }
            let mut free = self.free.inner.lock();
            let Some(page) = free.take(order) else {
                continue;
            };
            let pagemap = page.pagemap();
            let (block, base_pfn) =
                pagemap
                    .data()
                    .get_block(&mut free, pagemap.pfn_range().start, page.pfn(), order);
            let shell = free.shells.pop();
            return Ok(Taken {
                page,
                block,
                base_pfn,
                shell,
            });
        }
        Err(ENOMEM)
    }

    /// Gives back what [`DeviceMemory::take`] handed out, unused.
    fn untake(&self, page: FreeDeviceFolio<DmirrorMem>, shell: Option<UniqueArc<PageData>>) {
        let pagemap = page.pagemap();
        let (first, pfn, order) = (pagemap.pfn_range().start, page.pfn(), page.order());
        let mut free = self.free.inner.lock();
        let block = pagemap.data().put_block(&mut free, first, pfn, order);
        let lost = shell.and_then(|d| free.shells.push_within_capacity(d).err());
        // As in `folio_free`: tested under the free-list lock, so that a page of a chunk being
        // removed never goes back on the list.
        let removing = pagemap.is_removing();
        let page = free.untake(page, removing);
        drop(free);
        drop((block, lost, page));
    }

    /// The backing of `page` (of `order`), whose block has none yet: a new block for it, allocated
    /// without trying hard, or if there is none a block of the folio's own. Returns it with the pfn
    /// its first page backs.
    fn new_backing(
        &self,
        page: &FreeDeviceFolio<DmirrorMem>,
        order: u32,
    ) -> Result<(Arc<PageBlock>, usize)> {
        let pagemap = page.pagemap();
        let (first, pfn) = (pagemap.pfn_range().start, page.pfn());
        match PageBlock::try_alloc(HPAGE_PMD_ORDER).and_then(|b| Ok(Arc::new(b, GFP_KERNEL)?)) {
            Ok(new) => {
                let mut free = self.free.inner.lock();
                let (block, lost) = pagemap.data().set_block(&mut free, first, pfn, new);
                drop(free);
                drop(lost);
                let index = pfn.wrapping_sub(first) >> HPAGE_PMD_ORDER;
                Ok((block, first + (index << HPAGE_PMD_ORDER)))
            }
            Err(_) => Ok((Arc::new(PageBlock::alloc(order)?, GFP_KERNEL)?, pfn)),
        }
    }

    /// A new device folio of `order` holding the contents of `src(i)` for each page `i` (zeroes
    /// where `None`), migrated by `mirror`, with its backing (device-private). A source is a system
    /// page or a device page of `src_owner` (a device of this driver).
    pub(crate) fn alloc_copy<'p>(
        &self,
        order: u32,
        mirror: &Arc<MirrorShared>,
        src: impl Fn(usize) -> Option<PageRef<'p>>,
        src_owner: &PagemapOwner,
    ) -> Result<LockedDeviceFolio<DmirrorMem>> {
        let Taken {
            page,
            block,
            base_pfn,
            shell,
        } = self.take(order)?;
        let (backing, base_pfn) = match (self.kind, block) {
            (MemKind::Coherent(_), _) => (None, page.pfn()),
            (MemKind::Private, Some(block)) => (Some(block), base_pfn),
            (MemKind::Private, None) => match self.new_backing(&page, order) {
                Ok((block, base)) => (Some(block), base),
                Err(e) => {
                    self.untake(page, shell);
                    return Err(e);
                }
            },
        };
        let data = match shell {
            Some(mut d) => {
                d.mirror = mirror.clone();
                d.backing = backing;
                d.base_pfn = base_pfn;
                d
            }
            None => {
                let data = PageData {
                    mirror: mirror.clone(),
                    backing,
                    base_pfn,
                };
                match UniqueArc::new(data, GFP_KERNEL) {
                    Ok(d) => d,
                    Err(e) => {
                        self.untake(page, None);
                        return Err(e.into());
                    }
                }
            }
        };
        // From here on, dropping the folio frees it through `folio_free`.
        let dpage = page.activate(data.into());
        for_each_contents(&dpage, &dpage.data(), 1 << order, |i, dst| {
            match src(i) {
                Some(s) => with_page_contents(s, src_owner, |p| {
                    dst.copy_from(p);
                    Ok(())
                })?,
                None => dst.fill_zero(),
            }
            Ok(())
        })?;
        Ok(dpage)
    }

    /// Removes every chunk, moving its pages in use back to system memory (`HMM_DMIRROR_RELEASE`,
    /// `dmirror_device_remove_chunks`).
    ///
    /// The chunks are evicted without the chunk lock held: a migration that holds device pages of a
    /// chunk as destinations may be waiting for that lock to add a chunk, and eviction waits for
    /// those pages. Chunks whose pages cannot all be evicted within [`RELEASE_TIMEOUT`] (pages
    /// locked or pinned by others meanwhile, a THP with no free system THP to move to) stay in the
    /// list, being removed, and the call fails with `EBUSY` (`EINTR` if the task is killed); the
    /// next call tries them again. The others are dropped once no page of theirs is left, which
    /// does not wait.
    pub(crate) fn remove_chunks(&self) -> Result {
        let chunks = {
            let mut chunks = self.chunks.lock();
            let mut taken = KVec::with_capacity(chunks.pagemaps.len(), GFP_KERNEL)?;
            for chunk in chunks.pagemaps.iter() {
                // Cannot fail: there is room for every chunk.
                let _ = taken.push_within_capacity(chunk.clone());
            }
            chunks.begin_removal();
            taken
        };
        let mut ret = Ok(());
        for chunk in chunks.iter() {
            if let Err(e) = chunk.evict_all(RELEASE_TIMEOUT) {
                ret = Err(e);
                if e == EINTR {
                    break;
                }
            }
        }
        // The list lets go of the chunks with no page left (their last reference is normally
        // `chunks`, dropped after the lock; if it is the list's, dropping it does not wait either):
        // a chunk being removed never gets a page again.
        self.chunks
            .lock()
            .pagemaps
            .retain(|c| !(c.is_removing() && c.pages_held() == 0));
        drop(chunks);
        ret
    }
}
