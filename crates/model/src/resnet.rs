//! The basic-block ResNets (ResNet-18, ResNet-34) with torchvision's topology and field names,
//! so that parameter paths are the PyTorch `state_dict` keys and tap names are torchvision's
//! module names.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d, Relu,
};
use burn::prelude::*;

use burn::tensor::activation;
use cnnu_kernels::{conv2d_bn_eval, conv2d_module, max_pool2d_module};

use crate::taps::{Catalogue, STAGE_CHANNELS, TapSet};

/// BatchNorm epsilon, as torchvision's `BatchNorm2d` default.
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum in PyTorch's convention (`running = 0.9 running + 0.1 batch`), which is
/// also Burn 0.22's convention (checked in burn-nn's `BatchNorm::forward_train`).
pub const BN_MOMENTUM: f64 = 0.1;

/// Errors from building the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `in_channels` was zero.
    #[error("in_channels must be at least 1, got {0}")]
    InChannels(usize),
    /// `num_classes` was zero.
    #[error("num_classes must be at least 1, got {0}")]
    NumClasses(usize),
    /// Blocks per stage of no known architecture.
    #[error(
        "blocks per stage {0:?} are neither ResNet-18's [2, 2, 2, 2] nor ResNet-34's [3, 4, 6, 3]"
    )]
    Blocks([usize; 4]),
}

/// Which member of the family: torchvision's blocks per stage.
#[derive(Config, Debug, PartialEq, Eq, Copy, Hash)]
pub enum ResNetArch {
    /// Blocks `[2, 2, 2, 2]`, 85 taps.
    ResNet18,
    /// Blocks `[3, 4, 6, 3]`, 149 taps.
    ResNet34,
}

impl ResNetArch {
    /// Every architecture, in order of depth.
    pub const ALL: [ResNetArch; 2] = [ResNetArch::ResNet18, ResNetArch::ResNet34];

    /// Basic blocks in each of the four stages.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNetArch::ResNet18 => [2, 2, 2, 2],
            ResNetArch::ResNet34 => [3, 4, 6, 3],
        }
    }

    /// torchvision's name (`resnet18`).
    pub fn name(self) -> &'static str {
        match self {
            ResNetArch::ResNet18 => "resnet18",
            ResNetArch::ResNet34 => "resnet34",
        }
    }

    /// The architecture with these blocks per stage.
    pub fn from_blocks(blocks: [usize; 4]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.blocks() == blocks)
    }

    /// Its tap catalogue.
    pub fn catalogue(self) -> Catalogue {
        Catalogue::resnet(self.blocks())
    }
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Depth: ResNet-18 or ResNet-34.
    #[config(default = "ResNetArch::ResNet18")]
    pub arch: ResNetArch,
    /// Channels of the input image (1 for MNIST, 3 for CIFAR-10).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ResNetConfig {
    /// Checks the parameters once, so that `init` cannot panic on them.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels == 0 {
            return Err(ModelError::InChannels(self.in_channels));
        }
        if self.num_classes == 0 {
            return Err(ModelError::NumClasses(self.num_classes));
        }
        Ok(())
    }

    /// Builds the network with torchvision's initialisation: Kaiming-normal (fan-out, ReLU
    /// gain) convolutions, BatchNorm weight 1 and bias 0, PyTorch's default `Linear`.
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        self.validate()?;
        let blocks = self.arch.blocks();
        let stages: Vec<Vec<BasicBlock>> = STAGE_CHANNELS
            .iter()
            .enumerate()
            .map(|(s, &out)| {
                let input = if s == 0 { 64 } else { STAGE_CHANNELS[s - 1] };
                let stride = if s == 0 { 1 } else { 2 };
                let mut stage = vec![BasicBlock::new(input, out, stride, device)];
                stage.extend((1..blocks[s]).map(|_| BasicBlock::new(out, out, 1, device)));
                stage
            })
            .collect();
        let [layer1, layer2, layer3, layer4]: [Vec<BasicBlock>; 4] =
            stages.try_into().expect("four stages were just built");
        let model = ResNet {
            conv1: conv(self.in_channels, 64, 7, 2, 3, device),
            bn1: batch_norm(64, device),
            relu: Relu::new(),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(512, self.num_classes).init(device),
        };
        // Burn initialises parameters lazily, on first use, drawing from the backend's RNG
        // at that moment. Drawing them all now makes the weights a function of the RNG state
        // at `init`, so that seeding just before `init` is enough for reproducible weights.
        model.visit(&mut DrawParameters);
        Ok(model)
    }
}

/// Touches every float parameter, which makes Burn run its deferred initialiser.
struct DrawParameters;

impl burn::module::ModuleVisitor for DrawParameters {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

fn conv(
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu")
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

fn batch_norm(features: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(BN_EPS)
        .with_momentum(BN_MOMENTUM)
        .init(device)
}

/// BatchNorm as PyTorch trains it. Burn's `BatchNorm` updates `running_var` with the biased
/// batch variance; PyTorch (and so every torchvision checkpoint) uses the unbiased one,
/// `n/(n-1)` times larger with `n = N·H·W` (1.6% in layer4 at batch 64). Normalisation itself
/// uses the biased variance in both. Outside training this is `BatchNorm::forward` (one pass on
/// flex, bit for bit the same).
pub fn batch_norm_forward(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if uses_running_stats(bn, &x) {
        // What `BatchNorm::forward` does outside training, in one pass on flex.
        return cnnu_kernels::batch_norm_eval(
            x,
            bn.gamma.val(),
            bn.beta.val(),
            bn.running_mean.value(),
            bn.running_var.value(),
            bn.epsilon,
        );
    }
    let [n, _, h, w] = x.dims();
    let count = n * h * w;
    let result = cnnu_kernels::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    let correction = if count > 1 {
        count as f64 / (count - 1) as f64
    } else {
        1.0
    };
    let device = result.output.device();
    let mean = bn.running_mean.value_sync().to_device(&device);
    let var = bn.running_var.value_sync().to_device(&device);
    let mean = mean
        .mul_scalar(1.0 - bn.momentum)
        .add(result.mean.detach().mul_scalar(bn.momentum));
    let var = var.mul_scalar(1.0 - bn.momentum).add(
        result
            .variance
            .detach()
            .mul_scalar(bn.momentum * correction),
    );
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
    result.output
}

/// torchvision's `BasicBlock`: two 3x3 convolutions and a residual connection.
#[derive(Module, Debug)]
pub struct BasicBlock {
    /// 3x3 convolution with the block's stride.
    pub conv1: Conv2d,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm,
    /// The ReLU module, applied twice (after `bn1` and after the residual add), as torchvision.
    pub relu: Relu,
    /// 3x3 convolution, stride 1.
    pub conv2: Conv2d,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm,
    /// 1x1 strided convolution and BatchNorm on the shortcut when the shape changes; a tuple
    /// so that its parameters are `downsample.0.*` and `downsample.1.*` as in torchvision.
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(input: usize, output: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || input != output).then(|| {
            (
                conv(input, output, 1, stride, 0, device),
                batch_norm(output, device),
            )
        });
        Self {
            conv1: conv(input, output, 3, stride, 1, device),
            bn1: batch_norm(output, device),
            relu: Relu::new(),
            conv2: conv(output, output, 3, 1, 1, device),
            bn2: batch_norm(output, device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>, rec: &mut Recorder) -> Tensor<4> {
        let out = conv_bn(
            rec,
            ["conv1", "bn1"],
            (&self.conv1, &self.bn1),
            x.clone(),
            true,
        );
        // The tap points ahead: conv2, bn2, the shortcut's three, add, relu_1.
        let add = if self.downsample.is_some() { 5 } else { 2 };
        let fused = uses_running_stats(&self.bn2, &out)
            && ![0, 1, add].map(|i| rec.selects(i)).contains(&true);
        let out = if fused {
            // bn2, the add and relu_1 as conv2's tail; the shortcut first, since its output is
            // the tail's residual.
            rec.skip("conv2");
            rec.skip("bn2");
            let identity = self.shortcut(x, rec);
            rec.skip("add");
            let out = conv2d_bn_eval(&self.conv2, &self.bn2, out, Some(identity), true);
            rec.spatial("relu_1", out)
        } else {
            let out = conv_bn(rec, ["conv2", "bn2"], (&self.conv2, &self.bn2), out, false);
            let identity = self.shortcut(x, rec);
            let out = rec.spatial("add", out + identity);
            rec.spatial("relu_1", self.relu.forward(out))
        };
        rec.spatial("", out)
    }

    /// The residual: the input, or its 1x1 convolution and BatchNorm when the shape changes.
    fn shortcut(&self, x: Tensor<4>, rec: &mut Recorder) -> Tensor<4> {
        match &self.downsample {
            Some((conv, bn)) => {
                let d = conv_bn(rec, ["downsample.0", "downsample.1"], (conv, bn), x, false);
                rec.spatial("downsample", d)
            }
            None => x,
        }
    }
}

/// Whether `bn` normalises `x` with its running statistics (eval mode): everywhere but a
/// training model on an autodiff device.
fn uses_running_stats(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    !(x.device().is_autodiff() && bn.training.is_enabled())
}

/// A convolution, its BatchNorm and (with `relu`) the ReLU named `relu`, at the tap points
/// `names`. At eval time with neither the convolution's nor the norm's own output selected, one
/// fused kernel ([`conv2d_bn_eval`]), bit for bit the same values; otherwise layer by layer.
fn conv_bn(
    rec: &mut Recorder,
    names: [&str; 2],
    (conv, bn): (&Conv2d, &BatchNorm),
    x: Tensor<4>,
    relu: bool,
) -> Tensor<4> {
    let out = if uses_running_stats(bn, &x) && !(rec.selects(0) || rec.selects(1)) {
        for name in names {
            rec.skip(name);
        }
        conv2d_bn_eval(conv, bn, x, None, relu)
    } else {
        let out = rec.spatial(names[0], conv2d_module(conv, x));
        let out = rec.spatial(names[1], batch_norm_forward(bn, out));
        match relu {
            true => activation::relu(out),
            false => out,
        }
    };
    match relu {
        true => rec.spatial("relu", out),
        false => out,
    }
}

/// A basic-block ResNet in torchvision's topology; every field is named as torchvision names
/// the module.
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7x7/2 stem convolution, padding 3, no bias.
    pub conv1: Conv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Stem ReLU.
    pub relu: Relu,
    /// 3x3/2 max pooling, padding 1.
    pub maxpool: MaxPool2d,
    /// Stage 1: 64 channels.
    pub layer1: Vec<BasicBlock>,
    /// Stage 2: 128 channels, stride 2.
    pub layer2: Vec<BasicBlock>,
    /// Stage 3: 256 channels, stride 2.
    pub layer3: Vec<BasicBlock>,
    /// Stage 4: 512 channels, stride 2.
    pub layer4: Vec<BasicBlock>,
    /// Adaptive average pooling to 1x1.
    pub avgpool: AdaptiveAvgPool2d,
    /// The classifier.
    pub fc: Linear,
}

impl ResNet {
    /// Blocks per stage.
    pub fn blocks(&self) -> [usize; 4] {
        [
            self.layer1.len(),
            self.layer2.len(),
            self.layer3.len(),
            self.layer4.len(),
        ]
    }

    /// The configuration this network has (its depth, input channels and classes), read from
    /// its structure and parameter shapes.
    pub fn config(&self) -> Result<ResNetConfig, ModelError> {
        let arch =
            ResNetArch::from_blocks(self.blocks()).ok_or(ModelError::Blocks(self.blocks()))?;
        Ok(ResNetConfig {
            arch,
            in_channels: self.conv1.weight.dims()[1],
            num_classes: self.fc.weight.dims()[1],
        })
    }

    /// Every tap of this network, in forward order.
    pub fn catalogue(&self) -> Catalogue {
        Catalogue::resnet(self.blocks())
    }

    /// The logits for a batch `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_taps(x, &TapSet::empty()).0
    }

    /// The logits and the selected taps, in forward order. The empty selection runs exactly
    /// the operations of [`forward`](Self::forward) and records nothing.
    pub fn forward_taps(&self, x: Tensor<4>, taps: &TapSet) -> (Tensor<2>, TapOutputs) {
        let catalogue = self.catalogue();
        let (logits, rec) = self.forward_recorded(x, Recorder::new(&catalogue, taps));
        (logits, TapOutputs(rec.out))
    }

    /// The forward pass through `rec`, which sees every tap point in order.
    fn forward_recorded<'a>(
        &self,
        x: Tensor<4>,
        mut rec: Recorder<'a>,
    ) -> (Tensor<2>, Recorder<'a>) {
        let x = rec.spatial("x", x);
        let x = conv_bn(
            &mut rec,
            ["conv1", "bn1"],
            (&self.conv1, &self.bn1),
            x,
            true,
        );
        let mut x = rec.spatial("maxpool", max_pool2d_module(&self.maxpool, x));
        for stage in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in stage {
                x = block.forward(x, &mut rec);
            }
            x = rec.spatial("", x);
        }
        let x = rec.spatial("avgpool", self.avgpool.forward(x));
        let x = rec.flat("flatten", x.flatten(1, 3));
        let logits = rec.flat("fc", self.fc.forward(x));
        (logits, rec)
    }
}

/// A recorded tap: spatial `[N, C, H, W]` or flat `[N, F]`.
#[derive(Debug, Clone)]
pub enum TapTensor {
    /// A feature map.
    Spatial(Tensor<4>),
    /// A feature vector per sample.
    Flat(Tensor<2>),
}

impl TapTensor {
    /// The full shape, batch first.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            TapTensor::Spatial(t) => t.dims().to_vec(),
            TapTensor::Flat(t) => t.dims().to_vec(),
        }
    }

    /// The values, read back from the device.
    pub fn into_data(self) -> TensorData {
        match self {
            TapTensor::Spatial(t) => t.into_data(),
            TapTensor::Flat(t) => t.into_data(),
        }
    }
}

/// The taps recorded by one forward pass, in forward order, keyed by name.
#[derive(Debug, Clone, Default)]
pub struct TapOutputs(pub Vec<(String, TapTensor)>);

impl TapOutputs {
    /// The tensor recorded under `name`, if it was selected.
    pub fn get(&self, name: &str) -> Option<&TapTensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Names in forward order.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// How many taps were recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for TapOutputs {
    type Item = (String, TapTensor);
    type IntoIter = std::vec::IntoIter<Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Walks the catalogue in step with the forward pass. Taps are visited in catalogue order, so
/// a counter finds each one's index; the local name is checked against the catalogue in debug
/// builds so a reordering of the forward pass cannot silently mislabel a tap.
struct Recorder<'a> {
    catalogue: &'a Catalogue,
    set: &'a TapSet,
    next: usize,
    out: Vec<(String, TapTensor)>,
    /// The first tap point the forward pass reached out of the catalogue's order (a defect
    /// in the model's structure, which the tests look for).
    misplaced: Option<String>,
}

impl<'a> Recorder<'a> {
    fn new(catalogue: &'a Catalogue, set: &'a TapSet) -> Self {
        Self {
            catalogue,
            set,
            next: 0,
            out: Vec::with_capacity(set.len()),
            misplaced: None,
        }
    }

    fn visit(&mut self, local: &str) -> Option<String> {
        let index = self.next;
        self.next += 1;
        let Some(tap) = self.catalogue.taps().get(index) else {
            self.misplaced
                .get_or_insert_with(|| format!("`{local}` is past the catalogue's end"));
            return None;
        };
        let name = tap.name.as_str();
        let same = name == local
            || name.strip_suffix(local).is_some_and(|p| p.ends_with('.'))
            || (local.is_empty() && name.starts_with("layer"));
        if !same && self.misplaced.is_none() {
            self.misplaced = Some(format!(
                "reached `{local}` where the catalogue has `{name}`"
            ));
        }
        self.set.contains_index(index).then(|| name.to_string())
    }

    /// Whether the tap point `ahead` visits from now is selected.
    fn selects(&self, ahead: usize) -> bool {
        self.set.contains_index(self.next + ahead)
    }

    /// Passes the tap point `local`, which the caller checked is not selected.
    fn skip(&mut self, local: &str) {
        let recorded = self.visit(local);
        debug_assert!(recorded.is_none(), "skipped a selected tap `{local}`");
    }

    fn spatial(&mut self, local: &str, t: Tensor<4>) -> Tensor<4> {
        if let Some(name) = self.visit(local) {
            self.out.push((name, TapTensor::Spatial(t.clone())));
        }
        t
    }

    fn flat(&mut self, local: &str, t: Tensor<2>) -> Tensor<2> {
        if let Some(name) = self.visit(local) {
            self.out.push((name, TapTensor::Flat(t.clone())));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendKind, ResNetArch, ResNetConfig};

    /// The forward pass reaches every tap point in the catalogue's order, once: tap names
    /// come from the catalogue by position, so any drift would misname activations.
    #[test]
    fn the_forward_pass_visits_the_catalogue_in_order() {
        let device = BackendKind::from_env().unwrap().device().unwrap();
        for (arch, channels, size) in [(ResNetArch::ResNet18, 1, 28), (ResNetArch::ResNet34, 3, 32)]
        {
            let config = ResNetConfig::new()
                .with_arch(arch)
                .with_in_channels(channels);
            let model = config.init(&device).unwrap().valid();
            let catalogue = model.catalogue();
            let empty = TapSet::empty();
            let x = Tensor::<4>::zeros([1, channels, size, size], &device);
            let (_, rec) = model.forward_recorded(x, Recorder::new(&catalogue, &empty));
            assert_eq!(rec.misplaced, None, "{arch:?}");
            assert_eq!(
                rec.next,
                catalogue.len(),
                "{arch:?}: every tap visited once"
            );
        }
    }
}
