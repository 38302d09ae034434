//! The compile cache cannot be turned against the proxy: an entry copied
//! from another plugin, or forged with another key, is refused and the
//! route runs its own plugin's code, compiled from its `.wasm`.

use weir_tests::{TestProxy, TestUpstream, config_head, get, install_plugin, plugins};

/// A proxy with plugins `first` (swap v1) and `second` (swap v2) on routes
/// `/first` and `/second`, and its compile cache in `state`.
fn start(state: &std::path::Path, upstream: &TestUpstream) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    install_plugin(&plugins_dir, "first", plugins::SWAP_V1);
    install_plugin(&plugins_dir, "second", plugins::SWAP_V2);
    let config = format!(
        "{}[plugins]\ncompile_cache = \"{}\"\ncompile_cache_key = \"{}\"\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/first\"\nupstream = \"u\"\nplugins = [{{ name = \"first\" }}]\n\
         [[routes]]\npath_prefix = \"/second\"\nupstream = \"u\"\nplugins = [{{ name = \"second\" }}]\n",
        config_head(),
        state.join("cache").display(),
        state.join("cache.key").display(),
        upstream.addr
    );
    TestProxy::start_in(dir, &config)
}

async fn versions(proxy: &TestProxy) -> (String, String) {
    let version = |path: &'static str| async move {
        get(&proxy.url(path))
            .await
            .unwrap()
            .header("x-plugin-version")
            .unwrap_or("none")
            .to_owned()
    };
    (version("/first").await, version("/second").await)
}

/// The cache entry of each plugin, by the SHA-256 of its `.wasm` (the
/// entry's file name starts with it).
fn entry_of(state: &std::path::Path, wasm: &str) -> std::path::PathBuf {
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(std::fs::read(wasm).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::read_dir(state.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&hash))
        .unwrap_or_else(|| panic!("no cache entry for {wasm}"))
}

#[tokio::test]
async fn a_substituted_or_forged_entry_is_refused_and_the_route_runs_its_own_code() {
    let upstream = TestUpstream::start("u").await;
    let state = tempfile::tempdir().unwrap();
    let expected = ("1".to_owned(), "2".to_owned());
    {
        let proxy = start(state.path(), &upstream);
        assert_eq!(versions(&proxy).await, expected);
    }
    let first = entry_of(state.path(), plugins::SWAP_V1);
    let second = entry_of(state.path(), plugins::SWAP_V2);
    let key = state.path().join("cache.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Substitution: the first plugin's entry under the second's name.
    std::fs::copy(&first, &second).unwrap();
    {
        let proxy = start(state.path(), &upstream);
        assert_eq!(
            versions(&proxy).await,
            expected,
            "the second route ran its own code"
        );
    }
    assert_ne!(
        std::fs::read(&second).unwrap(),
        std::fs::read(&first).unwrap(),
        "the substituted entry was overwritten"
    );

    // Forgery: an entry made by another installation (another key) for the
    // second plugin's very hash, but with the first plugin's code.
    let other = tempfile::tempdir().unwrap();
    {
        let _proxy = start(other.path(), &upstream);
    }
    let foreign_first = entry_of(other.path(), plugins::SWAP_V1);
    let mut forged = std::fs::read(&foreign_first).unwrap();
    let hash_of_second = std::fs::read(&second).unwrap()[8..40].to_vec();
    forged[8..40].copy_from_slice(&hash_of_second);
    std::fs::write(&second, &forged).unwrap();
    // And a truncated entry for the first.
    let whole = std::fs::read(&first).unwrap();
    std::fs::write(&first, &whole[..whole.len() / 2]).unwrap();
    {
        let proxy = start(state.path(), &upstream);
        assert_eq!(versions(&proxy).await, expected);
    }
    assert_eq!(std::fs::read(&first).unwrap(), whole, "rewritten whole");
}
