// SPDX-License-Identifier: GPL-2.0

//! Compile-time checks that bindgen laid out the C structures this crate touches as the C compiler
//! does.
//!
//! `include/hmm_rs_bindings.h` records C's own offsets and sizes (`HMM_RS_OFF_*`, `HMM_RS_SIZE_*`);
//! here they are compared with the Rust definitions in `kernel::bindings` and this crate's
//! generated bindings. A mismatch fails the build. It happened: with `CONFIG_SCHEDSTATS=n`, bindgen
//! 0.73.2 drops the alignment of the empty, cache-line aligned `struct sched_statistics`, and every
//! later `task_struct` field (`mm` among them) was 48 bytes off in `kernel::bindings`.

use crate::bindings;
use core::mem::{offset_of, size_of};

macro_rules! check_offset {
    ($($ty:ident . $field:ident => $c:ident),* $(,)?) => {
        $(const _: () = assert!(
            offset_of!(bindings::$ty, $field) == bindings::$c as usize,
            concat!("kernel::bindings layout differs from C: ", stringify!($ty), ".",
                    stringify!($field)),
        );)*
    };
}

macro_rules! check_size {
    ($($ty:ident => $c:ident),* $(,)?) => {
        $(const _: () = assert!(
            size_of::<bindings::$ty>() == bindings::$c as usize,
            concat!("kernel::bindings size differs from C: ", stringify!($ty)),
        );)*
    };
}

check_offset! {
    task_struct.mm => HMM_RS_OFF_task_struct_mm,
    task_struct.pid => HMM_RS_OFF_task_struct_pid,
    task_struct.group_leader => HMM_RS_OFF_task_struct_group_leader,
    vm_area_struct.vm_mm => HMM_RS_OFF_vm_area_struct_vm_mm,
    vm_area_struct.__bindgen_anon_2 => HMM_RS_OFF_vm_area_struct_vm_flags,
    vm_area_struct.anon_vma => HMM_RS_OFF_vm_area_struct_anon_vma,
    anon_vma.root => HMM_RS_OFF_anon_vma_root,
    anon_vma.num_children => HMM_RS_OFF_anon_vma_num_children,
    vm_fault.__bindgen_anon_1 => HMM_RS_OFF_vm_fault_vma,
    vm_fault.page => HMM_RS_OFF_vm_fault_page,
    vm_fault.pte => HMM_RS_OFF_vm_fault_pte,
    page.flags => HMM_RS_OFF_page_flags,
    xa_state.xa => HMM_RS_OFF_xa_state_xa,
    xa_state.xa_index => HMM_RS_OFF_xa_state_xa_index,
    xa_state.xa_shift => HMM_RS_OFF_xa_state_xa_shift,
    xa_state.xa_sibs => HMM_RS_OFF_xa_state_xa_sibs,
    xa_state.xa_offset => HMM_RS_OFF_xa_state_xa_offset,
    xa_state.xa_node => HMM_RS_OFF_xa_state_xa_node,
    xa_state.xa_alloc => HMM_RS_OFF_xa_state_xa_alloc,
    file.private_data => HMM_RS_OFF_file_private_data,
    miscdevice.fops => HMM_RS_OFF_miscdevice_fops,
    dev_pagemap.type_ => HMM_RS_OFF_dev_pagemap_type,
    dev_pagemap.ops => HMM_RS_OFF_dev_pagemap_ops,
    dev_pagemap.owner => HMM_RS_OFF_dev_pagemap_owner,
    dev_pagemap.nr_range => HMM_RS_OFF_dev_pagemap_nr_range,
    dev_pagemap.__bindgen_anon_1 => HMM_RS_OFF_dev_pagemap_range,
    mmu_interval_notifier.mm => HMM_RS_OFF_mmu_interval_notifier_mm,
    mmu_interval_notifier.invalidate_seq => HMM_RS_OFF_mmu_interval_notifier_invalidate_seq,
    mmu_notifier_range.event => HMM_RS_OFF_mmu_notifier_range_event,
    mmu_notifier_range.owner => HMM_RS_OFF_mmu_notifier_range_owner,
    migrate_vma.fault_page => HMM_RS_OFF_migrate_vma_fault_page,
    hmm_range.dev_private_owner => HMM_RS_OFF_hmm_range_dev_private_owner,
}

check_size! {
    vm_area_struct => HMM_RS_SIZE_vm_area_struct,
    vm_fault => HMM_RS_SIZE_vm_fault,
    page => HMM_RS_SIZE_page,
    anon_vma => HMM_RS_SIZE_anon_vma,
    xa_state => HMM_RS_SIZE_xa_state,
    mmu_notifier_range => HMM_RS_SIZE_mmu_notifier_range,
    miscdevice => HMM_RS_SIZE_miscdevice,
    dev_pagemap => HMM_RS_SIZE_dev_pagemap,
    mmu_interval_notifier => HMM_RS_SIZE_mmu_interval_notifier,
    migrate_vma => HMM_RS_SIZE_migrate_vma,
    hmm_range => HMM_RS_SIZE_hmm_range,
}
