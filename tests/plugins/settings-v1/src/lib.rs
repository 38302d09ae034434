//! Test plugin: version 1 of a plugin whose settings change with its
//! version. It takes `greeting` only and refuses any other setting.

const VERSION: &str = "1";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    greeting: String,
}

impl Settings {
    fn tag(&self) -> &str {
        ""
    }
}

include!("../../settings-common.rs");
