//! `cargo xtask check-imports`: the module graph of `lb-userspace` has no
//! import circles and no upward imports (run first by `cargo xtask test`).
//!
//! Nodes are source files (modules); an edge `a → b` is a path in `a`
//! (a `use` or an expression path starting with `crate::`, `super::` or
//! `self::`) that names an item of `b`, where `b` is the longest module
//! prefix of the path. Edges from a module to its own descendants are left
//! out: declaring and re-exporting children is structure, not dependency.
//! `#[cfg(test)]` modules are skipped (tests may reach anywhere).
//!
//! Files are parsed with `syn` (a real parser, so grouped and nested `use`
//! trees, renames and macros-free expression paths are all seen); the
//! circle search is Tarjan's strongly connected components.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use syn::visit::Visit;

use crate::exec;

/// A module path inside the crate (`["l7", "proxy"]`).
type Module = Vec<String>;

/// Layers, lowest first: a module may import from its own layer or lower
/// ones only. A top-level module not listed here is unconstrained.
///
/// Why this order: leaf pieces (`net`: addresses and prefixes; `tls_util`:
/// crypto provider, server names, the verify-off verifier; `ebpf_object`:
/// the embedded eBPF object) know nothing of xlb's parts. Health checks and
/// the proxy act on what they are handed: the proxy's plan types live in
/// `l7::plan`, and `config` (which validates the file and, for L7, plans:
/// the planner is the validator) fills them in, so the proxy never reads
/// the config model. The datapath writes maps from the validated L4
/// section. The store, the admin API and the daemon's helpers assemble
/// these; the daemon and the commands sit on top.
const LAYERS: &[&[&str]] = &[
    &["net", "tls_util", "ebpf_object", "units"],
    &["health"],
    &["l7"],
    &["config"],
    &["datapath"],
    &["store", "observe", "admin", "lifecycle", "anycast"],
    &["daemon", "cmd"],
];

/// Runs the check on `lb-userspace/src`; the error lists every circle and
/// upward import.
pub fn run() -> anyhow::Result<()> {
    let src = exec::workspace_root().join("lb-userspace/src");
    let problems = check(&src)?;
    if problems.is_empty() {
        eprintln!("check-imports: lb-userspace has no import circles and no upward imports");
        return Ok(());
    }
    for p in &problems {
        eprintln!("check-imports: {p}");
    }
    anyhow::bail!("{} import problem(s) in lb-userspace/src", problems.len())
}

/// Every circle and upward import under `src`, as one line each.
pub fn check(src: &Path) -> anyhow::Result<Vec<String>> {
    let files = modules(src)?;
    let known: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in &files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let file = syn::parse_file(&text).with_context(|| format!("parse {}", path.display()))?;
        let mut paths = PathCollector::default();
        paths.visit_file(&file);
        let out = edges.entry(module.clone()).or_default();
        for p in paths.paths {
            let Some(absolute) = absolute(module, &p) else {
                continue;
            };
            let Some(target) = longest_module(&known, &absolute) else {
                continue;
            };
            if !target.starts_with(module) {
                out.insert(target);
            }
        }
    }
    let mut problems = Vec::new();
    for scc in strongly_connected(&edges) {
        let names: Vec<String> = scc.iter().map(name).collect();
        problems.push(format!("import circle: {}", names.join(" ↔ ")));
    }
    for (from, tos) in &edges {
        for to in tos {
            if let (Some(a), Some(b)) = (layer(from), layer(to)) {
                if b > a {
                    problems.push(format!("upward import: {} → {}", name(from), name(to)));
                }
            }
        }
    }
    Ok(problems)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn layer(m: &Module) -> Option<usize> {
    let top = m.first()?;
    LAYERS.iter().position(|l| l.contains(&top.as_str()))
}

/// Every `.rs` file under `src` by module path (`lib.rs`/`main.rs` are the
/// crate root, `x/mod.rs` is `x`).
fn modules(src: &Path) -> anyhow::Result<BTreeMap<Module, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut m: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                m.pop();
            }
            // The binary's root (`main.rs`) uses the library by its crate
            // name, not `crate::`, so it adds no edges; skip it so that it
            // does not shadow `lib.rs` as the root module.
            if path.file_name().is_some_and(|f| f == "main.rs") && m.is_empty() {
                continue;
            }
            out.insert(m, path);
        }
    }
    Ok(out)
}

/// A path as written in `module`, made absolute from the crate root;
/// `None` for paths into other crates.
fn absolute(module: &Module, path: &[String]) -> Option<Module> {
    let mut segs = path.iter().peekable();
    let mut base: Module = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("super" | "self") => module.clone(),
        _ => return None,
    };
    while let Some(s) = segs.peek() {
        match s.as_str() {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => break,
        }
        segs.next();
    }
    base.extend(segs.cloned());
    Some(base)
}

fn longest_module(known: &BTreeSet<Module>, path: &Module) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

/// Every path starting with `crate`, `super` or `self` in a file, outside
/// `#[cfg(test)]` modules; `use` trees are flattened into whole paths.
#[derive(Default)]
struct PathCollector {
    paths: Vec<Vec<String>>,
}

impl PathCollector {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.push_use(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.push_use(prefix, &r.ident),
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn push_use(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut p = prefix.to_vec();
        if ident != "self" {
            p.push(ident.to_string());
        }
        self.paths.push(p);
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !is_cfg_test(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if matches!(
            segs.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            self.paths.push(segs);
        }
        syn::visit::visit_path(self, p);
    }
}

/// The strongly connected components with more than one module (Tarjan).
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<Vec<Module>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Module) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        for (path, text) in files {
            let p = d.0.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p =
                    std::env::temp_dir().join(format!("xtask-imports-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_sibling_circle_is_found_through_groups_and_super() {
        let d = tree(&[
            ("lib.rs", "pub mod l7;"),
            ("l7/mod.rs", "pub mod a; pub mod b; pub use a::A;"),
            ("l7/a.rs", "use super::{b::{self, B}};\npub struct A;"),
            (
                "l7/b.rs",
                "pub struct B; fn f() { let _ = crate::l7::a::A; }",
            ),
        ]);
        let p = check(&d.0).unwrap();
        assert_eq!(p, vec!["import circle: l7::a ↔ l7::b".to_string()]);
    }

    #[test]
    fn parents_reexporting_children_and_test_modules_are_not_circles() {
        let d = tree(&[
            ("lib.rs", "pub mod l7;"),
            (
                "l7/mod.rs",
                "pub mod a; pub mod b; pub use a::A; pub struct Top;",
            ),
            ("l7/a.rs", "use super::Top; pub struct A;"),
            (
                "l7/b.rs",
                "use super::a::A;\n#[cfg(test)]\nmod tests { use crate::l7::b; }",
            ),
        ]);
        assert!(check(&d.0).unwrap().is_empty());
    }

    #[test]
    fn an_upward_import_is_named() {
        let d = tree(&[
            ("lib.rs", "pub mod l7; pub mod config;"),
            ("l7/mod.rs", "use crate::config::Config;"),
            ("config/mod.rs", "pub struct Config;"),
        ]);
        let p = check(&d.0).unwrap();
        assert_eq!(p, vec!["upward import: l7 → config".to_string()]);
    }
}
