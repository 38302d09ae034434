//! The repository stands on its own: nothing in it points at files outside
//! it, and the README's module table names every module of the proxy.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every text file of the repository outside build output.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name != ".ci" || name == "target" {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else if ["rs", "md", "toml", "sh", "yml"]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext))
            || name == "run"
        {
            out.push(path);
        }
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    let mut all = Vec::new();
    files(&workspace(), &mut all);
    assert!(all.len() > 50, "found only {} files", all.len());
    // Spelled in two halves so that this file does not match itself.
    let outside = [concat!("../", "shared"), concat!("DESIGN", ".md")];
    let offenders: Vec<String> = all
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            outside.iter().any(|needle| text.contains(needle))
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn the_readme_names_every_module_of_the_proxy() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let src = workspace().join("proxy/src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let module = name.trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        if !readme.contains(&format!("| `{module}` |")) {
            missing.push(module.to_owned());
        }
        // Submodules are named in their module's row.
        if entry.path().is_dir() {
            for sub in std::fs::read_dir(entry.path()).unwrap().flatten() {
                let sub = sub.file_name().to_string_lossy().into_owned();
                let sub = sub.trim_end_matches(".rs");
                if matches!(sub, "mod" | "tests") {
                    continue;
                }
                if !readme.contains(&format!("`{sub}`")) {
                    missing.push(format!("{module}::{sub}"));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "not in README's layout: {missing:?}");
}
