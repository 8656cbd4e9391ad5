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

#include "test_hmm_uapi.h"

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

const gfp_t RUST_CONST_HELPER_GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER_MOVABLE;
const gfp_t RUST_CONST_HELPER___GFP_NOFAIL = __GFP_NOFAIL;
