//! `weir plugin new NAME`: scaffolds a plugin crate that builds to a loadable
//! `.wasm` — the SDK as a path dependency, the `plugin` profile `weir plugin
//! build` uses, a hello-world policy with typed settings, a test module on
//! the SDK's harness, and a README saying how to test, build and install it.

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
    std::fs::create_dir_all(dir).map_err(|source| ScaffoldError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let sdk_path = sdk_dependency_path(
        &sdk,
        &dir.canonicalize().unwrap_or(dir.to_path_buf()).join(name),
    );
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk_path)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
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

/// The SDK's path as the crate at `root` should name it: relative when the
/// crate lives inside the Weir checkout that holds the SDK (so the checkout
/// can move as a whole), absolute otherwise (so the crate can move).
fn sdk_dependency_path(sdk: &Path, root: &Path) -> String {
    let relative = sdk.parent().and_then(|checkout| {
        let below = root.strip_prefix(checkout).ok()?;
        let up = "../".repeat(below.components().count());
        Some(format!(
            "{up}{}",
            sdk.strip_prefix(checkout).ok()?.display()
        ))
    });
    relative
        .unwrap_or_else(|| sdk.display().to_string())
        .replace('\\', "/")
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

# Small, fast wasm, built by `weir plugin build`: what Weir's own plugins use.
[profile.plugin]
inherits = "release"
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
pub struct Config {{
    #[serde(default = "default_header")]
    header: String,
}}

fn default_header() -> String {{
    "x-{name}".into()
}}

#[derive(Default)]
pub struct {ty} {{
    header: String,
    seen: u64,
}}

/// `#[weir_sdk::plugin]` exports exactly the hooks defined here. For a
/// plugin that guards access (authentication, authorisation), write
/// `#[weir_sdk::plugin(fail_closed)]`: if it ever fails, requests get 503
/// instead of going through unchecked.
#[weir_sdk::plugin]
impl Plugin for {ty} {{
    type Config = Config;

    fn configure(&mut self, config: Config) -> Result<(), String> {{
        if config.header.is_empty() {{
            // Reported at the `header` key's line in weir.toml.
            return Err(weir_sdk::config::reject_at("header", "must not be empty"));
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

#[cfg(test)]
mod tests {{
    use weir_sdk::testing::{{Harness, Outcome, TestRequest}};

    use super::{ty};

    #[test]
    fn adds_the_header_and_counts_responses() {{
        let mut h = Harness::<{ty}>::new(r#"{{"header": "x-greeted"}}"#).unwrap();
        let run = h.run(TestRequest::get("/"), &[Outcome::status(200)]);
        assert_eq!(run.header("x-greeted"), Some("1"));
        assert_eq!(h.status_json()["seen"], 1);
    }}

    #[test]
    fn an_empty_header_is_refused_at_the_setting() {{
        let err = Harness::<{ty}>::new(r#"{{"header": ""}}"#).unwrap_err();
        assert_eq!(err, "header: must not be empty");
    }}
}}
"##,
        ty = type_name(name)
    )
}

fn readme(name: &str) -> String {
    format!(
        r#"# {name}

A Weir plugin. Test it natively, then build it to wasm and install it into
Weir's plugins directory in one step:

```sh
cargo test                                        # the tests in src/lib.rs, on the SDK's harness
weir plugin build --install /path/to/plugins      # builds {name}.wasm, installs it (write, then rename)
```

`weir plugin build` builds for `wasm32-unknown-unknown` with the `plugin`
profile in `Cargo.toml` (adding the target with rustup if it is missing).
Name the plugin on a route in `weir.toml`:

```toml
[[routes]]
upstream = "app"
plugins = [{{ name = "{name}", config = {{ header = "x-{name}" }} }}]
```

Weir picks up a new build within moments, without a restart; a build that
fails to load or rejects its settings leaves the old version serving (see
`/admin/plugins`), and a new version that traps repeatedly right after the
swap is rolled back. `weir check --config weir.toml` loads and configures
it the way `weir run` would, and reports a rejected setting at its line.

**Fail-open or fail-closed.** By default a route skips a plugin that fails
(`on_plugin_error = "fail-open"`). If this plugin guards access
(authentication, authorisation), declare it `#[weir_sdk::plugin(fail_closed)]`
so that its failures answer 503 on every route instead of letting requests
through unchecked.
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
        assert!(manifest.contains("[profile.plugin]"));
        let source = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(source.contains("#[weir_sdk::plugin]\nimpl Plugin for Greeter"));
        assert!(source.contains("mod tests"));
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

    #[test]
    fn the_sdk_path_is_relative_inside_the_checkout_and_absolute_outside() {
        let sdk = Path::new("/src/weir/sdk");
        assert_eq!(
            sdk_dependency_path(sdk, Path::new("/src/weir/plugins/greeter")),
            "../../sdk"
        );
        assert_eq!(
            sdk_dependency_path(sdk, Path::new("/home/me/greeter")),
            "/src/weir/sdk"
        );
    }
}
