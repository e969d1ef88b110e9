//! 2-D max pooling (dilation 1, floor mode, symmetric padding) as one pass over each plane,
//! with its backward.
//!
//! Why by hand: flex's `max_pool2d` works out every window's valid range with integer
//! divisions per output element; on the stem's `[256, 64, 14, 14]` it took 24–31 ms of a
//! 119 ms inference forward. Here the valid ranges of the output rows and columns are found
//! once per call. The maximum is PyTorch's: the first largest value in row-major order, NaN
//! winning, so the output is the same bits as any max pool's and the gradient goes where
//! PyTorch sends it.

use std::ops::Range;

use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use multiversion::multiversion;
use rayon::prelude::*;

/// The layout of a max pool: input `[N, C, H, W]`, a `kernel` moved by `stride` over the
/// input padded by `padding` on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPoolShape {
    /// Images.
    pub batch: usize,
    /// Channels, pooled one by one.
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Padding on each side (never selected: it is −∞).
    pub padding: [usize; 2],
}

impl MaxPoolShape {
    /// Output height and width (floor mode).
    pub fn output(&self) -> [usize; 2] {
        [0, 1].map(|d| {
            (self.input[d] + 2 * self.padding[d]).saturating_sub(self.kernel[d]) / self.stride[d]
                + 1
        })
    }

    /// Whether every window holds at least one input value (padding below the kernel, as
    /// PyTorch requires, and no zero size).
    pub fn is_valid(&self) -> bool {
        (0..2).all(|d| {
            self.input[d] > 0
                && self.stride[d] > 0
                && self.kernel[d] > 0
                && 2 * self.padding[d] <= self.kernel[d]
                && self.input[d] + 2 * self.padding[d] >= self.kernel[d]
        })
    }

    /// Valid input range of each output position along dimension `d`.
    fn windows(&self, d: usize) -> Vec<Range<usize>> {
        (0..self.output()[d])
            .map(|o| {
                let start = (o * self.stride[d]) as isize - self.padding[d] as isize;
                let end = (start + self.kernel[d] as isize).min(self.input[d] as isize);
                start.max(0) as usize..end.max(0) as usize
            })
            .collect()
    }

    fn planes(&self) -> usize {
        self.batch * self.channels
    }
}

/// The pooled output `[N, C, Ho, Wo]` and, per output, the index of the chosen value within
/// its input plane.
pub fn max_pool2d_forward(x: &[f32], shape: MaxPoolShape) -> (Vec<f32>, Vec<u32>) {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output();
    let (rows, cols) = (shape.windows(0), shape.windows(1));
    let mut out = vec![0.0f32; shape.planes() * ho * wo];
    let mut idx = vec![0u32; out.len()];
    out.par_chunks_mut(ho * wo)
        .zip(idx.par_chunks_mut(ho * wo))
        .zip(x.par_chunks(h * w))
        .for_each(|((out, idx), plane)| {
            let cells = out.iter_mut().zip(idx.iter_mut());
            for ((o, i), (r, c)) in
                cells.zip(rows.iter().flat_map(|r| cols.iter().map(move |c| (r, c))))
            {
                let (mut best, mut at) = (f32::NEG_INFINITY, r.start * w + c.start);
                for y in r.clone() {
                    for (x, &v) in plane[y * w..][c.clone()].iter().enumerate() {
                        if v > best || v.is_nan() {
                            (best, at) = (v, y * w + c.start + x);
                        }
                    }
                }
                (*o, *i) = (best, at as u32);
            }
        });
    (out, idx)
}

/// The pooled output alone, for a forward without a backward: the values of
/// [`max_pool2d_forward`] bit for bit.
///
/// Why a second path: with no gradient to route, the index of each maximum is not needed, and
/// the windows factor into a pass along the rows (each input row's maximum over every output
/// column's window) and a pass down the columns, which vectorises across output columns; the
/// one-window-at-a-time loop took ~8% of an inference forward at batch 256. The same values
/// come out: "the first largest, NaN winning" is associative and −∞ is its identity, so
/// taking it row by row and then across rows picks what the row-major scan picks.
pub fn max_pool2d_values(x: &[f32], shape: MaxPoolShape) -> Vec<f32> {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output();
    let (rows, cols) = (shape.windows(0), shape.windows(1));
    let mut out = vec![0.0f32; shape.planes() * ho * wo];
    out.par_chunks_mut(ho * wo)
        .zip(x.par_chunks(h * w))
        .for_each_init(Vec::new, |row_max, (out, plane)| {
            pool_plane(plane, w, [&rows, &cols], row_max, out)
        });
    out
}

/// The later of two values in a scan for the first largest, NaN winning.
#[inline(always)]
fn pick(best: f32, v: f32) -> f32 {
    if v > best || v.is_nan() { v } else { best }
}

/// One plane of [`max_pool2d_values`], with `row_max` as scratch.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn pool_plane(
    plane: &[f32],
    w: usize,
    [rows, cols]: [&[Range<usize>]; 2],
    row_max: &mut Vec<f32>,
    out: &mut [f32],
) {
    let wo = cols.len();
    row_max.resize(plane.len() / w * wo, 0.0);
    for (line, maxima) in plane.chunks_exact(w).zip(row_max.chunks_exact_mut(wo)) {
        for (m, c) in maxima.iter_mut().zip(cols) {
            *m = line[c.clone()]
                .iter()
                .fold(f32::NEG_INFINITY, |b, &v| pick(b, v));
        }
    }
    for (dst, r) in out.chunks_exact_mut(wo).zip(rows) {
        dst.fill(f32::NEG_INFINITY);
        for y in r.clone() {
            for (d, &v) in dst.iter_mut().zip(&row_max[y * wo..][..wo]) {
                *d = pick(*d, v);
            }
        }
    }
}

/// The input gradient: each output's gradient added at the input it chose.
pub fn max_pool2d_backward(grad: &[f32], indices: &[u32], shape: MaxPoolShape) -> Vec<f32> {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output();
    let mut dx = vec![0.0f32; shape.planes() * h * w];
    dx.par_chunks_mut(h * w)
        .zip(grad.par_chunks(ho * wo).zip(indices.par_chunks(ho * wo)))
        .for_each(|(dx, (g, i))| {
            for (&g, &i) in g.iter().zip(i) {
                dx[i as usize] += g;
            }
        });
    dx
}

/// What a `MaxPool2d` module computes, on flex by [`max_pool2d_forward`] (with
/// [`max_pool2d_backward`] under autodiff); other backends, dilation, ceil mode or padding
/// other than explicit and symmetric take the module's own forward.
pub fn max_pool2d_module(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        use crate::glue::is_flex_f32;
        use burn::nn::PaddingConfig2d;
        let padding = match pool.padding {
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == bottom && left == right =>
            {
                Some([top, left])
            }
            PaddingConfig2d::Valid => Some([0, 0]),
            _ => None,
        };
        let [batch, channels, h, w] = x.dims();
        if let (Some(padding), [1, 1], false) = (padding, pool.dilation, pool.ceil_mode) {
            let shape = MaxPoolShape {
                batch,
                channels,
                input: [h, w],
                kernel: pool.kernel_size,
                stride: pool.stride,
                padding,
            };
            let fits = shape.is_valid() && h * w <= u32::MAX as usize;
            if fits && (is_flex_f32(&x, false) || is_flex_f32(&x, true)) {
                return crate::glue::max_pool2d(shape, x);
            }
        }
    }
    pool.forward(x)
}
