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
