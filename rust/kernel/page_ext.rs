// SPDX-License-Identifier: GPL-2.0

//! Safe byte access to pages with a kernel mapping.
//!
//! `kernel::page::Page` offers `read_raw`/`write_raw`, which are `unsafe` for
//! two reasons: the raw pointer and data races with other users of the page.
//! Here the pointer is a slice, and the pages this crate copies are user
//! memory, which user space may write concurrently exactly as it may during
//! `copy_from_user()`: a torn copy is the documented outcome, not undefined
//! behaviour of the kernel. Device-private pages have a `struct page` but no
//! memory behind their kernel address: every function here refuses them
//! (`EINVAL`), so a `Page` naming one cannot be used to touch stray memory.
//! Upstream these would be methods of `Page`.
//!
//! C header: [`include/linux/highmem.h`](srctree/include/linux/highmem.h)

use crate::bindings;
use kernel::{page::Page, page::PAGE_SIZE, prelude::*};

/// `EINVAL` for a page whose contents the CPU cannot reach.
fn check(page: &Page) -> Result {
    // SAFETY: `page` is a valid page (type invariant of `Page`).
    if unsafe { bindings::is_device_private_page(page.as_ptr()) } {
        return Err(EINVAL);
    }
    Ok(())
}

/// Copies `dst.len()` bytes at `offset` of `page` into `dst`.
pub fn read(page: &Page, offset: usize, dst: &mut [u8]) -> Result {
    check(page)?;
    // SAFETY: `dst` is valid for writes of `dst.len()` bytes and not aliased;
    // concurrent writers of the page are user space (see the module doc).
    unsafe { page.read_raw(dst.as_mut_ptr(), offset, dst.len()) }
}

/// Copies `src` into `page` at `offset`.
pub fn write(page: &Page, offset: usize, src: &[u8]) -> Result {
    check(page)?;
    // SAFETY: `src` is valid for reads of `src.len()` bytes; concurrent users
    // of the page are user space (see the module doc).
    unsafe { page.write_raw(src.as_ptr(), offset, src.len()) }
}

/// Fills `page` with zeroes.
pub fn zero(page: &Page) -> Result {
    check(page)?;
    // SAFETY: The whole page is in bounds; see the module doc on races.
    unsafe { page.fill_zero_raw(0, PAGE_SIZE) }
}

/// Copies the contents of `src` to `dst` (`copy_highpage()`).
pub fn copy(dst: &Page, src: &Page) -> Result {
    check(dst)?;
    check(src)?;
    // SAFETY: Both are valid pages (type invariant of `Page`);
    // `copy_highpage()` maps each for the duration of the copy.
    unsafe { bindings::copy_highpage(dst.as_ptr(), src.as_ptr()) };
    Ok(())
}

/// A physically contiguous block of `1 << order` order-0 system pages,
/// allocated and freed together (`alloc_pages()` without `__GFP_COMP`).
///
/// What holds the contents of a large device-private folio: one allocation
/// instead of one per page.
///
/// # Invariants
///
/// `first` is the first page of a block of `1 << order` pages allocated by
/// `alloc_pages()` with that order and without `__GFP_COMP`, owned by this
/// object and freed with `__free_pages()` on drop.
pub struct PageBlock {
    first: core::ptr::NonNull<bindings::page>,
    order: u32,
}

// SAFETY: The block is plain memory owned by this object; it may be used and
// freed on any thread.
unsafe impl Send for PageBlock {}
// SAFETY: `&self` methods only hand out borrowed pages, whose byte accessors
// are safe to call concurrently (see the module doc on races).
unsafe impl Sync for PageBlock {}

impl PageBlock {
    /// Allocates a block of `1 << order` pages with `GFP_HIGHUSER`
    /// (`__GFP_NOWARN | __GFP_RETRY_MAYFAIL` for `order > 0`: large blocks
    /// are an optimisation the caller can do without).
    pub fn alloc(order: u32) -> Result<Self> {
        if order > bindings::MAX_PAGE_ORDER {
            return Err(EINVAL);
        }
        let mut gfp = bindings::GFP_HIGHUSER;
        if order > 0 {
            gfp |= bindings::__GFP_NOWARN | bindings::__GFP_RETRY_MAYFAIL;
        }
        // SAFETY: `alloc_pages_block()` may be called with any flags and an
        // order up to `MAX_PAGE_ORDER`; it may sleep, as callers expect.
        let first = unsafe { bindings::alloc_pages_block(gfp, order) };
        let first = core::ptr::NonNull::new(first).ok_or(ENOMEM)?;
        // INVARIANT: Just allocated with `order`, without `__GFP_COMP`.
        Ok(Self { first, order })
    }

    /// The number of pages in the block.
    pub fn nr_pages(&self) -> usize {
        1 << self.order
    }

    /// Page `i` of the block; `None` past its end.
    pub fn page(&self, i: usize) -> Option<kernel::page::BorrowedPage<'_>> {
        if i >= self.nr_pages() {
            return None;
        }
        // SAFETY: A buddy block's `struct page`s are contiguous in the memmap
        // (as a folio's, `folio_page()`), so `first + i` is page `i` of it.
        let page = unsafe { self.first.as_ptr().add(i) };
        // SAFETY: The page is owned by the block and stays allocated while
        // `self` is borrowed (type invariant); `BorrowedPage` does not free it.
        Some(unsafe { kernel::page::BorrowedPage::from_raw(core::ptr::NonNull::new(page)?) })
    }
}

impl Drop for PageBlock {
    fn drop(&mut self) {
        // SAFETY: The block was allocated with this order and is freed only
        // here (type invariant).
        unsafe { bindings::free_pages_block(self.first.as_ptr(), self.order) };
    }
}
