//! 2-D convolution (groups 1, dilation 1, no bias) as one GEMM over the whole batch, with its
//! weight and input gradients as batch-wide GEMMs too.
//!
//! Why by hand: burn-flex runs im2col + GEMM once per image, so at batch 64 the deep layers hand
//! `gemm` matrix-vector products (layer4 on 28x28 MNIST is 1x1 spatial) that stream the whole
//! weight per image, and its input gradient is a serial transposed convolution. Here the batch
//! is one matrix: `col[K', M]` with `M = N·Ho·Wo` output pixels and `K'` the (channel, tap)
//! pairs, and `out[O, M] = W[O, K'] · col`. Kernel taps that read only zero padding for every
//! output pixel (most of a 3x3 kernel on a 1x1 or 2x2 map) are left out of `K'`, so layer4 does
//! a ninth of the work. Maps no larger than the kernel's live window take the other
//! [`Lowering`] at large batches: the input times the convolution's whole matrix.
//!
//! Every loop that runs in parallel writes disjoint outputs, and `gemm` splits only the output
//! matrix between threads, so results depend on the data alone, not on scheduling.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use multiversion::multiversion;

use crate::batch_norm::EvalTail;

mod toeplitz;

/// The smallest batch for which [`Lowering::Toeplitz`] is chosen (see [`Conv2dShape::plan`]).
const TOEPLITZ_MIN_BATCH: usize = 128;

/// Output pixels per chunk of images in [`Conv2dPlan::infer`] and in the input gradient:
/// `col` or `dcol` for 576 rows (a 3x3 convolution of 64 channels) is then about 0.6 MB,
/// inside one core's L2 (1 MB on Zen 4) with room for the GEMM's packed blocks.
const CHUNK_COLUMNS: usize = 256;

/// Errors from describing a convolution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvError {
    /// A size that must be positive was zero.
    #[error("convolution {what} must be positive")]
    Zero {
        /// Which size.
        what: &'static str,
    },
    /// The kernel does not fit the padded input.
    #[error("kernel {kernel:?} is larger than the padded input {padded:?}")]
    KernelTooLarge {
        /// The kernel size.
        kernel: [usize; 2],
        /// The input size with padding.
        padded: [usize; 2],
    },
    /// A buffer does not have the length its shape implies.
    #[error("{what} has {got} values, the shape implies {expected}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length it should have.
        expected: usize,
    },
}

/// The shape of one convolution: input `[N, C, H, W]`, weight `[O, C, kh, kw]`, symmetric
/// padding, output `[N, O, Ho, Wo]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch size N.
    pub batch: usize,
    /// Input channels C.
    pub in_channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output channels O.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding on both sides, along height and width.
    pub padding: [usize; 2],
}

/// How a plan turns its convolution into matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowering {
    /// The live taps gathered into `col[K', M]` (im2col), times the live weight: for maps
    /// larger than the kernel's live window, and for every map at batches under 128.
    Im2col,
    /// The input planes themselves times the convolution's whole matrix (see the `toeplitz`
    /// module): for maps with no more pixels than the kernel has live taps (ResNet's 2x2 and
    /// 1x1 maps on MNIST) at batches of 128 or more.
    Toeplitz,
}

/// A checked [`Conv2dShape`] with the kernel taps that touch the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv2dPlan {
    shape: Conv2dShape,
    output: [usize; 2],
    lowering: Lowering,
    /// Kernel rows (resp. columns) that read the input for at least one output row (column).
    rows: Vec<Tap>,
    cols: Vec<Tap>,
    /// The live taps as runs over whole planes, when the output has the input's size at stride 1.
    flat: Option<Vec<FlatTap>>,
}

/// One live tap of a stride-1 convolution whose output plane has the input's size (3x3 with
/// padding 1, 1x1 without): output pixel `j` reads input pixel `j + from − first`, the same
/// offset for the whole plane, so the tap is one run `first..first + keep.len()` of the flat
/// plane, with `keep` false at the columns that read padding.
///
/// Why: on the 7x7, 4x4 and 2x2 maps of ResNet on MNIST a row is 7, 4 or 2 values, shorter than
/// one vector; im2col and col2im row by row ran as scalar loops with a call per row (col2im
/// was 7–9% of a training step). As one run of ~42 values with a mask they vectorise.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FlatTap {
    /// First output pixel (flat) that reads the input.
    first: usize,
    /// The input pixel (flat) it reads.
    from: usize,
    /// For each output pixel of the run, whether it reads the input.
    keep: Vec<bool>,
}

/// The live taps as [`FlatTap`] runs when `shape` keeps the plane's size at stride 1.
fn flat_taps(
    shape: &Conv2dShape,
    output: [usize; 2],
    rows: &[Tap],
    cols: &[Tap],
) -> Option<Vec<FlatTap>> {
    if shape.stride != [1, 1] || output != shape.input {
        return None;
    }
    let w = output[1];
    let taps = rows.iter().flat_map(|r| cols.iter().map(move |c| (*r, *c)));
    Some(
        taps.map(|(row, col)| {
            let first = row.lo * w + col.lo;
            let last = (row.hi - 1) * w + col.hi;
            FlatTap {
                first,
                from: row.first * w + col.first,
                keep: (first..last)
                    .map(|j| (col.lo..col.hi).contains(&(j % w)))
                    .collect(),
            }
        })
        .collect(),
    )
}

/// A kernel offset along one dimension that reads the input, and where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tap {
    /// The offset in the kernel.
    k: usize,
    /// Output positions `lo..hi` read inside the input.
    lo: usize,
    hi: usize,
    /// The input position output `lo` reads.
    first: usize,
}

/// The offsets `k` for which some output position `o` reads inside the input,
/// `0 <= o·stride + k − pad < size`, i.e. `o ∈ [ceil((pad − k)/stride), (size − 1 + pad − k)/stride]`.
fn live_taps(size: usize, out: usize, kernel: usize, stride: usize, pad: usize) -> Vec<Tap> {
    (0..kernel)
        .filter_map(|k| {
            let last = (size - 1 + pad).checked_sub(k)? / stride;
            let (lo, hi) = (pad.saturating_sub(k).div_ceil(stride), (last + 1).min(out));
            (lo < hi).then(|| Tap {
                k,
                lo,
                hi,
                first: lo * stride + k - pad,
            })
        })
        .collect()
}

impl Conv2dShape {
    /// Checks the sizes and finds the live kernel taps.
    pub fn plan(self) -> Result<Conv2dPlan, ConvError> {
        for (what, v) in [
            ("batch", self.batch),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("height", self.input[0]),
            ("width", self.input[1]),
            ("kernel height", self.kernel[0]),
            ("kernel width", self.kernel[1]),
            ("stride", self.stride[0].min(self.stride[1])),
        ] {
            if v == 0 {
                return Err(ConvError::Zero { what });
            }
        }
        let padded = [0, 1].map(|d| self.input[d] + 2 * self.padding[d]);
        if (0..2).any(|d| self.kernel[d] > padded[d]) {
            return Err(ConvError::KernelTooLarge {
                kernel: self.kernel,
                padded,
            });
        }
        let output = [0, 1].map(|d| (padded[d] - self.kernel[d]) / self.stride[d] + 1);
        let live = |d: usize| {
            live_taps(
                self.input[d],
                output[d],
                self.kernel[d],
                self.stride[d],
                self.padding[d],
            )
        };
        let (rows, cols) = (live(0), live(1));
        let flat = flat_taps(&self, output, &rows, &cols);
        // As many products as im2col's or fewer (Q input pixels against its live taps per
        // output pixel), and no im2col or layout permutation at all; but the matrix costs
        // about as much to build as a batch of 64 saves (layer3.x.conv2 on MNIST: forward
        // 4.4 ms against im2col's 2.6 ms at batch 64, 5.2 against 10.1 ms at batch 256).
        let pays = self.batch >= TOEPLITZ_MIN_BATCH;
        let lowering = match pays && self.input[0] * self.input[1] <= rows.len() * cols.len() {
            true => Lowering::Toeplitz,
            false => Lowering::Im2col,
        };
        Ok(Conv2dPlan {
            shape: self,
            output,
            lowering,
            rows,
            cols,
            flat,
        })
    }
}

impl Conv2dPlan {
    /// The shape this plan was made for.
    pub fn shape(&self) -> &Conv2dShape {
        &self.shape
    }

    /// Output height and width.
    pub fn output(&self) -> [usize; 2] {
        self.output
    }

    /// How this plan computes the convolution.
    pub fn lowering(&self) -> Lowering {
        self.lowering
    }

    /// This plan computing by `lowering` instead, to compare the two on one shape.
    #[cfg(test)]
    fn lowered_by(self, lowering: Lowering) -> Self {
        Self { lowering, ..self }
    }

    /// Output pixels per image, Ho·Wo.
    fn out_pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Columns of the batch matrix, M = N·Ho·Wo.
    fn m(&self) -> usize {
        self.shape.batch * self.out_pixels()
    }

    /// Rows of the batch matrix, K' = C · live rows · live columns.
    pub fn k_live(&self) -> usize {
        self.shape.in_channels * self.rows.len() * self.cols.len()
    }

    fn input_len(&self) -> usize {
        let s = &self.shape;
        s.batch * s.in_channels * s.input[0] * s.input[1]
    }

    fn weight_len(&self) -> usize {
        let s = &self.shape;
        s.out_channels * s.in_channels * s.kernel[0] * s.kernel[1]
    }

    /// Values in the output `[N, O, Ho, Wo]`.
    pub fn output_len(&self) -> usize {
        self.shape.out_channels * self.m()
    }

    fn check(&self, what: &'static str, got: usize, expected: usize) -> Result<(), ConvError> {
        if got == expected {
            Ok(())
        } else {
            Err(ConvError::Length {
                what,
                got,
                expected,
            })
        }
    }

    /// The input as the batch matrix `col[K', M]`: row (c, live tap), column (n, oh, ow).
    fn im2col(&self, x: &[f32]) -> Result<Vec<f32>, ConvError> {
        self.check("input", x.len(), self.input_len())?;
        let m = self.m();
        let mut col = vec![0.0f32; self.k_live() * m];
        col.par_chunks_mut(m)
            .enumerate()
            .for_each(|(row, dst)| self.im2col_row(x, row, 0..self.shape.batch, dst));
        Ok(col)
    }

    /// Row `row` of `col` for the images `images`, into `dst` of `images.len()·P`.
    fn im2col_row(&self, x: &[f32], row: usize, images: Range<usize>, dst: &mut [f32]) {
        im2col_row(self, x, row, images, dst)
    }

    /// The live tap `t` (row-major over live rows × live columns).
    fn tap(&self, t: usize) -> (Tap, Tap) {
        (
            self.rows[t / self.cols.len()],
            self.cols[t % self.cols.len()],
        )
    }

    /// Offsets of the live taps inside one `[kh, kw]` kernel, rows then columns: the order of
    /// `K'` within each input channel.
    fn live_offsets(&self) -> Vec<usize> {
        let kw = self.shape.kernel[1];
        self.rows
            .iter()
            .flat_map(|r| self.cols.iter().map(move |c| r.k * kw + c.k))
            .collect()
    }

    /// Weights in one `[kh, kw]` kernel.
    fn kernel_len(&self) -> usize {
        self.shape.kernel[0] * self.shape.kernel[1]
    }

    fn all_taps_live(&self) -> bool {
        self.rows.len() == self.shape.kernel[0] && self.cols.len() == self.shape.kernel[1]
    }

    /// The weight restricted to the live taps, `[O, K']`: the weight itself when every tap
    /// is live.
    fn live_weight<'w>(&self, weight: &'w [f32]) -> Result<Cow<'w, [f32]>, ConvError> {
        self.check("weight", weight.len(), self.weight_len())?;
        if self.all_taps_live() {
            return Ok(weight.into());
        }
        // One kernel at a time with its few live offsets: a flat iterator over every
        // (channel, tap) index took 19% of an inference forward at batch 64 (perf, layer4).
        // Output channels side by side: layer4 reads 9.4 MB of weight per convolution for
        // the one live tap in nine, serially 1% of a training step.
        let taps = self.live_offsets();
        let (o, kernel) = (self.shape.out_channels, self.kernel_len());
        let mut live = vec![0.0f32; o * self.k_live()];
        if taps.is_empty() {
            return Ok(live.into());
        }
        live.par_chunks_mut(self.k_live())
            .zip(weight.par_chunks(weight.len() / o))
            .for_each(|(dst, w)| {
                for (d, w) in dst.chunks_exact_mut(taps.len()).zip(w.chunks_exact(kernel)) {
                    for (d, &t) in d.iter_mut().zip(&taps) {
                        *d = w[t];
                    }
                }
            });
        Ok(live.into())
    }

    /// A `[O, K']` gradient in `order` spread back to `[O, C, kh, kw]`, zero at the taps that
    /// only ever read padding.
    fn scatter_weight(&self, live: Vec<f32>, order: Order) -> Vec<f32> {
        let (o, k) = (self.shape.out_channels, self.k_live());
        if self.all_taps_live() && matches!(order, Order::RowMajor) {
            return live;
        }
        let taps = self.live_offsets();
        let mut full = vec![0.0f32; self.weight_len()];
        if taps.is_empty() {
            // Every tap reads padding only: the gradient is zero.
            return full;
        }
        // Live column j of output channel `out` is tap `j % |taps|` of input channel
        // `j / |taps|`, so the kernels `[kh, kw]` of `full` take the live values in turn.
        let at = |out: usize, j: usize| match order {
            Order::RowMajor => live[out * k + j],
            Order::ColMajor => live[j * o + out],
        };
        for (kernel_index, kernel) in full.chunks_exact_mut(self.kernel_len()).enumerate() {
            let (out, c) = (
                kernel_index / self.shape.in_channels,
                kernel_index % self.shape.in_channels,
            );
            for (i, &t) in taps.iter().enumerate() {
                kernel[t] = at(out, c * taps.len() + i);
            }
        }
        full
    }

    /// The forward pass: `out[N, O, Ho, Wo]` from `x[N, C, H, W]` and `weight[O, C, kh, kw]`.
    /// Also returns what the backward pass multiplies by: `col` (unless it is `x`) and the
    /// live weight (unless it is `weight`).
    pub fn forward(&self, x: &[f32], weight: &[f32]) -> Result<ForwardOutput, ConvError> {
        if self.lowering == Lowering::Toeplitz {
            return toeplitz::forward(self, x, weight);
        }
        let col = self.im2col(x)?;
        let live_weight = self.live_weight(weight)?;
        let (o, k, m) = (self.shape.out_channels, self.k_live(), self.m());
        // out[O, M] = W'[O, K'] · col[K', M], all row-major.
        let out_om = matmul_new(
            MatRef::row_major(&live_weight, k),
            MatRef::row_major(&col, m),
            [o, m, k],
            Order::RowMajor,
        );
        Ok(ForwardOutput {
            output: self.om_to_nchw(&out_om),
            col: Some(col),
            // All taps live: the backward reads the caller's weight, no copy of it is kept.
            live_weight: match live_weight {
                Cow::Owned(live) => Some(live),
                Cow::Borrowed(_) => None,
            },
        })
    }

    /// The output `[N, O, Ho, Wo]` alone, for a forward pass that keeps nothing for a backward.
    ///
    /// Why not [`forward`](Self::forward): without a backward to feed, `col` need not exist for
    /// the whole batch at once. Where the feature maps are large enough to give every thread
    /// several chunks, each thread takes a few images at a time (about `CHUNK_COLUMNS`
    /// output pixels), builds their `col` in a cache-sized buffer, multiplies on its own core and
    /// writes its images straight into the NCHW output; the whole-batch `col` (29 MB for layer1
    /// at batch 256) and its trip through memory go. Deep layers with few pixels per image keep
    /// the one batch-wide GEMM, which is where the batch is needed to fill the matrix.
    pub fn infer(&self, x: &[f32], weight: &[f32]) -> Result<Vec<f32>, ConvError> {
        self.infer_then(x, weight, None)
    }

    /// [`infer`](Self::infer) followed by `tail` (eval BatchNorm, residual, ReLU), applied to
    /// each chunk's planes while they are in cache where the output is written in chunks, else
    /// in one pass over the output.
    pub fn infer_then(
        &self,
        x: &[f32],
        weight: &[f32],
        tail: Option<&EvalTail>,
    ) -> Result<Vec<f32>, ConvError> {
        if let Some(tail) = tail {
            self.check("BatchNorm", tail.norm.len(), self.shape.out_channels)?;
            if let Some(r) = tail.residual {
                self.check("residual", r.len(), self.output_len())?;
            }
        }
        let p = self.out_pixels();
        let chunks = self.images_per_chunk();
        let (Some(per_chunk), Lowering::Im2col) = (chunks, self.lowering) else {
            let mut out = match self.lowering {
                // Nothing batch-wide to avoid: it multiplies the input itself.
                Lowering::Toeplitz => toeplitz::infer(self, x, weight)?,
                Lowering::Im2col => self.forward(x, weight)?.output,
            };
            if let Some(tail) = tail {
                tail.apply(&mut out, p);
            }
            return Ok(out);
        };
        self.check("input", x.len(), self.input_len())?;
        let live_weight = self.live_weight(weight)?;
        let (o, k) = (self.shape.out_channels, self.k_live());
        let out = written_in_chunks(self.output_len(), per_chunk * o * p, |chunk, out| {
            let first = chunk * per_chunk;
            let images = first..first + out.len() / (o * p);
            let cols = images.len() * p;
            // Every value of both buffers is written below before it is read.
            with_scratch([k * cols, o * cols], |col, om| {
                for (row, line) in col.chunks_exact_mut(cols).enumerate() {
                    self.im2col_row(x, row, images.clone(), line);
                }
                matmul_on(
                    Mat::row_major(om, cols),
                    MatRef::row_major(&live_weight, k),
                    MatRef::row_major(col, cols),
                    [o, cols, k],
                    gemm::Parallelism::None,
                );
                for b in 0..images.len() {
                    for ch in 0..o {
                        let plane = &mut om[ch * cols + b * p..][..p];
                        if let Some(tail) = tail {
                            tail.apply_plane(plane, (first + b) * o + ch);
                        }
                        out.extend(plane);
                    }
                }
            })
        });
        Ok(out)
    }

    /// Images per chunk (about `CHUNK_COLUMNS` output pixels) for the chunked paths, or `None`
    /// when that gives too few chunks to keep every thread busy and the batch-wide GEMM is
    /// the better split.
    fn images_per_chunk(&self) -> Option<usize> {
        let n = self.shape.batch;
        let per_chunk = (CHUNK_COLUMNS / self.out_pixels()).clamp(1, n);
        (n.div_ceil(per_chunk) >= 2 * rayon::current_num_threads()).then_some(per_chunk)
    }

    /// `[O, N·P]` (GEMM order) to `[N, O, P]` (NCHW), P = Ho·Wo.
    fn om_to_nchw(&self, om: &[f32]) -> Vec<f32> {
        let (o, p, n) = (self.shape.out_channels, self.out_pixels(), self.shape.batch);
        let (b, ch) = (|i: usize| i / o, |i: usize| i % o);
        concatenated(n * o, p, o, |i| &om[(ch(i) * n + b(i)) * p..][..p])
    }

    /// `[N, O, P]` (NCHW) to `[O, N·P]` (GEMM order).
    fn nchw_to_om(&self, nchw: &[f32]) -> Vec<f32> {
        let (o, p, n) = (self.shape.out_channels, self.out_pixels(), self.shape.batch);
        let (ch, b) = (|i: usize| i / n, |i: usize| i % n);
        concatenated(o * n, p, n, |i| &nchw[(b(i) * o + ch(i)) * p..][..p])
    }

    /// Both gradients of `(input, weight)` that `want` asks for (for im2col, with the output
    /// gradient permuted to GEMM order once). `col` is [`ForwardOutput::col`], or the input itself where
    /// that is `None`; `live_weight` is [`ForwardOutput::live_weight`], or the weight itself
    /// where that is `None`.
    pub fn backward(
        &self,
        col: &[f32],
        live_weight: &[f32],
        grad_out: &[f32],
        want: [bool; 2],
    ) -> Result<Gradients, ConvError> {
        if self.lowering == Lowering::Toeplitz {
            return toeplitz::backward(self, col, live_weight, grad_out, want);
        }
        let (o, k, m) = (self.shape.out_channels, self.k_live(), self.m());
        self.check("output gradient", grad_out.len(), o * m)?;
        if want[0] {
            self.check("live weight", live_weight.len(), o * k)?;
        }
        if want[1] {
            self.check("col", col.len(), k * m)?;
        }
        let g = self.nchw_to_om(grad_out);
        // The two gradients are independent: side by side, the serial stretches of one (gemm's
        // packing of a small operand, allocation, the weight scatter) overlap the other's work
        // instead of leaving the second core idle. Each writes only its own output.
        let (dx, dw) = rayon::join(
            || want[0].then(|| self.input_grad_om(live_weight, &g)),
            || want[1].then(|| self.weight_grad_om(col, &g)),
        );
        Ok((dx, dw))
    }

    fn weight_grad_om(&self, col: &[f32], g: &[f32]) -> Vec<f32> {
        let (o, k, m) = (self.shape.out_channels, self.k_live(), self.m());
        // dW'[O, K'] = dOut[O, M] · colᵀ[M, K']. Both factors run along M, which gemm cannot
        // pack into its panels with contiguous copies: for a row-major output it gathers all
        // of `col` one value at a time (`K'·M`; 10% of a training step at batch 64); for a
        // column-major one its micro-kernel reads `col` as it lies and gathers only dOut
        // (`O·M`), but the result then has to be transposed (`O·K'`). Whichever moves less:
        // column-major on layer1-2's large maps, row-major on the small ones (measured per
        // layer, the rule picks the faster order for all nine shapes of the MNIST ResNet-18).
        let order = if k * m > o * m + o * k {
            Order::ColMajor
        } else {
            Order::RowMajor
        };
        let live = matmul_new(
            MatRef::row_major(g, m),
            MatRef::col_major(col, m),
            [o, k, m],
            order,
        );
        self.scatter_weight(live, order)
    }

    /// `dx` from the output gradient `g[O, M]` (GEMM order).
    ///
    /// Why in chunks of images: the whole-batch `dcol[K', M]` is 7 MB for a layer1
    /// convolution at batch 64, allocated and zeroed every step and read back from memory in
    /// 49-value pieces of nine rows far apart. Each task multiplies `dcol` for a few images
    /// (about `CHUNK_COLUMNS` columns, ~0.6 MB, in a buffer it reuses) on its own core and sums
    /// it into those images' planes while it is still in L2. Layers with too few chunks to share
    /// between the threads keep the one batch-wide GEMM.
    fn input_grad_om(&self, live_weight: &[f32], g: &[f32]) -> Vec<f32> {
        let (o, k, m) = (self.shape.out_channels, self.k_live(), self.m());
        let p = self.out_pixels();
        let [h, w] = self.shape.input;
        let mut dx = vec![0.0f32; self.input_len()];
        let Some(per_chunk) = self.images_per_chunk() else {
            // dcol[K', M] = W'ᵀ[K', O] · dOut[O, M].
            let dcol = matmul_new(
                MatRef::col_major(live_weight, k),
                MatRef::row_major(g, m),
                [k, m, o],
                Order::RowMajor,
            );
            dx.par_chunks_mut(h * w)
                .enumerate()
                .for_each(|(plane, dst)| col2im_plane(self, &dcol, m, plane, dst));
            return dx;
        };
        let image = self.shape.in_channels * h * w;
        dx.par_chunks_mut(per_chunk * image)
            .enumerate()
            .for_each(|(chunk, dst)| {
                let cols = dst.len() / image * p;
                // The GEMM writes all of `dcol` before col2im reads it.
                with_scratch([k * cols, 0], |dcol, _| {
                    let g_chunk = MatRef {
                        data: &g[chunk * per_chunk * p..],
                        row_stride: m as isize,
                        col_stride: 1,
                    };
                    matmul_on(
                        Mat::row_major(dcol, cols),
                        MatRef::col_major(live_weight, k),
                        g_chunk,
                        [k, cols, o],
                        gemm::Parallelism::None,
                    );
                    for (plane, dst) in dst.chunks_exact_mut(h * w).enumerate() {
                        col2im_plane(self, dcol, cols, plane, dst);
                    }
                });
            });
        dx
    }
}

/// The `parts` slices `part(0), part(1), …` of `len` values each, end to end, copied on all
/// threads `per_task` parts at a time.
fn concatenated<'a>(
    parts: usize,
    len: usize,
    per_task: usize,
    part: impl Fn(usize) -> &'a [f32] + Sync,
) -> Vec<f32> {
    let per_task = per_task.max(1);
    written_in_chunks(parts * len, per_task * len, |task, out| {
        for i in 0..out.len() / len {
            out.extend(part(task * per_task + i));
        }
    })
}

/// A vector of `len` values written on all threads, `chunk` values per task, by
/// `fill(task, writer)`, which must write every value of its chunk in order; the vector is
/// never zeroed first.
///
/// Why: the layout permutations around each GEMM and the convolution's matrices write every
/// value; `vec![0.0; n]` zeroed them first on the calling thread while the other waited (with
/// [`matmul_new`]'s outputs, memset went from 4.1% to 2.2% of a training step).
#[allow(unsafe_code)] // `set_len` once every value is written
fn written_in_chunks(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut ChunkWriter) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(task, dst)| {
            let mut writer = ChunkWriter { dst, written: 0 };
            fill(task, &mut writer);
            assert_eq!(writer.written, writer.dst.len(), "a chunk left unwritten");
        });
    // SAFETY: the chunks cover all `len` values, and each chunk's writer wrote its values
    // from the first on, as many as the chunk has (asserted): every value is initialised.
    unsafe { out.set_len(len) };
    out
}

/// Writes one chunk of [`written_in_chunks`] front to back.
struct ChunkWriter<'a> {
    dst: &'a mut [std::mem::MaybeUninit<f32>],
    written: usize,
}

impl ChunkWriter<'_> {
    /// The length of the whole chunk.
    fn len(&self) -> usize {
        self.dst.len()
    }

    /// Writes the next value; panics past the end of the chunk.
    fn push(&mut self, value: f32) {
        self.dst[self.written].write(value);
        self.written += 1;
    }

    /// Writes the next `values.len()` values; panics past the end of the chunk.
    fn extend(&mut self, values: &[f32]) {
        self.dst[self.written..][..values.len()].write_copy_of_slice(values);
        self.written += values.len();
    }
}

thread_local! {
    /// Each thread's two working buffers for the chunked paths, kept between calls.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = RefCell::default();
}

/// Runs `f` on this thread's two scratch buffers cut to `lens`; their values are whatever an
/// earlier call left, so `f` must write before it reads.
///
/// Why: fresh buffers per chunk (rayon's `for_each_init` builds one per split, dozens a call)
/// were zero-filled each time, `memset` 5% of inference at batch 256; kept buffers only grow.
fn with_scratch<R>(lens: [usize; 2], f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let [a, b] = &mut *bufs;
            for (buf, &len) in [&mut *a, &mut *b].into_iter().zip(&lens) {
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
            }
            f(&mut a[..lens[0]], &mut b[..lens[1]])
        }
        // Only if `f` itself reached a chunked path on this thread: fresh buffers then.
        Err(_) => f(&mut vec![0.0; lens[0]], &mut vec![0.0; lens[1]]),
    })
}

/// Row `row` of `col` (input channel and live tap) for the images `images`, into `dst` of
/// `images.len()·P`, zero where the tap reads padding.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn im2col_row(plan: &Conv2dPlan, x: &[f32], row: usize, images: Range<usize>, dst: &mut [f32]) {
    let s = &plan.shape;
    let p = plan.out_pixels();
    let [h, w] = s.input;
    let wo = plan.output[1];
    let taps = plan.rows.len() * plan.cols.len();
    let (c, t) = (row / taps, row % taps);
    if let Some(flat) = &plan.flat {
        let tap = &flat[t];
        let len = tap.keep.len();
        for (img, n) in dst.chunks_exact_mut(p).zip(images) {
            let plane = &x[(n * s.in_channels + c) * h * w..][..h * w];
            img[..tap.first].fill(0.0);
            let run = img[tap.first..tap.first + len].iter_mut();
            for ((d, &v), &keep) in run.zip(&plane[tap.from..tap.from + len]).zip(&tap.keep) {
                *d = if keep { v } else { 0.0 };
            }
            img[tap.first + len..].fill(0.0);
        }
        return;
    }
    let (row, col) = plan.tap(t);
    let (iw0, width) = (col.first, col.hi - col.lo);
    for (img, n) in dst.chunks_exact_mut(p).zip(images) {
        let plane = &x[(n * s.in_channels + c) * h * w..][..h * w];
        img.fill(0.0);
        for (i, oh) in (row.lo..row.hi).enumerate() {
            let src = &plane[(row.first + i * s.stride[0]) * w..][..w];
            let out = &mut img[oh * wo + col.lo..][..width];
            if s.stride[1] == 1 {
                out.copy_from_slice(&src[iw0..iw0 + width]);
            } else {
                for (d, v) in out.iter_mut().zip(src[iw0..].iter().step_by(s.stride[1])) {
                    *d = *v;
                }
            }
        }
    }
}

/// Sums the entries of `dcol` (rows of `row_len` columns from the first image it covers) that
/// were read from input plane `plane` (image `n`, channel `c`, counted from that image) into
/// the plane `dst`, tap by tap in order.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn col2im_plane(plan: &Conv2dPlan, dcol: &[f32], row_len: usize, plane: usize, dst: &mut [f32]) {
    let s = &plan.shape;
    let (n, c) = (plane / s.in_channels, plane % s.in_channels);
    let (m, p) = (row_len, plan.out_pixels());
    let w = s.input[1];
    let wo = plan.output[1];
    let taps = plan.rows.len() * plan.cols.len();
    for t in 0..taps {
        let src = &dcol[(c * taps + t) * m + n * p..][..p];
        if let Some(flat) = &plan.flat {
            let tap = &flat[t];
            let len = tap.keep.len();
            let run = dst[tap.from..tap.from + len].iter_mut();
            for ((d, &v), &keep) in run.zip(&src[tap.first..tap.first + len]).zip(&tap.keep) {
                *d = if keep { *d + v } else { *d };
            }
            continue;
        }
        let (row, col) = plan.tap(t);
        let (iw0, width) = (col.first, col.hi - col.lo);
        for (i, oh) in (row.lo..row.hi).enumerate() {
            let line = &mut dst[(row.first + i * s.stride[0]) * w..][..w];
            let vals = &src[oh * wo + col.lo..][..width];
            if s.stride[1] == 1 {
                for (d, v) in line[iw0..iw0 + width].iter_mut().zip(vals) {
                    *d += v;
                }
            } else {
                for (j, v) in vals.iter().enumerate() {
                    line[iw0 + j * s.stride[1]] += v;
                }
            }
        }
    }
}

/// The input and weight gradients, each when asked for.
pub type Gradients = (Option<Vec<f32>>, Option<Vec<f32>>);

/// What [`Conv2dPlan::forward`] returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// The output `[N, O, Ho, Wo]`.
    pub output: Vec<f32>,
    /// The batch matrix `[K', M]` for the weight gradient; `None` when the plan multiplies
    /// the input itself ([`Lowering::Toeplitz`]).
    pub col: Option<Vec<f32>>,
    /// What the input gradient multiplies by where it is not the weight itself (then `None`,
    /// every tap live): the live weight `[O, K']`, or the convolution's whole matrix
    /// `[O·P, C·Q]` row-major ([`Lowering::Toeplitz`]).
    pub live_weight: Option<Vec<f32>>,
}

/// A mutable matrix view: data with row and column strides.
struct Mat<'a> {
    data: &'a mut [f32],
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Mat<'a> {
    fn row_major(data: &'a mut [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }
}

/// A read-only matrix view.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    row_stride: isize,
    col_stride: isize,
}

impl<'a> MatRef<'a> {
    fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `rows` rows, seen as the logical matrix.
    fn col_major(data: &'a [f32], rows: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: rows as isize,
        }
    }
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]` with the given parallelism.
#[allow(unsafe_code)] // one raw-pointer GEMM call, `dst` borrowed for its whole extent
fn matmul_on(dst: Mat, lhs: MatRef, rhs: MatRef, mnk: [usize; 3], parallelism: gemm::Parallelism) {
    let (rs, cs) = (dst.row_stride, dst.col_stride);
    // SAFETY: `dst.data` is a live, exclusively borrowed slice of its length.
    unsafe {
        gemm_raw(
            dst.data.as_mut_ptr(),
            dst.data.len(),
            [rs, cs],
            lhs,
            rhs,
            mnk,
            parallelism,
        )
    }
}

/// The memory order of a matrix.
#[derive(Clone, Copy)]
enum Order {
    RowMajor,
    ColMajor,
}

/// `lhs[m, k] · rhs[k, n]` as a new `[m, n]` matrix in `order`, on all threads.
///
/// Why not `vec![0.0; m·n]` and [`matmul_on`]: `gemm` told not to read its output writes every
/// value, so zeroing first only cost a pass, on the thread the other one then waits for (see
/// [`written_in_chunks`] for the figure). The test `gemm_writes_every_value_and_reads_none` holds
/// the `gemm` version pinned in Cargo.toml to that.
#[allow(unsafe_code)] // the output is written by `gemm` before `set_len`
fn matmul_new(lhs: MatRef, rhs: MatRef, [m, n, k]: [usize; 3], order: Order) -> Vec<f32> {
    let len = m * n;
    let strides = match order {
        Order::RowMajor => [n as isize, 1],
        Order::ColMajor => [1, m as isize],
    };
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = out.spare_capacity_mut()[..len].as_mut_ptr().cast::<f32>();
    // SAFETY: `dst` points to `len` allocated values of `out`, which nothing else reaches.
    unsafe {
        gemm_raw(
            dst,
            len,
            strides,
            lhs,
            rhs,
            [m, n, k],
            gemm::Parallelism::Rayon(0),
        )
    };
    // SAFETY: `gemm_raw` wrote all `m·n` values of the output, which fill `len` densely.
    unsafe { out.set_len(len) };
    out
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]` into `dst_len` values at `dst` with strides
/// `[row, column]`, writing every one of the `m·n` values and reading none.
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` values and alias neither input.
#[allow(unsafe_code)] // the one raw-pointer GEMM call, bounds asserted first
unsafe fn gemm_raw(
    dst: *mut f32,
    dst_len: usize,
    [dst_rs, dst_cs]: [isize; 2],
    lhs: MatRef,
    rhs: MatRef,
    [m, n, k]: [usize; 3],
    parallelism: gemm::Parallelism,
) {
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    assert!(dst_len >= last(m, n, dst_rs, dst_cs));
    assert!(lhs.data.len() >= last(m, k, lhs.row_stride, lhs.col_stride));
    assert!(rhs.data.len() >= last(k, n, rhs.row_stride, rhs.col_stride));
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index the strides reach inside the slices and
    // `dst`'s `dst_len` values, which the caller vouches for. With `read_dst` false `gemm`
    // sets its alpha to zero and stores every output value without reading it, including
    // for `k == 0` (zeros).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn plan(
        n: usize,
        c: usize,
        hw: usize,
        o: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> Conv2dPlan {
        Conv2dShape {
            batch: n,
            in_channels: c,
            input: [hw, hw],
            out_channels: o,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        }
        .plan()
        .unwrap()
    }

    fn offsets(plan: &Conv2dPlan) -> Vec<usize> {
        plan.rows.iter().map(|t| t.k).collect()
    }

    #[test]
    fn live_taps_on_the_networks_small_maps() {
        // layer4.0.conv2 on MNIST: 1x1 map, 3x3 pad 1: only the centre reads the input.
        assert_eq!(offsets(&plan(1, 1, 1, 1, 3, 1, 1)), vec![1]);
        // layer4.0.conv1: 2x2 → 1x1, stride 2: rows 1 and 2.
        assert_eq!(offsets(&plan(1, 1, 2, 1, 3, 2, 1)), vec![1, 2]);
        // layer3.x.conv2: 2x2 → 2x2: every tap is used by some output.
        assert_eq!(offsets(&plan(1, 1, 2, 1, 3, 1, 1)), vec![0, 1, 2]);
        assert_eq!(plan(1, 1, 1, 1, 3, 1, 1).k_live(), 1);
    }

    /// The textbook six-loop convolution, as the reference.
    fn naive(plan: &Conv2dPlan, x: &[f32], w: &[f32]) -> Vec<f32> {
        let s = plan.shape;
        let [ho, wo] = plan.output;
        let mut out = vec![0.0f32; plan.output_len()];
        for n in 0..s.batch {
            for o in 0..s.out_channels {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut acc = 0.0f64;
                        for c in 0..s.in_channels {
                            for ki in 0..s.kernel[0] {
                                for kj in 0..s.kernel[1] {
                                    let ih =
                                        (oh * s.stride[0] + ki) as isize - s.padding[0] as isize;
                                    let iw =
                                        (ow * s.stride[1] + kj) as isize - s.padding[1] as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= s.input[0] as isize
                                        || iw >= s.input[1] as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * s.in_channels + c) * s.input[0] + ih as usize)
                                        * s.input[1]
                                        + iw as usize;
                                    let wi = ((o * s.in_channels + c) * s.kernel[0] + ki)
                                        * s.kernel[1]
                                        + kj;
                                    acc += x[xi] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        out[((n * s.out_channels + o) * ho + oh) * wo + ow] = acc as f32;
                    }
                }
            }
        }
        out
    }

    /// A deterministic input and weight for `plan`, with values of both signs.
    fn inputs(plan: &Conv2dPlan) -> (Vec<f32>, Vec<f32>) {
        let x = (0..plan.input_len())
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let w = (0..plan.weight_len())
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0)
            .collect();
        (x, w)
    }

    #[test]
    fn forward_matches_the_six_loop_definition() {
        for (n, c, hw, o, k, s, p) in [
            (2, 3, 7, 4, 3, 1, 1),
            (3, 2, 9, 5, 7, 2, 3),
            (2, 4, 2, 3, 3, 2, 1),
            (1, 3, 5, 2, 1, 2, 0),
        ] {
            let plan = plan(n, c, hw, o, k, s, p);
            let (x, w) = inputs(&plan);
            let want = naive(&plan, &x, &w);
            for plan in [plan.clone(), plan.lowered_by(Lowering::Toeplitz)] {
                let got = plan.forward(&x, &w).unwrap().output;
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn inference_in_chunks_matches_the_six_loop_definition() {
        // 9x9 maps give 81 pixels per image, 3 images per chunk: 10 chunks, the last short.
        // A batch of 128 on 2x2 maps takes the Toeplitz lowering instead.
        for (n, c, hw, o, k, s, p) in [
            (29, 3, 9, 4, 3, 1, 1),
            (40, 2, 17, 3, 7, 2, 3),
            (128, 3, 2, 4, 3, 1, 1),
        ] {
            let plan = plan(n, c, hw, o, k, s, p);
            let (x, w) = inputs(&plan);
            let got = plan.infer(&x, &w).unwrap();
            let want = naive(&plan, &x, &w);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    /// `gemm` with `read_dst` false must write every output value and read none: into a
    /// NaN-filled buffer any read would leave a NaN (0 · NaN = NaN), any skipped value stays
    /// NaN. Checked against the naive product on the shapes of its paths (k of 0, 1 and 2,
    /// matrix-vector, small, and a multi-threaded one).
    #[test]
    fn gemm_writes_every_value_and_reads_none() {
        for (m, n, k, threads) in [
            (5, 7, 0, false),
            (5, 7, 1, false),
            (5, 7, 2, false),
            (1, 9, 13, false),
            (9, 1, 13, false),
            (16, 16, 16, false),
            (150, 130, 70, true),
        ] {
            let lhs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let rhs: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0)
                .collect();
            let mut dst = vec![f32::NAN; m * n];
            let parallelism = if threads {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            };
            matmul_on(
                Mat::row_major(&mut dst, n),
                MatRef::row_major(&lhs, k),
                MatRef::row_major(&rhs, n),
                [m, n, k],
                parallelism,
            );
            let fresh = matmul_new(
                MatRef::row_major(&lhs, k),
                MatRef::row_major(&rhs, n),
                [m, n, k],
                Order::RowMajor,
            );
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|t| lhs[i * k + t] as f64 * rhs[t * n + j] as f64)
                        .sum();
                    for got in [dst[i * n + j], fresh[i * n + j]] {
                        assert!(
                            (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{n}x{k} at ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let plan = plan(1, 1, 3, 1, 3, 1, 1);
        assert!(matches!(
            plan.forward(&[0.0; 8], &[0.0; 9]),
            Err(ConvError::Length { what: "input", .. })
        ));
        assert!(
            Conv2dShape {
                batch: 0,
                ..*plan.shape()
            }
            .plan()
            .is_err()
        );
        assert!(matches!(
            Conv2dShape {
                kernel: [7, 7],
                padding: [0, 0],
                ..*plan.shape()
            }
            .plan(),
            Err(ConvError::KernelTooLarge { .. })
        ));
    }
}
