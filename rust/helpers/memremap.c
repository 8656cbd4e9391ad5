// SPDX-License-Identifier: GPL-2.0

#include <linux/memremap.h>
#include <linux/mm.h>

__rust_helper bool rust_helper_is_device_private_page(const struct page *page)
{
	return is_device_private_page(page);
}

__rust_helper bool rust_helper_is_device_coherent_page(const struct page *page)
{
	return is_device_coherent_page(page);
}

__rust_helper void rust_helper_zone_device_folio_init(struct folio *folio,
						      struct dev_pagemap *pgmap,
						      unsigned int order)
{
	zone_device_folio_init(folio, pgmap, order);
}

/*
 * page->zone_device_data without the folio_*() accessors' device-private
 * assertion: device-coherent pages carry driver data there too (test_hmm).
 */
__rust_helper void *rust_helper_page_zone_device_data(const struct page *page)
{
	return page->zone_device_data;
}

__rust_helper void rust_helper_page_set_zone_device_data(struct page *page,
							 void *data)
{
	page->zone_device_data = data;
}

/*
 * What the core does for a split device-private folio when the pagemap has
 * no folio_split op (zone_device_private_split_cb()): the new folio
 * inherits the pagemap and the anon mapping.
 */
__rust_helper void rust_helper_folio_split_inherit(struct folio *orig,
						   struct folio *new_folio)
{
	new_folio->pgmap = orig->pgmap;
	new_folio->page.mapping = orig->page.mapping;
}
