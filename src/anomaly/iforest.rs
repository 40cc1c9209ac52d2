//! Isolation forest (Liu, Ting and Zhou, 2008), implemented here because smartcore has none.
//!
//! ```text
//!   fit:   t trees, each on a random subsample of psi rows: split on a random feature at a
//!          uniform random value in (min, max) of the node's rows, until one row is left, the
//!          rows are all equal, or the depth limit ceil(log2 psi) is reached
//!   score: s(x) = 2^( -mean_tree( depth(x) + c(leaf size) ) / c(psi) )   in (0, 1];
//!          about 0.5 or less for ordinary rows, towards 1 for rows isolated after few splits
//! ```
//!
//! `c(n) = 2 H(n-1) - 2 (n-1) / n` is the average path length of an unsuccessful search in a
//! binary search tree of `n` keys. Splits pick among features that are not constant in the node,
//! so real, unquantised data with ties never loops. Randomness is a seeded SplitMix64: the same
//! data and seed give the same forest. Trees are stored in preorder as parallel arrays (feature,
//! value, right child) so a 32-tree forest over 128-row subsamples stays around 100 KB of JSON.
//!
//! # Scoring layout
//!
//! ```text
//!   stored (preorder, any shape)        scored (complete, depth D = deepest leaf)
//!        a                                   a            slot k: children 2k+1, 2k+2
//!       / \            ──Complete::new──>   / \          a leaf above depth D is copied
//!      b   L1                              b   ·          into every leaf slot under it
//!     / \                                 / \ / \         (· a padding split), with its
//!    L2  L3                              L2 L3 L1 L1      path length (depth + c(size))
//! ```
//!
//! Walking a stored tree takes a data-dependent branch at every node, which the processor
//! cannot predict well. The complete layout needs none: every walk takes D steps of
//! `k = 2k + 2 - (x[f] < v)`, and eight trees are walked in lock-step so their independent
//! loads overlap. The sum over trees is taken in tree order, so scores are bit for bit the
//! preorder walk's ([`IsolationForest::score_preorder`], kept as the reference and for trees
//! deeper than [`COMPLETE_MAX_DEPTH`]).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A deterministic SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Leaf sizes whose [`c_factor`] is read from a table (a leaf holds at most a tree's subsample).
const C_TABLE: usize = 1024;

/// [`c_factor`] of `n`, from a table filled once for `n < 1024` (scoring reads it at every
/// leaf, and `ln` was a tenth of a forest's scoring time).
pub fn c_factor_cached(n: usize) -> f64 {
    static TABLE: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| (0..C_TABLE).map(c_factor).collect());
    if n < C_TABLE {
        TABLE[n]
    } else {
        c_factor(n)
    }
}

/// Average path length of an unsuccessful BST search among `n` keys.
pub fn c_factor(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

/// One isolation tree in preorder: node `i` is a leaf when `feature[i] < 0` (then `value[i]` is
/// its row count), else rows with `x[feature] < value` go to `i + 1` and the others to
/// `right[i]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// Split feature, or -1 for a leaf.
    pub feature: Vec<i8>,
    /// Split value, or the leaf's row count.
    pub value: Vec<f32>,
    /// Index of the right child (0 for leaves).
    pub right: Vec<u32>,
}

impl Tree {
    fn grow(rows: &mut [&[f64]], depth: usize, limit: usize, n_features: usize, rng: &mut SplitMix64, t: &mut Tree) {
        let me = t.feature.len();
        t.feature.push(-1);
        t.value.push(rows.len() as f32);
        t.right.push(0);
        if rows.len() <= 1 || depth >= limit {
            return;
        }
        // Features that still vary among these rows; pick one at random.
        let varying: Vec<(usize, f64, f64)> = (0..n_features)
            .filter_map(|f| {
                let (lo, hi) = rows
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| (lo.min(r[f]), hi.max(r[f])));
                (hi > lo).then_some((f, lo, hi))
            })
            .collect();
        if varying.is_empty() {
            return;
        }
        let (f, lo, hi) = varying[rng.below(varying.len())];
        let mut split = lo + rng.next_f64() * (hi - lo);
        if split <= lo {
            split = (lo + hi) / 2.0;
        }
        let split = split as f32;
        let mut i = 0;
        for j in 0..rows.len() {
            if rows[j][f] < f64::from(split) {
                rows.swap(i, j);
                i += 1;
            }
        }
        if i == 0 || i == rows.len() {
            return; // f32 rounding put everything on one side: keep the leaf
        }
        t.feature[me] = f as i8;
        t.value[me] = split;
        let (left, right) = rows.split_at_mut(i);
        Tree::grow(left, depth + 1, limit, n_features, rng, t);
        t.right[me] = t.feature.len() as u32;
        Tree::grow(right, depth + 1, limit, n_features, rng, t);
    }

    /// Path length of `x`: depth of its leaf plus `c(leaf rows)`. `None` for a malformed tree.
    pub fn path_length(&self, x: &[f64]) -> Option<f64> {
        let mut i = 0usize;
        let mut depth = 0.0;
        for _ in 0..=self.feature.len() {
            let f = *self.feature.get(i)?;
            if f < 0 {
                return Some(depth + c_factor_cached(*self.value.get(i)? as usize));
            }
            let v = f64::from(*self.value.get(i)?);
            i = if *x.get(f as usize)? < v {
                i + 1
            } else {
                *self.right.get(i)? as usize
            };
            depth += 1.0;
        }
        None
    }
}

/// A fitted forest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Number of features of every row.
    pub n_features: usize,
    /// Subsample size each tree was grown on.
    pub sample_size: usize,
    /// The trees.
    pub trees: Vec<Tree>,
    /// The trees in the scoring layout, built at the first score (`None`: too deep for it).
    #[serde(skip)]
    complete: OnceLock<Option<Box<Complete>>>,
}

impl PartialEq for IsolationForest {
    /// Equal when the stored forests are (the scoring layout is derived from them).
    fn eq(&self, other: &Self) -> bool {
        (self.n_features, self.sample_size, &self.trees) == (other.n_features, other.sample_size, &other.trees)
    }
}

/// Deepest tree the complete layout takes (a tree of depth D takes 2^D slots of splits and
/// 2^D leaves; forests grown on subsamples of 128 or 256 rows have depth 7 or 8).
pub const COMPLETE_MAX_DEPTH: u32 = 12;
/// Most features a row may have for the complete layout (the row is copied into an array this
/// long, so that split features index it without bounds checks).
const COMPLETE_MAX_FEATURES: usize = 32;
/// Trees walked in lock-step.
const LANES: usize = 8;

/// Every tree of a forest padded to a complete binary tree of the forest's depth D (module
/// docs). Each tree takes `2^D` slots of splits (the last unused) and `2^D` leaves, so that
/// slot indices masked with `2^D - 1` need no bounds checks.
#[derive(Clone, Debug)]
pub struct Complete {
    /// Steps of every walk.
    depth: u32,
    /// Split feature of each tree's split slots, tree after tree.
    feature: Vec<u8>,
    /// Split value of each tree's split slots.
    value: Vec<f32>,
    /// Path length of each tree's leaf slots: the depth of the stored leaf reached plus
    /// `c(its row count)`.
    leaf: Vec<f64>,
}

impl Complete {
    /// The layout of `forest`, or `None` when a tree is deeper than [`COMPLETE_MAX_DEPTH`] or
    /// rows are wider than [`COMPLETE_MAX_FEATURES`]. `forest` must be valid
    /// ([`IsolationForest::validate`]).
    pub fn new(forest: &IsolationForest) -> Option<Complete> {
        fn depth_of(t: &Tree, i: usize, d: u32) -> Option<u32> {
            let f = *t.feature.get(i)?;
            if f < 0 {
                return Some(d);
            }
            if d >= COMPLETE_MAX_DEPTH {
                return None;
            }
            Some(depth_of(t, i + 1, d + 1)?.max(depth_of(t, *t.right.get(i)? as usize, d + 1)?))
        }
        if forest.n_features > COMPLETE_MAX_FEATURES {
            return None;
        }
        let mut depth = 0;
        for t in &forest.trees {
            depth = depth.max(depth_of(t, 0, 0)?);
        }
        let slots = 1usize << depth;
        let mut c = Complete {
            depth,
            feature: vec![0; slots * forest.trees.len()],
            value: vec![0.0; slots * forest.trees.len()],
            leaf: vec![0.0; slots * forest.trees.len()],
        };
        for (k, t) in forest.trees.iter().enumerate() {
            c.place(k * slots, t, 0, 0, 0)?;
        }
        Some(c)
    }

    /// Places the stored subtree at preorder node `i` at split slot `slot` of the tree whose
    /// slots start at `base`, `d` deep.
    fn place(&mut self, base: usize, t: &Tree, i: usize, slot: usize, d: u32) -> Option<()> {
        let f = *t.feature.get(i)?;
        if f < 0 {
            // A leaf: every leaf slot under `slot` reaches it (padding splits stay feature 0,
            // value 0: either way leads to the same value).
            let length = f64::from(d) + c_factor_cached(*t.value.get(i)? as usize);
            let below = self.depth - d;
            let first = base + ((slot + 1) << below) - (1 << self.depth);
            self.leaf.get_mut(first..first + (1 << below))?.fill(length);
            return Some(());
        }
        *self.feature.get_mut(base + slot)? = u8::try_from(f).ok()?;
        *self.value.get_mut(base + slot)? = *t.value.get(i)?;
        self.place(base, t, i + 1, 2 * slot + 1, d + 1)?;
        self.place(base, t, *t.right.get(i)? as usize, 2 * slot + 2, d + 1)
    }

    /// Sum of the trees' path lengths of `x` (in tree order), `None` if `x` is too wide.
    fn sum(&self, x: &[f64]) -> Option<f64> {
        let mut row = [0.0; COMPLETE_MAX_FEATURES];
        row.get_mut(..x.len())?.copy_from_slice(x);
        // One instance per depth, so that a tree's slots are an array of known length.
        macro_rules! by_depth {
            ($($d:literal)*) => {
                match self.depth {
                    $($d => Some(self.sum_n::<{ 1 << $d }>(&row)),)*
                    _ => None,
                }
            };
        }
        by_depth!(0 1 2 3 4 5 6 7 8 9 10 11 12)
    }

    fn sum_n<const N: usize>(&self, row: &[f64; COMPLETE_MAX_FEATURES]) -> f64 {
        let (feature, _) = self.feature.as_chunks::<N>();
        let (value, _) = self.value.as_chunks::<N>();
        let (leaf, _) = self.leaf.as_chunks::<N>();
        let mut sum = 0.0;
        // Lanes of eight trees, then the rest one by one.
        let (f8, f1) = feature.as_chunks::<LANES>();
        let (v8, v1) = value.as_chunks::<LANES>();
        let (l8, l1) = leaf.as_chunks::<LANES>();
        for ((f, v), l) in f8.iter().zip(v8).zip(l8) {
            sum = walk::<N, LANES>(f, v, l, row, sum);
        }
        for ((f, v), l) in f1.iter().zip(v1).zip(l1) {
            sum = walk::<N, 1>(std::array::from_ref(f), std::array::from_ref(v), std::array::from_ref(l), row, sum);
        }
        sum
    }
}

/// Walks `L` trees of `N` slots in lock-step and adds their path lengths to `sum`, in order.
#[inline(always)]
fn walk<const N: usize, const L: usize>(
    feature: &[[u8; N]; L],
    value: &[[f32; N]; L],
    leaf: &[[f64; N]; L],
    row: &[f64; COMPLETE_MAX_FEATURES],
    mut sum: f64,
) -> f64 {
    let mut slot = [0usize; L];
    for _ in 0..N.trailing_zeros() {
        for l in 0..L {
            let s = slot[l] & (N - 1);
            let x = row[usize::from(feature[l][s]) % COMPLETE_MAX_FEATURES];
            // Left when x < v, else right (NaN included), as `Tree::path_length` goes.
            let left = x < f64::from(value[l][s]);
            slot[l] = 2 * s + 2 - usize::from(left);
        }
    }
    for l in 0..L {
        // After D steps the slot is in [N - 1, 2N - 2]: leaf (slot + 1) - N.
        sum += leaf[l][(slot[l] + 1) & (N - 1)];
    }
    sum
}

/// Problems fitting or using a forest.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    /// Fitting needs rows.
    #[error("isolation forest: no training rows")]
    NoRows,
    /// Rows have different lengths or non-finite values.
    #[error("isolation forest: row {row} has {found} finite features, expected {expected}")]
    BadRow { row: usize, found: usize, expected: usize },
    /// A stored forest is inconsistent.
    #[error("isolation forest is malformed: {0}")]
    Malformed(String),
}

impl IsolationForest {
    /// Grows `trees` trees on subsamples of `sample_size` rows (fewer if there are fewer rows).
    pub fn fit(rows: &[Vec<f64>], trees: usize, sample_size: usize, seed: u64) -> Result<Self, ForestError> {
        let n_features = rows.first().ok_or(ForestError::NoRows)?.len();
        for (i, r) in rows.iter().enumerate() {
            let finite = r.iter().filter(|v| v.is_finite()).count();
            if r.len() != n_features || finite != n_features || n_features > i8::MAX as usize {
                return Err(ForestError::BadRow {
                    row: i,
                    found: finite,
                    expected: n_features,
                });
            }
        }
        let psi = sample_size.clamp(2, rows.len().max(2));
        let limit = (psi as f64).log2().ceil() as usize;
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(trees);
        for _ in 0..trees.max(1) {
            let mut sample: Vec<&[f64]> = (0..psi.min(rows.len())).map(|_| rows[rng.below(rows.len())].as_slice()).collect();
            let mut t = Tree {
                feature: Vec::new(),
                value: Vec::new(),
                right: Vec::new(),
            };
            Tree::grow(&mut sample, 0, limit, n_features, &mut rng, &mut t);
            out.push(t);
        }
        Ok(IsolationForest {
            n_features,
            sample_size: psi.min(rows.len()).max(2),
            trees: out,
            complete: OnceLock::new(),
        })
    }

    /// Checks the structure of a loaded forest (indices in range, consistent lengths).
    pub fn validate(&self) -> Result<(), ForestError> {
        if self.trees.is_empty() || self.sample_size < 2 {
            return Err(ForestError::Malformed("no trees or sample size below 2".into()));
        }
        for (k, t) in self.trees.iter().enumerate() {
            let n = t.feature.len();
            if n == 0 || t.value.len() != n || t.right.len() != n {
                return Err(ForestError::Malformed(format!("tree {k}: array lengths differ or are empty")));
            }
            for i in 0..n {
                let f = t.feature[i];
                let bad_split = f >= 0 && (f as usize >= self.n_features || t.right[i] as usize >= n || t.right[i] as usize <= i + 1);
                if bad_split || !t.value[i].is_finite() {
                    return Err(ForestError::Malformed(format!("tree {k}: node {i} is inconsistent")));
                }
            }
        }
        Ok(())
    }

    /// Anomaly score of `x` in (0, 1]. Rows of the wrong length score 1 (maximally unusual).
    /// The forest must be valid ([`validate`](Self::validate)), as served models are.
    pub fn score(&self, x: &[f64]) -> f64 {
        if x.len() != self.n_features || self.trees.is_empty() {
            return 1.0;
        }
        let complete = self.complete.get_or_init(|| Complete::new(self).map(Box::new));
        match complete.as_deref().and_then(|c| c.sum(x)) {
            Some(sum) => self.score_of_sum(sum),
            None => self.score_preorder(x),
        }
    }

    /// [`score`](Self::score) by walking the stored trees (the reference layout).
    pub fn score_preorder(&self, x: &[f64]) -> f64 {
        if x.len() != self.n_features || self.trees.is_empty() {
            return 1.0;
        }
        let mut sum = 0.0;
        for t in &self.trees {
            sum += t.path_length(x).unwrap_or(0.0);
        }
        self.score_of_sum(sum)
    }

    fn score_of_sum(&self, sum: f64) -> f64 {
        let mean = sum / self.trees.len() as f64;
        2f64.powf(-mean / c_factor_cached(self.sample_size).max(1e-9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolates_an_outlier_and_is_deterministic() {
        let mut rng = SplitMix64::new(7);
        let mut rows: Vec<Vec<f64>> = (0..2000)
            .map(|_| vec![rng.next_f64(), rng.next_f64(), (rng.next_f64() * 4.0).floor()])
            .collect();
        rows.push(vec![0.5, 0.5, 1.0]);
        let f = IsolationForest::fit(&rows, 50, 128, 42).unwrap();
        assert_eq!(f, IsolationForest::fit(&rows, 50, 128, 42).unwrap(), "same seed, same forest");
        f.validate().unwrap();
        let normal = f.score(&[0.5, 0.5, 1.0]);
        let outlier = f.score(&[5.0, -3.0, 1.0]);
        assert!(outlier > 0.6 && normal < 0.5, "outlier {outlier}, normal {normal}");
        assert_eq!(f.score(&[1.0]), 1.0);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<IsolationForest>(&json).unwrap(), f);
    }

    #[test]
    fn the_complete_layout_scores_bit_for_bit_as_the_stored_trees() {
        let mut rng = SplitMix64::new(11);
        for (trees, psi, width) in [(1, 2, 1), (5, 16, 2), (32, 128, 9), (13, 256, 4), (8, 4096, 3)] {
            let rows: Vec<Vec<f64>> = (0..3000)
                .map(|i| {
                    (0..width)
                        .map(|j| if (i + j) % 7 == 0 { 1.0 } else { rng.next_f64() * 10.0 - 5.0 })
                        .collect()
                })
                .collect();
            let f = IsolationForest::fit(&rows, trees, psi, 3).unwrap();
            f.validate().unwrap();
            let complete = Complete::new(&f);
            // Depth ceil(log2 4096) = 12 still fits; every forest here takes the new layout.
            assert!(complete.is_some(), "{trees} trees of {psi}");
            for n in 0..2000 {
                let x: Vec<f64> = (0..width)
                    .map(|j| match (n + j) % 11 {
                        0 => f64::NAN,
                        1 => 1.0,
                        2 => rows[n % rows.len()][j],
                        _ => rng.next_f64() * 14.0 - 7.0,
                    })
                    .collect();
                assert_eq!(
                    f.score(&x).to_bits(),
                    f.score_preorder(&x).to_bits(),
                    "{trees} trees, psi {psi}, x {x:?}"
                );
            }
        }
    }

    #[test]
    fn a_forest_too_deep_for_the_complete_layout_is_scored_by_its_stored_trees() {
        // A chain of 14 splits on feature 0: the deepest leaf is 14 deep.
        let n = 14;
        let mut t = Tree {
            feature: Vec::new(),
            value: Vec::new(),
            right: Vec::new(),
        };
        for i in 0..n {
            t.feature.push(0);
            t.value.push(-(i as f32));
            t.right.push((2 * n - i) as u32);
        }
        for _ in 0..=n {
            t.feature.push(-1);
            t.value.push(3.0);
            t.right.push(0);
        }
        let f = IsolationForest {
            n_features: 1,
            sample_size: 64,
            trees: vec![t],
            complete: OnceLock::new(),
        };
        f.validate().unwrap();
        assert!(Complete::new(&f).is_none());
        for x in [-20.0, -13.5, -3.5, 0.5, f64::NAN] {
            assert_eq!(f.score(&[x]).to_bits(), f.score_preorder(&[x]).to_bits());
        }
        assert!(f.score(&[-20.0]) < f.score(&[0.5]), "the deep leaf is the ordinary one");
    }

    #[test]
    fn the_cached_c_factor_is_the_computed_one() {
        for n in (0..3000).chain([usize::MAX / 2]) {
            assert_eq!(c_factor_cached(n).to_bits(), c_factor(n).to_bits(), "n = {n}");
        }
    }

    #[test]
    fn constant_and_tied_data_terminate() {
        let rows: Vec<Vec<f64>> = (0..500).map(|i| vec![1.0, if i % 2 == 0 { 0.1 } else { 0.2 }]).collect();
        let f = IsolationForest::fit(&rows, 10, 256, 1).unwrap();
        assert!(f.score(&[1.0, 0.1]).is_finite());
        let same: Vec<Vec<f64>> = vec![vec![3.0; 4]; 100];
        assert!(IsolationForest::fit(&same, 5, 64, 1).is_ok());
        assert!(IsolationForest::fit(&[], 5, 64, 1).is_err());
        assert!(IsolationForest::fit(&[vec![1.0], vec![f64::NAN]], 5, 64, 1).is_err());
        let mut broken = f.clone();
        broken.trees[0].right[0] = 10_000;
        assert!(broken.validate().is_err());
    }
}
