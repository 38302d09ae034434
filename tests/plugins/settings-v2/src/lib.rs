//! Test plugin: version 2 of a plugin whose settings change with its
//! version. It requires a new setting, `tag`, beside `greeting`.

const VERSION: &str = "2";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    greeting: String,
    tag: String,
}

impl Settings {
    fn tag(&self) -> &str {
        &self.tag
    }
}

include!("../../settings-common.rs");
