//! Imports point one way: no file of `src/` imports, directly or through
//! others, a file that imports it back. A file imports another when it
//! names `crate::a::b` (in `use` or in a path) and that resolves to
//! `src/a/b.rs`, `src/a/b/mod.rs`, `src/a.rs` or `src/a/mod.rs` (the longest
//! that exists). A module using its own children is ordinary Rust and not
//! counted. `src/bin` is left out: binaries sit on top of the library.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

#[test]
fn imports_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = sources(&root.join("src"));
    let known: BTreeSet<String> = files.iter().map(|f| relative(root, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = relative(root, file);
        let text = std::fs::read_to_string(file).unwrap();
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{from}: {e}"));
        let mut paths = CratePaths::default();
        paths.visit_file(&syntax);
        let mine = module_of(&from);
        for path in paths.0 {
            let Some(to) = module_file(&known, &path) else {
                continue;
            };
            let theirs = module_of(&to);
            let own_child =
                (from.ends_with("mod.rs") || from == "src/lib.rs") && theirs.starts_with(&mine);
            if to != from && !own_child && from != "src/lib.rs" {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    let cycles: Vec<Vec<String>> = known
        .iter()
        .filter_map(|start| cycle_through(&edges, start))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles (each file imports the next, the last imports the first):\n{}",
        cycles
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A shortest way back to `start` through the imports, if there is one.
fn cycle_through(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut frontier = vec![start];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for file in frontier {
            for to in edges.get(file).into_iter().flatten() {
                if to == start {
                    let mut cycle = vec![file.to_owned()];
                    let mut at = file;
                    while at != start {
                        at = came_from[at];
                        cycle.push(at.to_owned());
                    }
                    cycle.reverse();
                    return Some(cycle);
                }
                if !came_from.contains_key(to.as_str()) {
                    came_from.insert(to, file);
                    next.push(to.as_str());
                }
            }
        }
        frontier = next;
    }
    None
}

/// Every `crate::…` path a file names, as its segments after `crate`.
#[derive(Default)]
struct CratePaths(Vec<Vec<String>>);

impl<'ast> Visit<'ast> for CratePaths {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.first().is_some_and(|s| s == "crate") {
            self.0.push(segments[1..].to_vec());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        expand(&item.tree, Vec::new(), &mut self.0);
    }
}

fn expand(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let with = |name: &syn::Ident| {
        let mut p = prefix.clone();
        p.push(name.to_string());
        p
    };
    match tree {
        syn::UseTree::Path(p) => expand(&p.tree, with(&p.ident), out),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| expand(t, prefix.clone(), out)),
        syn::UseTree::Name(n) if n.ident == "self" => push_crate_path(prefix, out),
        syn::UseTree::Name(n) => push_crate_path(with(&n.ident), out),
        syn::UseTree::Rename(r) => push_crate_path(with(&r.ident), out),
        syn::UseTree::Glob(_) => push_crate_path(prefix, out),
    }
}

fn push_crate_path(path: Vec<String>, out: &mut Vec<Vec<String>>) {
    if path.first().is_some_and(|s| s == "crate") {
        out.push(path[1..].to_vec());
    }
}

fn module_file(known: &BTreeSet<String>, path: &[String]) -> Option<String> {
    (1..=path.len()).rev().find_map(|n| {
        let base = format!("src/{}", path[..n].join("/"));
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .find(|candidate| known.contains(candidate))
    })
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a/b`.
fn module_of(file: &str) -> String {
    let module = file.trim_start_matches("src/").trim_end_matches(".rs");
    module.trim_end_matches("/mod").to_owned() + "/"
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "bin") {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}
