//! The source layout's one rule that the compiler does not check: no file of `src/` imports from
//! a file that (directly or through others) imports from it. Each `use crate::…`, `use self::…`
//! and `use super::…` outside the unit tests is resolved to the file of the module it names (an
//! item re-exported by a module counts as that module's; a module's re-exports of its own
//! children's items are its interface, not an import), and the graph of files must have no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a library file (`src/server/conn.rs` -> ["server", "conn"]).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The paths a `use` statement brings in, each as its segments (braces expanded).
fn use_paths(statement: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
        let text = text.trim();
        if let Some(open) = text.find('{') {
            let head: Vec<String> =
                text[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            let inner = &text[open + 1..text.rfind('}').unwrap()];
            let mut depth = 0;
            let mut start = 0;
            let prefix: Vec<String> = prefix.iter().cloned().chain(head).collect();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&prefix, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&prefix, &inner[start..], out);
        } else if !text.is_empty() {
            let name = text.split(" as ").next().unwrap();
            let segments = name.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from);
            out.push(prefix.iter().cloned().chain(segments).collect());
        }
    }
    let mut out = Vec::new();
    expand(&[], statement, &mut out);
    out
}

#[test]
fn no_file_in_src_imports_from_a_file_that_imports_from_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")) && f.file_name().unwrap() != "main.rs");
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(&src, f), f.clone())).collect();
    let mut imports: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let here = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests sit in an inline module at the end of a file; their imports are not layout.
        let text = text.split("\n#[cfg(test)]").next().unwrap();
        // Statements start at a line's `use` and end at the next `;`.
        let mut rest = text;
        while let Some(at) = rest.find("use ") {
            let line_start = rest[..at].rfind('\n').map_or(0, |n| n + 1);
            let before = rest[line_start..at].trim();
            let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
            if before.is_empty() || before.starts_with("pub") {
                for path in use_paths(&rest[at + 4..end]) {
                    let absolute: Vec<String> = match path.first().map(String::as_str) {
                        Some("crate") => path[1..].to_vec(),
                        Some("super") => {
                            let mut base = here.clone();
                            let mut segments = &path[..];
                            // A mod.rs is its own module; `super` from it is its parent.
                            while segments.first().is_some_and(|s| s == "super") {
                                base.pop();
                                segments = &segments[1..];
                            }
                            base.into_iter().chain(segments.iter().cloned()).collect()
                        }
                        Some("self") => here.iter().cloned().chain(path[1..].iter().cloned()).collect(),
                        // A child module named without `self::`.
                        Some(first) if modules.contains_key(&[&here[..], &[first.to_string()]].concat()) => {
                            here.iter().cloned().chain(path.iter().cloned()).collect()
                        }
                        _ => continue,
                    };
                    // A module re-exporting its own child's items: that is its interface, not a
                    // dependency of the module's code on the child.
                    if before.starts_with("pub")
                        && absolute.starts_with(&here)
                        && absolute.len() > here.len() + 1
                    {
                        continue;
                    }
                    // The longest prefix that is a module file.
                    let target = (0..=absolute.len()).rev().find_map(|n| modules.get(&absolute[..n]));
                    if let Some(target) = target.filter(|t| *t != file) {
                        imports.entry(file.clone()).or_default().insert(target.clone());
                    }
                }
            }
            rest = &rest[end.min(rest.len())..];
            if rest.is_empty() {
                break;
            }
        }
    }
    // Depth-first search for a cycle, reporting the first one found.
    fn visit<'a>(
        file: &'a PathBuf,
        imports: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<&'a PathBuf, bool>,
        stack: &mut Vec<&'a PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        match state.get(file) {
            Some(true) => return None,
            Some(false) => {
                let at = stack.iter().position(|f| *f == file).unwrap();
                return Some(stack[at..].iter().map(|f| (*f).clone()).chain([file.clone()]).collect());
            }
            None => {}
        }
        state.insert(file, false);
        stack.push(file);
        for next in imports.get(file).into_iter().flatten() {
            if let Some(cycle) = visit(next, imports, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(file, true);
        None
    }
    let mut state = BTreeMap::new();
    for file in imports.keys() {
        if let Some(cycle) = visit(file, &imports, &mut state, &mut Vec::new()) {
            let shown: Vec<String> =
                cycle.iter().map(|f| f.strip_prefix(&src).unwrap().display().to_string()).collect();
            panic!("an import circle in src/: {}", shown.join(" -> "));
        }
    }
    assert!(imports.len() > 20, "the checker found too few imports to be reading the sources right");
}
