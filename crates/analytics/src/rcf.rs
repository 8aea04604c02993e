//! Robust random cut forest (Guha, Mishra, Roy, Schrijvers: "Robust Random Cut Forest Based
//! Anomaly Detection On Streams", ICML 2016): the model behind `RANDOM_CUT_FOREST`.
//!
//! A forest is `n_trees` random cut trees, each over its own sample of at most
//! `sample_size` points of the stream. A tree splits its points recursively by a random cut:
//! a dimension chosen with probability proportional to the bounding box's extent in it, a
//! value uniform within it. Each tree keeps its sample by time-decayed reservoir sampling
//! (as AWS's implementation does): point number `t` gets the weight
//! `-t / time_decay + ln(-ln(u))` (u uniform in (0, 1)) and a tree keeps the
//! `sample_size` smallest weights, so recent points are preferred at a rate set by
//! `time_decay`; a point leaving the sample is deleted from the tree (the deletion of the
//! paper, which leaves the tree distributed as if built without the point).
//!
//! The score of a point is its collusive displacement (CoDisp) averaged over the trees: the
//! point is inserted into each tree, and CoDisp is the largest ratio, over the point's
//! ancestors, of the sibling subtree's size to the size of the subtree holding the point
//! (how many points "move" if the point and its colluders are removed). The point is then
//! deleted again and, if its tree's sampler takes it, inserted for good. The point is scored
//! before the model learns it, as AWS does. Typical points score near 1 to a few; isolated
//! points score close to the sample size.
//!
//! Shingling (`shingle_size` > 1) scores the concatenation of the last `shingle_size`
//! points; rows before the first full shingle score 0.
//!
//! Randomness is a seeded SplitMix64, so a model fed the same points gives the same scores
//! (tests depend on it). The model is not checkpointed: as on AWS, it starts fresh when the
//! application starts. Memory is bounded by `n_trees * sample_size` leaves of `dimensions`
//! values, with `N_TREES_MAX`, `SAMPLE_SIZE_MAX`, `DIMENSIONS_MAX` as hard limits.

use std::collections::{BinaryHeap, VecDeque};

pub const N_TREES_DEFAULT: usize = 100;
pub const SAMPLE_SIZE_DEFAULT: usize = 256;
pub const TIME_DECAY_DEFAULT: f64 = 100_000.0;
pub const SHINGLE_SIZE_DEFAULT: usize = 1;
/// Bounds of the function's parameters (AWS documents 1..1000 trees and 10..1000 samples).
pub const N_TREES_MAX: usize = 1_000;
pub const SAMPLE_SIZE_MIN: usize = 10;
pub const SAMPLE_SIZE_MAX: usize = 1_000;
pub const SHINGLE_SIZE_MAX: usize = 30;
/// Dimensions of one (shingled) point.
pub const DIMENSIONS_MAX: usize = 300;

/// SplitMix64: small, fast and good enough for choosing cuts.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1).
    fn open_uniform(&mut self) -> f64 {
        loop {
            let u = self.uniform();
            if u > 0.0 {
                return u;
            }
        }
    }
}

type NodeId = usize;

#[derive(Debug, Clone)]
enum Node {
    Leaf {
        point: Vec<f64>,
        /// Copies of the point in the sample.
        mass: usize,
        parent: Option<NodeId>,
    },
    Branch {
        dim: usize,
        /// Points with `point[dim] <= cut` are on the left.
        cut: f64,
        left: NodeId,
        right: NodeId,
        parent: Option<NodeId>,
        mass: usize,
        min: Vec<f64>,
        max: Vec<f64>,
    },
    Free,
}

/// One random cut tree over its sample.
#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    root: Option<NodeId>,
}

impl Tree {
    fn alloc(&mut self, node: Node) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.nodes.get_mut(id) {
                    *slot = node;
                }
                id
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    fn release(&mut self, id: NodeId) {
        if let Some(slot) = self.nodes.get_mut(id) {
            *slot = Node::Free;
            self.free.push(id);
        }
    }

    fn mass(&self, id: NodeId) -> usize {
        match self.nodes.get(id) {
            Some(Node::Leaf { mass, .. } | Node::Branch { mass, .. }) => *mass,
            _ => 0,
        }
    }

    fn parent(&self, id: NodeId) -> Option<NodeId> {
        match self.nodes.get(id) {
            Some(Node::Leaf { parent, .. } | Node::Branch { parent, .. }) => *parent,
            _ => None,
        }
    }

    fn set_parent(&mut self, id: NodeId, to: Option<NodeId>) {
        if let Some(Node::Leaf { parent, .. } | Node::Branch { parent, .. }) =
            self.nodes.get_mut(id)
        {
            *parent = to;
        }
    }

    /// The bounding box of a subtree (borrowed: no allocation on the hot paths).
    fn bounds(&self, id: NodeId) -> (&[f64], &[f64]) {
        match self.nodes.get(id) {
            Some(Node::Leaf { point, .. }) => (point, point),
            Some(Node::Branch { min, max, .. }) => (min, max),
            _ => (&[], &[]),
        }
    }

    /// The leaf holding `point`, following the cuts.
    fn find_leaf(&self, point: &[f64]) -> Option<NodeId> {
        let mut id = self.root?;
        loop {
            match self.nodes.get(id)? {
                Node::Leaf { point: p, .. } => return (p.as_slice() == point).then_some(id),
                Node::Branch {
                    dim,
                    cut,
                    left,
                    right,
                    ..
                } => {
                    let v = point.get(*dim).copied().unwrap_or(0.0);
                    id = if v <= *cut { *left } else { *right };
                }
                Node::Free => return None,
            }
        }
    }

    /// Inserts a point; returns its leaf.
    fn insert(&mut self, point: &[f64], rng: &mut Rng) -> Option<NodeId> {
        let Some(mut id) = self.root else {
            let leaf = self.alloc(Node::Leaf {
                point: point.to_vec(),
                mass: 1,
                parent: None,
            });
            self.root = Some(leaf);
            return Some(leaf);
        };
        loop {
            if let Some(Node::Leaf { point: p, mass, .. }) = self.nodes.get_mut(id)
                && p.as_slice() == point
            {
                *mass += 1;
                let leaf = id;
                self.add_mass_above(leaf, point);
                return Some(leaf);
            }
            // A random cut of the box grown to hold the point: a dimension with probability
            // proportional to its extent, a value uniform within it.
            let (min, max) = self.bounds(id);
            let span = |d: usize| {
                let v = point.get(d).copied().unwrap_or(0.0);
                let lo = min.get(d).copied().unwrap_or(0.0).min(v);
                let hi = max.get(d).copied().unwrap_or(0.0).max(v);
                (lo, hi - lo)
            };
            let total: f64 = (0..point.len()).map(|d| span(d).1).sum();
            if !(total > 0.0 && total.is_finite()) {
                return None;
            }
            let mut r = rng.uniform() * total;
            let mut dim = 0;
            for d in 0..point.len() {
                dim = d;
                let extent = span(d).1;
                if r < extent {
                    break;
                }
                r -= extent;
            }
            let (lo, extent) = span(dim);
            let cut = lo + r.min(extent);
            let box_lo = min.get(dim).copied().unwrap_or(0.0);
            let box_hi = max.get(dim).copied().unwrap_or(0.0);
            let value = point.get(dim).copied().unwrap_or(0.0);
            let point_left = value <= cut;
            let separates = if point_left {
                box_lo > cut
            } else {
                box_hi <= cut
            };
            if separates {
                let new_min: Vec<f64> = min.iter().zip(point).map(|(a, b)| a.min(*b)).collect();
                let new_max: Vec<f64> = max.iter().zip(point).map(|(a, b)| a.max(*b)).collect();
                let parent = self.parent(id);
                let leaf = self.alloc(Node::Leaf {
                    point: point.to_vec(),
                    mass: 1,
                    parent: None,
                });
                let (left, right) = if point_left { (leaf, id) } else { (id, leaf) };
                let branch = self.alloc(Node::Branch {
                    dim,
                    cut,
                    left,
                    right,
                    parent,
                    mass: self.mass(id) + 1,
                    min: new_min,
                    max: new_max,
                });
                self.set_parent(leaf, Some(branch));
                self.set_parent(id, Some(branch));
                match parent {
                    None => self.root = Some(branch),
                    Some(p) => {
                        if let Some(Node::Branch { left, right, .. }) = self.nodes.get_mut(p) {
                            if *left == id {
                                *left = branch;
                            } else {
                                *right = branch;
                            }
                        }
                        self.add_mass_above(branch, point);
                    }
                }
                return Some(leaf);
            }
            match self.nodes.get(id) {
                Some(Node::Branch {
                    dim,
                    cut,
                    left,
                    right,
                    ..
                }) => {
                    id = if point.get(*dim).copied().unwrap_or(0.0) <= *cut {
                        *left
                    } else {
                        *right
                    };
                }
                _ => return None,
            }
        }
    }

    /// Adds one to the mass of the ancestors of `id` and grows their boxes to `point`.
    fn add_mass_above(&mut self, id: NodeId, point: &[f64]) {
        let mut at = self.parent(id);
        while let Some(p) = at {
            if let Some(Node::Branch {
                mass,
                min,
                max,
                parent,
                ..
            }) = self.nodes.get_mut(p)
            {
                *mass += 1;
                for (d, v) in point.iter().enumerate() {
                    if let Some(m) = min.get_mut(d) {
                        *m = m.min(*v);
                    }
                    if let Some(m) = max.get_mut(d) {
                        *m = m.max(*v);
                    }
                }
                at = *parent;
            } else {
                break;
            }
        }
    }

    /// Deletes one copy of `point`.
    fn delete(&mut self, point: &[f64]) {
        let Some(leaf) = self.find_leaf(point) else {
            return;
        };
        if let Some(Node::Leaf { mass, .. }) = self.nodes.get_mut(leaf)
            && *mass > 1
        {
            *mass -= 1;
            self.refresh_above(leaf);
            return;
        }
        let Some(parent) = self.parent(leaf) else {
            self.release(leaf);
            self.root = None;
            return;
        };
        let sibling = match self.nodes.get(parent) {
            Some(Node::Branch { left, right, .. }) => {
                if *left == leaf {
                    *right
                } else {
                    *left
                }
            }
            _ => return,
        };
        let grandparent = self.parent(parent);
        self.set_parent(sibling, grandparent);
        match grandparent {
            None => self.root = Some(sibling),
            Some(g) => {
                if let Some(Node::Branch { left, right, .. }) = self.nodes.get_mut(g) {
                    if *left == parent {
                        *left = sibling;
                    } else {
                        *right = sibling;
                    }
                }
            }
        }
        self.release(leaf);
        self.release(parent);
        self.refresh_above(sibling);
    }

    /// Recomputes the mass and box of every ancestor of `id` from its children.
    fn refresh_above(&mut self, id: NodeId) {
        let mut at = self.parent(id);
        while let Some(p) = at {
            let (l, r) = match self.nodes.get(p) {
                Some(Node::Branch { left, right, .. }) => (*left, *right),
                _ => break,
            };
            let mass = self.mass(l) + self.mass(r);
            // Take the node's box out to refill it in place from its children's.
            let (mut min, mut max) = match self.nodes.get_mut(p) {
                Some(Node::Branch { min, max, .. }) => (std::mem::take(min), std::mem::take(max)),
                _ => break,
            };
            {
                let (lmin, lmax) = self.bounds(l);
                let (rmin, rmax) = self.bounds(r);
                for ((m, a), b) in min.iter_mut().zip(lmin).zip(rmin) {
                    *m = a.min(*b);
                }
                for ((m, a), b) in max.iter_mut().zip(lmax).zip(rmax) {
                    *m = a.max(*b);
                }
            }
            if let Some(Node::Branch {
                mass: m,
                min: node_min,
                max: node_max,
                parent,
                ..
            }) = self.nodes.get_mut(p)
            {
                *m = mass;
                *node_min = min;
                *node_max = max;
                at = *parent;
            } else {
                break;
            }
        }
    }

    /// Collusive displacement of a leaf.
    fn codisp(&self, leaf: NodeId) -> f64 {
        let mut node = leaf;
        let mut best: f64 = 0.0;
        while let Some(p) = self.parent(node) {
            let sibling = match self.nodes.get(p) {
                Some(Node::Branch { left, right, .. }) => {
                    if *left == node {
                        *right
                    } else {
                        *left
                    }
                }
                _ => break,
            };
            let here = self.mass(node).max(1) as f64;
            best = best.max(self.mass(sibling) as f64 / here);
            node = p;
        }
        best
    }
}

/// A sampled point's weight (a max-heap keeps the largest on top for eviction).
#[derive(Debug, Clone)]
struct Sampled {
    weight: f64,
    point: Vec<f64>,
}

impl PartialEq for Sampled {
    fn eq(&self, other: &Self) -> bool {
        self.weight.total_cmp(&other.weight).is_eq()
    }
}
impl Eq for Sampled {}
impl PartialOrd for Sampled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sampled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.weight.total_cmp(&other.weight)
    }
}

/// The parameters of `RANDOM_CUT_FOREST`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub n_trees: usize,
    pub sample_size: usize,
    pub time_decay: f64,
    pub shingle_size: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            n_trees: N_TREES_DEFAULT,
            sample_size: SAMPLE_SIZE_DEFAULT,
            time_decay: TIME_DECAY_DEFAULT,
            shingle_size: SHINGLE_SIZE_DEFAULT,
        }
    }
}

impl Params {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=N_TREES_MAX).contains(&self.n_trees) {
            return Err(format!("numberOfTrees must be from 1 to {N_TREES_MAX}"));
        }
        if !(SAMPLE_SIZE_MIN..=SAMPLE_SIZE_MAX).contains(&self.sample_size) {
            return Err(format!(
                "subSampleSize must be from {SAMPLE_SIZE_MIN} to {SAMPLE_SIZE_MAX}"
            ));
        }
        if !(self.time_decay >= 1.0 && self.time_decay.is_finite()) {
            return Err("timeDecay must be at least 1".into());
        }
        if !(1..=SHINGLE_SIZE_MAX).contains(&self.shingle_size) {
            return Err(format!("shingleSize must be from 1 to {SHINGLE_SIZE_MAX}"));
        }
        Ok(())
    }
}

/// A streaming random cut forest.
#[derive(Debug, Clone)]
pub struct Forest {
    params: Params,
    trees: Vec<Tree>,
    samples: Vec<BinaryHeap<Sampled>>,
    shingle: VecDeque<Vec<f64>>,
    n_seen: u64,
    rng: Rng,
}

impl Forest {
    pub fn new(params: Params, seed: u64) -> Forest {
        Forest {
            params,
            trees: vec![Tree::default(); params.n_trees],
            samples: vec![BinaryHeap::new(); params.n_trees],
            shingle: VecDeque::new(),
            n_seen: 0,
            rng: Rng(seed),
        }
    }

    /// Scores `values` (one row's numeric columns), then learns it.
    pub fn score_and_update(&mut self, values: &[f64]) -> f64 {
        let dims = values.len().saturating_mul(self.params.shingle_size);
        if values.is_empty() || dims > DIMENSIONS_MAX || values.iter().any(|v| !v.is_finite()) {
            return 0.0;
        }
        self.shingle.push_back(values.to_vec());
        while self.shingle.len() > self.params.shingle_size {
            self.shingle.pop_front();
        }
        if self.shingle.len() < self.params.shingle_size {
            return 0.0;
        }
        let point: Vec<f64> = self.shingle.iter().flatten().copied().collect();
        if self
            .shingle
            .front()
            .is_some_and(|f| f.len() != values.len())
        {
            return 0.0;
        }
        let t = self.n_seen;
        self.n_seen += 1;
        let mut total = 0.0;
        let mut n_scored = 0usize;
        for (tree, sample) in self.trees.iter_mut().zip(&mut self.samples) {
            if tree.root.is_some()
                && let Some(leaf) = tree.insert(&point, &mut self.rng)
            {
                total += tree.codisp(leaf);
                n_scored += 1;
                tree.delete(&point);
            }
            let u = self.rng.open_uniform();
            let weight = -(t as f64) / self.params.time_decay + (-u.ln()).ln();
            let full = sample.len() >= self.params.sample_size;
            if full && sample.peek().is_some_and(|top| weight >= top.weight) {
                continue;
            }
            if full && let Some(evicted) = sample.pop() {
                tree.delete(&evicted.point);
            }
            if tree.insert(&point, &mut self.rng).is_some() {
                sample.push(Sampled {
                    weight,
                    point: point.clone(),
                });
            }
        }
        if n_scored == 0 {
            0.0
        } else {
            total / n_scored as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_scores_far_above_the_normal_points() {
        let mut forest = Forest::new(
            Params {
                n_trees: 50,
                sample_size: 128,
                ..Params::default()
            },
            7,
        );
        let mut rng = Rng(99);
        let mut normal_scores = Vec::new();
        for i in 0..600 {
            let x = 10.0 + rng.uniform();
            let y = 20.0 + rng.uniform();
            let s = forest.score_and_update(&[x, y]);
            if i >= 300 {
                normal_scores.push(s);
            }
        }
        let outlier = forest.score_and_update(&[30.0, 5.0]);
        let mean = normal_scores.iter().sum::<f64>() / normal_scores.len() as f64;
        let max = normal_scores.iter().copied().fold(0.0, f64::max);
        assert!(outlier > 5.0 * mean, "outlier {outlier}, mean {mean}");
        assert!(outlier > max, "outlier {outlier}, max normal {max}");
    }

    #[test]
    fn the_sample_stays_bounded_and_trees_stay_consistent() {
        let mut forest = Forest::new(
            Params {
                n_trees: 3,
                sample_size: 16,
                ..Params::default()
            },
            1,
        );
        for i in 0..500 {
            forest.score_and_update(&[(i % 7) as f64, (i % 3) as f64]);
        }
        for (tree, sample) in forest.trees.iter().zip(&forest.samples) {
            assert!(sample.len() <= 16);
            let root = tree.root.expect("a root");
            assert_eq!(tree.mass(root), sample.len());
            let live = tree
                .nodes
                .iter()
                .filter(|n| !matches!(n, Node::Free))
                .count();
            // Leaves hold distinct points (duplicates share one); a tree of n leaves has
            // n - 1 branches.
            let leaves = tree
                .nodes
                .iter()
                .filter(|n| matches!(n, Node::Leaf { .. }))
                .count();
            assert_eq!(live, 2 * leaves - 1);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_scores() {
        let run = || {
            let mut f = Forest::new(Params::default(), 42);
            (0..50)
                .map(|i| f.score_and_update(&[(i * 37 % 11) as f64]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
