//! The layering rule of `docs/architecture.md`, checked over the source: a top-level module refers only to the
//! modules below it (`crate::<module>` outside comments), never to one above it or beside it. The one
//! exception is written down there too: `routing` holds each route's parsed `policy` (so a cached route
//! parses its hashes once), while `policy` works on routes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers from the top; the modules of one layer may not refer to each other either.
const LAYERS: &[&[&str]] = &[
    &["app"],
    &["admin", "nfork"],
    &["server"],
    &["proxy"],
    &["observe"],
    &["mirror"],
    &["policy"],
    &["routing"],
    &["store", "upstream"],
    &["body"],
    &["rt"],
    &["config"],
];

/// The one mutual dependency allowed (see the module docs).
const EXCEPTIONS: &[(&str, &str)] = &[("routing", "policy")];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` refers to as `crate::<name>`, comments left out.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn every_module_refers_only_to_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut modules = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(own) = rank(&top) else {
            violations.push(format!(
                "{}: top-level module `{top}` is in no layer",
                relative.display()
            ));
            continue;
        };
        modules.insert(top.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for used in referenced(&text) {
            if used == top || EXCEPTIONS.contains(&(top.as_str(), used.as_str())) {
                continue;
            }
            match rank(&used) {
                Some(theirs) if theirs > own => {}
                Some(_) => violations.push(format!(
                    "{}: `{top}` refers to `crate::{used}`, which is not below it",
                    relative.display()
                )),
                None => violations.push(format!(
                    "{}: `crate::{used}` is in no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // Every layer names a module that exists, so the list cannot rot.
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(modules.contains(*module), "no module `{module}` in src/");
    }
}
