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
#include <linux/nodemask.h>
#include <linux/pagemap.h>
#include <linux/percpu-refcount.h>
#include <linux/sched/signal.h>

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

void hmm_rs_helper_memcpy_from_page(char *to, struct page *page, size_t offset,
				    size_t len)
{
	memcpy_from_page(to, page, offset, len);
}

void hmm_rs_helper_memcpy_to_page(struct page *page, size_t offset,
				  const char *from, size_t len)
{
	memcpy_to_page(page, offset, from, len);
}

void hmm_rs_helper_memzero_page(struct page *page, size_t offset, size_t len)
{
	memzero_page(page, offset, len);
}

/* linux/gfp.h, linux/mm.h, linux/pagemap.h: pages as migration destinations */

struct page *hmm_rs_helper_alloc_page_vma(gfp_t gfp, struct vm_area_struct *vma,
					  unsigned long addr)
{
	return alloc_page_vma(gfp, vma, addr);
}

struct folio *hmm_rs_helper_vma_alloc_folio(gfp_t gfp, int order,
					    struct vm_area_struct *vma, unsigned long addr)
{
	return vma_alloc_folio(gfp, order, vma, addr);
}

struct folio *hmm_rs_helper_folio_alloc(gfp_t gfp, unsigned int order)
{
	return folio_alloc(gfp, order);
}

void hmm_rs_helper_lock_page(struct page *page)
{
	lock_page(page);
}

void hmm_rs_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

void hmm_rs_helper_put_page(struct page *page)
{
	put_page(page);
}

unsigned long hmm_rs_helper_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

/* linux/hmm.h */

struct page *hmm_rs_helper_hmm_pfn_to_page(unsigned long hmm_pfn)
{
	return hmm_pfn_to_page(hmm_pfn);
}

unsigned int hmm_rs_helper_hmm_pfn_to_map_order(unsigned long hmm_pfn)
{
	return hmm_pfn_to_map_order(hmm_pfn);
}

/* linux/memremap.h */

bool hmm_rs_helper_is_device_private_page(const struct page *page)
{
	return is_device_private_page(page);
}

bool hmm_rs_helper_is_device_coherent_page(const struct page *page)
{
	return is_device_coherent_page(page);
}

void hmm_rs_helper_zone_device_folio_init(struct folio *folio,
					  struct dev_pagemap *pgmap,
					  unsigned int order)
{
	zone_device_folio_init(folio, pgmap, order);
}

/*
 * page->zone_device_data without the folio_*() accessors' device-private
 * assertion: device-coherent pages carry driver data there too (test_hmm).
 */
void *hmm_rs_helper_page_zone_device_data(const struct page *page)
{
	return page->zone_device_data;
}

void hmm_rs_helper_page_set_zone_device_data(struct page *page, void *data)
{
	page->zone_device_data = data;
}

/*
 * What the core does for a split device-private folio when the pagemap has
 * no folio_split op (zone_device_private_split_cb()): the new folio
 * inherits the pagemap and the anon mapping.
 */
void hmm_rs_helper_folio_split_inherit(struct folio *orig, struct folio *new_folio)
{
	new_folio->pgmap = orig->pgmap;
	new_folio->page.mapping = orig->page.mapping;
}

/* linux/mm.h, linux/mmzone.h */

/* Whether a fault is on a PTE (else on a PMD) mapping. */
bool hmm_rs_helper_vm_fault_is_pte(const struct vm_fault *vmf)
{
	return vmf->pte != NULL;
}

bool hmm_rs_helper_is_zero_page(const struct page *page)
{
	return is_zero_page(page);
}

bool hmm_rs_helper_is_zone_device_page(const struct page *page)
{
	return is_zone_device_page(page);
}

struct dev_pagemap *hmm_rs_helper_page_pgmap(const struct page *page)
{
	return page_pgmap(page);
}

struct page *hmm_rs_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

struct folio *hmm_rs_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

unsigned int hmm_rs_helper_folio_order(const struct folio *folio)
{
	return folio_order(folio);
}

/* linux/nodemask.h */

bool hmm_rs_helper_node_online(int nid)
{
	return node_online(nid);
}

/* linux/percpu-refcount.h */

void hmm_rs_helper_percpu_ref_get_many(struct percpu_ref *ref, unsigned long nr)
{
	percpu_ref_get_many(ref, nr);
}

void hmm_rs_helper_percpu_ref_put_many(struct percpu_ref *ref, unsigned long nr)
{
	percpu_ref_put_many(ref, nr);
}

/* linux/mmu_notifier.h */

void hmm_rs_helper_mmu_interval_set_seq(struct mmu_interval_notifier *interval_sub,
					unsigned long cur_seq)
{
	mmu_interval_set_seq(interval_sub, cur_seq);
}

bool hmm_rs_helper_mmu_interval_read_retry(struct mmu_interval_notifier *interval_sub,
					   unsigned long seq)
{
	return mmu_interval_read_retry(interval_sub, seq);
}

bool hmm_rs_helper_mmu_notifier_range_blockable(const struct mmu_notifier_range *range)
{
	return mmu_notifier_range_blockable(range);
}

/* linux/sched/signal.h */

int hmm_rs_helper_fatal_signal_pending(struct task_struct *p)
{
	return fatal_signal_pending(p);
}
