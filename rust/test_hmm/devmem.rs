// SPDX-License-Identifier: GPL-2.0

//! Device memory of a dmirror device: device-private chunks of 256 MiB
//! (`DevicePagemap`), the free list of idle device pages, and the callbacks
//! the kernel makes into it (`folio_free`, `migrate_to_ram`).
//!
//! A device-private page has no memory of its own (the "device" is fake):
//! each page in use carries a [`PageData`] with the system page that backs
//! it. Locking: the chunk list mutex is taken before the free-list spinlock.

use crate::{
    memremap::{
        DeviceFault, DevicePage, DevicePagemap, DevicePagemapOps, FreeDevicePage, LockedDevicePage,
        PagemapOwner, VmFaultResult,
    },
    migrate::{MigratePfns, MigrateVma, Select},
    page_ext,
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox, KVVec, KVec},
    new_mutex, new_spinlock,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, Mutex, SpinLock},
};

/// Size of one chunk of device memory (`DEVMEM_CHUNK_SIZE`).
pub(crate) const CHUNK_SIZE: usize = 256 << 20;

/// `HMM_DMIRROR_FLAG_FAIL_ALLOC`: make the next device allocation fail.
pub(crate) const FLAG_FAIL_ALLOC: u64 = crate::bindings::HMM_DMIRROR_FLAG_FAIL_ALLOC as u64;

/// State of one open mirror that its device pages need after the file is
/// gone (the fault path reads the flags of the mirror that migrated a page).
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

/// What a device page in use carries.
pub(crate) struct PageData {
    /// The system page holding a device-private page's contents; `None`
    /// for device-coherent pages, which hold their contents themselves.
    pub(crate) backing: Option<Page>,
}

/// Runs `f` on the page that holds the contents of `dpage`: its backing
/// page if device-private, the page itself if device-coherent.
pub(crate) fn with_contents<R>(
    dpage: &DevicePage<DmirrorMem>,
    f: impl FnOnce(&Page) -> Result<R>,
) -> Result<R> {
    if let Some(page) = dpage.cpu_page() {
        return f(&page);
    }
    match &dpage.data().backing {
        Some(backing) => f(backing),
        None => Err(EINVAL),
    }
}

/// What memory a dmirror device has.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemKind {
    /// Device-private chunks, allocated as needed (`MEMORY_DEVICE_PRIVATE`).
    Private,
    /// One chunk of device-coherent memory at this physical address
    /// (`MEMORY_DEVICE_COHERENT`, `spm_addr_dev*`).
    Coherent(u64),
}

/// Idle device pages and the allocation counters.
struct FreeInner {
    /// Room for every page of every chunk, so that `folio_free` never
    /// allocates (it may run in atomic context).
    pages: KVVec<FreeDevicePage<DmirrorMem>>,
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
    /// Set while the chunk is being removed: freed pages are not recycled.
    removing: AtomicBool,
}

#[vtable]
impl DevicePagemapOps for DmirrorMem {
    type PageData = KBox<PageData>;

    fn folio_free(pagemap: &DevicePagemap<Self>, page: FreeDevicePage<Self>, data: KBox<PageData>) {
        // Frees the backing page.
        drop(data);
        let mem = pagemap.data();
        let mut free = mem.free.inner.lock();
        free.cfree += 1;
        if !mem.removing.load(Ordering::Relaxed) {
            // The list has room for every page of every chunk (`add_chunk`),
            // so this neither allocates nor fails.
            let _ = free.pages.push_within_capacity(page);
        }
    }

    fn migrate_to_ram(fault: &DeviceFault<'_, Self>) -> VmFaultResult {
        match fault_to_ram(fault) {
            Ok(()) => VmFaultResult::Ok,
            Err(e) if e == ENOMEM => VmFaultResult::Oom,
            Err(_) => VmFaultResult::SigBus,
        }
    }

    fn copy_to_ram(src: &DevicePage<Self>, _data: &PageData, dst: &Page) {
        // Both are CPU-accessible pages: this cannot fail.
        let _ = with_contents(src, |page| page_ext::copy(dst, page));
    }
}

/// The CPU touched a device page: bring it back (`dmirror_devmem_fault`).
fn fault_to_ram(fault: &DeviceFault<'_, DmirrorMem>) -> Result {
    let addr = fault.address() & !(PAGE_SIZE - 1);
    let mut pfns = MigratePfns::new(1)?;
    let owner = fault.page().pagemap().owner();
    let mut mig = MigrateVma::setup_from_fault(
        fault,
        addr,
        addr + PAGE_SIZE,
        Select::DevicePrivate.into(),
        &mut pfns,
    )?;
    copy_back(&mut mig, owner)?;
    mig.pages().finalize();
    Ok(())
}

/// Gives every collected device page of `mig` a system page with its
/// contents (`dmirror_devmem_fault_alloc_and_copy`).
pub(crate) fn copy_back(mig: &mut crate::migrate::Collected<'_>, owner: &PagemapOwner) -> Result {
    let vma = mig.vma();
    mig.for_each_entry(|mut e| {
        if !e.can_migrate() {
            return Ok(());
        }
        let Some(src) = e.src_page() else {
            return Ok(());
        };
        let Some(dpage) = DevicePage::<DmirrorMem>::from_page(&src, owner) else {
            return Ok(());
        };
        let dst = crate::migrate::LockedSystemPage::alloc_for_vma(vma, e.addr())?;
        with_contents(dpage, |page| page_ext::copy(&dst.page(), page))?;
        e.set_dst(dst)
    })
}

/// The chunks of a device and, shared with them, its free list.
struct Chunks {
    pagemaps: KVec<Pin<KBox<DevicePagemap<DmirrorMem>>>>,
    free: Arc<FreeList>,
}

impl Chunks {
    /// Moves every page of every chunk back to system memory and removes
    /// the chunks (`dmirror_device_remove_chunks`).
    ///
    /// The idle pages go first: each holds a reference on its chunk, which
    /// `memunmap_pages()` would wait for forever.
    fn remove_all(&mut self) {
        for chunk in self.pagemaps.iter() {
            chunk.data().removing.store(true, Ordering::Relaxed);
        }
        // Idle pages of the chunks being removed must not be handed out.
        self.free.inner.lock().pages.clear();
        // Dropping a chunk evicts its pages in use and unmaps it.
        self.pagemaps.clear();
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        self.remove_all();
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
    /// (`dmirror_allocate_chunk`). A device-coherent device has exactly one
    /// chunk, its special purpose memory: asking for a second is `ENOMEM`
    /// (where test_hmm.c remaps the same range, WARNs and later Oopses).
    pub(crate) fn add_chunk(&self) -> Result {
        let mut chunks = self.chunks.lock();
        let npages = CHUNK_SIZE / PAGE_SIZE;
        // A free list with room for every page of every chunk, the new one
        // included, allocated before the spinlock is taken.
        let total = (chunks.pagemaps.len() + 1) * npages;
        let mut list = KVVec::with_capacity(total, GFP_KERNEL)?;
        chunks.pagemaps.reserve(1, GFP_KERNEL)?;
        let mem = DmirrorMem {
            free: self.free.clone(),
            removing: AtomicBool::new(false),
        };
        let pagemap = match self.kind {
            MemKind::Private => KBox::pin_init(
                DevicePagemap::new_private(CHUNK_SIZE, self.owner.clone(), None, mem),
                GFP_KERNEL,
            )?,
            MemKind::Coherent(_) if !chunks.pagemaps.is_empty() => return Err(ENOMEM),
            MemKind::Coherent(phys) => KBox::pin_init(
                DevicePagemap::new_coherent(phys, CHUNK_SIZE, self.owner.clone(), None, mem),
                GFP_KERNEL,
            )?,
        };
        for page in pagemap.take_free_pages() {
            // Cannot fail: `list` has room for every page.
            let _ = list.push_within_capacity(page);
        }
        let old = {
            let mut free = self.free.inner.lock();
            while let Some(page) = free.pages.pop() {
                let _ = list.push_within_capacity(page);
            }
            core::mem::replace(&mut free.pages, list)
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

    /// Allocates a device page carrying `data`, adding a chunk if none is
    /// free (`dmirror_devmem_alloc_page`).
    pub(crate) fn alloc_page(&self, data: KBox<PageData>) -> Result<LockedDevicePage<DmirrorMem>> {
        loop {
            let page = {
                let mut free = self.free.inner.lock();
                let page = free.pages.pop();
                if page.is_some() {
                    free.calloc += 1;
                }
                page
            };
            if let Some(page) = page {
                return Ok(page.activate(data));
            }
            self.add_chunk()?;
        }
    }

    /// Removes every chunk, moving its pages in use back to system memory
    /// (`HMM_DMIRROR_RELEASE`).
    pub(crate) fn remove_chunks(&self) {
        self.chunks.lock().remove_all();
    }
}
