//! `weir plugin build [--install DIR] [--name NAME]`: builds the plugin
//! crate in the current directory for `wasm32-unknown-unknown` with the
//! `plugin` profile (adding the target with rustup if it is missing), and
//! installs the `.wasm` into a plugins directory by write-then-rename, so
//! the proxy never loads a half-written file.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-unknown-unknown";

/// What to build and where to put it.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The crate's directory (its `Cargo.toml`).
    pub crate_dir: PathBuf,
    /// Install the `.wasm` into this plugins directory.
    pub install: Option<PathBuf>,
    /// The installed file's stem (the name routes use); default: the package name.
    pub name: Option<String>,
}

/// What was built and installed.
#[derive(Debug, Clone)]
pub struct Built {
    pub wasm: PathBuf,
    pub installed: Option<PathBuf>,
}

/// Why a plugin could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no Cargo.toml in {0}: run `weir plugin build` in the plugin crate's directory")]
    NoCrate(PathBuf),
    #[error("cannot run {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed; install it, \
         or the Rust toolchain that has it"
    )]
    Target,
    #[error("`cargo metadata` failed: {0}")]
    Metadata(String),
    #[error("cargo build failed (see its errors above)")]
    Cargo,
    #[error(
        "the build produced no .wasm: is the crate a `cdylib` (`[lib] crate-type = [\"cdylib\", \"rlib\"]`)?"
    )]
    NoWasm,
    #[error(
        "invalid plugin name {0:?}: use letters, digits, '-' and '_' (pass --name to choose another)"
    )]
    Name(String),
    #[error("the plugins directory {0} does not exist")]
    NoPluginsDir(PathBuf),
    #[error("cannot install {path}: {source}")]
    Install {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Builds (and installs) the plugin crate of `request`.
pub fn build(request: &BuildRequest) -> Result<Built, BuildError> {
    let manifest = request.crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoCrate(request.crate_dir.clone()));
    }
    if let Some(dir) = &request.install
        && !dir.is_dir()
    {
        return Err(BuildError::NoPluginsDir(dir.clone()));
    }
    let package = package_facts(&manifest)?;
    let name = request.name.clone().unwrap_or_else(|| package.name.clone());
    if !crate::config::is_plugin_name(&name) {
        return Err(BuildError::Name(name));
    }
    ensure_target()?;
    let release = !package.has_plugin_profile;
    if release {
        eprintln!(
            "note: no [profile.plugin] in {}; building with --release (the profile `weir plugin new` writes makes smaller, faster wasm)",
            package.workspace_manifest.display()
        );
    }
    let wasm = cargo_build(&manifest, release)?;
    let installed = match &request.install {
        Some(dir) => Some(install(&wasm, dir, &name)?),
        None => None,
    };
    Ok(Built { wasm, installed })
}

/// The crate's package name and whether its workspace defines the profile.
struct PackageFacts {
    name: String,
    workspace_manifest: PathBuf,
    has_plugin_profile: bool,
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn package_facts(manifest: &Path) -> Result<PackageFacts, BuildError> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BuildError::Spawn {
            what: "cargo metadata",
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::Metadata(format!("exit {}", output.status)));
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| BuildError::Metadata(format!("unreadable output: {e}")))?;
    let manifest = manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf());
    let name = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .and_then(|p| p["name"].as_str())
        .ok_or_else(|| BuildError::Metadata(format!("no package for {}", manifest.display())))?
        .to_owned();
    let root = meta["workspace_root"]
        .as_str()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let workspace_manifest = root.join("Cargo.toml");
    let has_plugin_profile = std::fs::read_to_string(&workspace_manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|t| t.get("profile").and_then(|p| p.get("plugin")).is_some());
    Ok(PackageFacts {
        name,
        workspace_manifest,
        has_plugin_profile,
    })
}

/// Adds the wasm target with rustup when it is missing. Without rustup the
/// build goes ahead: cargo says what is missing, if anything.
fn ensure_target() -> Result<(), BuildError> {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("adding the {TARGET} target (rustup target add {TARGET})");
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|source| BuildError::Spawn {
            what: "rustup",
            source,
        })?;
    if added.success() {
        Ok(())
    } else {
        Err(BuildError::Target)
    }
}

/// `cargo build --lib` for wasm; the `.wasm` it reported.
fn cargo_build(manifest: &Path, release: bool) -> Result<PathBuf, BuildError> {
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--lib", "--target", TARGET])
        .args(if release {
            &["--release"][..]
        } else {
            &["--profile", "plugin"][..]
        })
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        // Flags for the host's own builds must not reach the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().map_err(|source| BuildError::Spawn {
        what: "cargo build",
        source,
    })?;
    let mut wasm = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] == "compiler-artifact" {
                let files = message["filenames"].as_array().into_iter().flatten();
                if let Some(file) = files
                    .filter_map(serde_json::Value::as_str)
                    .find(|f| f.ends_with(".wasm"))
                {
                    wasm = Some(PathBuf::from(file));
                }
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        what: "cargo build",
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo);
    }
    wasm.ok_or(BuildError::NoWasm)
}

/// Copies `wasm` to `dir/.NAME.wasm.tmp`, then renames it to `dir/NAME.wasm`.
fn install(wasm: &Path, dir: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let target = dir.join(format!("{name}.wasm"));
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    let fail = |source| BuildError::Install {
        path: target.clone(),
        source,
    };
    std::fs::copy(wasm, &tmp).map_err(fail)?;
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_without_a_crate_a_plugins_dir_or_a_valid_name() {
        let dir = tempfile::tempdir().unwrap();
        let request = |crate_dir: &Path, install: Option<PathBuf>| BuildRequest {
            crate_dir: crate_dir.to_path_buf(),
            install,
            name: Some("bad name".into()),
        };
        assert!(matches!(
            build(&request(dir.path(), None)),
            Err(BuildError::NoCrate(_))
        ));
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert!(matches!(
            build(&request(dir.path(), Some(dir.path().join("absent")))),
            Err(BuildError::NoPluginsDir(_))
        ));
    }

    #[test]
    fn installs_by_write_then_rename() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("built.wasm");
        std::fs::write(&wasm, b"\0asm").unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        let installed = install(&wasm, &plugins, "greeter").unwrap();
        assert_eq!(installed, plugins.join("greeter.wasm"));
        assert_eq!(std::fs::read(&installed).unwrap(), b"\0asm");
        assert!(!plugins.join(".greeter.wasm.tmp").exists());
    }
}
