//! The module graph of the library crates has no cycles: no module imports, directly or
//! through others, a module that imports it back (issue 13). Reads the sources; needs no
//! binary.
//!
//! A module's imports are the paths it names (`crate::`, `super::`, `self::` and its own
//! children), with each name followed through the `pub use` lists to the module that defines
//! it. A `pub use` is a re-export, not an import: a parent that re-exports its children is
//! their facade, and the crate root (`lib.rs`) is only a facade. Test modules
//! (`#[cfg(test)] mod tests`) and comments are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crates checked. (`mover` joins when its cycles are gone.)
const CRATES: &[&str] = &["chunker", "targets", "mover", "mover/cli"];

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in CRATES {
        let graph = Graph::load(&root.join(krate).join("src"));
        let cycles = graph.cycles();
        assert!(
            cycles.is_empty(),
            "module cycles in {krate}:\n{}",
            cycles.join("\n")
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_through_a_reexport() {
    let mut modules = BTreeMap::new();
    modules.insert(String::new(), "mod a;\nmod b;\npub use a::A;\n".to_string());
    modules.insert("a".into(), "use crate::b::B;\npub struct A;".to_string());
    modules.insert("b".into(), "pub struct B(crate::A);".to_string());
    let g = Graph::new(modules);
    assert_eq!(g.cycles().len(), 1, "{:?}", g.edges);
}

struct Graph {
    modules: BTreeMap<String, String>,
    /// Per module: name re-exported by `pub use` → the module that defines it.
    exports: BTreeMap<String, BTreeMap<String, String>>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn load(src: &Path) -> Self {
        let mut modules = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("readable source dir") {
                let path = e.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    let rel = path.strip_prefix(src).expect("below src");
                    let name = rel.with_extension("").to_string_lossy().replace('/', "::");
                    let name = if name == "lib" { String::new() } else { name };
                    if name != "main" {
                        let text = std::fs::read_to_string(&path).expect("readable source");
                        modules.insert(name, text);
                    }
                }
            }
        }
        Self::new(modules)
    }

    fn new(raw: BTreeMap<String, String>) -> Self {
        let modules: BTreeMap<String, String> =
            raw.into_iter().map(|(m, t)| (m, strip(&t))).collect();
        let mut g = Graph {
            modules,
            exports: BTreeMap::new(),
            edges: BTreeMap::new(),
        };
        // Re-exports, followed until they stop changing (a chain of `pub use`).
        for _ in 0..8 {
            let mut exports = BTreeMap::new();
            for (m, text) in &g.modules {
                let mut names = BTreeMap::new();
                for stmt in pub_uses(text) {
                    for (base, segs, alias) in g.paths_in(m, &stmt) {
                        if let Some(t) = g.resolve(&base, &segs) {
                            names.insert(alias, t);
                        }
                    }
                }
                exports.insert(m.clone(), names);
            }
            if exports == g.exports {
                break;
            }
            g.exports = exports;
        }
        for (m, text) in &g.modules {
            if m.is_empty() {
                continue; // the crate root is a facade
            }
            let code = without_pub_uses(text);
            let targets: BTreeSet<String> = g
                .paths_in(m, &code)
                .into_iter()
                .filter_map(|(base, segs, _)| g.resolve(&base, &segs))
                .filter(|t| t != m)
                .collect();
            g.edges.insert(m.clone(), targets);
        }
        g
    }

    fn children(&self, m: &str) -> Vec<String> {
        self.modules
            .keys()
            .filter_map(|k| {
                let rest = if m.is_empty() {
                    Some(k.as_str())
                } else {
                    k.strip_prefix(m).and_then(|r| r.strip_prefix("::"))
                };
                rest.filter(|r| !r.is_empty() && !r.contains("::"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// Every in-crate path named in `text` of module `m`: (base module, segments, last name).
    fn paths_in(&self, m: &str, text: &str) -> Vec<(String, Vec<String>, String)> {
        let children = self.children(m);
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[i - 1]));
            // Inside a multi-byte character (`…` in a string) no path starts.
            if !boundary || !text.is_char_boundary(i) {
                i += 1;
                continue;
            }
            let rest = &text[i..];
            let (base, skip) = if rest.starts_with("crate::") {
                (Some(String::new()), "crate::".len())
            } else if rest.starts_with("self::") {
                (Some(m.to_string()), "self::".len())
            } else if rest.starts_with("super::") {
                let mut base = m.to_string();
                let mut skip = 0;
                while text[i + skip..].starts_with("super::") {
                    base = base
                        .rsplit_once("::")
                        .map_or(String::new(), |(p, _)| p.into());
                    skip += "super::".len();
                }
                (Some(base), skip)
            } else if children
                .iter()
                .any(|c| rest.starts_with(c.as_str()) && rest[c.len()..].starts_with("::"))
            {
                (Some(m.to_string()), 0)
            } else {
                (None, 1)
            };
            if let Some(base) = base {
                let (trees, used) = parse_tree(&text[i + skip..]);
                for (segs, alias) in trees {
                    out.push((base.clone(), segs, alias));
                }
                i += skip + used.max(1);
            } else {
                i += skip;
            }
        }
        out
    }

    /// The module that `segs` (relative to `base`) names or defines.
    fn resolve(&self, base: &str, segs: &[String]) -> Option<String> {
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                format!("{a}::{b}")
            }
        };
        let mut m = base.to_string();
        let mut rest = segs;
        while let Some(first) = rest.first() {
            let next = join(&m, first);
            if !self.modules.contains_key(&next) {
                break;
            }
            m = next;
            rest = &rest[1..];
        }
        match rest.first() {
            Some(name) => self
                .exports
                .get(&m)
                .and_then(|e| e.get(name))
                .cloned()
                .or(Some(m)),
            None => Some(m),
        }
    }

    /// Each cycle, as its modules and the imports that close it.
    fn cycles(&self) -> Vec<String> {
        let reach = |from: &String| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.clone()];
            while let Some(m) = stack.pop() {
                for t in self.edges.get(&m).into_iter().flatten() {
                    if seen.insert(t.clone()) {
                        stack.push(t.clone());
                    }
                }
            }
            seen
        };
        let mut out = Vec::new();
        for (m, targets) in &self.edges {
            for t in targets {
                if m < t && reach(t).contains(m) {
                    out.push(format!("  {m} -> {t} -> ... -> {m}"));
                }
            }
        }
        out
    }
}

/// Parses a use tree (`a::b`, `a::{b, c::d as e}`, `*`): each path's segments and the name it
/// binds. Returns them and the bytes read.
fn parse_tree(s: &str) -> (Vec<(Vec<String>, String)>, usize) {
    let b = s.as_bytes();
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'{' {
            let mut out = Vec::new();
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    return (out, i + 1);
                }
                let (inner, used) = parse_tree(&s[i..]);
                for (mut tail, alias) in inner {
                    let mut full = segs.clone();
                    full.append(&mut tail);
                    out.push((full, alias));
                }
                i += used.max(1);
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'*') {
            i += 1;
        }
        if i == start {
            break;
        }
        segs.push(s[start..i].to_string());
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    let mut alias = segs.last().cloned().unwrap_or_default();
    let rest = &s[i..];
    if let Some(a) = rest.strip_prefix(" as ") {
        let n = a
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(a.len());
        alias = a[..n].to_string();
        i += 4 + n;
    }
    (vec![(segs, alias)], i)
}

/// The source without test modules and comments.
fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| match l.find(" // ") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `pub use` statements of a module (the text after `use`, up to `;`).
fn pub_uses(text: &str) -> Vec<String> {
    statements(text).into_iter().map(|(_, _, s)| s).collect()
}

fn without_pub_uses(text: &str) -> String {
    let mut out = text.to_string();
    for (start, end, _) in statements(text).into_iter().rev() {
        out.replace_range(start..end, "");
    }
    out
}

/// (start, end, body) of each `pub use …;` and `pub(crate) use …;`.
fn statements(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for prefix in ["pub use ", "pub(crate) use "] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let body = start + prefix.len();
            let end = text[body..].find(';').map_or(text.len(), |e| body + e);
            // A path that does not start in this crate (`chunker::…`) binds nothing here.
            out.push((start, end, text[body..end].to_string()));
            from = end;
        }
    }
    out.sort();
    out
}
