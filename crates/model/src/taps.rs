//! The tap catalogue: every named point of ResNet18's forward pass, and `TapSet`, a parsed
//! selection of them.
//!
//! Names follow torchvision: module names as `named_modules()` gives them (`layer2.0.conv1`),
//! plus the FX node names that no module hook can reach (`x`, `layerS.B.add`,
//! `layerS.B.relu_1`, `flatten`). The catalogue lists them in the order the forward pass
//! produces them, which is what lets the recorder find a tap by a counter instead of by
//! building strings on the hot path.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Where a tap sits in the network; decides which selections (`leaves`) include it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapKind {
    /// The network input (`x`).
    Input,
    /// A torchvision module with no children (`conv1`, `layer1.0.bn2`, `fc`, ...).
    Leaf,
    /// A torchvision container module (`layer1`, `layer1.0`, `layer2.0.downsample`).
    Container,
    /// A torchvision FX node that is not a module output (`layer1.0.add`, `flatten`, ...).
    Node,
}

/// One named point of the forward pass and how its shape follows from the input size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// The torchvision name.
    pub name: String,
    /// What kind of point it is.
    pub kind: TapKind,
    shape: ShapeRule,
}

/// Per-sample output shape, as a function of the input's spatial size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShapeRule {
    /// Channels and the number of stride-2 reductions applied to the input so far, each one
    /// `floor((s - 1) / 2) + 1` (what 7x7/2 pad 3, 3x3/2 pad 1 and 1x1/2 pad 0 all give).
    Spatial { channels: usize, halvings: u32 },
    /// `[channels, 1, 1]` (adaptive average pool).
    Pooled { channels: usize },
    /// A flat feature vector.
    Flat { features: usize },
}

impl TapInfo {
    /// Per-sample shape of this tap for an input of `in_channels` x `height` x `width`
    /// (`[C, H, W]` or `[F]`); the batch dimension comes first in the real tensor.
    pub fn sample_shape(
        &self,
        in_channels: usize,
        num_classes: usize,
        hw: [usize; 2],
    ) -> Vec<usize> {
        match self.shape {
            ShapeRule::Spatial { channels, halvings } => {
                let c = if self.kind == TapKind::Input {
                    in_channels
                } else {
                    channels
                };
                let [mut h, mut w] = hw;
                for _ in 0..halvings {
                    h = h.saturating_sub(1) / 2 + 1;
                    w = w.saturating_sub(1) / 2 + 1;
                }
                vec![c, h, w]
            }
            ShapeRule::Pooled { channels } => vec![channels, 1, 1],
            ShapeRule::Flat { features } => {
                if self.name == "fc" {
                    vec![num_classes]
                } else {
                    vec![features]
                }
            }
        }
    }
}

const BLOCK_LEAVES: [&str; 5] = ["conv1", "bn1", "relu", "conv2", "bn2"];

/// Width of each stage of ResNet18.
pub const STAGE_CHANNELS: [usize; 4] = [64, 128, 256, 512];

fn build_catalogue() -> Vec<TapInfo> {
    let mut taps = Vec::with_capacity(85);
    let mut push = |name: String, kind, shape| taps.push(TapInfo { name, kind, shape });
    let spatial = |channels, halvings| ShapeRule::Spatial { channels, halvings };

    push("x".into(), TapKind::Input, spatial(0, 0));
    push("conv1".into(), TapKind::Leaf, spatial(64, 1));
    push("bn1".into(), TapKind::Leaf, spatial(64, 1));
    push("relu".into(), TapKind::Leaf, spatial(64, 1));
    push("maxpool".into(), TapKind::Leaf, spatial(64, 2));
    for (s, &channels) in STAGE_CHANNELS.iter().enumerate() {
        let stage = format!("layer{}", s + 1);
        // layer1 keeps the maxpool's size; each later stage halves it in its first block's
        // conv1 (and downsample), so every tap of a stage has the stage's output size.
        let out_halvings = 2 + s as u32;
        for b in 0..2 {
            let block = format!("{stage}.{b}");
            for leaf in BLOCK_LEAVES {
                push(
                    format!("{block}.{leaf}"),
                    TapKind::Leaf,
                    spatial(channels, out_halvings),
                );
            }
            if b == 0 && s > 0 {
                push(
                    format!("{block}.downsample.0"),
                    TapKind::Leaf,
                    spatial(channels, out_halvings),
                );
                push(
                    format!("{block}.downsample.1"),
                    TapKind::Leaf,
                    spatial(channels, out_halvings),
                );
                push(
                    format!("{block}.downsample"),
                    TapKind::Container,
                    spatial(channels, out_halvings),
                );
            }
            push(
                format!("{block}.add"),
                TapKind::Node,
                spatial(channels, out_halvings),
            );
            push(
                format!("{block}.relu_1"),
                TapKind::Node,
                spatial(channels, out_halvings),
            );
            push(block, TapKind::Container, spatial(channels, out_halvings));
        }
        push(stage, TapKind::Container, spatial(channels, out_halvings));
    }
    push(
        "avgpool".into(),
        TapKind::Leaf,
        ShapeRule::Pooled { channels: 512 },
    );
    push(
        "flatten".into(),
        TapKind::Node,
        ShapeRule::Flat { features: 512 },
    );
    push("fc".into(), TapKind::Leaf, ShapeRule::Flat { features: 0 });
    taps
}

/// Every tap, in the order the forward pass produces them (85 of them).
pub fn catalogue() -> &'static [TapInfo] {
    static CATALOGUE: OnceLock<Vec<TapInfo>> = OnceLock::new();
    CATALOGUE.get_or_init(build_catalogue)
}

/// Index of a tap name in the catalogue.
pub fn tap_index(name: &str) -> Option<usize> {
    catalogue().iter().position(|t| t.name == name)
}

/// Errors from parsing a tap selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    /// A name that is not in the catalogue.
    #[error("unknown tap `{name}`; closest valid names: {}", closest.join(", "))]
    UnknownName {
        /// The name as given.
        name: String,
        /// The nearest catalogue names by edit distance.
        closest: Vec<String>,
    },
    /// A pattern that matches no tap.
    #[error("pattern `{pattern}` matches no tap; closest valid names: {}", closest.join(", "))]
    EmptyPattern {
        /// The pattern as given.
        pattern: String,
        /// The nearest catalogue names by edit distance.
        closest: Vec<String>,
    },
}

/// A selection of taps: a bit per catalogue entry (85 fit in a `u128`), so it is `Copy` and
/// checking membership on the hot path is one shift.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TapSet(u128);

impl TapSet {
    /// The empty selection: a forward pass with it records nothing.
    pub const fn empty() -> Self {
        TapSet(0)
    }

    /// Every tap in the catalogue.
    pub fn all() -> Self {
        TapSet(mask_below(catalogue().len()))
    }

    /// The leaf modules: the torchvision modules with no children (52 taps).
    pub fn leaves() -> Self {
        Self::matching(|t| t.kind == TapKind::Leaf)
    }

    fn matching(pred: impl Fn(&TapInfo) -> bool) -> Self {
        let mut set = TapSet::empty();
        for (i, t) in catalogue().iter().enumerate() {
            if pred(t) {
                set.0 |= 1 << i;
            }
        }
        set
    }

    /// Whether the tap at catalogue index `index` is selected.
    #[inline]
    pub fn contains_index(&self, index: usize) -> bool {
        index < 128 && (self.0 >> index) & 1 == 1
    }

    /// Whether the named tap is selected.
    pub fn contains(&self, name: &str) -> bool {
        tap_index(name).is_some_and(|i| self.contains_index(i))
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// How many taps are selected.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// The selected taps, in forward order.
    pub fn iter(&self) -> impl Iterator<Item = &'static TapInfo> + '_ {
        catalogue()
            .iter()
            .enumerate()
            .filter(|(i, _)| self.contains_index(*i))
            .map(|(_, t)| t)
    }

    /// The selected names, in forward order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(|t| t.name.as_str()).collect()
    }

    /// The union of two selections.
    pub fn union(self, other: TapSet) -> TapSet {
        TapSet(self.0 | other.0)
    }
}

fn mask_below(n: usize) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// Glob match where `*` stands for any run of characters (dots included) and `?` for one.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// The catalogue names nearest to `query` by Levenshtein distance (at most five).
pub fn closest_names(query: &str) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = catalogue()
        .iter()
        .map(|t| (strsim::levenshtein(query, &t.name), t.name.as_str()))
        .collect();
    scored.sort_by_key(|(d, _)| *d);
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_string())
        .collect()
}

impl FromStr for TapSet {
    type Err = TapError;

    /// Parses a comma-separated list of names, glob patterns (`layer1.*`, `*.conv1`), `all`,
    /// `leaves` and `none` (the empty selection; so is the empty string).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut set = TapSet::empty();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let part = match item {
                "all" => TapSet::all(),
                "leaves" => TapSet::leaves(),
                "none" => TapSet::empty(),
                p if p.contains(['*', '?']) => {
                    let found = TapSet::matching(|t| glob_match(p.as_bytes(), t.name.as_bytes()));
                    if found.is_empty() {
                        return Err(TapError::EmptyPattern {
                            pattern: p.to_string(),
                            closest: closest_names(&p.replace(['*', '?'], "")),
                        });
                    }
                    found
                }
                name => match tap_index(name) {
                    Some(i) => TapSet(1 << i),
                    None => {
                        return Err(TapError::UnknownName {
                            name: name.to_string(),
                            closest: closest_names(name),
                        });
                    }
                },
            };
            set = set.union(part);
        }
        Ok(set)
    }
}

impl fmt::Display for TapSet {
    /// `all`, `leaves`, `none`, or the selected names in forward order, comma-separated:
    /// always a spec that parses back to the same set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("none")
        } else if *self == TapSet::all() {
            f.write_str("all")
        } else if *self == TapSet::leaves() {
            f.write_str("leaves")
        } else {
            f.write_str(&self.names().join(","))
        }
    }
}

impl fmt::Debug for TapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TapSet({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_67_module_names_and_18_fx_nodes() {
        let cat = catalogue();
        assert_eq!(cat.len(), 85);
        let modules = cat
            .iter()
            .filter(|t| matches!(t.kind, TapKind::Leaf | TapKind::Container))
            .count();
        assert_eq!(modules, 67);
        assert_eq!(TapSet::leaves().len(), 52);
        let mut names: Vec<_> = cat.iter().map(|t| &t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 85, "names are unique");
        for n in [
            "layer1.1.conv1",
            "layer2.0.downsample.0",
            "layer4.1.relu_1",
            "x",
            "flatten",
        ] {
            assert!(tap_index(n).is_some(), "{n}");
        }
        assert!(tap_index("layer1.0.downsample").is_none());
    }

    #[test]
    fn patterns_select_what_a_glob_would() {
        let s: TapSet = "layer1.*".parse().unwrap();
        // two blocks x (5 leaves + add + relu_1 + block) = 16
        assert_eq!(s.len(), 16);
        assert!(!s.contains("layer1"));
        let s: TapSet = "*.conv1".parse().unwrap();
        assert_eq!(s.len(), 8);
        assert!(!s.contains("conv1"));
        let s: TapSet = "conv1, layer2".parse().unwrap();
        assert_eq!(s.names(), vec!["conv1", "layer2"]);
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "all",
            "leaves",
            "",
            "layer1.*",
            "*.bn2,fc",
            "x,layer3.1.add,avgpool",
        ] {
            let s: TapSet = spec.parse().unwrap();
            let back: TapSet = s.to_string().parse().unwrap();
            assert_eq!(s, back, "{spec} -> {s}");
        }
        assert_eq!("leaves".parse::<TapSet>().unwrap().to_string(), "leaves");
        assert_eq!(TapSet::empty().to_string(), "none");
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let err = "layer1.0.conv3".parse::<TapSet>().unwrap_err();
        match &err {
            TapError::UnknownName { name, closest } => {
                assert_eq!(name, "layer1.0.conv3");
                assert!(closest.iter().any(|c| c == "layer1.0.conv1"), "{closest:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("layer1.0.conv1"));
        assert!(matches!(
            "layer9.*".parse::<TapSet>(),
            Err(TapError::EmptyPattern { .. })
        ));
    }

    #[test]
    fn shapes_for_mnist_input() {
        let shape = |n: &str| catalogue()[tap_index(n).unwrap()].sample_shape(1, 10, [28, 28]);
        assert_eq!(shape("x"), vec![1, 28, 28]);
        assert_eq!(shape("conv1"), vec![64, 14, 14]);
        assert_eq!(shape("maxpool"), vec![64, 7, 7]);
        assert_eq!(shape("layer1"), vec![64, 7, 7]);
        assert_eq!(shape("layer2.0.conv1"), vec![128, 4, 4]);
        assert_eq!(shape("layer2.0.downsample.0"), vec![128, 4, 4]);
        assert_eq!(shape("layer2"), vec![128, 4, 4]);
        assert_eq!(shape("layer3"), vec![256, 2, 2]);
        assert_eq!(shape("layer4"), vec![512, 1, 1]);
        assert_eq!(shape("avgpool"), vec![512, 1, 1]);
        assert_eq!(shape("flatten"), vec![512]);
        assert_eq!(shape("fc"), vec![10]);
    }
}
