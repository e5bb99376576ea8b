//! The source layout's rules (issue 21), read from `src/` itself: no two
//! files and no two top-level modules import each other, directly or
//! round a cycle, and the lower layers never import the front ends.
//!
//! An import is any `crate::a::b` or `super::…` path in a file's code
//! (comments and the `#[cfg(test)]` module at its end are left out: a
//! test may reach anywhere). A path counts as an import of the deepest
//! module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["server", "reload"]`.
type ModPath = Vec<String>;

/// Every module file under `src/`, by module path.
fn modules() -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&root).unwrap().with_extension("");
            let mut path: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if path.last().is_some_and(|l| l == "mod") || path == ["lib"] || path == ["main"] {
                path.pop();
            }
            (path, file)
        })
        .collect()
}

/// The code of a file: comment lines and the trailing test module cut.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]\nmod ").map_or(text, |i| &text[..i]);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier `text` starts with.
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The module files module `at` imports, from its source `text`.
fn imports(at: &ModPath, text: &str, known: &BTreeMap<ModPath, PathBuf>) -> BTreeSet<ModPath> {
    let code = code(text);
    let bytes = code.as_bytes();
    let mut out = BTreeSet::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            from = i + start.len();
            // Only whole words: `xcrate::` is no import.
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let mut path: ModPath = if start == "crate::" {
                Vec::new()
            } else {
                // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` (module a::b) it is `a` too.
                let mut p = at.clone();
                p.pop();
                p
            };
            // The segments after the prefix, and one level of a `{…}` group.
            let mut rest = &code[from..];
            loop {
                let word = ident(rest);
                if word.is_empty() {
                    break;
                }
                path.push(word.to_string());
                rest = &rest[word.len()..];
                match rest.strip_prefix("::") {
                    Some(r) if !r.starts_with('{') => rest = r,
                    _ => break,
                }
            }
            let mut group = Vec::new();
            if let Some(inner) = rest.strip_prefix("::{") {
                let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                for item in inner.split(',') {
                    let first = ident(item.trim_start());
                    if !first.is_empty() && first != "self" {
                        let mut p = path.clone();
                        p.push(first.to_string());
                        group.push(p);
                    }
                }
            }
            for p in std::iter::once(path).chain(group) {
                if let Some(target) = (1..=p.len())
                    .rev()
                    .map(|n| p[..n].to_vec())
                    .find(|p| known.contains_key(p))
                    && &target != at
                {
                    out.insert(target);
                }
            }
        }
    }
    out
}

/// The import graph between module files.
fn graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let known = modules();
    known
        .iter()
        .map(|(at, file)| {
            let text = std::fs::read_to_string(file).unwrap();
            (at.clone(), imports(at, &text, &known))
        })
        .collect()
}

/// The strongly connected components of more than one node (Tarjan).
fn cycles<N: Ord + Clone>(edges: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct Walk<'a, N> {
        edges: &'a BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        on: BTreeSet<N>,
        out: Vec<Vec<N>>,
    }
    impl<N: Ord + Clone> Walk<'_, N> {
        fn visit(&mut self, v: &N) {
            let i = self.index.len();
            self.index.insert(v.clone(), i);
            self.low.insert(v.clone(), i);
            self.stack.push(v.clone());
            self.on.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(&w);
                    let done = &w == v;
                    comp.push(w);
                    if done {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.out
}

/// Top-level module → the other top-level modules its files import.
fn folders(g: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in g {
        let Some(a) = from.first() else { continue };
        for to in tos {
            if let Some(b) = to.first()
                && a != b
            {
                out.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    out
}

#[test]
fn the_import_graph_is_read_from_the_source() {
    // The reader finds what the rules rest on; a reader that found
    // nothing would pass every rule.
    let g = graph();
    assert!(g.len() > 80, "only {} module files found", g.len());
    let reload = &g[&vec!["server".to_string(), "reload".to_string()]];
    assert!(
        reload.contains(&vec!["server".to_string(), "feeds".to_string()]),
        "{reload:?}"
    );
    let f = folders(&g);
    assert!(f["http"].contains("state"), "{:?}", f["http"]);
    assert!(f["dns"].contains("engine"), "{:?}", f["dns"]);
    // And it finds a cycle where one is.
    let mut bad = BTreeMap::new();
    bad.insert("a", BTreeSet::from(["b"]));
    bad.insert("b", BTreeSet::from(["c"]));
    bad.insert("c", BTreeSet::from(["a"]));
    bad.insert("d", BTreeSet::from(["a"]));
    let found = cycles(&bad);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
}

#[test]
fn no_two_files_import_each_other() {
    let found = cycles(&graph());
    let named: Vec<Vec<String>> = found
        .iter()
        .map(|c| c.iter().map(|p| p.join("/")).collect())
        .collect();
    assert!(named.is_empty(), "files in an import cycle: {named:?}");
}

#[test]
fn no_two_folders_import_each_other() {
    let f = folders(&graph());
    let found = cycles(&f);
    assert!(
        found.is_empty(),
        "top-level modules in an import cycle: {found:?}"
    );
}

#[test]
fn lower_layers_never_import_the_front_ends() {
    let front = ["cli", "server", "http", "dns", "state"];
    let lower = [
        "engine",
        "openmix",
        "geo",
        "data",
        "inventory",
        "report",
        "stats",
        "db",
        "metrics",
        "config",
        "net",
    ];
    let f = folders(&graph());
    for l in lower {
        let up: Vec<&String> = f
            .get(l)
            .into_iter()
            .flatten()
            .filter(|m| front.contains(&m.as_str()))
            .collect();
        assert!(up.is_empty(), "{l} imports the front ends {up:?}");
    }
    // The engine never imports a store; the stores never import the engine.
    for (a, b) in [("engine", "db"), ("db", "engine"), ("openmix", "engine")] {
        assert!(!f.get(a).is_some_and(|s| s.contains(b)), "{a} imports {b}");
    }
}

#[test]
fn the_source_root_holds_main_lib_and_folders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let extra: Vec<&String> = files
        .iter()
        .filter(|f| *f != "main.rs" && *f != "lib.rs")
        .collect();
    assert!(
        extra.len() <= 2,
        "more than two files beside main.rs and lib.rs: {extra:?}"
    );
    for f in extra {
        let lines = std::fs::read_to_string(root.join(f))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 200, "{f} is not small: {lines} lines");
    }
}
