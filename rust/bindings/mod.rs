// SPDX-License-Identifier: GPL-2.0

//! Bindings for what the kernel crate's `bindings` do not carry yet.
//!
//! Generated at build time by the module's bindgen step (see `Kbuild`) from
//! `include/hmm_rs_bindings.h` (the items `rust/bindgen_parameters` names) and from
//! `rust/helpers/helpers.c`. Types both sides know, such as `struct page` or
//! `struct vm_area_struct`, are the kernel crate's own: everything in [`kernel::bindings`] is
//! re-exported here, so abstractions use one `bindings` path the way upstream code uses
//! `kernel::bindings`.
//!
//! Upstream, these items would be part of `kernel::bindings` itself.

#![allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

pub use kernel::bindings::*;

mod generated {
    #![allow(unused_imports)]
    include!("hmm_generated.rs");
}
pub use generated::*;
// The kernel crate's `anon_vma` is opaque; this one has its fields (a raw pointer to either is the
// same `struct anon_vma`).
pub use generated::anon_vma;

mod helpers {
    #![allow(unused_imports)]
    include!("hmm_helpers_generated.rs");
}
pub use helpers::*;

// SAFETY: `struct hmm_dmirror_cmd` is five `__u64`s: no padding, and every bit pattern is a valid
// value.
unsafe impl kernel::transmute::FromBytes for hmm_dmirror_cmd {}
// SAFETY: `struct hmm_dmirror_cmd` is five `__u64`s: no padding, so every byte of a value is
// initialised.
unsafe impl kernel::transmute::AsBytes for hmm_dmirror_cmd {}

// SAFETY: `struct hmm_rs_migrate` is integers only, and every bit pattern is a valid value.
unsafe impl kernel::transmute::FromBytes for hmm_rs_migrate {}
// SAFETY: `struct hmm_rs_migrate` has no padding (its size is the sum of its fields', asserted
// below), so every byte of a value is initialised.
unsafe impl kernel::transmute::AsBytes for hmm_rs_migrate {}

// No padding: the size is the sum of the fields' sizes.
const _: () = assert!(
    size_of::<hmm_rs_migrate>()
        == 3 * 8 + 6 * 4 + 8 + (hmm_rs_reason_HMM_RS_NR_REASONS as usize) * 8
);
