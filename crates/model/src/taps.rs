//! The tap catalogue: every named point of a ResNet's forward pass, built from the network's
//! configuration, and `TapSet`, a selection of them sized to its catalogue.
//!
//! Names follow torchvision: module names as `named_modules()` gives them (`layer2.0.conv1`),
//! plus the FX node names that no module hook can reach (`x`, `layerS.B.add`,
//! `layerS.B.relu_1`, `flatten`). The catalogue lists them in the order the forward pass
//! produces them, which is what lets the recorder find a tap by a counter instead of by
//! building strings on the hot path.

use std::fmt;

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
    /// Where in the network: 0 the stem (the input included), 1 to 4 the residual stages
    /// `layer1`..`layer4`, 5 the head (`avgpool`, `flatten`, `fc`).
    pub stage: usize,
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

/// Width of each stage of a ResNet built from basic blocks (ResNet-18 and -34).
pub const STAGE_CHANNELS: [usize; 4] = [64, 128, 256, 512];

/// Every named point of one ResNet's forward pass, in the order the pass produces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    taps: Vec<TapInfo>,
}

impl Catalogue {
    /// The catalogue of a basic-block ResNet with `blocks[s]` blocks in stage `s + 1`
    /// (`[2, 2, 2, 2]`: ResNet-18's 85 taps; `[3, 4, 6, 3]`: ResNet-34's 149).
    pub fn resnet(blocks: [usize; 4]) -> Self {
        let mut taps = Vec::new();
        // Each tap's stage: the stem 0, the residual stages 1..=4, the head 5.
        let mut push = |name: String, kind, shape, stage| {
            taps.push(TapInfo {
                name,
                kind,
                stage,
                shape,
            })
        };
        let spatial = |channels, halvings| ShapeRule::Spatial { channels, halvings };

        push("x".into(), TapKind::Input, spatial(0, 0), 0);
        push("conv1".into(), TapKind::Leaf, spatial(64, 1), 0);
        push("bn1".into(), TapKind::Leaf, spatial(64, 1), 0);
        push("relu".into(), TapKind::Leaf, spatial(64, 1), 0);
        push("maxpool".into(), TapKind::Leaf, spatial(64, 2), 0);
        for (s, (&channels, &count)) in STAGE_CHANNELS.iter().zip(&blocks).enumerate() {
            let stage = s + 1;
            let name = format!("layer{stage}");
            // layer1 keeps the maxpool's size; each later stage halves it in its first block's
            // conv1 (and downsample), so every tap of a stage has the stage's output size.
            let size = spatial(channels, 2 + s as u32);
            for b in 0..count {
                let block = format!("{name}.{b}");
                for leaf in BLOCK_LEAVES {
                    push(format!("{block}.{leaf}"), TapKind::Leaf, size, stage);
                }
                if b == 0 && s > 0 {
                    push(format!("{block}.downsample.0"), TapKind::Leaf, size, stage);
                    push(format!("{block}.downsample.1"), TapKind::Leaf, size, stage);
                    push(
                        format!("{block}.downsample"),
                        TapKind::Container,
                        size,
                        stage,
                    );
                }
                push(format!("{block}.add"), TapKind::Node, size, stage);
                push(format!("{block}.relu_1"), TapKind::Node, size, stage);
                push(block, TapKind::Container, size, stage);
            }
            push(name, TapKind::Container, size, stage);
        }
        let head = STAGE_CHANNELS.len() + 1;
        push(
            "avgpool".into(),
            TapKind::Leaf,
            ShapeRule::Pooled { channels: 512 },
            head,
        );
        push(
            "flatten".into(),
            TapKind::Node,
            ShapeRule::Flat { features: 512 },
            head,
        );
        push(
            "fc".into(),
            TapKind::Leaf,
            ShapeRule::Flat { features: 0 },
            head,
        );
        Self { taps }
    }

    /// Every tap, in forward order.
    pub fn taps(&self) -> &[TapInfo] {
        &self.taps
    }

    /// How many taps there are.
    pub fn len(&self) -> usize {
        self.taps.len()
    }

    /// Whether there are none (never, for a built network).
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// Index of a tap name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.taps.iter().position(|t| t.name == name)
    }

    /// The tap with this name.
    pub fn get(&self, name: &str) -> Option<&TapInfo> {
        self.index(name).map(|i| &self.taps[i])
    }

    /// Whether the research question counts this tap as an early layer: the stem and the
    /// first residual stage (stage 0 or 1). Names outside the catalogue are not early.
    pub fn is_early(&self, name: &str) -> bool {
        self.get(name).is_some_and(|t| t.stage <= 1)
    }

    /// The early taps (see [`Catalogue::is_early`]), in forward order.
    pub fn early(&self) -> impl Iterator<Item = &str> + '_ {
        self.taps
            .iter()
            .filter(|t| t.stage <= 1)
            .map(|t| t.name.as_str())
    }

    /// Every tap selected.
    pub fn all(&self) -> TapSet {
        self.matching(|_| true)
    }

    /// The leaf modules: the torchvision modules with no children (52 taps in ResNet-18).
    pub fn leaves(&self) -> TapSet {
        self.matching(|t| t.kind == TapKind::Leaf)
    }

    /// The inputs of every ReLU: the stem's `bn1`, and each block's `bn1` and `add` (its
    /// `relu` and `relu_1` read them).
    pub fn relu_inputs(&self) -> TapSet {
        self.matching(|t| t.name == "bn1" || t.name.ends_with(".bn1") || t.name.ends_with(".add"))
    }

    fn matching(&self, pred: impl Fn(&TapInfo) -> bool) -> TapSet {
        let mut set = TapSet::empty();
        for (i, t) in self.taps.iter().enumerate() {
            if pred(t) {
                set.insert(i);
            }
        }
        set
    }

    /// The selected taps, in forward order.
    pub fn selected(&self, set: &TapSet) -> impl Iterator<Item = &TapInfo> + '_ {
        let indices: Vec<usize> = set.indices().take_while(|&i| i < self.taps.len()).collect();
        indices.into_iter().map(|i| &self.taps[i])
    }

    /// The selected names, in forward order.
    pub fn names(&self, set: &TapSet) -> Vec<&str> {
        self.selected(set).map(|t| t.name.as_str()).collect()
    }

    /// The names nearest to `query` by Levenshtein distance (at most five).
    pub fn closest(&self, query: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self
            .taps
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

    /// Parses a comma-separated list of names, glob patterns (`layer1.*`, `*.conv1`), `all`,
    /// `leaves` and `none` (the empty selection; so is the empty string).
    pub fn parse(&self, spec: &str) -> Result<TapSet, TapError> {
        let mut set = TapSet::empty();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let part = match item {
                "all" => self.all(),
                "leaves" => self.leaves(),
                "none" => TapSet::empty(),
                p if p.contains(['*', '?']) => {
                    let found = self.matching(|t| glob_match(p.as_bytes(), t.name.as_bytes()));
                    if found.is_empty() {
                        return Err(TapError::EmptyPattern {
                            pattern: p.to_string(),
                            closest: self.closest(&p.replace(['*', '?'], "")),
                        });
                    }
                    found
                }
                name => match self.index(name) {
                    Some(i) => TapSet::single(i),
                    None => {
                        return Err(TapError::UnknownName {
                            name: name.to_string(),
                            closest: self.closest(name),
                        });
                    }
                },
            };
            set = set.union(&part);
        }
        Ok(set)
    }

    /// `all`, `leaves`, `none`, or the selected names in forward order, comma-separated:
    /// always a spec that parses back to the same set.
    pub fn spec(&self, set: &TapSet) -> String {
        if set.is_empty() {
            "none".into()
        } else if *set == self.all() {
            "all".into()
        } else if *set == self.leaves() {
            "leaves".into()
        } else {
            self.names(set).join(",")
        }
    }
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

/// A selection of taps: a bit per catalogue index, as many words as the catalogue needs
/// (ResNet-34's 149 taps take three), so no tap past 128 is ever dropped.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TapSet {
    words: Vec<u64>,
}

impl TapSet {
    /// The empty selection: a forward pass with it records nothing.
    pub const fn empty() -> Self {
        TapSet { words: Vec::new() }
    }

    fn single(index: usize) -> Self {
        let mut set = Self::empty();
        set.insert(index);
        set
    }

    fn insert(&mut self, index: usize) {
        let word = index / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (index % 64);
    }

    /// Whether the tap at catalogue index `index` is selected.
    #[inline]
    pub fn contains_index(&self, index: usize) -> bool {
        self.words
            .get(index / 64)
            .is_some_and(|w| (w >> (index % 64)) & 1 == 1)
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// How many taps are selected.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The selected catalogue indices, ascending.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.words.len() * 64).filter(|&i| self.contains_index(i))
    }

    /// The union of two selections.
    pub fn union(&self, other: &TapSet) -> TapSet {
        let n = self.words.len().max(other.words.len());
        let word = |s: &TapSet, i: usize| s.words.get(i).copied().unwrap_or(0);
        let mut words: Vec<u64> = (0..n).map(|i| word(self, i) | word(other, i)).collect();
        while words.last() == Some(&0) {
            words.pop();
        }
        TapSet { words }
    }
}

impl fmt::Debug for TapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.indices()).finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r18() -> Catalogue {
        Catalogue::resnet([2, 2, 2, 2])
    }

    #[test]
    fn resnet18_has_67_module_names_and_18_fx_nodes() {
        let cat = r18();
        assert_eq!(cat.len(), 85);
        let modules = cat
            .taps()
            .iter()
            .filter(|t| matches!(t.kind, TapKind::Leaf | TapKind::Container))
            .count();
        assert_eq!(modules, 67);
        assert_eq!(cat.leaves().len(), 52);
        // The stem's ReLU and two per block, each reading the tap before it.
        let relu_inputs = cat.relu_inputs();
        assert_eq!(cat.names(&relu_inputs).len(), 1 + 8 * 2);
        assert_eq!(
            cat.names(&relu_inputs)[..3],
            ["bn1", "layer1.0.bn1", "layer1.0.add"]
        );
        let mut names: Vec<_> = cat.taps().iter().map(|t| &t.name).collect();
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
            assert!(cat.index(n).is_some(), "{n}");
        }
        assert!(cat.index("layer1.0.downsample").is_none());
    }

    #[test]
    fn resnet34_has_149_taps_and_all_selects_every_one() {
        let cat = Catalogue::resnet([3, 4, 6, 3]);
        // torchvision's resnet34: 116 named modules below the root, plus x, flatten and one
        // add and one relu_1 per block (16 blocks).
        assert_eq!(cat.len(), 149);
        let all = cat.all();
        assert_eq!(all.len(), 149);
        assert!(all.contains_index(148));
        assert_eq!(cat.names(&all).last(), Some(&"fc"));
        let late: TapSet = cat.parse("layer4.*,fc").unwrap();
        // layer4.* is indices 118..=144 (5 stem taps, then 25, 36 and 52 in layers 1-3), so 17
        // of them and fc (148) lie past the 128 taps a u128 could hold.
        assert_eq!(late.indices().filter(|&i| i >= 128).count(), 17 + 1);
        assert_eq!(cat.names(&late).len(), 3 * 8 + 3 + 1);
        assert_eq!(cat.parse(&cat.spec(&late)).unwrap(), late);
    }

    #[test]
    fn patterns_select_what_a_glob_would() {
        let cat = r18();
        let s = cat.parse("layer1.*").unwrap();
        // two blocks x (5 leaves + add + relu_1 + block) = 16
        assert_eq!(s.len(), 16);
        assert!(!s.contains_index(cat.index("layer1").unwrap()));
        let s = cat.parse("*.conv1").unwrap();
        assert_eq!(s.len(), 8);
        assert!(!s.contains_index(cat.index("conv1").unwrap()));
        let s = cat.parse("conv1, layer2").unwrap();
        assert_eq!(cat.names(&s), vec!["conv1", "layer2"]);
    }

    #[test]
    fn specs_round_trip() {
        let cat = r18();
        for spec in [
            "all",
            "leaves",
            "",
            "layer1.*",
            "*.bn2,fc",
            "x,layer3.1.add,avgpool",
        ] {
            let s = cat.parse(spec).unwrap();
            let back = cat.parse(&cat.spec(&s)).unwrap();
            assert_eq!(s, back, "{spec} -> {}", cat.spec(&s));
        }
        assert_eq!(cat.spec(&cat.parse("leaves").unwrap()), "leaves");
        assert_eq!(cat.spec(&TapSet::empty()), "none");
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let cat = r18();
        let err = cat.parse("layer1.0.conv3").unwrap_err();
        match &err {
            TapError::UnknownName { name, closest } => {
                assert_eq!(name, "layer1.0.conv3");
                assert!(closest.iter().any(|c| c == "layer1.0.conv1"), "{closest:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("layer1.0.conv1"));
        assert!(matches!(
            cat.parse("layer9.*"),
            Err(TapError::EmptyPattern { .. })
        ));
        // ResNet-18 has no third block; ResNet-34 does.
        assert!(cat.parse("layer1.2.conv1").is_err());
        assert!(
            Catalogue::resnet([3, 4, 6, 3])
                .parse("layer1.2.conv1")
                .is_ok()
        );
    }

    #[test]
    fn shapes_for_mnist_input() {
        let cat = r18();
        let shape = |n: &str| cat.get(n).unwrap().sample_shape(1, 10, [28, 28]);
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

    #[test]
    fn the_early_taps_are_the_stem_and_the_first_stage() {
        for cat in [r18(), Catalogue::resnet([3, 4, 6, 3])] {
            // What the report's name rule said before the catalogue owned it: `layer1*`, and
            // every name that is neither another stage nor the head.
            let by_name = |n: &str| {
                n.starts_with("layer1.")
                    || n == "layer1"
                    || !(n.starts_with("layer") || matches!(n, "avgpool" | "flatten" | "fc"))
            };
            for t in cat.taps() {
                assert_eq!(cat.is_early(&t.name), by_name(&t.name), "{}", t.name);
            }
            assert!(!cat.is_early("logits") && !cat.is_early("layer10"));
            let early: Vec<&str> = cat.early().collect();
            assert_eq!(early[..5], ["x", "conv1", "bn1", "relu", "maxpool"]);
            assert_eq!(early.last(), Some(&"layer1"));
        }
    }
}
