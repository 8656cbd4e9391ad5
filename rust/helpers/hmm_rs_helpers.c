// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for hmm-rs: the static inline functions and macros of
 * linux/migrate.h, linux/hmm.h, linux/memremap.h and linux/mmu_notifier.h
 * that Rust cannot call directly. Upstream, these would be
 * rust/helpers/{migrate,hmm,memremap,mmu_notifier}.c with `rust_helper_`
 * names; out of tree they are linked into the module and prefixed
 * `hmm_rs_helper_`, the prefix bindgen's output drops again.
 *
 * Sorted by header.
 */

#include <linux/highmem.h>
#include <linux/hmm.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mmu_notifier.h>
#include <linux/pagemap.h>

/* linux/migrate.h */

unsigned long hmm_rs_helper_migrate_pfn(unsigned long pfn)
{
	return migrate_pfn(pfn);
}

struct page *hmm_rs_helper_migrate_pfn_to_page(unsigned long mpfn)
{
	return migrate_pfn_to_page(mpfn);
}

/* linux/highmem.h */

void hmm_rs_helper_copy_highpage(struct page *to, struct page *from)
{
	copy_highpage(to, from);
}

/* linux/gfp.h, linux/mm.h, linux/pagemap.h: pages as migration destinations */

struct page *hmm_rs_helper_alloc_page_vma(gfp_t gfp, struct vm_area_struct *vma,
					  unsigned long addr)
{
	return alloc_page_vma(gfp, vma, addr);
}

void hmm_rs_helper_lock_page(struct page *page)
{
	lock_page(page);
}

void hmm_rs_helper_put_page(struct page *page)
{
	put_page(page);
}

unsigned long hmm_rs_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}
