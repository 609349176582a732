//! The ATen kernels tch 0.22 does not bind, through `shim.cpp` (compiled by `build.rs` against
//! the libtorch that torch-sys links): the convolution's backward (`at::convolution_backward`,
//! oneDNN on the CPU, cuDNN on CUDA) and batch normalisation's (`native_batch_norm_backward`),
//! the kernels PyTorch's autograd runs. burn-tch composes both from generic tensor ops (a
//! transposed convolution, a convolution over swapped axes, a dozen elementwise passes).

use std::ffi::{c_char, c_int, CStr};
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn rode_conv3x3_backward(
        x: *const C_tensor,
        weight: *const C_tensor,
        grad: *const C_tensor,
        mask: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;

    #[allow(clippy::too_many_arguments)]
    fn rode_bn_backward(
        x: *const C_tensor,
        gamma: *const C_tensor,
        mean: *const C_tensor,
        spread: *const C_tensor,
        is_invstd: c_int,
        relu_out: *const C_tensor,
        grad: *const C_tensor,
        eps: f64,
        given: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;

    #[allow(clippy::too_many_arguments)]
    fn rode_sgd_steps(
        w: *const *const C_tensor,
        g: *const *const C_tensor,
        b: *const *const C_tensor,
        n: usize,
        lr: f64,
        wd: f64,
        momentum: f64,
        nesterov: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;

    fn rode_profile_start(cuda: c_int, err: *mut c_char, len: usize) -> c_int;

    fn rode_profile_stop(path: *const c_char, err: *mut c_char, len: usize) -> c_int;
}

/// Runs one shim call that fills three result handles.
fn call(f: impl FnOnce(*mut *mut C_tensor, *mut c_char, usize) -> c_int) -> [Option<Tensor>; 3] {
    let mut r = call_n(3, f).into_iter();
    [(); 3].map(|_| r.next().flatten())
}

/// Runs one shim call that fills `n` result handles. An ATen error is a bug of ours (shapes
/// and dtypes are fixed by the model), so it panics with ATen's message, as tch's own
/// bindings do.
fn call_n(
    n: usize,
    f: impl FnOnce(*mut *mut C_tensor, *mut c_char, usize) -> c_int,
) -> Vec<Option<Tensor>> {
    let mut out = vec![std::ptr::null_mut::<C_tensor>(); n];
    let mut err = [0 as c_char; 1024];
    if f(out.as_mut_ptr(), err.as_mut_ptr(), err.len()) != 0 {
        // SAFETY: the shim wrote a NUL-terminated message into `err` (zeroed, NUL at its end).
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
        panic!("ATen: {msg}");
    }
    // SAFETY: each non-null handle is a fresh `at::Tensor*` allocated by the shim with `new`,
    // owned by nobody else; tch's `Tensor` frees it with `delete` on drop.
    out.into_iter()
        .map(|p| (!p.is_null()).then(|| unsafe { Tensor::from_ptr(p) }))
        .collect()
}

/// The gradients of the 3×3 stride-1 padding-1 convolution that `mask` asks for (bit 0: `x`,
/// bit 1: the weight, bit 2: the bias): `[dx, dweight, dbias]`, `None` where not asked for.
pub fn conv3x3_backward(
    x: &Tensor,
    weight: &Tensor,
    grad: &Tensor,
    mask: i32,
) -> [Option<Tensor>; 3] {
    // SAFETY: the three handles are live tch tensors borrowed for the call; the shim does not
    // keep them.
    call(|out, err, len| unsafe {
        rode_conv3x3_backward(
            x.as_ptr(),
            weight.as_ptr(),
            grad.as_ptr(),
            mask,
            out,
            err,
            len,
        )
    })
}

/// `(dx, dγ, dβ)` of batch normalisation with the given statistics (`spread`: the variance, or
/// 1/√(var + ε) as ATen's training forward saves it), the ReLU's mask read from `relu_out` when
/// there is one; `given`: the statistics are not `x`'s own (see `shim.cpp`).
#[allow(clippy::too_many_arguments)]
pub fn bn_backward(
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    spread: Spread<'_>,
    relu_out: Option<&Tensor>,
    grad: &Tensor,
    epsilon: f64,
    given: bool,
) -> (Tensor, Tensor, Tensor) {
    let (spread, is_invstd) = match spread {
        Spread::Var(t) => (t, 0),
        Spread::InvStd(t) => (t, 1),
    };
    let relu_out = relu_out.map_or(std::ptr::null(), Tensor::as_ptr);
    // SAFETY: as in `conv3x3_backward`; `relu_out` is null or a live handle.
    let [dx, dg, db] = call(|out, err, len| unsafe {
        rode_bn_backward(
            x.as_ptr(),
            gamma.as_ptr(),
            mean.as_ptr(),
            spread.as_ptr(),
            is_invstd,
            relu_out,
            grad.as_ptr(),
            epsilon,
            c_int::from(given),
            out,
            err,
            len,
        )
    });
    let missing = || panic!("ATen: native_batch_norm_backward returned an undefined gradient");
    (
        dx.unwrap_or_else(missing),
        dg.unwrap_or_else(missing),
        db.unwrap_or_else(missing),
    )
}

/// A batch norm's per-channel spread as its backward receives it.
pub enum Spread<'a> {
    /// The biased variance.
    Var(&'a Tensor),
    /// 1/√(var + ε), saved by ATen's training forward.
    InvStd(&'a Tensor),
}

/// `(w'ᵢ, b'ᵢ)` of one SGD step with momentum of every tensor `wᵢ` (gradient `gᵢ`, buffer
/// `bᵢ`), ATen's multi-tensor ops (see `shim.cpp`).
pub fn sgd_steps(
    w: &[&Tensor],
    g: &[&Tensor],
    b: &[&Tensor],
    rule: crate::ops::SgdRule,
) -> (Vec<Tensor>, Vec<Tensor>) {
    let n = w.len();
    assert!(
        g.len() == n && b.len() == n,
        "SGD: {n} weights, {} gradients, {} buffers",
        g.len(),
        b.len()
    );
    let ptrs = |v: &[&Tensor]| v.iter().map(|t| t.as_ptr()).collect::<Vec<_>>();
    let (pw, pg, pb) = (ptrs(w), ptrs(g), ptrs(b));
    // SAFETY: the 3n handles are live tch tensors borrowed for the call (the shim copies the
    // handles, not the data, and keeps none); `out` has room for the 2n results.
    let r = call_n(2 * n, |out, err, len| unsafe {
        rode_sgd_steps(
            pw.as_ptr(),
            pg.as_ptr(),
            pb.as_ptr(),
            n,
            rule.lr,
            rule.weight_decay,
            rule.momentum,
            c_int::from(rule.nesterov),
            out,
            err,
            len,
        )
    });
    let mut r = r
        .into_iter()
        .map(|t| t.unwrap_or_else(|| panic!("ATen: the SGD step returned an undefined tensor")));
    let ws = r.by_ref().take(n).collect();
    (ws, r.collect())
}

/// Runs a shim call that returns only success or ATen's message.
fn status(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), String> {
    let mut err = [0 as c_char; 1024];
    if f(err.as_mut_ptr(), err.len()) == 0 {
        return Ok(());
    }
    // SAFETY: as in `call`.
    Err(unsafe { CStr::from_ptr(err.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// Starts PyTorch's profiler (Kineto) on this thread: ATen operations, and CUDA kernels when
/// `cuda` (see `shim.cpp`).
pub fn profile_start(cuda: bool) -> Result<(), String> {
    // SAFETY: the shim writes at most `len` bytes into `err`.
    status(|err, len| unsafe { rode_profile_start(c_int::from(cuda), err, len) })
}

/// Stops the profiler and writes its Chrome trace to `path`.
pub fn profile_stop(path: &std::path::Path) -> Result<(), String> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", path.display()))?;
    // SAFETY: `path` is NUL-terminated and outlives the call; `err` as above.
    status(|err, len| unsafe { rode_profile_stop(path.as_ptr(), err, len) })
}
