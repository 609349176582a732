//! Output buffers that every kernel writes in full: allocated without zeroing. `vec![0.0; n]`
//! asks the allocator for zeroed memory, and reused heap memory must then be cleared (`memset`
//! was 6 % of a TinyResNet step), only for the kernel to overwrite it.

use std::mem::MaybeUninit;

/// `len` slots to be written before [`assume_init`].
pub fn buffer<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit<T>` needs no initialisation, and the capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// The values of a buffer from [`buffer`].
///
/// # Safety
/// Every element of `v` has been written.
pub unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<T>` has `T`'s size and alignment, the allocation is the one `v`
    // owned (not dropped: `ManuallyDrop`), and the caller guarantees every element is written.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}
