//! Hot loops compiled for the vector extensions the CPU has, chosen at run time.
//!
//! The crate is built for baseline x86-64 (SSE2) so that one binary runs everywhere; loops
//! written in plain Rust (batch norm, the convolution's stores) then compile to SSE, and took a
//! third of a TinyResNet step once the convolutions were fast. [`multiversion!`] compiles a
//! function's body three times (AVX-512, AVX2 + FMA, baseline) and picks one per call.

/// AVX-512 (F, VL, DQ, BW) on this CPU.
#[cfg(target_arch = "x86_64")]
pub fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// AVX2 and FMA on this CPU.
#[cfg(target_arch = "x86_64")]
pub fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `multiversion!(fn name<T: Float>(a: A, …) -> R { body })` defines `name`, whose body is
/// compiled for AVX-512, for AVX2 + FMA and for the baseline, and which runs the best version
/// the CPU supports. The body is an `#[inline(always)]` function called from
/// `#[target_feature]` ones, so everything it inlines is vectorised for that target.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<T: $bound:path>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name<T: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<T: $bound>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<T: $bound>($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<T: $bound>($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            {
                if $crate::ops::simd::avx512() {
                    // SAFETY: the features `avx512` is compiled for were detected on this CPU.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::ops::simd::avx2() {
                    // SAFETY: as above, for AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
