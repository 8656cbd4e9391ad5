// SPDX-License-Identifier: GPL-2.0

//! Safe byte access to pages with a kernel mapping.
//!
//! `kernel::page::Page` offers `read_raw`/`write_raw`, which are `unsafe` because they copy with
//! Rust's `copy_nonoverlapping`: a concurrent write to the page is a data race, which Rust's memory
//! model makes undefined behaviour, so their contract forbids it. The pages this crate copies are
//! user memory, which user space (and a second open file of the same device, under its own lock)
//! may write while the copy runs. The functions here copy with the C `memcpy_from_page()`,
//! `memcpy_to_page()` and `memzero_page()` instead: like `copy_from_user()`, a racing writer can
//! make the copy torn, but nothing Rust can observe is undefined, so they are safe to call
//! concurrently on the same page.
//!
//! Device-private pages have a `struct page` but no memory behind their kernel address: every
//! function here refuses them (`EINVAL`), so a `Page` naming one cannot be used to touch stray
//! memory. Upstream these would be inherent methods of `Page`; here they are the extension trait
//! [`PageExt`].
//!
//! C header: [`include/linux/highmem.h`](srctree/include/linux/highmem.h)

use crate::bindings;
use kernel::{page::Page, page::PAGE_SIZE, prelude::*};

/// The memmap as one array, `vmemmap` (x86-64 with `CONFIG_SPARSEMEM_VMEMMAP`): the `struct page`
/// of pfn `n` is its element `n`.
#[cfg(all(CONFIG_X86_64, CONFIG_SPARSEMEM_VMEMMAP))]
#[inline]
fn vmemmap() -> *mut bindings::page {
    // SAFETY: `vmemmap_base` is set once, early in boot, and only read after.
    unsafe { core::ptr::addr_of!(bindings::vmemmap_base).read() as *mut bindings::page }
}

/// `pfn_to_page()`: the `struct page` of `pfn`, as the C inline function computes it. Where the
/// memmap is one array that is its element `pfn`, done here rather than through a helper call on
/// every page; elsewhere the helper. Meaningful only for a pfn that has a `struct page`.
#[inline]
pub fn pfn_to_page(pfn: usize) -> *mut bindings::page {
    #[cfg(all(CONFIG_X86_64, CONFIG_SPARSEMEM_VMEMMAP))]
    return vmemmap().wrapping_add(pfn);
    #[cfg(not(all(CONFIG_X86_64, CONFIG_SPARSEMEM_VMEMMAP)))]
    // SAFETY: `pfn_to_page()` only computes an address.
    return unsafe { bindings::pfn_to_page(pfn) };
}

/// `page_to_pfn()`, as [`pfn_to_page`] computes it. Meaningful only for a `struct page` of the
/// memmap.
#[inline]
pub fn page_to_pfn(page: *const bindings::page) -> usize {
    #[cfg(all(CONFIG_X86_64, CONFIG_SPARSEMEM_VMEMMAP))]
    return (page as usize).wrapping_sub(vmemmap() as usize)
        / core::mem::size_of::<bindings::page>();
    #[cfg(not(all(CONFIG_X86_64, CONFIG_SPARSEMEM_VMEMMAP)))]
    // SAFETY: `page_to_pfn()` only computes from the address (or the section number in the
    // page's flags, for a `struct page` the caller has).
    return unsafe { bindings::page_to_pfn(page.cast_mut()) };
}

/// `is_zone_device_page()`: whether `page` is a `ZONE_DEVICE` page, read from the zone number in
/// its flags as the C inline function reads it.
///
/// # Safety
///
/// `page` must be a valid `struct page`.
#[inline]
pub unsafe fn is_zone_device_page(page: *const bindings::page) -> bool {
    // SAFETY: `page` is valid (function safety requirements). Other bits of the word change
    // under atomic bit operations meanwhile: a volatile read (`READ_ONCE()`) is not a data race;
    // the zone bits never change while the page exists.
    let flags = unsafe { core::ptr::addr_of!((*page).flags.f).read_volatile() };
    let zone = (flags >> bindings::ZONES_PGSHIFT) & bindings::ZONES_MASK as usize;
    zone == bindings::zone_type_ZONE_DEVICE as usize
}

/// `EINVAL` for a page whose contents the CPU cannot reach, or for a byte range
/// `offset..offset + len` that does not fit in a page.
fn check(page: &Page, offset: usize, len: usize) -> Result {
    // SAFETY: `page` is a valid page (type invariant of `Page`).
    if unsafe { bindings::is_device_private_page(page.as_ptr()) } {
        return Err(EINVAL);
    }
    in_page(offset, len)
}

/// `EINVAL` for a byte range `offset..offset + len` that does not fit in a page.
fn in_page(offset: usize, len: usize) -> Result {
    match offset.checked_add(len) {
        Some(end) if end <= PAGE_SIZE => Ok(()),
        _ => Err(EINVAL),
    }
}

/// Safe byte access to a [`Page`] with a kernel mapping; upstream these would be inherent methods
/// of `Page`, beside its `unsafe` `*_raw` ones.
pub trait PageExt {
    /// Copies `dst.len()` bytes at `offset` of the page into `dst` (`memcpy_from_page()`).
    ///
    /// `EINVAL` if the bytes are not all in the page or the page is device-private. A concurrent
    /// writer of the page may leave `dst` torn.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result;

    /// Copies `src` into the page at `offset` (`memcpy_to_page()`).
    ///
    /// `EINVAL` as for [`PageExt::read()`]. Concurrent writers may interleave.
    fn write(&self, offset: usize, src: &[u8]) -> Result;

    /// Fills the page with zeroes (`memzero_page()`); `EINVAL` if it is device-private.
    fn fill_zero(&self) -> Result;

    /// Copies the contents of `src` to the page (`copy_highpage()`); `EINVAL` if either is
    /// device-private.
    fn copy_from(&self, src: &Page) -> Result;
}

impl PageExt for Page {
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        check(self, offset, dst.len())?;
        // SAFETY: `dst` is valid for writes of `dst.len()` bytes and exclusively borrowed;
        // `offset + dst.len()` is in the page, which is valid and has a kernel mapping (checked
        // above). The copy is done by C, so racing writers of the page are not a Rust data race
        // (see the module doc).
        unsafe {
            bindings::memcpy_from_page(dst.as_mut_ptr().cast(), self.as_ptr(), offset, dst.len())
        };
        Ok(())
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result {
        check(self, offset, src.len())?;
        // SAFETY: `src` is valid for reads of `src.len()` bytes; the bytes are in the page, which
        // is valid and has a kernel mapping (checked above). The copy is done by C (see the module
        // doc on races).
        unsafe { bindings::memcpy_to_page(self.as_ptr(), offset, src.as_ptr().cast(), src.len()) };
        Ok(())
    }

    fn fill_zero(&self) -> Result {
        check(self, 0, PAGE_SIZE)?;
        // SAFETY: The whole page is in bounds, and it has a kernel mapping (checked above); see the
        // module doc on races.
        unsafe { bindings::memzero_page(self.as_ptr(), 0, PAGE_SIZE) };
        Ok(())
    }

    fn copy_from(&self, src: &Page) -> Result {
        check(self, 0, PAGE_SIZE)?;
        check(src, 0, PAGE_SIZE)?;
        // SAFETY: Both are valid pages with a kernel mapping (type invariant of `Page`, checked
        // above); `copy_highpage()` maps each for the duration of the copy, which C does (see the
        // module doc on races).
        unsafe { bindings::copy_highpage(self.as_ptr(), src.as_ptr()) };
        Ok(())
    }
}

/// A page whose contents the CPU reaches through its kernel mapping: not a device-private page.
/// [`PageExt`]'s accessors without its test for one, which is a helper call on every copy: the
/// pages the allocator gives out, and system or device-coherent pages told apart from
/// device-private ones already, come as `CpuPage`s.
///
/// # Invariants
///
/// The page is not a device-private page.
pub struct CpuPage<'a>(kernel::page::BorrowedPage<'a>);

impl<'a> CpuPage<'a> {
    /// `page`, if it is not device-private.
    pub fn new(page: kernel::page::BorrowedPage<'a>) -> Option<Self> {
        // SAFETY: `page` is a valid page (type invariant of `Page`).
        if unsafe { bindings::is_device_private_page(page.as_ptr()) } {
            return None;
        }
        // INVARIANT: Tested just above.
        Some(Self(page))
    }

    /// # Safety
    ///
    /// `page` must not be a device-private page.
    pub unsafe fn new_unchecked(page: kernel::page::BorrowedPage<'a>) -> Self {
        // INVARIANT: By the function safety requirements.
        Self(page)
    }

    /// Another handle on the same page, for the same lifetime.
    pub fn reborrow(&self) -> CpuPage<'a> {
        // SAFETY: `Page::as_ptr()` is never null (type invariant of `Page`).
        let page = unsafe { core::ptr::NonNull::new_unchecked(self.0.as_ptr()) };
        // SAFETY: The page is valid for `'a` (it is borrowed for `'a`), and a second
        // `BorrowedPage` does not free it either.
        let page = unsafe { kernel::page::BorrowedPage::from_raw(page) };
        // INVARIANT: The same page, so not a device-private one.
        Self(page)
    }

    /// [`PageExt::read()`]: `EINVAL` only if the bytes are not all in the page.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        in_page(offset, dst.len())?;
        // SAFETY: As in `PageExt::read()`: the bytes are in the page, which has a kernel mapping
        // (type invariant).
        unsafe {
            bindings::memcpy_from_page(dst.as_mut_ptr().cast(), self.as_ptr(), offset, dst.len())
        };
        Ok(())
    }

    /// [`PageExt::write()`]: `EINVAL` only if the bytes are not all in the page.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result {
        in_page(offset, src.len())?;
        // SAFETY: As in `PageExt::write()`; the page has a kernel mapping (type invariant).
        unsafe { bindings::memcpy_to_page(self.as_ptr(), offset, src.as_ptr().cast(), src.len()) };
        Ok(())
    }

    /// [`PageExt::fill_zero()`], which cannot fail here.
    pub fn fill_zero(&self) {
        // SAFETY: As in `PageExt::fill_zero()`; the page has a kernel mapping (type invariant).
        unsafe { bindings::memzero_page(self.as_ptr(), 0, PAGE_SIZE) };
    }

    /// [`PageExt::copy_from()`], which cannot fail here.
    pub fn copy_from(&self, src: &CpuPage<'_>) {
        // SAFETY: As in `PageExt::copy_from()`; both pages have a kernel mapping (type invariant).
        unsafe { bindings::copy_highpage(self.as_ptr(), src.as_ptr()) };
    }
}

impl core::ops::Deref for CpuPage<'_> {
    type Target = Page;

    fn deref(&self) -> &Page {
        &self.0
    }
}

/// A physically contiguous block of `1 << order` order-0 system pages, allocated and freed together
/// (`alloc_pages()` without `__GFP_COMP`).
///
/// What holds the contents of a large device-private folio: one allocation instead of one per page.
///
/// # Invariants
///
/// `first` is the first page of a block of `1 << order` pages allocated by `alloc_pages()` with
/// that order and without `__GFP_COMP`, owned by this object and freed with `__free_pages()` on
/// drop.
pub struct PageBlock {
    first: core::ptr::NonNull<bindings::page>,
    order: u32,
}

// SAFETY: The block is plain memory owned by this object; it may be used and freed on any thread.
unsafe impl Send for PageBlock {}
// SAFETY: `&self` methods only hand out borrowed pages, whose byte accessors are safe to call
// concurrently (see the module doc on races).
unsafe impl Sync for PageBlock {}

impl PageBlock {
    /// Allocates a block of `1 << order` pages with `GFP_HIGHUSER`
    /// (`__GFP_NOWARN | __GFP_RETRY_MAYFAIL` for `order > 0`: large blocks are an optimisation the
    /// caller can do without).
    pub fn alloc(order: u32) -> Result<Self> {
        if order > bindings::MAX_PAGE_ORDER {
            return Err(EINVAL);
        }
        let mut gfp = bindings::GFP_HIGHUSER;
        if order > 0 {
            gfp |= bindings::__GFP_NOWARN | bindings::__GFP_RETRY_MAYFAIL;
        }
        // SAFETY: `alloc_pages()` may be called with any flags and an order up to `MAX_PAGE_ORDER`;
        // it may sleep, as callers expect.
        let first = unsafe { bindings::alloc_pages(gfp, order) };
        let first = core::ptr::NonNull::new(first).ok_or(ENOMEM)?;
        // INVARIANT: Just allocated with `order`; `gfp` is `GFP_HIGHUSER` and at most two
        // modifiers, none of them `__GFP_COMP`.
        Ok(Self { first, order })
    }

    /// Allocates a block of `1 << order` pages with `GFP_HIGHUSER` if one is free now: no direct
    /// reclaim or compaction (kswapd is woken), no warning, and no dipping into the reserves a
    /// request that cannot sleep may otherwise take (`__GFP_NOMEMALLOC`, as THPs ask). For a caller
    /// that has a fallback and may ask again soon: a failure costs a look at the free lists, not a
    /// round of reclaim.
    pub fn try_alloc(order: u32) -> Result<Self> {
        if order > bindings::MAX_PAGE_ORDER {
            return Err(EINVAL);
        }
        let gfp = (bindings::GFP_HIGHUSER & !bindings::__GFP_DIRECT_RECLAIM)
            | bindings::__GFP_NOWARN
            | bindings::__GFP_NOMEMALLOC;
        // SAFETY: As in `alloc()`.
        let first = unsafe { bindings::alloc_pages(gfp, order) };
        let first = core::ptr::NonNull::new(first).ok_or(ENOMEM)?;
        // INVARIANT: Just allocated with `order`, without `__GFP_COMP`.
        Ok(Self { first, order })
    }

    /// The number of pages in the block.
    #[inline]
    pub fn nr_pages(&self) -> usize {
        1 << self.order
    }

    /// Page `i` of the block; `None` past its end.
    pub fn page(&self, i: usize) -> Option<CpuPage<'_>> {
        if i >= self.nr_pages() {
            return None;
        }
        // SAFETY: A buddy block's `struct page`s are contiguous in the memmap (as a folio's,
        // `folio_page()`), so `first + i` is page `i` of it.
        let page = unsafe { self.first.as_ptr().add(i) };
        // SAFETY: The page is owned by the block and stays allocated while `self` is borrowed (type
        // invariant); `BorrowedPage` does not free it.
        let page = unsafe { kernel::page::BorrowedPage::from_raw(core::ptr::NonNull::new(page)?) };
        // SAFETY: The page allocator hands out system pages, never device-private ones.
        Some(unsafe { CpuPage::new_unchecked(page) })
    }
}

impl Drop for PageBlock {
    fn drop(&mut self) {
        // SAFETY: The block was allocated with this order and is freed only here (type invariant).
        unsafe { bindings::__free_pages(self.first.as_ptr(), self.order) };
    }
}
