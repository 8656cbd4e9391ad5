// SPDX-License-Identifier: GPL-2.0

//! The tokens of device pages: idle ([`FreeDeviceFolio`]), migration destination
//! ([`LockedDeviceFolio`]), in use ([`DevicePage`], [`AnyDevicePage`]), and any page a migration or
//! a mirror meets ([`PageRef`]).

use super::{
    nr_pages, //
    DevicePagemap,
    DevicePagemapOps,
    PagemapOwner,
};
use crate::{bindings, page_ext::CpuPage};
use core::{
    any::TypeId,
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::Deref,
    ptr::NonNull,
    sync::atomic::Ordering, //
};
use kernel::{
    container_of,
    page::BorrowedPage,
    types::{
        ForeignOwnable,
        Opaque, //
    },
};

/// An idle device folio of a [`DevicePagemap<T>`] (a single page at order 0), owned by the driver.
///
/// # Invariants
///
/// - `page` is a page of the pagemap `pagemap` with refcount 0 that nobody else owns or uses; for
///   `order > 0` it heads `1 << order` such pages, naturally aligned, and the pagemap supports
///   `order` ([`DevicePagemap::supports_order`]).
/// - The token holds `1 << order` references on the pagemap's `percpu_ref`, which keep `pagemap`
///   alive.
pub struct FreeDeviceFolio<T: DevicePagemapOps> {
    pub(super) page: NonNull<bindings::page>,
    pub(super) pagemap: NonNull<DevicePagemap<T>>,
    pub(super) order: u32,
}

// SAFETY: The token is exclusive ownership of an idle page; nothing about it is tied to a thread,
// and the pagemap it refers to is `Sync`.
unsafe impl<T: DevicePagemapOps> Send for FreeDeviceFolio<T> {}
// SAFETY: `&self` methods only read.
unsafe impl<T: DevicePagemapOps> Sync for FreeDeviceFolio<T> {}

impl<T: DevicePagemapOps> FreeDeviceFolio<T> {
    /// The page's pfn.
    pub fn pfn(&self) -> usize {
        crate::page_ext::page_to_pfn(self.page.as_ptr())
    }

    /// The order of the block of pages (0: a single page).
    #[inline]
    pub fn order(&self) -> u32 {
        self.order
    }

    /// The pagemap the page belongs to.
    pub fn pagemap(&self) -> &DevicePagemap<T> {
        // SAFETY: The token's references keep the pagemap alive (type invariant).
        unsafe { self.pagemap.as_ref() }
    }

    /// Splits an idle block into tokens for each of its pages.
    ///
    /// Pages the iterator is not driven to are released with it.
    pub fn split(self) -> SplitPages<T> {
        let this = ManuallyDrop::new(self);
        // INVARIANT: The block's references pass to the iterator.
        SplitPages {
            next: this.pfn(),
            end: this.pfn() + nr_pages(this.order),
            pagemap: this.pagemap,
        }
    }

    /// Puts the page in use: initialises it as a folio of `order()` with one reference
    /// (`zone_device_folio_init()`), locked, and stores `data` in it.
    ///
    /// The result is a migration destination. May sleep (`lock_page()`, on a page nobody else can
    /// see, so it does not wait).
    pub fn activate(self, data: T::PageData) -> LockedDeviceFolio<T> {
        let this = ManuallyDrop::new(self);
        let page = this.page.as_ptr();
        let pgmap = this.pagemap().as_raw();
        // SAFETY: The page is an idle page of `pgmap` that we own (type invariant), so it may be
        // initialised; our references keep `pgmap`'s `percpu_ref` above zero, so the reference the
        // page takes succeeds.
        unsafe { bindings::zone_device_folio_init(page.cast(), pgmap, this.order) };
        // SAFETY: We own the page; nobody reads its data before this.
        unsafe { bindings::page_set_zone_device_data(page, data.into_foreign()) };
        // SAFETY: The token's references; the page now holds its own.
        unsafe { bindings::percpu_ref_put_many(this.pagemap().percpu_ref(), nr_pages(this.order)) };
        // INVARIANT: The page is initialised with one reference, which is ours, locked by us, and
        // carries `data`.
        LockedDeviceFolio {
            page: this.page,
            _t: PhantomData,
        }
    }
}

impl<T: DevicePagemapOps> Drop for FreeDeviceFolio<T> {
    fn drop(&mut self) {
        let n = nr_pages(self.order);
        // INVARIANT: The pages are given up; our references, which keep the pagemap alive until the
        // put below, go next.
        self.pagemap().held.fetch_sub(n, Ordering::AcqRel);
        // SAFETY: The token's references (type invariant). The pagemap may be freed right after
        // this; it is not touched again.
        unsafe { bindings::percpu_ref_put_many(self.pagemap().percpu_ref(), n) };
    }
}

/// The pages of a split [`FreeDeviceFolio`] block: [`FreeDeviceFolio::split`].
///
/// # Invariants
///
/// `[next, end)` are idle pages of `pagemap` that nobody else owns, and the iterator holds one
/// pagemap reference for each.
pub struct SplitPages<T: DevicePagemapOps> {
    next: usize,
    end: usize,
    pagemap: NonNull<DevicePagemap<T>>,
}

impl<T: DevicePagemapOps> Iterator for SplitPages<T> {
    type Item = FreeDeviceFolio<T>;

    fn next(&mut self) -> Option<FreeDeviceFolio<T>> {
        if self.next >= self.end {
            return None;
        }
        let page = NonNull::new(crate::page_ext::pfn_to_page(self.next))?;
        self.next += 1;
        // INVARIANT: The page and its reference pass from the iterator to the token.
        Some(FreeDeviceFolio {
            page,
            pagemap: self.pagemap,
            order: 0,
        })
    }
}

impl<T: DevicePagemapOps> Drop for SplitPages<T> {
    fn drop(&mut self) {
        let left = self.end.saturating_sub(self.next);
        if left > 0 {
            // SAFETY: Our references keep the pagemap alive (type invariant).
            let pagemap = unsafe { self.pagemap.as_ref() };
            // INVARIANT: As in `FreeDeviceFolio::drop()`.
            pagemap.held.fetch_sub(left, Ordering::AcqRel);
            // SAFETY: The references of the pages not handed out (type invariant); the pagemap may
            // go away right after.
            unsafe { bindings::percpu_ref_put_many(pagemap.percpu_ref(), left) };
        }
    }
}

/// A device folio just put in use: locked, with the only reference, which the token owns.
///
/// Pass it to a migration as a destination with [`LockedDeviceFolio::into_migrate_pfn`]. Dropping
/// it unlocks and puts the page, which frees it to [`DevicePagemapOps::folio_free`] (so do not drop
/// it while holding a lock `folio_free` takes).
///
/// # Invariants
///
/// `page` is an in-use page of a `DevicePagemap<T>` (see [`DevicePage`]), locked by us, and the
/// token owns one reference to it.
pub struct LockedDeviceFolio<T: DevicePagemapOps> {
    page: NonNull<bindings::page>,
    _t: PhantomData<T>,
}

// SAFETY: A page lock and a page reference may be released on any thread.
unsafe impl<T: DevicePagemapOps> Send for LockedDeviceFolio<T> {}
// SAFETY: Shared access only reads (`&DevicePage<T>` methods).
unsafe impl<T: DevicePagemapOps> Sync for LockedDeviceFolio<T> {}

impl<T: DevicePagemapOps> LockedDeviceFolio<T> {
    /// The `migrate_pfn()` entry for this page as a migration destination (`migrate_vma::dst`); the
    /// caller adds `MIGRATE_PFN_WRITE` as needed.
    ///
    /// The page's lock and reference pass to the migration: `migrate_vma_finalize()` unlocks and
    /// puts the page, whether it was used (it is then mapped in its place) or not (it is then freed
    /// to [`DevicePagemapOps::folio_free`]).
    pub fn into_migrate_pfn(self) -> usize {
        let this = ManuallyDrop::new(self);
        // SAFETY: `migrate_pfn()` is arithmetic on the page's pfn.
        unsafe { bindings::migrate_pfn(this.pfn()) }
    }
}

impl<T: DevicePagemapOps> Deref for LockedDeviceFolio<T> {
    type Target = DevicePage<T>;

    fn deref(&self) -> &DevicePage<T> {
        // SAFETY: The page is in use and we hold a reference to it for as long as `self` is
        // borrowed (type invariant).
        unsafe { DevicePage::from_raw(self.page.as_ptr()) }
    }
}

impl<T: DevicePagemapOps> Drop for LockedDeviceFolio<T> {
    fn drop(&mut self) {
        // SAFETY: We locked the page and own a reference (type invariant).
        unsafe {
            bindings::unlock_page(self.page.as_ptr());
            bindings::put_page(self.page.as_ptr());
        }
    }
}

/// A device page in use, borrowed: `&DevicePage<T>`.
///
/// # Invariants
///
/// The page is a page of a `DevicePagemap<T>` that was put in use by [`FreeDeviceFolio::activate`]:
/// the head page of its folio holds in `zone_device_data` a pointer from
/// `T::PageData::into_foreign()`. A reference to the page (or a lock that keeps one in place) is
/// held for as long as the `&DevicePage<T>` exists, so the page is not freed, its data is not taken
/// back, and its pagemap is alive.
#[repr(transparent)]
pub struct DevicePage<T: DevicePagemapOps> {
    page: Opaque<bindings::page>,
    _t: PhantomData<T>,
}

// SAFETY: A `&DevicePage<T>` only reads the page through the C accessors, which may run
// concurrently, and lends out its data as `T::PageData::Borrowed`, which may be shared
// (`T::PageData: Sync`).
unsafe impl<T: DevicePagemapOps> Sync for DevicePage<T> {}

impl<T: DevicePagemapOps> Deref for DevicePage<T> {
    type Target = AnyDevicePage;

    #[inline]
    fn deref(&self) -> &AnyDevicePage {
        // SAFETY: Both are transparent wrappers of `struct page`; an in-use page of a
        // `DevicePagemap<T>` (type invariant) is an in-use device-private or -coherent page, kept
        // in use as long as `self`.
        unsafe { &*core::ptr::from_ref(self).cast::<AnyDevicePage>() }
    }
}

impl<T: DevicePagemapOps> DevicePage<T> {
    /// Views a page as a device page of a `DevicePagemap<T>`.
    ///
    /// # Safety
    ///
    /// `page` must be an in-use page of a `DevicePagemap<T>` (i.e. it has references, so it was
    /// activated by [`FreeDeviceFolio::activate`]), and a reference to it must be held for `'a`.
    pub unsafe fn from_raw<'a>(page: *mut bindings::page) -> &'a Self {
        // SAFETY: `DevicePage` is a transparent wrapper of `struct page`; the invariants hold by
        // the function safety requirements.
        unsafe { &*page.cast() }
    }

    /// The order of the folio the page belongs to.
    pub fn order(&self) -> u32 {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::folio_order(bindings::page_folio(self.as_raw())) }
    }

    /// Page `i` of the folio the page belongs to; `None` past its end.
    pub fn folio_page(&self, i: usize) -> Option<&DevicePage<T>> {
        if i >= nr_pages(self.order()) {
            return None;
        }
        // SAFETY: The page is valid (type invariant).
        let head = unsafe { bindings::page_folio(self.as_raw()) }.cast::<bindings::page>();
        // SAFETY: A folio's `struct page`s are contiguous in the memmap (`folio_page()`); `i` is in
        // it.
        let page = unsafe { head.add(i) };
        // SAFETY: A page of the same in-use folio, kept in use by what keeps `self` in use for the
        // borrow.
        Some(unsafe { Self::from_raw(page) })
    }

    /// The driver data stored in the page by [`FreeDeviceFolio::activate`].
    pub fn data(&self) -> <T::PageData as ForeignOwnable>::Borrowed<'_> {
        // SAFETY: The page is valid (type invariant).
        let head = unsafe { bindings::page_folio(self.as_raw()) }.cast::<bindings::page>();
        // SAFETY: `head` is the page's folio's head page, valid with it.
        let ptr = unsafe { bindings::page_zone_device_data(head) };
        // SAFETY: `ptr` came from `T::PageData::into_foreign()` (type invariant) and is taken back
        // (`from_foreign()`) only once the page is freed, which cannot happen while `self` is
        // borrowed.
        unsafe { T::PageData::borrow(ptr) }
    }

    /// The pagemap the page belongs to.
    pub fn pagemap(&self) -> &DevicePagemap<T> {
        // SAFETY: The page is valid (type invariant).
        let pgmap = unsafe { bindings::page_pgmap(self.as_raw()) };
        // SAFETY: The page belongs to a `DevicePagemap<T>`, kept alive by the page's references
        // while `self` is borrowed (type invariant).
        unsafe { DevicePagemap::from_raw(pgmap) }
    }
}

/// A device page in use, of any pagemap: `&AnyDevicePage`.
///
/// What a migration or a device page table finds when it meets a device-private or device-coherent
/// page without knowing whose it is. [`AnyDevicePage::downcast`] recognises the pages of a
/// [`DevicePagemap<T>`] with a given owner and returns their typed view.
///
/// # Invariants
///
/// The page is a `ZONE_DEVICE` page of type `MEMORY_DEVICE_PRIVATE` or `MEMORY_DEVICE_COHERENT`
/// that is in use (it has references), and stays in use while the `&AnyDevicePage` exists (a
/// reference, a page lock or a page table lock holds it), so its pagemap is alive.
#[repr(transparent)]
pub struct AnyDevicePage(Opaque<bindings::page>);

// SAFETY: A `&AnyDevicePage` only reads the page through C accessors that may run concurrently.
unsafe impl Sync for AnyDevicePage {}

impl AnyDevicePage {
    /// The raw `struct page`.
    #[inline]
    pub fn as_raw(&self) -> *mut bindings::page {
        self.0.get()
    }

    /// The page's pfn.
    #[inline]
    pub fn pfn(&self) -> usize {
        crate::page_ext::page_to_pfn(self.as_raw())
    }

    /// Whether the page is device-private (else device-coherent).
    #[inline]
    pub fn is_private(&self) -> bool {
        // SAFETY: The page is valid (type invariant).
        unsafe { bindings::is_device_private_page(self.as_raw()) }
    }

    /// Whether the page's pagemap was registered with `owner`.
    #[inline]
    pub fn is_owned_by(&self, owner: &PagemapOwner) -> bool {
        // SAFETY: The page is an in-use `ZONE_DEVICE` page (type invariant): its pagemap is valid
        // while the page is.
        owner.is(unsafe { (*bindings::page_pgmap(self.as_raw())).owner })
    }

    /// The page itself, if the CPU can access it (device-coherent memory).
    pub fn cpu_page(&self) -> Option<CpuPage<'_>> {
        if self.is_private() {
            return None;
        }
        // SAFETY: The page is valid while `self` is borrowed (type invariant), and a
        // device-coherent page is mapped in the kernel's linear map like system memory.
        let page = unsafe { BorrowedPage::from_raw(NonNull::from(&self.0).cast()) };
        // SAFETY: Not device-private (tested above).
        Some(unsafe { CpuPage::new_unchecked(page) })
    }

    /// The page as a page of a [`DevicePagemap<T>`] registered with `owner`.
    ///
    /// `None` if the page's pagemap has another owner, or was made with another type than `T`.
    pub fn downcast<T: DevicePagemapOps>(&self, owner: &PagemapOwner) -> Option<&DevicePage<T>> {
        if !self.is_owned_by(owner) {
            return None;
        }
        // SAFETY: The page is valid (type invariant).
        let pgmap = unsafe { bindings::page_pgmap(self.as_raw()) };
        // The owner is a `PagemapOwner`, which only `DevicePagemap` registers pagemaps with:
        // `pgmap` is the `pgmap` field of a `DevicePagemap<U>` for some `U`, and `type_id` is at
        // the same offset for every `U` (type invariant of `DevicePagemap`).
        let field = Opaque::cast_from(pgmap).cast_mut();
        // SAFETY: `field` is the `pgmap` field of a `DevicePagemap<U>`, laid out as a
        // `DevicePagemap<T>` up to and including `type_id`.
        let container = unsafe { container_of!(field, DevicePagemap<T>, pgmap) };
        // SAFETY: The pagemap is alive (the page is in use, type invariant), and `type_id` is
        // initialised before the pagemap is registered and never written after.
        let type_id = unsafe { (&raw const (*container).type_id).read() };
        if type_id != TypeId::of::<T>() {
            return None;
        }
        // SAFETY: The page is an in-use page of a `DevicePagemap<T>` (checked above), kept in use
        // for the borrow of `self` (type invariant).
        Some(unsafe { DevicePage::from_raw(self.as_raw()) })
    }
}

/// A page that a migration entry or a device page table entry names, by what it is.
///
/// A device-private page has a `struct page` but no memory the CPU can reach, so it is never handed
/// out as a plain [`Page`](kernel::page::Page): it comes as [`PageRef::Device`], and its contents
/// are the driver's business.
pub enum PageRef<'a> {
    /// A page of system memory (or of another `ZONE_DEVICE` type whose contents are in the kernel's
    /// linear map). Never a device-private page: that is what makes it a [`CpuPage`].
    System(CpuPage<'a>),
    /// A device-private or device-coherent page.
    Device(&'a AnyDevicePage),
}

impl<'a> PageRef<'a> {
    /// Classifies `page`.
    ///
    /// # Safety
    ///
    /// `page` must be a valid `struct page` that stays in use (referenced, or mapped under a lock
    /// that keeps it so) for `'a`.
    pub unsafe fn from_raw(page: NonNull<bindings::page>) -> Self {
        let raw = page.as_ptr();
        // SAFETY: `page` is valid (function safety requirements). Most pages are not `ZONE_DEVICE`
        // ones: one test for them.
        let device = unsafe {
            crate::page_ext::is_zone_device_page(raw)
                && (bindings::is_device_private_page(raw) || bindings::is_device_coherent_page(raw))
        };
        if device {
            // SAFETY: `AnyDevicePage` is a transparent wrapper of `struct page`; the page is an
            // in-use device-private or -coherent page, kept in use for `'a` (function safety
            // requirements).
            Self::Device(unsafe { &*raw.cast::<AnyDevicePage>() })
        } else {
            // SAFETY: The page is valid and stays so for `'a` (function safety requirements);
            // `BorrowedPage` does not free it.
            let page = unsafe { BorrowedPage::from_raw(page) };
            // SAFETY: A device-private page is a `Device` one (tested above).
            Self::System(unsafe { CpuPage::new_unchecked(page) })
        }
    }

    /// The page, if the CPU can access its contents: a system page or a device-coherent one. `None`
    /// for a device-private page.
    pub fn cpu_page(&self) -> Option<CpuPage<'a>> {
        match self {
            Self::System(page) => Some(page.reborrow()),
            Self::Device(page) => page.cpu_page(),
        }
    }

    /// The device page, if it is one.
    #[inline]
    pub fn device(&self) -> Option<&'a AnyDevicePage> {
        match self {
            Self::System(_) => None,
            Self::Device(page) => Some(page),
        }
    }
}
