// SPDX-License-Identifier: GPL-2.0

#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/pagemap.h>

__rust_helper struct page *rust_helper_alloc_page_vma(gfp_t gfp,
						      struct vm_area_struct *vma,
						      unsigned long addr)
{
	return alloc_page_vma(gfp, vma, addr);
}

__rust_helper struct folio *rust_helper_vma_alloc_folio(gfp_t gfp, int order,
							struct vm_area_struct *vma,
							unsigned long addr)
{
	return vma_alloc_folio(gfp, order, vma, addr);
}

__rust_helper struct folio *rust_helper_folio_alloc(gfp_t gfp, unsigned int order)
{
	return folio_alloc(gfp, order);
}

__rust_helper struct folio *rust_helper___folio_alloc_node(gfp_t gfp,
							   unsigned int order,
							   int nid)
{
	return __folio_alloc_node(gfp, order, nid);
}

__rust_helper void rust_helper_copy_highpage(struct page *to, struct page *from)
{
	copy_highpage(to, from);
}

__rust_helper void rust_helper_memcpy_from_page(char *to, struct page *page,
						size_t offset, size_t len)
{
	memcpy_from_page(to, page, offset, len);
}

__rust_helper void rust_helper_memcpy_to_page(struct page *page, size_t offset,
					      const char *from, size_t len)
{
	memcpy_to_page(page, offset, from, len);
}

__rust_helper void rust_helper_memzero_page(struct page *page, size_t offset,
					    size_t len)
{
	memzero_page(page, offset, len);
}

__rust_helper void rust_helper_lock_page(struct page *page)
{
	lock_page(page);
}

__rust_helper void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

__rust_helper void rust_helper_put_page(struct page *page)
{
	put_page(page);
}

__rust_helper unsigned long rust_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

__rust_helper unsigned int rust_helper_folio_order(const struct folio *folio)
{
	return folio_order(folio);
}

__rust_helper bool rust_helper_is_zero_page(const struct page *page)
{
	return is_zero_page(page);
}

__rust_helper bool rust_helper_is_zone_device_page(const struct page *page)
{
	return is_zone_device_page(page);
}

__rust_helper struct dev_pagemap *rust_helper_page_pgmap(const struct page *page)
{
	return page_pgmap(page);
}

__rust_helper bool rust_helper_folio_maybe_dma_pinned(struct folio *folio)
{
	return folio_maybe_dma_pinned(folio);
}

__rust_helper bool rust_helper_folio_test_writeback(const struct folio *folio)
{
	return folio_test_writeback(folio);
}

__rust_helper bool rust_helper_folio_test_anon(const struct folio *folio)
{
	return folio_test_anon(folio);
}
