// SPDX-License-Identifier: GPL-2.0

//! `HMM_RS_MIGRATE` (`include/uapi/hmm_rs.h`): a migration in the direction the caller picks, which
//! says for every page that stayed why it stayed, and whether trying again can help.
//!
//! Each round of at most [`MIGRATE_PAGES`] pages within one VMA runs under one mmap read lock: a
//! snapshot of the page table ([`Mirror::snapshot_locked()`]) sees what is there, then the
//! migration runs, and the reason of every page it did not collect comes from what the snapshot saw
//! ([`Reason::of_uncollected()`]). The round's status bytes are copied out after the lock is
//! dropped (a fault on the status array must not take the mmap lock again).
//!
//! [`Mirror::snapshot_locked()`]: crate::mm::hmm::mirror::Mirror::snapshot_locked

use super::{check_killed, round_end, Dmirror, Range, MIGRATE_PAGES};
use crate::{
    bindings::{self, hmm_rs_migrate},
    devmem,
    mm::{
        hmm::{PageKind, Seen},
        memremap::PagemapOwner,
        migrate::{
            Collected, Entry, LockedSystemFolio, MemoryNode, MigratePfns, MigrateVma, Outcome,
            Reason, Select, SelectFlags, HPAGE_PMD_ORDER,
        },
    },
    page_ext::CpuPage,
};
use kernel::{
    alloc::{flags::GFP_KERNEL, KVec},
    mm::{MmWithUser, MmapReadGuard},
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

/// The number of entries of `hmm_rs_migrate::counts`.
const NR_REASONS: usize = bindings::hmm_rs_reason_HMM_RS_NR_REASONS as usize;
const STATUS_WHOLE: u8 = bindings::HMM_RS_STATUS_WHOLE as u8;
const STATUS_RETRY: u8 = bindings::HMM_RS_STATUS_RETRY as u8;
const STATUS_REASON: u8 = bindings::HMM_RS_STATUS_REASON as u8;
const NOT_REACHED: u8 = bindings::hmm_rs_reason_HMM_RS_NOT_REACHED as u8;

// Every reason a status byte carries indexes `counts`.
const _: () = assert!((bindings::hmm_rs_reason_HMM_RS_ON_NODE as usize) < NR_REASONS);

/// Where a request moves pages to.
#[derive(Clone, Copy, PartialEq)]
enum Dst {
    /// This file's device.
    Device,
    /// System memory, where the allocator puts it.
    System,
    /// System memory on a node.
    Node(MemoryNode),
}

/// A checked `HMM_RS_MIGRATE` request.
struct Request {
    range: Range,
    select: SelectFlags,
    dst: Dst,
    /// `HMM_RS_REQ_FAULT`.
    fault_in: bool,
    /// `HMM_RS_REQ_NOT_ON_NODE`.
    not_on_node: bool,
    /// `HMM_RS_REQ_THP`: huge pages move whole when they can.
    whole: bool,
    /// `HMM_RS_REQ_SRC_DEV`: the device whose pages are selected, if not this file's.
    src_dev: Option<usize>,
}

impl Request {
    /// Checks `m`, made to this file's device `dev` of `ndevices`: known bits only, a selection the
    /// destination takes, a valid range, another existing device as the source, a node with
    /// memory as the destination.
    fn new(m: &hmm_rs_migrate, dev: usize, ndevices: usize) -> Result<Self> {
        if m.select & !bindings::HMM_RS_SELECT_ALL != 0
            || m.select == 0
            || m.flags & !bindings::HMM_RS_REQ_ALL != 0
            || m.reserved != 0
        {
            return Err(EINVAL);
        }
        let src_dev = if m.flags & bindings::HMM_RS_REQ_SRC_DEV != 0 {
            let src = usize::try_from(m.src_dev).map_err(|_| ENODEV)?;
            if src == dev {
                return Err(EINVAL);
            }
            if src >= ndevices {
                return Err(ENODEV);
            }
            Some(src)
        } else if m.src_dev != 0 {
            return Err(EINVAL);
        } else {
            None
        };
        let fault_in = m.flags & bindings::HMM_RS_REQ_FAULT != 0;
        if fault_in && m.select & bindings::HMM_RS_SELECT_SYSTEM == 0 {
            return Err(EINVAL);
        }
        let system = m.select & bindings::HMM_RS_SELECT_SYSTEM != 0;
        let dst = match m.dst {
            // System memory, or another device's pages, to this device.
            bindings::HMM_RS_DST_DEVICE if src_dev.is_none() => {
                if m.select != bindings::HMM_RS_SELECT_SYSTEM {
                    return Err(EINVAL);
                }
                Dst::Device
            }
            bindings::HMM_RS_DST_DEVICE if !system => Dst::Device,
            // This or another device's pages to system memory.
            bindings::HMM_RS_DST_SYSTEM if !system => Dst::System,
            // Any of them to a node.
            bindings::HMM_RS_DST_NODE => {
                Dst::Node(MemoryNode::new(i32::try_from(m.node).map_err(|_| ENODEV)?)?)
            }
            _ => return Err(EINVAL),
        };
        if m.node != 0 && !matches!(dst, Dst::Node(_)) {
            return Err(EINVAL);
        }
        let not_on_node = m.flags & bindings::HMM_RS_REQ_NOT_ON_NODE != 0;
        if not_on_node && !(system && matches!(dst, Dst::Node(_))) {
            return Err(EINVAL);
        }
        // System pages are nobody's: another device as the source is for device pages only, to
        // any destination.
        if system && src_dev.is_some() {
            return Err(EINVAL);
        }
        if let Dst::Node(node) = dst {
            // As `move_pages(2)`: a node the caller's cpuset does not allow.
            if !node.is_allowed() {
                return Err(EACCES);
            }
        }
        let private = m.select & bindings::HMM_RS_SELECT_DEVICE_PRIVATE != 0;
        let thp = m.flags & bindings::HMM_RS_REQ_THP != 0;
        // A device-private huge page is never collected whole on 7.3 (see `Select::Compound`),
        // and a selection with device-private pages is collected without `Compound`: the system
        // huge pages of the range would be split, which `HMM_RS_REQ_THP` promises not to do.
        if thp && system && private {
            return Err(EINVAL);
        }
        let mut select = SelectFlags::default();
        for (bit, kind) in [
            (bindings::HMM_RS_SELECT_SYSTEM, Select::System),
            (
                bindings::HMM_RS_SELECT_DEVICE_PRIVATE,
                Select::DevicePrivate,
            ),
            (
                bindings::HMM_RS_SELECT_DEVICE_COHERENT,
                Select::DeviceCoherent,
            ),
        ] {
            if m.select & bit != 0 {
                select |= kind;
            }
        }
        // The node filter collects huge pages whole too, so that one it leaves where it is stays
        // whole (a split would map its zero-filled pieces to the zero page); without
        // `HMM_RS_REQ_THP`, one that moves still moves page by page (`Request::whole`).
        if thp || (not_on_node && !private) {
            select |= Select::Compound;
        }
        Ok(Self {
            range: Range::new(m.addr, m.npages, m.status)?,
            select,
            dst,
            fault_in,
            not_on_node,
            whole: thp,
            src_dev,
        })
    }
}

/// The `enum hmm_rs_reason` value of `reason`. The driver gives an entry no destination only when
/// it cannot allocate one, so [`Reason::NoDestination`] is `HMM_RS_NO_MEMORY` here.
fn reason_code(reason: Reason) -> u32 {
    match reason {
        Reason::NotPresent | Reason::NotCollected => bindings::hmm_rs_reason_HMM_RS_NOT_PRESENT,
        Reason::ZeroPage => bindings::hmm_rs_reason_HMM_RS_ZERO_PAGE,
        Reason::NotSelected => bindings::hmm_rs_reason_HMM_RS_NOT_SELECTED,
        Reason::OtherOwner => bindings::hmm_rs_reason_HMM_RS_OTHER_OWNER,
        Reason::Pinned => bindings::hmm_rs_reason_HMM_RS_PINNED,
        Reason::Busy => bindings::hmm_rs_reason_HMM_RS_BUSY,
        Reason::SplitFailed => bindings::hmm_rs_reason_HMM_RS_SPLIT_FAILED,
        Reason::NoDestination => bindings::hmm_rs_reason_HMM_RS_NO_MEMORY,
        Reason::Refused => bindings::hmm_rs_reason_HMM_RS_REFUSED,
        Reason::FileBacked => bindings::hmm_rs_reason_HMM_RS_FILE_BACKED,
        Reason::Unsupported => bindings::hmm_rs_reason_HMM_RS_UNSUPPORTED,
        Reason::OnNode => bindings::hmm_rs_reason_HMM_RS_ON_NODE,
        // `Reason` is `#[non_exhaustive]`: in tree, where the driver is a crate of its own, a
        // reason a later kernel adds still did not move the page. Unreachable out of tree.
        #[allow(unreachable_patterns)]
        _ => bindings::hmm_rs_reason_HMM_RS_REFUSED,
    }
}

/// Copies the contents of page `i` of `e`'s source (a system page, or a device page of `owner`) to
/// `dst`.
fn copy_page(e: &Entry<'_>, i: usize, owner: &PagemapOwner, dst: &CpuPage<'_>) -> Result {
    let src = e.src_subpage(i).ok_or(EINVAL)?;
    devmem::with_page_contents(src, owner, |src| {
        dst.copy_from(src);
        Ok(())
    })
}

/// The status byte of a page: `None` if it moved, else why not; `whole` if it was part of a huge
/// page that moved or stayed whole.
fn status(reason: Option<Reason>, whole: bool) -> u8 {
    let mut s = match reason {
        None => bindings::hmm_rs_reason_HMM_RS_MIGRATED as u8,
        // Out of device memory is transient, as the allocation is retried each time.
        Some(r @ Reason::NoDestination) => reason_code(r) as u8 | STATUS_RETRY,
        Some(r) if r.retry_can_help() => reason_code(r) as u8 | STATUS_RETRY,
        Some(r) => reason_code(r) as u8,
    };
    if whole {
        s |= STATUS_WHOLE;
    }
    s
}

impl Dmirror {
    /// `HMM_RS_MIGRATE`.
    pub(super) fn hmm_rs_migrate(&self, arg: usize) -> Result {
        let user = UserSlice::new(UserPtr::from_addr(arg), size_of::<hmm_rs_migrate>());
        let (mut reader, mut writer) = user.reader_writer();
        let mut m: hmm_rs_migrate = reader.read()?;
        let req = Request::new(&m, self.device.id, self.device.owners.len())?;
        let npages = (req.range.end - req.range.start) >> PAGE_SHIFT;

        // Bad input changes nothing: the whole range is checked before anything moves.
        let mm = self.mm(EINVAL)?;
        Self::check_range(&mm.mmap_read_lock(), &req)?;

        // The command is written back once before anything moves: if it cannot be (a read-only
        // page), nothing changes.
        UserSlice::new(UserPtr::from_addr(arg), size_of::<hmm_rs_migrate>())
            .writer()
            .write(&m)?;
        let mut out = KVec::with_capacity(MIGRATE_PAGES, GFP_KERNEL)?;
        out.resize(MIGRATE_PAGES, NOT_REACHED, GFP_KERNEL)?;
        // The status array is filled with `HMM_RS_NOT_REACHED` before anything moves: if it cannot
        // be, nothing changes, and an error later leaves the pages not got to so marked.
        let status_slice = || UserSlice::new(UserPtr::from_addr(req.range.ptr), npages).writer();
        let mut status = (req.range.ptr != 0).then(status_slice);
        if status.is_some() {
            let mut probe = status_slice();
            let mut left = npages;
            while left > 0 {
                check_killed()?;
                let n = left.min(out.len());
                probe.write_slice(&out[..n])?;
                left -= n;
            }
        }

        let mut pfns = MigratePfns::new(MIGRATE_PAGES)?;
        let mut seen = KVec::with_capacity(MIGRATE_PAGES, GFP_KERNEL)?;
        m.counts = [0; NR_REASONS];
        let mut addr = req.range.start;
        while addr < req.range.end {
            check_killed()?;
            let next = self.migrate_round(&mm, &req, addr, &mut pfns, &mut seen, &mut out)?;
            let done = &out[..(next - addr) >> PAGE_SHIFT];
            for s in done {
                // Every byte of a finished round is a reason (`status()`).
                if let Some(c) = m.counts.get_mut(usize::from(s & STATUS_REASON)) {
                    *c += 1;
                }
            }
            if let Some(status) = &mut status {
                status.write_slice(done)?;
            }
            addr = next;
        }
        m.migrated = m.counts[bindings::hmm_rs_reason_HMM_RS_MIGRATED as usize];
        writer.write(&m)
    }

    /// `EINVAL` unless VMAs that a migration can walk cover the whole range: readable, and not
    /// `VM_SPECIAL` or hugetlb (`migrate_vma_setup()` refuses those). Checked before anything
    /// moves, so that a range bad at its end does not migrate its start; a mapping that changes
    /// later stops the migration where it changed.
    fn check_range(mmap: &MmapReadGuard<'_>, req: &Request) -> Result {
        use kernel::mm::virt::flags;
        let refused =
            flags::IO | flags::PFNMAP | flags::MIXEDMAP | flags::DONTEXPAND | flags::HUGETLB;
        let mut addr = req.range.start;
        while addr < req.range.end {
            // One VMA per round: as many rounds as the caller has VMAs in the range.
            check_killed()?;
            let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
            if vma.flags() & flags::READ == 0 || vma.flags() & refused != 0 {
                return Err(EINVAL);
            }
            addr = vma.end();
        }
        Ok(())
    }

    /// The end of the round from `addr`: at most [`MIGRATE_PAGES`] within one readable VMA.
    ///
    /// With [`Select::Compound`], a round also ends at the next PMD boundary: the core collects a
    /// huge page whole only if the range covers all of it.
    fn round(mmap: &MmapReadGuard<'_>, req: &Request, addr: usize) -> Result<usize> {
        let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
        if vma.flags() & kernel::mm::virt::flags::READ == 0 {
            return Err(EINVAL);
        }
        let mut next = round_end(addr, req.range.end, MIGRATE_PAGES).min(vma.end());
        if req.select.contains(Select::Compound) {
            let pmd = PAGE_SIZE << HPAGE_PMD_ORDER;
            if let Some(boundary) = (addr | (pmd - 1)).checked_add(1) {
                next = next.min(boundary);
            }
        }
        Ok(next)
    }

    /// Migrates the round from `addr`: at most [`MIGRATE_PAGES`] within one VMA. Writes the round's
    /// status bytes to the start of `out` and returns where the round ended.
    fn migrate_round(
        &self,
        mm: &MmWithUser,
        req: &Request,
        addr: usize,
        pfns: &mut MigratePfns,
        seen: &mut KVec<Seen>,
        out: &mut [u8],
    ) -> Result<usize> {
        // The owner of the pages to select: this device's, or the source device's.
        let owner = match req.src_dev {
            Some(id) => self.device.owners.get(id).ok_or(ENODEV)?,
            None => self.owner(),
        };
        if req.fault_in {
            // Faulted without the mmap lock held (the fault takes it), so the round is looked up
            // again below: what was faulted in may have gone again, and is then reported as such.
            let next = Self::round(&mm.mmap_read_lock(), req, addr)?;
            self.mirror.fault(mm, addr, next, false, |_, _| Ok(()))?;
        }
        let guard = mm.mmap_read_lock();
        let next = Self::round(&guard, req, addr)?;
        let n = (next - addr) >> PAGE_SHIFT;
        // Pages the migration reports nothing for (none, on 7.3) stay so marked.
        out[..n].fill(NOT_REACHED);

        seen.clear();
        self.mirror
            .snapshot_locked(&guard, addr, next, owner, |_, hmm_pfns| {
                for p in hmm_pfns.iter() {
                    seen.push_within_capacity(p.seen(owner))
                        .map_err(|_| EINVAL)?;
                }
                Ok(())
            })?;

        // `migrate_vma_setup()` collects the holes of an anonymous mapping whatever the
        // selection: only a move of system memory to the device populates them (as
        // `HMM_DMIRROR_MIGRATE_TO_DEV` does).
        let populate = req.dst == Dst::Device && req.select.contains(Select::System);
        let mut mig = MigrateVma::setup(&guard, addr, next, req.select, Some(owner), pfns)?;
        match req.dst {
            Dst::Device => self.copy_to_device(&mut mig, owner, populate)?,
            Dst::System => devmem::copy_back(&mut mig, owner, Some(&self.shared), true)?,
            Dst::Node(node) => {
                if req.not_on_node {
                    mig.keep_on_node(node);
                }
                self.copy_to_node(&mut mig, owner, node, req.whole)?;
            }
        }
        let mig = mig.pages();
        for e in mig.entries() {
            let len = e.nr_pages().min(n - e.index());
            let saw = || seen.get(e.index()).copied().unwrap_or(Seen::NotPresent);
            let reason = match e.outcome() {
                Outcome::Migrated => None,
                Outcome::NotMigrated(Reason::NotCollected) => {
                    Some(Reason::of_uncollected(saw(), req.select))
                }
                // A hole (or, with `Select::System`, the zero page) that the move does not
                // populate. Where a huge page was, the split in `migrate_vma_setup()` mapped a
                // zero-filled piece to the zero page.
                Outcome::NotMigrated(Reason::NoDestination) if e.is_hole() && !populate => {
                    match saw() {
                        Seen::Page {
                            kind: PageKind::Zero,
                            ..
                        }
                        | Seen::Page {
                            kind: PageKind::System,
                            large: true,
                            ..
                        } => Some(Reason::ZeroPage),
                        _ => Some(Reason::NotPresent),
                    }
                }
                Outcome::NotMigrated(r) => Some(r),
            };
            out[e.index()..e.index() + len].fill(status(reason, len > 1));
        }
        mig.finalize();
        Ok(next)
    }

    /// Gives every collected page of `mig` with contents (a system page, or a device page of
    /// `owner`) a copy on `node`: a huge page whole if `whole` and a huge page is free there, else
    /// page by page. A hole stays a hole, as `move_pages(2)` leaves one; a page the node has no
    /// room for stays where it is, and so does the rest of the round once one page found none (each
    /// failure costs a reclaim attempt on the node).
    fn copy_to_node(
        &self,
        mig: &mut Collected<'_>,
        owner: &PagemapOwner,
        node: MemoryNode,
        whole: bool,
    ) -> Result {
        let mut full = false;
        mig.for_each_entry(|mut e| {
            if full {
                return Ok(());
            }
            if !e.can_migrate() || e.src_page().is_none() {
                return Ok(());
            }
            // `HMM_DMIRROR_FLAG_FAIL_ALLOC` fails the allocation of this entry, as on the way to
            // the device.
            let fail = self.shared.take_fail_alloc();
            if e.is_compound() && whole && !fail {
                if let Ok(dst) = LockedSystemFolio::alloc_on_node(node, e.order()) {
                    for i in 0..e.nr_pages() {
                        let sub = dst.subpage(i).ok_or(EINVAL)?;
                        copy_page(&e, i, owner, &sub)?;
                    }
                    return e.set_dst(dst);
                }
            } else if fail && !e.is_compound() {
                return Ok(());
            }
            for i in 0..e.nr_pages() {
                let Ok(dst) = LockedSystemFolio::alloc_on_node(node, 0) else {
                    // The node is full: the entry stays put (a huge one whole, see `Entry`).
                    full = true;
                    return Ok(());
                };
                copy_page(&e, i, owner, &dst.page())?;
                e.set_dst_at(i, dst)?;
            }
            Ok(())
        })
    }
}
