//! Convolutions on maps no larger than the kernel's live window as one GEMM against the
//! convolution's whole matrix ([`Lowering::Toeplitz`](super::Lowering::Toeplitz)).
//!
//! Why: a convolution is linear in the whole input plane,
//! `out[n, (o, p)] = Σ_(c, q) T[(o, p), (c, q)] · x[n, (c, q)]`, where `T` holds the weight of
//! the tap that links input pixel `q` to output pixel `p`, or zero. im2col multiplies every
//! output pixel by every live tap, including the taps that read padding at that pixel: on the
//! 2x2 maps of layer3 on MNIST each pixel reads the input through 4 of the 9 taps, so 5 of 9
//! products are zeros. With no more input pixels `Q` than live taps, `T` has at most as many
//! columns per output pixel as im2col's `K'` (4 against 9 there), and the NCHW tensors are
//! already this GEMM's operands in memory: `x` is `[C·Q, N]` column-major, the output
//! `[O·P, N]` column-major. No im2col, no layout permutation, and the backward keeps the input
//! and `T` instead of `col` and the live weight.

use super::{
    Conv2dPlan, ConvError, ForwardOutput, Gradients, MatRef, Order, matmul_new, written_in_chunks,
};

/// For each output pixel `p` and input pixel `q` (index `p·Q + q`), the kernel offset that links
/// them (`kh·kw` flat), or `kh·kw` (one past the last) where none does.
fn taps(plan: &Conv2dPlan) -> Vec<usize> {
    let s = &plan.shape;
    let [ho, wo] = plan.output;
    let [h, w] = s.input;
    // The kernel offset along dimension `d` linking output `o` to input `i`, if any.
    let offset = |i: usize, o: usize, d: usize| {
        (i + s.padding[d])
            .checked_sub(o * s.stride[d])
            .filter(|&k| k < s.kernel[d])
    };
    let pixels =
        |rows: usize, cols: usize| (0..rows).flat_map(move |r| (0..cols).map(move |c| (r, c)));
    pixels(ho, wo)
        .flat_map(|(oh, ow)| {
            pixels(h, w).map(
                move |(ih, iw)| match (offset(ih, oh, 0), offset(iw, ow, 1)) {
                    (Some(kh), Some(kw)) => kh * s.kernel[1] + kw,
                    _ => plan.kernel_len(),
                },
            )
        })
        .collect()
}

/// The weight's live taps kernel by kernel, `[O, C, L + 1]` with a zero after each kernel's `L`,
/// and for each (output pixel `p`, input pixel `q`) the one of a kernel's `L + 1` values that
/// `T` takes there (`L`, the zero, where no tap links them).
///
/// Why: the matrices read each kernel several times, in both orders; the weight of a layer4
/// convolution on its 1x1 map is 9.4 MB for one live tap in nine, read here once.
struct Kernels {
    values: Vec<f32>,
    /// Values per kernel, `L + 1`.
    len: usize,
    /// Index `p·Q + q`.
    index: Vec<usize>,
}

impl Kernels {
    fn new(plan: &Conv2dPlan, weight: &[f32]) -> Self {
        let (channels, kernel) = (plan.shape.in_channels, plan.kernel_len());
        let taps = taps(plan);
        // The taps that link some pair are the plan's live ones.
        let live = plan.live_offsets();
        let index = taps
            .iter()
            .map(|t| live.iter().position(|l| l == t).unwrap_or(live.len()))
            .collect();
        let len = live.len() + 1;
        let values = written_in_chunks(
            plan.shape.out_channels * channels * len,
            channels * len,
            |o, out| {
                for k in weight[o * channels * kernel..][..channels * kernel].chunks_exact(kernel) {
                    live.iter().for_each(|&t| out.push(k[t]));
                    out.push(0.0);
                }
            },
        );
        Self { values, len, index }
    }

    /// The live taps of the kernel of output channel `o`, input channel `c`, and the zero.
    fn of(&self, plan: &Conv2dPlan, o: usize, c: usize) -> &[f32] {
        &self.values[(o * plan.shape.in_channels + c) * self.len..][..self.len]
    }
}

/// The sizes `[O·P, C·Q, N]` of the GEMM.
fn sizes(plan: &Conv2dPlan) -> [usize; 3] {
    let s = &plan.shape;
    [
        s.out_channels * plan.out_pixels(),
        s.in_channels * s.input[0] * s.input[1],
        s.batch,
    ]
}

/// The convolution's matrix `T[(o, p), (c, q)]` from the kernels, in `order`.
///
/// Why both orders: `gemm` packs its left operand, a plain copy where its rows are adjacent in
/// memory and a gather of scattered values otherwise (the packing went from 4% to 12% of
/// inference with `T` row-major in the forward). The forward multiplies by `T`, the input
/// gradient by `Tᵀ`; building `T` twice costs one write per entry, far less than the GEMM.
fn matrix(plan: &Conv2dPlan, kernels: &Kernels, order: Order) -> Vec<f32> {
    // Input channels per task of the column-major T, whose columns take one channel's kernels
    // of every output channel, `C·(L + 1)` values apart: 16 kernels side by side per read.
    const BLOCK: usize = 16;
    let s = &plan.shape;
    let (np, nq) = (plan.out_pixels(), s.input[0] * s.input[1]);
    let index = &kernels.index;
    let [op, cq, _] = sizes(plan);
    match order {
        // One output channel per task: its P rows, (c, q) along each.
        Order::RowMajor => written_in_chunks(op * cq, np * cq, |o, out| {
            for index in index.chunks_exact(nq) {
                for c in 0..s.in_channels {
                    let k = kernels.of(plan, o, c);
                    index.iter().for_each(|&i| out.push(k[i]));
                }
            }
        }),
        // `BLOCK` input channels per task: their Q columns each, (o, p) down each column.
        Order::ColMajor => written_in_chunks(op * cq, BLOCK * nq * op, |task, out| {
            for c in task * BLOCK..(task * BLOCK + BLOCK).min(s.in_channels) {
                for q in 0..nq {
                    for o in 0..s.out_channels {
                        let k = kernels.of(plan, o, c);
                        (0..np).for_each(|p| out.push(k[index[p * nq + q]]));
                    }
                }
            }
        }),
    }
}

/// The weight gradient `[O, C, kh, kw]` from the gradient of `T` (row-major): each weight sums
/// the entries of `T` it was copied to, pixels in order (the same order every run).
fn fold(plan: &Conv2dPlan, dt: &[f32]) -> Vec<f32> {
    let s = &plan.shape;
    let (channels, kernel) = (s.in_channels, plan.kernel_len());
    let (np, nq) = (plan.out_pixels(), s.input[0] * s.input[1]);
    let taps = taps(plan);
    // For each kernel offset, the (p, q) pairs it links.
    let links: Vec<Vec<(usize, usize)>> = (0..kernel)
        .map(|t| {
            let pairs = (0..np).flat_map(|p| (0..nq).map(move |q| (p, q)));
            pairs.filter(|&(p, q)| taps[p * nq + q] == t).collect()
        })
        .collect();
    let [_, cq, _] = sizes(plan);
    written_in_chunks(plan.weight_len(), channels * kernel, |o, out| {
        let rows = &dt[o * np * cq..][..np * cq];
        for c in 0..channels {
            for pairs in &links {
                // From +0.0, as `scatter_weight` leaves the taps no pixel reads (an empty
                // `sum` of floats is -0.0).
                let sum = pairs
                    .iter()
                    .fold(0.0, |s, &(p, q)| s + rows[p * cq + c * nq + q]);
                out.push(sum);
            }
        }
    })
}

/// The output of the convolution by the column-major `T`.
fn output(plan: &Conv2dPlan, x: &[f32], t: &[f32]) -> Vec<f32> {
    let [op, cq, n] = sizes(plan);
    // out[O·P, N] (NCHW, column-major) = T[O·P, C·Q] · x[C·Q, N] (NCHW, column-major).
    matmul_new(
        MatRef::col_major(t, op),
        MatRef::col_major(x, cq),
        [op, n, cq],
        Order::ColMajor,
    )
}

fn check(plan: &Conv2dPlan, x: &[f32], weight: &[f32]) -> Result<(), ConvError> {
    plan.check("input", x.len(), plan.input_len())?;
    plan.check("weight", weight.len(), plan.weight_len())
}

/// The output alone.
pub(super) fn infer(plan: &Conv2dPlan, x: &[f32], weight: &[f32]) -> Result<Vec<f32>, ConvError> {
    check(plan, x, weight)?;
    let kernels = Kernels::new(plan, weight);
    Ok(output(plan, x, &matrix(plan, &kernels, Order::ColMajor)))
}

/// The forward pass: the output, no `col` (the backward takes the input) and `T` row-major as
/// the live weight, which the input gradient multiplies by.
pub(super) fn forward(
    plan: &Conv2dPlan,
    x: &[f32],
    weight: &[f32],
) -> Result<ForwardOutput, ConvError> {
    check(plan, x, weight)?;
    let kernels = Kernels::new(plan, weight);
    Ok(ForwardOutput {
        output: output(plan, x, &matrix(plan, &kernels, Order::ColMajor)),
        col: None,
        live_weight: Some(matrix(plan, &kernels, Order::RowMajor)),
    })
}

/// The gradients `want` asks for, from the input, `T` row-major and the output gradient, all as
/// they are (NCHW).
pub(super) fn backward(
    plan: &Conv2dPlan,
    x: &[f32],
    t: &[f32],
    grad_out: &[f32],
    want: [bool; 2],
) -> Result<Gradients, ConvError> {
    let [op, cq, n] = sizes(plan);
    plan.check("output gradient", grad_out.len(), op * n)?;
    if want[0] {
        plan.check("matrix", t.len(), op * cq)?;
    }
    if want[1] {
        plan.check("input", x.len(), plan.input_len())?;
    }
    let g = MatRef::col_major(grad_out, op);
    // Independent, as in the im2col backward: side by side each fills the other's gaps.
    Ok(rayon::join(
        // dx[C·Q, N] = Tᵀ[C·Q, O·P] · dOut[O·P, N], NCHW as it comes out.
        || want[0].then(|| matmul_new(MatRef::col_major(t, cq), g, [cq, n, op], Order::ColMajor)),
        // dT[O·P, C·Q] = dOut[O·P, N] · xᵀ[N, C·Q].
        || {
            want[1].then(|| {
                let dt = matmul_new(g, MatRef::row_major(x, cq), [op, cq, n], Order::RowMajor);
                fold(plan, &dt)
            })
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::Lowering;
    use super::*;

    /// A square `k`x`k` convolution with `k / 2` padding.
    fn plan(n: usize, c: usize, hw: usize, o: usize, k: usize, s: usize) -> Conv2dPlan {
        super::super::tests::plan(n, c, hw, o, k, s, k / 2)
    }

    #[test]
    fn chosen_for_the_small_maps_only() {
        // layer3.x.conv2, layer4.0.conv1, layer4.x.conv2 on MNIST; layer2 (4x4) and layer3.0.conv1
        // (4x4 → 2x2) have more input pixels than live taps; a 1x1 stride-2 kernel on 2x2 too.
        for (hw, s, want) in [
            (2, 1, true),
            (2, 2, true),
            (1, 1, true),
            (4, 1, false),
            (4, 2, false),
        ] {
            let got = plan(128, 3, hw, 4, 3, s).lowering() == Lowering::Toeplitz;
            assert_eq!(got, want, "{hw}x{hw} stride {s}");
        }
        assert_eq!(plan(128, 3, 2, 4, 1, 2).lowering(), Lowering::Im2col);
        // Below the batch where building the matrix pays.
        assert_eq!(plan(127, 3, 2, 4, 3, 1).lowering(), Lowering::Im2col);
    }

    #[test]
    fn taps_on_a_2x2_map() {
        // 3x3, padding 1: every output pixel reads every input pixel; (0, 0) reads (1, 1)
        // through the bottom-right tap, (1, 1) reads (0, 0) through the top-left one.
        let taps = taps(&plan(1, 1, 2, 1, 3, 1));
        assert_eq!(taps.len(), 16);
        let tap = |p: usize, q: usize| taps[p * 4 + q];
        assert_eq!(
            [tap(0, 0), tap(0, 3), tap(3, 0), tap(3, 3), tap(1, 2)],
            [4, 8, 0, 4, 6]
        );
        // 3x3 stride 2 on 2x2: the one output pixel reads all four through the lower right.
        assert_eq!(super::taps(&plan(1, 1, 2, 1, 3, 2)), [4, 5, 7, 8]);
        // 3x3 with padding 1 on 3x3: the top-left output pixel reads only the top-left 2x2
        // of the input, no tap (index 9) links it to the rest.
        let corner = super::taps(&plan(1, 1, 3, 1, 3, 1));
        assert_eq!(corner[..9], [4, 5, 9, 7, 8, 9, 9, 9, 9]);
    }

    /// A deterministic tensor of `len` values of both signs.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 + seed) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Both lowerings of one shape agree on the output and both gradients: im2col is the
    /// path the PyTorch fixtures check on larger maps.
    #[test]
    fn agrees_with_im2col_forward_and_backward() {
        // 20 input channels: two tasks of the column-major matrix, the second short.
        for (n, c, hw, o, s) in [
            (5, 3, 2, 4, 1),
            (3, 4, 2, 5, 2),
            (4, 6, 1, 3, 1),
            (2, 20, 2, 3, 1),
        ] {
            let im2col = plan(n, c, hw, o, 3, s);
            let toeplitz = im2col.clone().lowered_by(Lowering::Toeplitz);
            let x = values(toeplitz.input_len(), 1);
            let w = values(toeplitz.weight_len(), 2);
            let grad = values(toeplitz.output_len(), 3);
            let (a, b) = (
                toeplitz.forward(&x, &w).unwrap(),
                im2col.forward(&x, &w).unwrap(),
            );
            assert_close(&a.output, &b.output, "output");
            assert_close(&toeplitz.infer(&x, &w).unwrap(), &b.output, "infer");
            assert!(a.col.is_none());
            let ta = a.live_weight.as_deref().unwrap();
            let wb = b.live_weight.as_deref().unwrap_or(&w);
            let (dxa, dwa) = toeplitz.backward(&x, ta, &grad, [true, true]).unwrap();
            let cb = b.col.as_deref().unwrap();
            let (dxb, dwb) = im2col.backward(cb, wb, &grad, [true, true]).unwrap();
            assert_close(&dxa.unwrap(), &dxb.unwrap(), "input gradient");
            assert_close(&dwa.unwrap(), &dwb.unwrap(), "weight gradient");
        }
    }
}
