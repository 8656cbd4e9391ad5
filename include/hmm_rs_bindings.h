/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input of the module's bindgen step: what the kernel crate's
 * rust/bindings/bindings_helper.h does not carry yet. Upstream, these
 * lines would be added to that file.
 *
 * Only the items named in rust/bindgen_parameters are generated; the
 * types they refer to (struct page, folio, vm_area_struct, ...) come from
 * kernel::bindings, so there is one Rust type per C type.
 */

#include <linux/hmm.h>
#include <linux/memremap.h>
#include <linux/migrate.h>
#include <linux/mmu_notifier.h>
#include <linux/rmap.h>

#include "test_hmm_uapi.h"
#include "uapi/hmm_rs.h"

/* `bindgen` gets confused at function-like macros: evaluate them here. */
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_READ = HMM_DMIRROR_READ;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_WRITE = HMM_DMIRROR_WRITE;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_MIGRATE_TO_DEV = HMM_DMIRROR_MIGRATE_TO_DEV;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_MIGRATE_TO_SYS = HMM_DMIRROR_MIGRATE_TO_SYS;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_SNAPSHOT = HMM_DMIRROR_SNAPSHOT;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_EXCLUSIVE = HMM_DMIRROR_EXCLUSIVE;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_CHECK_EXCLUSIVE = HMM_DMIRROR_CHECK_EXCLUSIVE;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_RELEASE = HMM_DMIRROR_RELEASE;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_FLAGS = HMM_DMIRROR_FLAGS;
const unsigned int RUST_CONST_HELPER_HMM_DMIRROR_READ_UNLOCKED = HMM_DMIRROR_READ_UNLOCKED;
const unsigned int RUST_CONST_HELPER_HMM_RS_MIGRATE = HMM_RS_MIGRATE;

const gfp_t RUST_CONST_HELPER_GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER_MOVABLE;
const gfp_t RUST_CONST_HELPER___GFP_NOFAIL = __GFP_NOFAIL;
const gfp_t RUST_CONST_HELPER_GFP_HIGHUSER = GFP_HIGHUSER;
const gfp_t RUST_CONST_HELPER___GFP_RETRY_MAYFAIL = __GFP_RETRY_MAYFAIL;
const gfp_t RUST_CONST_HELPER___GFP_ACCOUNT = __GFP_ACCOUNT;
const gfp_t RUST_CONST_HELPER___GFP_THISNODE = __GFP_THISNODE;
const gfp_t RUST_CONST_HELPER_GFP_TRANSHUGE = GFP_TRANSHUGE;
const gfp_t RUST_CONST_HELPER___GFP_DIRECT_RECLAIM = __GFP_DIRECT_RECLAIM;
const gfp_t RUST_CONST_HELPER___GFP_NOMEMALLOC = __GFP_NOMEMALLOC;
const gfp_t RUST_CONST_HELPER_XA_FLAGS_ACCOUNT = XA_FLAGS_ACCOUNT;

/* Where the zone number sits in page->flags (page_ext.rs). */
const unsigned long RUST_CONST_HELPER_ZONES_PGSHIFT = ZONES_PGSHIFT;
/* The fan-out of an XArray node (hmm/mirror.rs clears leaf nodes whole). */
const unsigned long RUST_CONST_HELPER_XA_CHUNK_SHIFT = XA_CHUNK_SHIFT;

/*
 * Layout checks. For the C structures whose fields Rust code reads or
 * writes (ours and the kernel crate's), C's own offsets and sizes, which
 * rust/kernel/layout.rs compares at compile time with the layout bindgen
 * gave kernel::bindings. A kernel configuration that bindgen lays out
 * differently from the C compiler then fails the build instead of reading
 * the wrong word at run time.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/sched.h>

#define HMM_RS_OFF(t, f) \
	const unsigned long RUST_CONST_HELPER_HMM_RS_OFF_##t##_##f = offsetof(struct t, f)
#define HMM_RS_SIZE(t) \
	const unsigned long RUST_CONST_HELPER_HMM_RS_SIZE_##t = sizeof(struct t)

HMM_RS_OFF(task_struct, mm);
HMM_RS_OFF(task_struct, pid);
HMM_RS_OFF(task_struct, group_leader);
HMM_RS_SIZE(vm_area_struct);
HMM_RS_OFF(vm_area_struct, vm_mm);
HMM_RS_OFF(vm_area_struct, vm_flags);
HMM_RS_OFF(vm_area_struct, anon_vma);
HMM_RS_SIZE(anon_vma);
HMM_RS_OFF(anon_vma, root);
HMM_RS_OFF(anon_vma, num_children);
HMM_RS_SIZE(vm_fault);
HMM_RS_OFF(vm_fault, vma);
HMM_RS_OFF(vm_fault, page);
HMM_RS_OFF(vm_fault, pte);
HMM_RS_SIZE(page);
HMM_RS_OFF(page, flags);
HMM_RS_SIZE(xa_state);
HMM_RS_OFF(xa_state, xa);
HMM_RS_OFF(xa_state, xa_index);
HMM_RS_OFF(xa_state, xa_shift);
HMM_RS_OFF(xa_state, xa_sibs);
HMM_RS_OFF(xa_state, xa_offset);
HMM_RS_OFF(xa_state, xa_node);
HMM_RS_OFF(xa_state, xa_alloc);
HMM_RS_OFF(file, private_data);
HMM_RS_SIZE(miscdevice);
HMM_RS_OFF(miscdevice, fops);
HMM_RS_SIZE(dev_pagemap);
HMM_RS_OFF(dev_pagemap, type);
HMM_RS_OFF(dev_pagemap, ops);
HMM_RS_OFF(dev_pagemap, owner);
HMM_RS_OFF(dev_pagemap, nr_range);
HMM_RS_OFF(dev_pagemap, range);
HMM_RS_SIZE(mmu_interval_notifier);
HMM_RS_OFF(mmu_interval_notifier, mm);
HMM_RS_OFF(mmu_interval_notifier, invalidate_seq);
HMM_RS_SIZE(mmu_notifier_range);
HMM_RS_OFF(mmu_notifier_range, event);
HMM_RS_OFF(mmu_notifier_range, owner);
HMM_RS_SIZE(migrate_vma);
HMM_RS_OFF(migrate_vma, fault_page);
HMM_RS_SIZE(hmm_range);
HMM_RS_OFF(hmm_range, dev_private_owner);

/* Page table geometry, for HMM_DMIRROR_PROT_PMD/PUD. */
const unsigned int RUST_CONST_HELPER_HMM_RS_PMD_SHIFT = PMD_SHIFT;
const unsigned int RUST_CONST_HELPER_HMM_RS_PUD_SHIFT = PUD_SHIFT;
/* The order of a PMD-mapped THP: what MIGRATE_PFN_COMPOUND entries span. */
const unsigned int RUST_CONST_HELPER_HMM_RS_HPAGE_PMD_ORDER = PMD_SHIFT - PAGE_SHIFT;
