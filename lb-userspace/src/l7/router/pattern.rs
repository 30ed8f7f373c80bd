//! `matchit` patterns, seen segment by segment: their specificity, whether
//! two can match one path, and their spread over `matchit` routers
//! ("layers") in which no two patterns can match one path.
//!
//! One `matchit` router answers a path with its single most specific
//! pattern, but routing needs every pattern that matches (a more specific
//! one may refuse the method, a less specific one may have a higher
//! priority). With layers of mutually disjoint patterns, the answer of each
//! layer is the only pattern of that layer that matches, and the layers
//! together list all of them. A test checks both claims against one
//! matchit router per pattern over every small pattern and path.
use std::collections::HashMap;

/// One `/`-separated piece of a pattern, braces unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// Literal text.
    Static(String),
    /// `prefix{name}suffix`: a non-empty value without `/`.
    Param { prefix: String, suffix: String },
    /// `prefix{*name}`: the non-empty rest of the path, `/` included.
    CatchAll { prefix: String },
}

/// Specificity of one segment (greater is more specific).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SegRank {
    class: u8,
    affix: usize,
}

/// Splits a pattern that `matchit` accepted into segments.
pub(super) fn parse(pattern: &str) -> Vec<Seg> {
    pattern.split('/').map(parse_segment).collect()
}

fn parse_segment(text: &str) -> Seg {
    let mut before = String::new();
    let mut after = String::new();
    let mut param: Option<bool> = None; // Some(catch_all) once seen
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let out = if param.is_some() {
            &mut after
        } else {
            &mut before
        };
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' if param.is_none() => {
                let catch_all = chars.peek() == Some(&'*');
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                param = Some(catch_all);
            }
            c => out.push(c),
        }
    }
    match param {
        None => Seg::Static(before),
        Some(false) => Seg::Param {
            prefix: before,
            suffix: after,
        },
        Some(true) => Seg::CatchAll { prefix: before },
    }
}

/// The pattern's specificity, compared lexicographically: static beats a
/// parameter with a static prefix/suffix (longer first), which beats a bare
/// parameter, which beats a catch-all (longer static prefix first).
pub(super) fn rank(segs: &[Seg]) -> Vec<SegRank> {
    segs.iter()
        .map(|seg| match seg {
            Seg::Static(s) => SegRank {
                class: 3,
                affix: s.len(),
            },
            Seg::Param { prefix, suffix } if prefix.len() + suffix.len() > 0 => SegRank {
                class: 2,
                affix: prefix.len() + suffix.len(),
            },
            Seg::Param { .. } => SegRank { class: 1, affix: 0 },
            Seg::CatchAll { prefix } => SegRank {
                class: 0,
                affix: prefix.len(),
            },
        })
        .collect()
}

/// Whether some path could match both patterns. May answer `true` for
/// disjoint patterns (that only costs a layer), never `false` for
/// overlapping ones.
pub(super) fn overlap(a: &[Seg], b: &[Seg]) -> bool {
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (None, None) => return true,
            (Some(Seg::CatchAll { prefix }), other) | (other, Some(Seg::CatchAll { prefix })) => {
                return match other {
                    // The other pattern's paths end before the catch-all's
                    // segment, whose paths have one more.
                    None => false,
                    Some(Seg::Static(s)) => s.starts_with(prefix.as_str()),
                    Some(Seg::Param { prefix: p, .. }) | Some(Seg::CatchAll { prefix: p }) => {
                        p.starts_with(prefix.as_str()) || prefix.starts_with(p.as_str())
                    }
                };
            }
            // Different numbers of segments, and no catch-all.
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                if !segments_compatible(x, y) {
                    return false;
                }
            }
        }
        i += 1;
    }
}

fn segments_compatible(x: &Seg, y: &Seg) -> bool {
    match (x, y) {
        (Seg::Static(s), Seg::Static(t)) => s == t,
        (Seg::Static(s), Seg::Param { prefix, suffix })
        | (Seg::Param { prefix, suffix }, Seg::Static(s)) => {
            s.len() > prefix.len() + suffix.len()
                && s.starts_with(prefix.as_str())
                && s.ends_with(suffix.as_str())
        }
        (
            Seg::Param {
                prefix: p1,
                suffix: s1,
            },
            Seg::Param {
                prefix: p2,
                suffix: s2,
            },
        ) => {
            (p1.starts_with(p2.as_str()) || p2.starts_with(p1.as_str()))
                && (s1.ends_with(s2.as_str()) || s2.ends_with(s1.as_str()))
        }
        // Catch-alls are handled by `overlap`.
        _ => true,
    }
}

/// Whether two patterns may not share a `matchit` router: they may
/// overlap, or at some place both have a parameter (or catch-all) of
/// different shapes before they part. matchit 0.9 does not backtrack from
/// a parameter with a suffix into a sibling parameter (`/{p}b/b` beside
/// `/{p}/a` leaves `/ab/a` unmatched), so sibling parameters of different
/// shapes go to different routers; parameters of the same shape share one
/// matchit node and are safe.
pub(super) fn layer_conflict(a: &[Seg], b: &[Seg]) -> bool {
    for (x, y) in a.iter().zip(b) {
        let wild = |s: &Seg| !matches!(s, Seg::Static(_));
        if wild(x) && wild(y) && x != y {
            return true;
        }
        if matches!(x, Seg::CatchAll { .. }) || matches!(y, Seg::CatchAll { .. }) {
            break;
        }
        if !segments_compatible(x, y) {
            return false;
        }
    }
    overlap(a, b)
}

type Conflict = fn(&[Seg], &[Seg]) -> bool;

/// The patterns of one layer, indexed by their leading static segments so
/// that an overlap check looks only at patterns that share them.
#[derive(Default)]
struct TrieNode {
    statics: HashMap<String, TrieNode>,
    /// Patterns whose segment at this depth is not static.
    wild: Vec<usize>,
    /// Patterns made of static segments that end here.
    ends: Vec<usize>,
}

impl TrieNode {
    fn insert(&mut self, id: usize, segs: &[Seg]) {
        let mut node = self;
        for seg in segs {
            match seg {
                Seg::Static(s) => node = node.statics.entry(s.clone()).or_default(),
                _ => {
                    node.wild.push(id);
                    return;
                }
            }
        }
        node.ends.push(id);
    }

    /// A pattern of this trie for which `conflict(segs, pattern)` holds.
    /// Only patterns that share `segs`' leading static segments are tried,
    /// so `conflict` must be false for the others (as [`overlap`] and
    /// [`layer_conflict`] are).
    fn find(&self, segs: &[Seg], all: &[Vec<Seg>], conflict: Conflict) -> Option<usize> {
        let hit = |ids: &[usize]| ids.iter().copied().find(|&q| conflict(segs, &all[q]));
        let mut node = self;
        for seg in segs {
            if let Some(q) = hit(&node.wild) {
                return Some(q);
            }
            match seg {
                Seg::Static(s) => node = node.statics.get(s)?,
                // Every pattern below may overlap: check them all.
                _ => {
                    let mut stack: Vec<&TrieNode> = node.statics.values().collect();
                    while let Some(n) = stack.pop() {
                        if let Some(q) = hit(&n.wild).or_else(|| hit(&n.ends)) {
                            return Some(q);
                        }
                        stack.extend(n.statics.values());
                    }
                    return None;
                }
            }
        }
        hit(&node.wild).or_else(|| hit(&node.ends))
    }
}

/// Pairs `(later, earlier)` of patterns that one path can match and that
/// rank equal, so that neither is more specific: `/{a}` and `/{b}`.
pub(super) fn ambiguous(all: &[Vec<Seg>], ranks: &[Vec<SegRank>]) -> Vec<(usize, usize)> {
    let mut by_rank: HashMap<&[SegRank], TrieNode> = HashMap::new();
    let mut pairs = Vec::new();
    for (id, segs) in all.iter().enumerate() {
        let trie = by_rank.entry(&ranks[id]).or_default();
        match trie.find(segs, all, overlap) {
            Some(earlier) => pairs.push((id, earlier)),
            None => trie.insert(id, segs),
        }
    }
    pairs
}

/// Spreads the patterns (text, segments) over `matchit` routers in which
/// no two can match one path; each router maps a pattern to its position.
/// First fit, in order. Fails, with the position and matchit's error, only
/// for a pattern that is invalid on its own.
pub(super) fn layers(
    texts: &[&str],
    all: &[Vec<Seg>],
) -> Result<Vec<matchit::Router<usize>>, (usize, matchit::InsertError)> {
    let mut layers: Vec<Layer> = Vec::new();
    'next: for (id, (text, segs)) in texts.iter().zip(all).enumerate() {
        for layer in &mut layers {
            if layer.trie.find(segs, all, layer_conflict).is_some() {
                continue;
            }
            if layer.router.insert(*text, id).is_ok() {
                layer.trie.insert(id, segs);
                layer.members.push(id);
                continue 'next;
            }
            // matchit refused a pattern we think it can hold, and a refused
            // insert may have touched the router: rebuild it.
            let mut router = matchit::Router::new();
            for &m in &layer.members {
                router.insert(texts[m], m).map_err(|e| (m, e))?;
            }
            layer.router = router;
        }
        let mut layer = Layer {
            router: matchit::Router::new(),
            trie: TrieNode::default(),
            members: vec![id],
        };
        layer.router.insert(*text, id).map_err(|e| (id, e))?;
        layer.trie.insert(id, segs);
        layers.push(layer);
    }
    Ok(layers.into_iter().map(|layer| layer.router).collect())
}

struct Layer {
    router: matchit::Router<usize>,
    trie: TrieNode,
    members: Vec<usize>,
}
