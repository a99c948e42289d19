//! The house rules of the source tree (STYLE.md, section 9), checked on every crate: no
//! non-test file over 1,000 lines, no non-test function over 120 lines.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 1000;
const MAX_FN_LINES: usize = 120;

/// Every `.rs` file under the `src/` folders of the workspace's crates.
fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = ["chunker", "targets", "mover", "mover/cli", "bench"]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    assert!(out.len() > 20, "found only {} source files", out.len());
    out
}

/// The lines of a file before its unit tests (`#[cfg(test)]` at the start of a line).
fn non_test_lines(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .collect()
}

/// (name, first line, length in lines) of every function in `lines`, found by its `fn`
/// keyword and the braces that follow (strings holding braces are rare enough in this code
/// base to be ignored: they would only make a function look longer).
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(pos) = t.find("fn ") else { continue };
        let head = &t[..pos];
        let is_fn = head.is_empty()
            || head
                .split_whitespace()
                .all(|w| w.starts_with("pub") || ["const", "unsafe", "async"].contains(&w));
        if !is_fn || t.starts_with("//") {
            continue;
        }
        let name: String = t[pos + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i64;
        let mut opened = false;
        for (j, l) in lines[i..].iter().enumerate() {
            let code = l.split("//").next().unwrap_or("");
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if code.trim_end().ends_with(';') && !opened {
                break; // a declaration in a trait
            }
            if opened && depth <= 0 {
                out.push((name.clone(), i + 1, j + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_file_over_a_thousand_lines_and_no_function_over_120() {
    let mut problems = Vec::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = non_test_lines(&text);
        if lines.len() > MAX_FILE_LINES {
            problems.push(format!(
                "{}: {} lines before its tests (at most {MAX_FILE_LINES}); split it by concept",
                path.display(),
                lines.len()
            ));
        }
        for (name, at, len) in functions(&lines) {
            if len > MAX_FN_LINES {
                problems.push(format!(
                    "{}:{at}: fn {name} is {len} lines (at most {MAX_FN_LINES})",
                    path.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_function_finder_measures_what_it_should() {
    let src =
        "pub fn a() {\n    let x = 1;\n}\n\ntrait T {\n    fn b(&self);\n}\n\nfn c() -> u8 { 1 }\n";
    let lines: Vec<&str> = src.lines().collect();
    let found = functions(&lines);
    assert_eq!(
        found,
        vec![("a".to_string(), 1, 3), ("c".to_string(), 9, 1)]
    );
}
