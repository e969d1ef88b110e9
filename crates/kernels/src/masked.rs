//! Plane-sized copies and sums that read another plane at a constant offset, skipping the
//! positions a mask leaves out, in 16-value AVX-512 blocks with lane masks.
//!
//! Why by hand: the flat taps of a 3x3 convolution on a 7x7 or 4x4 map are runs of ~42
//! values with holes. Compiled from plain Rust, even per target by `multiversion`, a run is
//! two or three vector blocks, a scalar tail and two `memset` calls for the zeros around it:
//! im2col was 15% of inference at batch 256, most of it in the tail and the calls. AVX-512's
//! masked loads and stores do a 49-value plane in four blocks, with no tail and no branch.
//! Neither Burn nor `gemm` exposes masked loads, and `pulp`'s closure dispatch left
//! non-inlined closures as SSE here before, so these are `std::arch` intrinsics behind a
//! run-time check; CPUs without AVX-512 keep the callers' portable loops.

/// How a plane of `len` values reads another plane of `len` values at offset `delta`: value
/// `j` reads `j + delta` where bit `j % 16` of mask `j / 16` is set. Built checked, so that
/// every set bit reads and writes inside the two planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaskedRun {
    masks: Vec<u16>,
    delta: isize,
    len: usize,
}

impl MaskedRun {
    /// The run over planes of `len` values where value `j` reads `j + delta` when `live(j)`.
    ///
    /// # Panics
    /// If a live `j` would read outside the plane: a caller's bug, not data.
    pub(crate) fn new(len: usize, delta: isize, live: impl Fn(usize) -> bool) -> Self {
        let mut masks = vec![0u16; len.div_ceil(16)];
        for j in (0..len).filter(|&j| live(j)) {
            let from = j as isize + delta;
            assert!(
                (0..len as isize).contains(&from),
                "a masked run reads outside its plane"
            );
            masks[j / 16] |= 1 << (j % 16);
        }
        Self { masks, delta, len }
    }

    /// Whether this CPU runs the AVX-512 passes; where it does not, callers use their own loops.
    pub(crate) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `dst[j] = src[j + delta]` where the mask is set, `0` elsewhere.
    ///
    /// # Panics
    /// If a plane has the wrong length, or (a caller's bug) without [`available`](Self::available).
    #[allow(unsafe_code)] // AVX-512 masked loads and stores; lengths asserted, masks checked at construction
    pub(crate) fn gather(&self, src: &[f32], dst: &mut [f32]) {
        assert!(src.len() == self.len && dst.len() == self.len && Self::available());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F (asserted); every set mask bit reads `src` and writes
        // `dst` inside their `len` values (checked in `new`), and the tail mask keeps the
        // stores inside `dst`. Masked-off lanes are not accessed.
        unsafe {
            avx512::gather(
                src.as_ptr(),
                self.delta,
                &self.masks,
                dst.as_mut_ptr(),
                self.len,
            )
        }
    }

    /// `dst[j] += src[j + delta]` where the mask is set; other values keep their bits.
    ///
    /// # Panics
    /// As [`gather`](Self::gather).
    #[allow(unsafe_code)] // as in `gather`
    pub(crate) fn accumulate(&self, src: &[f32], dst: &mut [f32]) {
        assert!(src.len() == self.len && dst.len() == self.len && Self::available());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gather`; here only the lanes of the mask are loaded and stored.
        unsafe {
            avx512::accumulate(src.as_ptr(), self.delta, &self.masks, dst.as_mut_ptr())
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_storeu_ps,
    };

    /// See [`super::MaskedRun::gather`]; the caller guarantees AVX-512F and in-bounds masks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather(
        src: *const f32,
        delta: isize,
        masks: &[u16],
        dst: *mut f32,
        len: usize,
    ) {
        for (b, &mask) in masks.iter().enumerate() {
            let j = b * 16;
            // SAFETY: the lanes of `mask` are inside `src`; `wrapping_offset` because the
            // block's first lane may lie before the plane while being masked off.
            let v = unsafe { _mm512_maskz_loadu_ps(mask, src.wrapping_offset(j as isize + delta)) };
            let lanes = len - j;
            // SAFETY: the 16 (or the last `lanes`) values from `j` are inside `dst`. A plain
            // store where the block is whole: masked stores cost more on Zen 4.
            unsafe {
                if lanes >= 16 {
                    _mm512_storeu_ps(dst.add(j), v);
                } else {
                    _mm512_mask_storeu_ps(dst.add(j), (1u16 << lanes) - 1, v);
                }
            }
        }
    }

    /// See [`super::MaskedRun::accumulate`]; the caller guarantees AVX-512F and in-bounds masks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn accumulate(src: *const f32, delta: isize, masks: &[u16], dst: *mut f32) {
        for (b, &mask) in masks.iter().enumerate() {
            let j = b * 16;
            // SAFETY: the lanes of `mask` are inside both planes (see `gather`).
            unsafe {
                let s = _mm512_maskz_loadu_ps(mask, src.wrapping_offset(j as isize + delta));
                let d = _mm512_maskz_loadu_ps(mask, dst.add(j));
                _mm512_mask_storeu_ps(dst.add(j), mask, _mm512_add_ps(d, s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x4 plane read one row down and one column left, with the wrapped column masked off:
    /// the scalar definition, value by value, including a `-0.0` that the sum must keep.
    #[test]
    fn masked_runs_are_the_scalar_loops() {
        if !MaskedRun::available() {
            return;
        }
        for len in [1, 15, 16, 17, 49] {
            let w = (len as f64).sqrt().ceil() as usize;
            let delta = w as isize - 1;
            let live = |j: usize| !j.is_multiple_of(w) && j + w - 1 < len;
            let run = MaskedRun::new(len, delta, live);
            let src: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![7.0f32; len];
            run.gather(&src, &mut dst);
            let mut sum: Vec<f32> = (0..len).map(|i| if i == 0 { -0.0 } else { 1.0 }).collect();
            let before = sum.clone();
            run.accumulate(&src, &mut sum);
            for j in 0..len {
                let read = (j as isize + delta) as usize;
                let want = if live(j) { src[read] } else { 0.0 };
                assert_eq!(dst[j].to_bits(), want.to_bits(), "gather {len} at {j}");
                let want = if live(j) {
                    before[j] + src[read]
                } else {
                    before[j]
                };
                assert_eq!(sum[j].to_bits(), want.to_bits(), "accumulate {len} at {j}");
            }
        }
    }
}
