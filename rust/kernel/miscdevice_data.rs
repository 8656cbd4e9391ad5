// SPDX-License-Identifier: GPL-2.0

//! Misc devices whose `open` sees data attached to their registration.
//!
//! `kernel::miscdevice::MiscDevice::open` receives the `MiscDeviceRegistration` but no way to reach
//! the driver's per-device state, so a driver registering several devices of one type (test_hmm's
//! `/dev/hmm_dmirror0..3`) cannot tell them apart without a global or `container_of!`.
//! [`DataRegistration`] pairs a registration with the device's data and hands that data to
//! [`MiscDeviceWithData::open`]. (Upstream, this is what a `RegistrationData` for
//! `MiscDeviceRegistration` would provide.)
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

use core::marker::PhantomData;
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::VmaNew,
    prelude::*,
    types::ForeignOwnable,
};

/// A misc device whose files are opened with the registration's data.
///
/// Like [`MiscDevice`], a `#[vtable]` trait: the attribute on the `impl` sets `OwnerModule` to the
/// implementing crate's module, which becomes the owner of the device's `file_operations`, so that
/// the module cannot be unloaded while one of its files is open. Every implementation therefore
/// needs `#[vtable]` too.
#[vtable]
pub trait MiscDeviceWithData: Sized + 'static {
    /// The data attached to each registration of this device type.
    type Data: Send + Sync;

    /// What the private data of an open file is wrapped in.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called when the device is opened; `data` is its registration's.
    fn open(file: &File, data: &Self::Data) -> Result<Self::Ptr>;

    /// Called when the last reference to the file is gone.
    fn release(device: Self::Ptr, _file: &File) {
        drop(device);
    }

    /// `mmap` of the device file. Default: `ENODEV`.
    fn mmap(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _vma: &VmaNew,
    ) -> Result {
        Err(ENODEV)
    }

    /// An ioctl on the device file. Default: `ENOTTY`.
    fn ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        Err(ENOTTY)
    }
}

/// A registered misc device and its data.
///
/// # Invariants
///
/// Every `MiscDeviceRegistration<Adapter<T>>` is the `reg` field of a `DataRegistration<T>`:
/// `Adapter` is private to this module and only [`DataRegistration::register`] creates such
/// registrations.
#[pin_data]
pub struct DataRegistration<T: MiscDeviceWithData> {
    // Declared first so that it is dropped (deregistered) first: no `open` can run once `data` goes
    // away.
    #[pin]
    reg: MiscDeviceRegistration<Adapter<T>>,
    data: T::Data,
}

impl<T: MiscDeviceWithData> DataRegistration<T> {
    /// Registers a misc device with `data`, which is in place before the device node can be opened
    /// and dropped after it is gone.
    pub fn register(opts: MiscDeviceOptions, data: T::Data) -> impl PinInit<Self, Error> {
        // INVARIANT: The registration is created as the `reg` field of `Self`, after `data` is in
        // place.
        try_pin_init!(Self {
            data,
            reg <- MiscDeviceRegistration::register(opts),
        })
    }

    /// The data of this registration.
    #[inline]
    pub fn data(&self) -> &T::Data {
        &self.data
    }
}

/// The `MiscDevice` the kernel crate sees for a [`MiscDeviceWithData`].
struct Adapter<T>(PhantomData<T>);

#[vtable]
impl<T: MiscDeviceWithData> MiscDevice for Adapter<T> {
    // Not this crate's module (`#[vtable]`'s default): in tree, this is the kernel crate, built in,
    // whose `THIS_MODULE` is null, and a file of the driver's device would not hold the driver's
    // module.
    type OwnerModule = T::OwnerModule;
    type Ptr = T::Ptr;

    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<T::Ptr> {
        let reg: *const MiscDeviceRegistration<Self> = misc;
        // SAFETY: By the type invariants of `DataRegistration`, `misc` is the `reg` field of a
        // `DataRegistration<T>`, which is pinned and, as `misc_open()` keeps the device registered
        // during `open`, alive.
        let this = unsafe { &*kernel::container_of!(reg, DataRegistration<T>, reg) };
        T::open(file, &this.data)
    }

    fn release(device: T::Ptr, file: &File) {
        T::release(device, file)
    }

    fn mmap(device: <T::Ptr as ForeignOwnable>::Borrowed<'_>, file: &File, vma: &VmaNew) -> Result {
        T::mmap(device, file, vma)
    }

    fn ioctl(
        device: <T::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize> {
        T::ioctl(device, file, cmd, arg)
    }
}
