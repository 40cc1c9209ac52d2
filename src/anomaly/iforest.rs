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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Number of features of every row.
    pub n_features: usize,
    /// Subsample size each tree was grown on.
    pub sample_size: usize,
    /// The trees.
    pub trees: Vec<Tree>,
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
    pub fn score(&self, x: &[f64]) -> f64 {
        if x.len() != self.n_features || self.trees.is_empty() {
            return 1.0;
        }
        let mut sum = 0.0;
        for t in &self.trees {
            sum += t.path_length(x).unwrap_or(0.0);
        }
        let mean = sum / self.trees.len() as f64;
        2f64.powf(-mean / c_factor(self.sample_size).max(1e-9))
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
