//! The crate's import graph, read from its sources: no file imports (through a
//! chain) from itself, no layer imports from a layer above it (so the system
//! layer, `src/sys/`, imports only from itself and plain data), and `unsafe`
//! appears only in `src/sys/`. ARCHITECTURE.md describes the layers this keeps
//! true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file, named by its module path: `bound`, `sys/msg`, `blocking` (for
/// `blocking/mod.rs`), `lib`.
type Node = String;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn node_of(src: &Path, file: &Path) -> Node {
    let relative = file.strip_prefix(src).expect("under src");
    let name = relative
        .with_extension("")
        .to_string_lossy()
        .replace('\\', "/");
    name.strip_suffix("/mod")
        .map_or(name.clone(), str::to_string)
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Every path that starts with `crate::`, `$crate::` or `super::`, as its first
/// two segments (`["sys", "msg"]`), use trees expanded (nested braces, `self`,
/// globs: `crate::sys::*` imports `["sys"]`, `super::*` the parent itself).
fn paths(code: &str) -> Vec<(bool, Vec<String>)> {
    let mut found = Vec::new();
    for (prefix, is_super) in [("crate::", false), ("super::", true)] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // e.g. `tokio_imc::` or `foo_crate::`
            }
            let mut trees = Vec::new();
            use_tree(rest, Vec::new(), &mut trees);
            for mut path in trees {
                path.truncate(2);
                found.push((is_super, path));
            }
        }
    }
    found
}

/// Reads one use tree at the start of `s` below `prefix`, pushing every path it
/// names; returns what follows it.
fn use_tree<'a>(s: &'a str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> &'a str {
    let s = s.trim_start();
    if let Some(mut list) = s.strip_prefix('{') {
        loop {
            list = use_tree(list, prefix.clone(), out).trim_start();
            if let Some(next) = list.strip_prefix(',') {
                list = next;
                continue;
            }
            return list.strip_prefix('}').unwrap_or(list);
        }
    }
    if let Some(after) = s.strip_prefix('*') {
        out.push(prefix);
        return after;
    }
    let (name, after) = ident(s);
    if name.is_empty() || name == "self" {
        if !prefix.is_empty() || name == "self" {
            out.push(prefix);
        }
        return after;
    }
    let mut path = prefix;
    path.push(name.to_string());
    match after.strip_prefix("::") {
        Some(deeper) => use_tree(deeper, path, out),
        None => {
            out.push(path);
            // `B as C`: the rename is not a path.
            match after.trim_start().strip_prefix("as ") {
                Some(renamed) => ident(renamed.trim_start()).1,
                None => after,
            }
        }
    }
}

/// `pub use module::{A, B};` and `pub use module::A;` in a module file: which
/// child module each re-exported name comes from.
fn reexports(code: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in code.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, after) = ident(rest);
        let Some(after) = after.strip_prefix("::") else {
            continue;
        };
        let list = after.trim_start_matches('{');
        let list = &list[..list.find(['}', ';']).unwrap_or(list.len())];
        for item in list.split(',') {
            let (name, _) = ident(item.trim());
            if !name.is_empty() {
                names.insert(name.to_string(), module.to_string());
            }
        }
    }
    names
}

struct Crate {
    files: BTreeSet<Node>,
    reexports: BTreeMap<Node, BTreeMap<String, String>>,
}

impl Crate {
    /// The file a path names, relative to module `base` (`""` for the crate root).
    fn resolve(&self, base: &str, path: &[String]) -> Option<Node> {
        let join = |parts: &[&str]| {
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/")
        };
        if path.is_empty() {
            // `super::*`: the parent module itself.
            return (!base.is_empty()).then(|| base.to_string());
        }
        if let [first, second, ..] = path {
            let both = join(&[base, first, second]);
            if self.files.contains(&both) {
                return Some(both);
            }
        }
        let first = join(&[base, &path[0]]);
        if self.files.contains(&first) {
            if let Some(second) = path.get(1) {
                // `crate::blocking::ConnectedSocket`: a name re-exported there.
                if let Some(module) = self.reexports.get(&first).and_then(|r| r.get(second)) {
                    return self.resolve(&first, std::slice::from_ref(module));
                }
            }
            return Some(first);
        }
        let root = if base.is_empty() { "lib" } else { base };
        let module = self.reexports.get(root)?.get(&path[0])?;
        self.resolve(base, std::slice::from_ref(module))
    }
}

fn graph() -> BTreeMap<Node, BTreeSet<Node>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let texts: BTreeMap<Node, String> = files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).expect("a readable source file");
            (node_of(&src, file), code(&text))
        })
        .collect();
    let krate = Crate {
        files: texts.keys().cloned().collect(),
        reexports: texts
            .iter()
            .map(|(node, code)| (node.clone(), reexports(code)))
            .collect(),
    };
    let mut edges = BTreeMap::new();
    for (node, code) in &texts {
        let targets: &mut BTreeSet<Node> = edges.entry(node.clone()).or_default();
        if node == "lib" {
            continue; // declares every module; imports none
        }
        // `super::` in `a/b.rs` and in `a/b/mod.rs` (node `a/b` both) is `a`.
        let parent = node.rsplit_once('/').map_or("", |(parent, _)| parent);
        for (is_super, path) in paths(code) {
            let base = if is_super { parent } else { "" };
            if let Some(target) = krate.resolve(base, &path) {
                if &target != node && target != "lib" {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    edges: &BTreeMap<Node, BTreeSet<Node>>,
    start: &Node,
    at: &Node,
    path: &mut Vec<Node>,
    seen: &mut BTreeSet<Node>,
) -> Option<Vec<Node>> {
    for next in edges.get(at).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.clone());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(cycle) = cycle_from(edges, start, next, path, seen) {
                return Some(cycle);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_file_imports_from_itself_through_a_chain() {
    let edges = graph();
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&edges, start, start, &mut path, &mut BTreeSet::new()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The layers of ARCHITECTURE.md, lowest first: a file may import only from its
/// own layer or below.
fn layer(node: &str) -> usize {
    match node {
        "ancillary" | "address_id" | "address_policy" | "message" | "peer_warning" => 0,
        _ if node == "sys" || node.starts_with("sys/") => 1,
        "request" | "validate" | "message_engine" | "address_set" | "admission" | "handoff" => 2,
        _ if node == "blocking" || node.starts_with("blocking/") => 4,
        _ if node == "nacl" || node.starts_with("nacl/") => 4,
        _ if node == "typed" || node.starts_with("typed/") => 4,
        "fuzzing" | "lib" => 4,
        _ => 3,
    }
}

/// Every import from a higher layer than the importer's.
fn upward_imports(edges: &BTreeMap<Node, BTreeSet<Node>>) -> Vec<String> {
    let mut found = Vec::new();
    for (node, targets) in edges {
        for target in targets {
            if layer(target) > layer(node) {
                found.push(format!(
                    "{node} (layer {}) imports {target} (layer {})",
                    layer(node),
                    layer(target)
                ));
            }
        }
    }
    found
}

#[test]
fn no_layer_imports_from_a_layer_above_it() {
    let edges = graph();
    let sys_files = edges.keys().filter(|node| layer(node) == 1).count();
    assert!(sys_files >= 6, "found only {sys_files} files in src/sys");
    let upward = upward_imports(&edges);
    assert!(upward.is_empty(), "{}", upward.join("\n"));
}

#[test]
fn unsafe_code_lives_only_in_the_system_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut unsafe_in_sys = 0;
    for file in files {
        let node = node_of(&src, &file);
        let text = code(&std::fs::read_to_string(&file).expect("a readable source file"));
        let has_unsafe = text.contains("unsafe ") || text.contains("allow(unsafe_code)");
        if layer(&node) == 1 {
            unsafe_in_sys += usize::from(has_unsafe);
        } else {
            assert!(!has_unsafe, "{node} has unsafe code outside src/sys");
        }
    }
    assert!(
        unsafe_in_sys >= 4,
        "the check found unsafe in {unsafe_in_sys} sys files"
    );
}

/// The reader itself: it sees the edges it must see, so the tests above cannot
/// pass by finding nothing.
#[test]
fn the_reader_finds_known_edges() {
    let edges = graph();
    let has = |from: &str, to: &str| edges.get(from).is_some_and(|t| t.contains(to));
    assert!(has("bound", "address_set"), "{:?}", edges.get("bound"));
    assert!(has("bound", "sys/reactor"), "{:?}", edges.get("bound"));
    assert!(has("connection", "split"), "{:?}", edges.get("connection"));
    assert!(has("sys/msg", "ancillary"), "{:?}", edges.get("sys/msg"));
    assert!(
        has("blocking/bound", "blocking/connection"),
        "{:?}",
        edges.get("blocking/bound")
    );
    assert!(
        has("blocking/bound", "bound"),
        "{:?}",
        edges.get("blocking/bound")
    );
    // An upward import made up here is found.
    let mut upward = edges.clone();
    upward
        .entry("sys/msg".to_string())
        .or_default()
        .insert("bound".to_string());
    assert_eq!(upward_imports(&upward).len(), 1);
    // Use trees: nested braces, `self`, globs, renames.
    let read =
        |code: &str| -> Vec<Vec<String>> { paths(code).into_iter().map(|(_, p)| p).collect() };
    assert_eq!(
        read("use crate::{ancillary::{self, X}, bound::B as C, sys::*};"),
        [
            vec!["ancillary"],
            vec!["ancillary", "X"],
            vec!["bound", "B"],
            vec!["sys"]
        ]
    );
    assert_eq!(read("use super::*;"), [Vec::<String>::new()]);
    // A cycle made up here is found.
    let mut cyclic = edges.clone();
    cyclic
        .entry("sys/msg".to_string())
        .or_default()
        .insert("bound".to_string());
    let start = "bound".to_string();
    let mut path = vec![start.clone()];
    assert!(cycle_from(&cyclic, &start, &start, &mut path, &mut BTreeSet::new()).is_some());
}
