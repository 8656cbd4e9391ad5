// SPDX-License-Identifier: GPL-2.0

//! The dmirror device files, `/dev/hmm_dmirror*`: each open file mirrors the opener's address space
//! into a device page table and serves the `lib/test_hmm_uapi.h` ioctls on it.
//!
//! Every ioctl takes user-controlled addresses and page counts. The rules that keep them harmless:
//! arithmetic on them cannot overflow ([`Range`] bounds the range, [`round_end`] the rounds within
//! it); work is done one round (at most [`BOUNCE_PAGES`], [`hmm::CHUNK_PAGES`] or [`MIGRATE_PAGES`]
//! pages) at a time, each round bounded by what the user's buffer and VMAs hold and checking for a
//! fatal signal first; and the mirror lock is never held across more than one round.

#![forbid(unsafe_code)]

use crate::{
    bindings::{self, hmm_dmirror_cmd},
    devmem::{self, DeviceMemory, MemKind, MirrorShared},
    miscdevice_data::MiscDeviceWithData,
    mm::{
        hmm::{
            self,
            mirror::{Mirror, MirrorGuard, MirrorOps, Perm, PtEntry},
            HmmPfn, HmmPfns, PageKind,
        },
        memremap::PagemapOwner,
        migrate::{Collected, MigratePfns, MigrateVma, MmapWriteGuard, Select, SelectFlags},
    },
    task_ext::TaskExt,
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    alloc::{
        flags::{__GFP_ZERO, GFP_KERNEL, GFP_KERNEL_ACCOUNT},
        KBox, KVVec,
    },
    fs::File,
    mm::{
        virt::{VmaNew, VmaRef},
        MmWithUser, MmapReadGuard,
    },
    new_spinlock,
    page::{Page, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{aref::ARef, Arc, SpinLock},
    uaccess::{UserPtr, UserSlice},
};

/// `PMD_SHIFT` and `PUD_SHIFT`.
const PMD_SHIFT: usize = bindings::HMM_RS_PMD_SHIFT as usize;
const PUD_SHIFT: usize = bindings::HMM_RS_PUD_SHIFT as usize;

/// Pages copied per round between the device and the user's buffer.
const BOUNCE_PAGES: usize = 64;
/// Pages per `migrate_vma` call (`PTRS_PER_PTE`, as test_hmm).
const MIGRATE_PAGES: usize = 512;

/// One dmirror device: `/dev/hmm_dmirror<id>`.
#[pin_data]
pub(crate) struct DmirrorDevice {
    /// The device number in the node name.
    pub(crate) id: usize,
    /// The owners of the pages of every device of the module, by device number: the
    /// device-to-device moves of `HMM_RS_MIGRATE` select the pages of another device by its owner.
    pub(crate) owners: Arc<KVec<Arc<PagemapOwner>>>,
    /// The device's memory.
    #[pin]
    pub(crate) mem: DeviceMemory,
}

impl DmirrorDevice {
    /// The dmirror device `id` with memory of `kind`, and its first chunk of it; its pages are
    /// `owners[id]`'s.
    pub(crate) fn new(
        id: usize,
        kind: MemKind,
        owners: Arc<KVec<Arc<PagemapOwner>>>,
    ) -> Result<Arc<Self>> {
        let owner = owners.get(id).ok_or(EINVAL)?.clone();
        let dev = Arc::pin_init(
            try_pin_init!(Self {
                id,
                owners,
                mem <- DeviceMemory::new(kind, owner)?,
            }),
            GFP_KERNEL,
        )?;
        dev.mem.add_chunk()?;
        Ok(dev)
    }
}

/// The device page table and state of one open file (guarded by the mirror's lock).
pub(crate) struct DmirrorState;

impl MirrorOps for DmirrorState {}

#[path = "migrate.rs"]
mod migrate;

/// One open `/dev/hmm_dmirror*` file.
#[pin_data]
pub(crate) struct Dmirror {
    device: Arc<DmirrorDevice>,
    shared: Arc<MirrorShared>,
    #[pin]
    mirror: Mirror<DmirrorState>,
    /// The bounce buffer of the last ioctl that used one, for the next ([`Dmirror::bounce`]).
    #[pin]
    bounce: SpinLock<Option<KVVec<u8>>>,
}

/// A buffer of [`BOUNCE_PAGES`] pages for copies between the device and the user's buffer, taken
/// from its file for one ioctl and given back when dropped: one allocation (zeroed) serves the
/// file's calls, not one per call. A call that finds the file's buffer taken by another allocates
/// its own. Each use writes what it copies out before it copies it, so what the buffer held
/// before never reaches the user; and it only ever held this file's data. It lives as long as the
/// file (charged to the memory cgroup of the task that made it).
struct Bounce<'a> {
    buf: KVVec<u8>,
    slot: &'a SpinLock<Option<KVVec<u8>>>,
}

impl core::ops::Deref for Bounce<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl core::ops::DerefMut for Bounce<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for Bounce<'_> {
    fn drop(&mut self) {
        let buf = core::mem::take(&mut self.buf);
        let extra = {
            let mut slot = self.slot.lock();
            match *slot {
                None => {
                    *slot = Some(buf);
                    None
                }
                Some(_) => Some(buf),
            }
        };
        // Freed outside the spinlock (`kvfree()` may sleep).
        drop(extra);
    }
}

/// The file operations of the dmirror devices.
pub(crate) struct DmirrorFile;

#[vtable]
impl MiscDeviceWithData for DmirrorFile {
    type Data = Arc<DmirrorDevice>;
    type Ptr = Pin<KBox<Dmirror>>;

    fn open(_file: &File, device: &Arc<DmirrorDevice>) -> Result<Self::Ptr> {
        let task = kernel::current!();
        let mm = task.mm().ok_or(EINVAL)?;
        let shared = Arc::new(
            MirrorShared {
                flags: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        KBox::pin_init(
            try_pin_init!(Dmirror {
                device: device.clone(),
                shared,
                mirror <- Mirror::new(mm, device.mem.owner_arc(), DmirrorState),
                bounce <- new_spinlock!(None),
            }),
            GFP_KERNEL,
        )
    }

    /// Maps zeroed pages into the whole VMA, so that user space has a `VM_MIXEDMAP` mapping to show
    /// the device (`dmirror_fops_mmap`).
    ///
    /// The pages are charged to the caller's memory cgroup, and the loop stops when the caller is
    /// killed (the OOM killer's choice, if the VMA is larger than memory): the core then unmaps
    /// what was mapped.
    fn mmap(_this: Pin<&Dmirror>, _file: &File, vma: &VmaNew) -> Result {
        let vma = vma.set_mixedmap();
        let mut addr = vma.start();
        while addr < vma.end() {
            check_killed()?;
            let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
            // The mapping takes its own reference; ours goes with `page`.
            vma.vm_insert_page(addr, &page)?;
            addr += PAGE_SIZE;
        }
        Ok(())
    }

    fn ioctl(this: Pin<&Dmirror>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd == bindings::HMM_RS_MIGRATE {
            return this.hmm_rs_migrate(arg).map(|()| 0);
        }
        let user = UserSlice::new(UserPtr::from_addr(arg), size_of::<hmm_dmirror_cmd>());
        let (mut reader, mut writer) = user.reader_writer();
        let mut c: hmm_dmirror_cmd = reader.read()?;
        let range = Range::from_cmd(&c)?;
        c.cpages = 0;
        c.faults = 0;
        match cmd {
            bindings::HMM_DMIRROR_READ => this.read(&range, &mut c)?,
            bindings::HMM_DMIRROR_WRITE => this.write(&range, &mut c)?,
            bindings::HMM_DMIRROR_MIGRATE_TO_DEV => this.migrate_to_device(&range, &mut c)?,
            bindings::HMM_DMIRROR_MIGRATE_TO_SYS => this.migrate_to_system(&range, &mut c)?,
            bindings::HMM_DMIRROR_SNAPSHOT => this.snapshot(&range, &mut c)?,
            bindings::HMM_DMIRROR_READ_UNLOCKED => this.read_unlocked(&range, &mut c)?,
            bindings::HMM_DMIRROR_EXCLUSIVE => this.exclusive(&range, &mut c)?,
            bindings::HMM_DMIRROR_CHECK_EXCLUSIVE => this.check_exclusive(&range)?,
            bindings::HMM_DMIRROR_RELEASE => this.device.mem.remove_chunks()?,
            bindings::HMM_DMIRROR_FLAGS => this.shared.flags.store(c.npages, Ordering::Relaxed),
            _ => return Err(EINVAL),
        }
        writer.write(&c)?;
        Ok(0)
    }
}

/// The validated range of an ioctl: page aligned, non-empty, no overflow.
struct Range {
    start: usize,
    end: usize,
    /// The user buffer of `npages` pages (`cmd.ptr`).
    ptr: usize,
}

impl Range {
    fn from_cmd(c: &hmm_dmirror_cmd) -> Result<Self> {
        Self::new(c.addr, c.npages, c.ptr)
    }

    /// `npages` pages from `addr`, with the user buffer at `ptr`.
    fn new(addr: u64, npages: u64, ptr: u64) -> Result<Self> {
        let start = usize::try_from(addr).map_err(|_| EINVAL)?;
        if start % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let size = usize::try_from(npages)
            .ok()
            .and_then(|n| n.checked_mul(PAGE_SIZE))
            .ok_or(EINVAL)?;
        let end = start.checked_add(size).ok_or(EINVAL)?;
        if end <= start {
            return Err(EINVAL);
        }
        Ok(Self {
            start,
            end,
            ptr: usize::try_from(ptr).map_err(|_| EINVAL)?,
        })
    }
}

/// The end of the round that starts at `addr`: `pages` pages on, or `end` if that comes first.
/// `addr < end`, so `end - addr` does not wrap and the sum is at most `end`: no overflow, however
/// close to the top of the address space the range lies.
fn round_end(addr: usize, end: usize, pages: usize) -> usize {
    addr + (end - addr).min(pages * PAGE_SIZE)
}

/// `EINTR` if the task is being killed: the loops of long ioctls check it once per round, so that a
/// huge range cannot hold up `kill -9`.
fn check_killed() -> Result {
    if current!().fatal_signal_pending() {
        return Err(EINTR);
    }
    Ok(())
}

/// Copies the page a device page table entry names into `buf`.
fn read_entry(owner: &PagemapOwner, e: &PtEntry<'_>, buf: &mut [u8]) -> Result {
    devmem::with_page_contents(e.page(), owner, |p| p.read(0, buf))
}

/// As [`read_entry`], the other way.
fn write_entry(owner: &PagemapOwner, e: &PtEntry<'_>, buf: &[u8]) -> Result {
    devmem::with_page_contents(e.page(), owner, |p| p.write(0, buf))
}

/// The `faults` count of `HMM_DMIRROR_READ` and `HMM_DMIRROR_WRITE`, as test_hmm counts it.
///
/// test_hmm faults the whole rest of the range at the first missing page, so a range that stays
/// mapped costs one fault. This driver faults one round at a time, so that the work stays bounded
/// by what the user's buffer takes; a round that continues where the last fault ended counts with
/// it, and only a refault (entries invalidated again in between) or a first fault counts anew.
struct FaultCount {
    /// The end of what was faulted so far; 0 before the first fault.
    faulted_to: usize,
}

impl FaultCount {
    fn new() -> Self {
        Self { faulted_to: 0 }
    }

    /// Records a fault of `[from, to)`.
    fn faulted(&mut self, c: &mut hmm_dmirror_cmd, from: usize, to: usize) {
        if self.faulted_to == 0 || from < self.faulted_to {
            c.faults += 1;
        }
        self.faulted_to = self.faulted_to.max(to);
    }
}

impl Dmirror {
    /// The mirrored mm, with a user reference (`mmget_not_zero()`).
    fn mm(&self, err: Error) -> Result<ARef<MmWithUser>> {
        self.mirror.mm().mmget_not_zero().ok_or(err)
    }

    fn owner(&self) -> &PagemapOwner {
        self.device.mem.owner()
    }

    /// Copies `[addr, end)` from the device page table into `buf`; on a missing entry returns the
    /// address it is missing at.
    fn read_pt(
        &self,
        addr: usize,
        end: usize,
        buf: &mut [u8],
    ) -> Result<core::result::Result<(), usize>> {
        let g = self.mirror.lock();
        let mut a = addr;
        for e in g.pt_run(addr >> PAGE_SHIFT..end >> PAGE_SHIFT) {
            let Some(e) = e else {
                return Ok(Err(a));
            };
            let off = a - addr;
            read_entry(self.owner(), &e, &mut buf[off..off + PAGE_SIZE])?;
            a += PAGE_SIZE;
        }
        // Every byte of `buf` up to `end` is written: the bounce buffer's reuse relies on it.
        debug_assert_eq!(a, end);
        Ok(Ok(()))
    }

    /// As [`Dmirror::read_pt`], writing; an entry without write permission counts as missing.
    fn write_pt(
        &self,
        addr: usize,
        end: usize,
        buf: &[u8],
    ) -> Result<core::result::Result<(), usize>> {
        let g = self.mirror.lock();
        let mut a = addr;
        for e in g.pt_run(addr >> PAGE_SHIFT..end >> PAGE_SHIFT) {
            match e {
                Some(e) if e.perm() == Perm::Write => {
                    let off = a - addr;
                    write_entry(self.owner(), &e, &buf[off..off + PAGE_SIZE])?;
                }
                _ => return Ok(Err(a)),
            }
            a += PAGE_SIZE;
        }
        Ok(Ok(()))
    }

    /// Faults `[addr, end)` into the device page table, with `hmm_range_fault_unlocked_timeout()`
    /// if `unlocked`. Takes a user reference on the mirrored mm the first time (`mm`).
    fn fault(
        &self,
        mm: &mut Option<ARef<MmWithUser>>,
        addr: usize,
        end: usize,
        write: bool,
        unlocked: bool,
    ) -> Result {
        let mm = match mm {
            Some(mm) => mm,
            None => mm.insert(self.mm(EFAULT)?),
        };
        let commit = |g: &MirrorGuard<'_, DmirrorState>, pfns: &HmmPfns<'_>| g.pt_insert_all(pfns);
        if unlocked {
            self.mirror
                .fault_unlocked(mm, addr, end, write, None, commit)
        } else {
            self.mirror.fault(mm, addr, end, write, commit)
        }
    }

    /// `HMM_DMIRROR_READ`: the device reads `[start, end)` into `ptr`, faulting in what its page
    /// table lacks (`dmirror_read`).
    fn read(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        self.read_with(r, c, false)
    }

    /// `HMM_DMIRROR_READ_UNLOCKED`: as `HMM_DMIRROR_READ`, faulting with
    /// `hmm_range_fault_unlocked_timeout()` and no timeout, so that a userfaultfd handler can
    /// resolve the faults (`dmirror_read_unlocked`).
    fn read_unlocked(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        self.read_with(r, c, true)
    }

    /// The file's bounce buffer, or a new one if another call of the file has it.
    fn bounce(&self) -> Result<Bounce<'_>> {
        let kept = self.bounce.lock().take();
        let buf = match kept {
            Some(buf) => buf,
            None => KVVec::from_elem(0u8, BOUNCE_PAGES * PAGE_SIZE, GFP_KERNEL_ACCOUNT)?,
        };
        Ok(Bounce {
            buf,
            slot: &self.bounce,
        })
    }

    /// The body of [`Dmirror::read`] and [`Dmirror::read_unlocked`].
    ///
    /// Each round faults in only what its bounce buffer lacks, then copies it out: a bad user
    /// buffer stops the ioctl after one round, and a fatal signal before the next.
    fn read_with(&self, r: &Range, c: &mut hmm_dmirror_cmd, unlocked: bool) -> Result {
        let mut bounce = self.bounce()?;
        let mut out = UserSlice::new(UserPtr::from_addr(r.ptr), r.end - r.start).writer();
        let mut mm = None;
        let mut faults = FaultCount::new();
        let mut addr = r.start;
        while addr < r.end {
            check_killed()?;
            let chunk_end = round_end(addr, r.end, BOUNCE_PAGES);
            let len = chunk_end - addr;
            let mut cur = addr;
            while let Err(missing) = self.read_pt(cur, chunk_end, &mut bounce[cur - addr..len])? {
                self.fault(&mut mm, missing, chunk_end, false, unlocked)?;
                faults.faulted(c, missing, chunk_end);
                cur = missing;
            }
            out.write_slice(&bounce[..len])?;
            c.cpages += (len >> PAGE_SHIFT) as u64;
            addr = chunk_end;
        }
        Ok(())
    }

    /// `HMM_DMIRROR_WRITE`: the device writes `ptr` to `[start, end)` (`dmirror_write`).
    fn write(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mut bounce = self.bounce()?;
        let mut input = UserSlice::new(UserPtr::from_addr(r.ptr), r.end - r.start).reader();
        let mut mm = None;
        let mut faults = FaultCount::new();
        let mut addr = r.start;
        while addr < r.end {
            check_killed()?;
            let chunk_end = round_end(addr, r.end, BOUNCE_PAGES);
            let len = chunk_end - addr;
            input.read_slice(&mut bounce[..len])?;
            let mut cur = addr;
            while let Err(missing) = self.write_pt(cur, chunk_end, &bounce[cur - addr..len])? {
                self.fault(&mut mm, missing, chunk_end, true, false)?;
                faults.faulted(c, missing, chunk_end);
                cur = missing;
            }
            c.cpages += (len >> PAGE_SHIFT) as u64;
            addr = chunk_end;
        }
        Ok(())
    }

    /// `HMM_DMIRROR_EXCLUSIVE`: makes `[start, end)` exclusive to the device and returns its
    /// contents (`dmirror_exclusive`).
    fn exclusive(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mm = self.mm(EINVAL)?;
        {
            let guard = mm.mmap_read_lock();
            let mut addr = r.start;
            while addr < r.end {
                check_killed()?;
                self.mirror.make_exclusive(&guard, addr)?;
                addr += PAGE_SIZE;
            }
        }
        self.copy_out_pt(r, c)
    }

    /// `HMM_DMIRROR_CHECK_EXCLUSIVE`: `EPERM` if the device still holds a page of `[start, end)`
    /// exclusively (`dmirror_check_atomic`).
    ///
    /// Visits the entries the device page table has, not every page of the range, [`BOUNCE_PAGES`]
    /// of them per lock hold.
    fn check_exclusive(&self, r: &Range) -> Result {
        let end = r.end >> PAGE_SHIFT;
        let mut vpn = r.start >> PAGE_SHIFT;
        loop {
            check_killed()?;
            let g = self.mirror.lock();
            for _ in 0..BOUNCE_PAGES {
                let Some((v, e)) = g.pt_find(vpn..end) else {
                    return Ok(());
                };
                if e.perm() == Perm::Atomic {
                    return Err(EPERM);
                }
                // `v < end`, which is at most `usize::MAX >> PAGE_SHIFT`.
                vpn = v + 1;
            }
        }
    }

    /// Copies what the device page table maps of `[start, end)` to the user's buffer, `ENOENT` if a
    /// page is not mapped: what a migration or `EXCLUSIVE` returns for verification.
    fn copy_out_pt(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mut bounce = self.bounce()?;
        let mut out = UserSlice::new(UserPtr::from_addr(r.ptr), r.end - r.start).writer();
        let mut addr = r.start;
        while addr < r.end {
            check_killed()?;
            let chunk_end = round_end(addr, r.end, BOUNCE_PAGES);
            let len = chunk_end - addr;
            if self.read_pt(addr, chunk_end, &mut bounce[..len])?.is_err() {
                return Err(ENOENT);
            }
            out.write_slice(&bounce[..len])?;
            c.cpages += (len >> PAGE_SHIFT) as u64;
            addr = chunk_end;
        }
        Ok(())
    }

    /// `HMM_DMIRROR_SNAPSHOT`: what the CPU page tables map in `[start, end)`, one
    /// `HMM_DMIRROR_PROT_*` byte per page, without faulting anything in (`dmirror_snapshot`).
    fn snapshot(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mm = self.mm(EINVAL)?;
        let mut out = UserSlice::new(UserPtr::from_addr(r.ptr), r.end - r.start).writer();
        let mut perm = [0u8; hmm::CHUNK_PAGES];
        let mut addr = r.start;
        while addr < r.end {
            check_killed()?;
            let next = round_end(addr, r.end, hmm::CHUNK_PAGES);
            let n = (next - addr) >> PAGE_SHIFT;
            // The closure runs with the mirror locked: no user access in it.
            self.mirror.snapshot(&mm, addr, next, |_g, pfns| {
                for (p, pfn) in perm.iter_mut().zip(pfns.iter()) {
                    *p = self.prot(pfn);
                }
                Ok(())
            })?;
            out.write_slice(&perm[..n])?;
            c.cpages += n as u64;
            addr = next;
        }
        Ok(())
    }

    /// The `HMM_DMIRROR_PROT_*` encoding of one snapshot entry (`dmirror_mkentry`).
    fn prot(&self, pfn: &HmmPfn) -> u8 {
        if pfn.is_error() {
            return bindings::HMM_DMIRROR_PROT_ERROR as u8;
        }
        if !pfn.is_valid() {
            return bindings::HMM_DMIRROR_PROT_NONE as u8;
        }
        let mut prot = match pfn.kind(self.owner()) {
            Some(PageKind::DevicePrivate { local: true }) => {
                bindings::HMM_DMIRROR_PROT_DEV_PRIVATE_LOCAL
            }
            Some(PageKind::DevicePrivate { local: false }) => {
                bindings::HMM_DMIRROR_PROT_DEV_PRIVATE_REMOTE
            }
            Some(PageKind::DeviceCoherent { local: true }) => {
                bindings::HMM_DMIRROR_PROT_DEV_COHERENT_LOCAL
            }
            Some(PageKind::DeviceCoherent { local: false }) => {
                bindings::HMM_DMIRROR_PROT_DEV_COHERENT_REMOTE
            }
            Some(PageKind::Zero) => bindings::HMM_DMIRROR_PROT_ZERO,
            Some(PageKind::System) | None => bindings::HMM_DMIRROR_PROT_NONE,
        };
        prot |= if pfn.is_write() {
            bindings::HMM_DMIRROR_PROT_WRITE
        } else {
            bindings::HMM_DMIRROR_PROT_READ
        };
        match pfn.map_order() as usize + PAGE_SHIFT {
            PMD_SHIFT => prot |= bindings::HMM_DMIRROR_PROT_PMD,
            PUD_SHIFT => prot |= bindings::HMM_DMIRROR_PROT_PUD,
            _ => {}
        }
        prot as u8
    }

    /// Migrates `[start, end)` in chunks of at most [`MIGRATE_PAGES`] within one VMA each, each
    /// under the mmap lock: `copy` gives the collected entries their destinations. Returns the
    /// number of pages that moved.
    ///
    /// A selection of device-private pages runs with the mmap lock held for writing
    /// ([`MigrateVma::setup_exclusive`]), so that their huge pages can move whole. The lock is
    /// taken per chunk, so that the rest of the process faults and maps while a long range moves.
    fn migrate_range(
        &self,
        mm: &MmWithUser,
        r: &Range,
        select: SelectFlags,
        mut copy: impl FnMut(&mut Collected<'_>) -> Result,
    ) -> Result<u64> {
        let mut pfns = MigratePfns::new(MIGRATE_PAGES)?;
        let exclusive = select.contains(Select::DevicePrivate);
        let mut moved = 0;
        let mut addr = r.start;
        while addr < r.end {
            check_killed()?;
            let guard = if exclusive {
                MmapGuard::Write(MmapWriteGuard::lock(mm)?)
            } else {
                MmapGuard::Read(mm.mmap_read_lock())
            };
            let vma = guard.vma_lookup(addr).ok_or(EINVAL)?;
            if vma.flags() & kernel::mm::virt::flags::READ == 0 {
                return Err(EINVAL);
            }
            let next = round_end(addr, r.end, MIGRATE_PAGES).min(vma.end());
            let owner = Some(self.owner());
            let mut mig = match &guard {
                MmapGuard::Read(g) => MigrateVma::setup(g, addr, next, select, owner, &mut pfns)?,
                MmapGuard::Write(g) => {
                    MigrateVma::setup_exclusive(g, addr, next, select, owner, &mut pfns)?
                }
            };
            copy(&mut mig)?;
            let mig = mig.pages();
            moved += mig.migrated_pages() as u64;
            mig.finalize();
            addr = next;
        }
        Ok(moved)
    }

    /// `HMM_DMIRROR_MIGRATE_TO_DEV`: moves `[start, end)` to device memory, maps it in the device
    /// page table and returns its contents (`dmirror_migrate_to_device`).
    fn migrate_to_device(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mm = self.mm(EINVAL)?;
        let select = Select::System | Select::Compound;
        self.migrate_range(&mm, r, select, |mig| {
            self.copy_to_device(mig, self.owner(), true)
        })?;
        // Map what is now on the device (pages of our pagemaps, private or coherent) in the device
        // page table, from the CPU page tables (`dmirror_migrate_finalize_and_map`): every
        // invalidation, this migration's included, cleared the range.
        self.mirror
            .snapshot(&mm, r.start, r.end, |g, pfns| g.pt_insert_own_device(pfns))?;
        // Return what the device now holds, for verification.
        self.copy_out_pt(r, c)
    }

    /// Gives the collected entries of `mig` device pages with their contents: a huge entry a device
    /// folio of its order if there is one, else a page for each of its pages; an entry that cannot
    /// have all of its pages stays put (no destination).
    ///
    /// The sources are system pages, or device pages of `src_owner` (a device of this driver).
    /// Holes (and, with [`Select::System`], the zero page) get a zeroed page if `holes`, as
    /// `HMM_DMIRROR_MIGRATE_TO_DEV` populates them; a move of device pages leaves them holes.
    pub(super) fn copy_to_device(
        &self,
        mig: &mut Collected<'_>,
        src_owner: &PagemapOwner,
        holes: bool,
    ) -> Result {
        let mem = &self.device.mem;
        mig.for_each_entry(|mut e| {
            if !e.can_migrate() || (!holes && e.src_page().is_none()) {
                return Ok(());
            }
            // `HMM_DMIRROR_FLAG_FAIL_ALLOC` fails the device allocation of this entry: a THP then
            // goes page by page, a page stays.
            let fail = self.shared.take_fail_alloc();
            if e.is_compound() && !fail {
                let src = |i| e.src_subpage(i);
                if let Ok(dpage) = mem.alloc_copy(e.order(), &self.shared, src, src_owner) {
                    return e.set_dst(dpage);
                }
            } else if fail && !e.is_compound() {
                return Ok(());
            }
            for i in 0..e.nr_pages() {
                let src = |_| e.src_subpage(i);
                match mem.alloc_copy(0, &self.shared, src, src_owner) {
                    Ok(dpage) => e.set_dst_at(i, dpage)?,
                    // Out of device memory: the entry stays put.
                    Err(_) => return Ok(()),
                }
            }
            Ok(())
        })
    }

    /// `HMM_DMIRROR_MIGRATE_TO_SYS`: moves the device pages of `[start, end)` back to system memory
    /// (`dmirror_migrate_to_system`).
    fn migrate_to_system(&self, r: &Range, c: &mut hmm_dmirror_cmd) -> Result {
        let mm = self.mm(EINVAL)?;
        let select = match self.device.mem.kind() {
            MemKind::Private => Select::DevicePrivate,
            MemKind::Coherent(_) => Select::DeviceCoherent,
        };
        c.cpages = self.migrate_range(&mm, r, select | Select::Compound, |mig| {
            devmem::copy_back(mig, self.owner(), Some(&self.shared), false)
        })?;
        Ok(())
    }
}

/// The mmap lock, held for reading or writing.
enum MmapGuard<'a> {
    Read(MmapReadGuard<'a>),
    Write(MmapWriteGuard<'a>),
}

impl MmapGuard<'_> {
    fn vma_lookup(&self, addr: usize) -> Option<&VmaRef> {
        match self {
            Self::Read(g) => g.vma_lookup(addr),
            Self::Write(g) => g.vma_lookup(addr),
        }
    }
}
