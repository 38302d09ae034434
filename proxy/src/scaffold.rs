//! `weir plugin new NAME`: scaffolds a plugin crate that builds to a loadable
//! `.wasm` — the SDK as a path dependency, the size-tuned release profile, a
//! hello-world policy with typed settings, and a README saying how to build,
//! install and test it.

use std::path::{Path, PathBuf};

/// Why a plugin crate could not be scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid plugin name {0:?}: use lower-case letters, digits, '-' and '_', starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    #[error(
        "the Weir SDK was not found at {0}; pass --sdk-path with the path of weir's sdk/ directory"
    )]
    Sdk(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where this build of `weir` found the SDK's source.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("sdk")
}

fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Writes the crate `dir/name`; returns its path.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    let sdk = sdk
        .canonicalize()
        .map_err(|_| ScaffoldError::Sdk(sdk.to_path_buf()))?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::Sdk(sdk));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let lib_name = name.replace('-', "_");
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk_path)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name, &lib_name)),
        (".gitignore", String::from("/target\n")),
    ];
    for (relative, text) in files {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Write { path, source })?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm Weir loads; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
weir-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# Small, fast wasm: what Weir's own plugins use.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A crate of its own, not a member of any surrounding workspace.
[workspace]
"#
    )
}

fn lib_rs(name: &str) -> String {
    format!(
        r##"//! The `{name}` Weir plugin: adds a header to every response.

use weir_sdk::{{Plugin, Request, Response, ResponseAction}};

/// The route's settings, e.g. `plugins = [{{ name = "{name}", config = {{ header = "x-{name}" }} }}]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {{
    #[serde(default = "default_header")]
    header: String,
}}

fn default_header() -> String {{
    "x-{name}".into()
}}

#[derive(Default)]
struct {ty} {{
    header: String,
    seen: u64,
}}

impl Plugin for {ty} {{
    type Config = Config;
    type Ctx = ();

    fn configure(&mut self, config: Config) -> Result<(), String> {{
        if config.header.is_empty() {{
            return Err("header must not be empty".into());
        }}
        self.header = config.header;
        Ok(())
    }}

    fn on_response(&mut self, _: &mut (), _: &Request, resp: &mut Response) -> ResponseAction {{
        self.seen += 1;
        let _ = resp.set_header(&self.header, "1");
        ResponseAction::Pass
    }}

    fn status(&self) -> String {{
        format!(r#"{{{{"seen":{{}}}}}}"#, self.seen)
    }}
}}

weir_sdk::export!({ty}, hooks: [on_response, status]);
"##,
        ty = type_name(name)
    )
}

fn readme(name: &str, lib_name: &str) -> String {
    format!(
        r#"# {name}

A Weir plugin. Build it to wasm and drop it into Weir's plugins directory:

```sh
rustup target add wasm32-unknown-unknown   # once
cargo build --release --target wasm32-unknown-unknown
cp target/wasm32-unknown-unknown/release/{lib_name}.wasm /path/to/plugins/.{name}.wasm.tmp
mv /path/to/plugins/.{name}.wasm.tmp /path/to/plugins/{name}.wasm   # write, then rename
```

Name it on a route in `weir.toml`:

```toml
[[routes]]
upstream = "app"
plugins = [{{ name = "{name}", config = {{ header = "x-{name}" }} }}]
```

Weir picks up a new build within moments, without a restart; a build that
fails to load or rejects its settings leaves the old version serving (see
`/admin/plugins`). `weir check --config weir.toml` loads and configures it
the way `weir run` would.
"#
    )
}

/// `my-plugin` → `MyPlugin`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_typed() {
        assert!(valid_name("rate-limit_2"));
        assert!(!valid_name("Rate"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a/b"));
        assert_eq!(type_name("rate-limit_2"), "RateLimit2");
    }

    #[test]
    fn scaffolds_a_crate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let root = new_plugin("greeter", dir.path(), &default_sdk_path()).unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("crate-type = [\"cdylib\", \"rlib\"]"));
        let source = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(source.contains("weir_sdk::export!(Greeter, hooks: [on_response, status]);"));
        assert!(matches!(
            new_plugin("greeter", dir.path(), &default_sdk_path()),
            Err(ScaffoldError::Exists(_))
        ));
        assert!(matches!(
            new_plugin("Bad", dir.path(), &default_sdk_path()),
            Err(ScaffoldError::Name(_))
        ));
        assert!(matches!(
            new_plugin("other", dir.path(), dir.path()),
            Err(ScaffoldError::Sdk(_))
        ));
    }
}
