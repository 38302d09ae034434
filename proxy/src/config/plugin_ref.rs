//! One plugin entry of a route (`plugins = [{ name, config }]`): its name,
//! its settings, and where it and each setting sit in the config file, so
//! that a plugin's refusal points at the entry or at the setting.

use std::path::Path;

use serde::Serialize;

use weir_abi::rejection::Rejection;

use super::{Diagnostic, SettingLocations};

/// One plugin in a route's chain.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRef {
    /// The plugin's name: its file's stem in the plugins directory.
    pub name: String,
    /// The route's settings for it, handed to its `configure` as JSON.
    pub config: serde_json::Value,
    /// Where the entry is in the config file (for load errors).
    #[serde(skip)]
    pub location: (usize, usize),
    /// Where the entry sits in the config: `routes[ROUTE].plugins[INDEX]`.
    #[serde(skip)]
    pub index: (usize, usize),
    /// Where each of its settings is (for a plugin's rejection of one).
    #[serde(skip)]
    pub settings: SettingLocations,
}

/// Equal when name and settings are: moving an entry to another line does
/// not make it a different plugin instance.
impl PartialEq for PluginRef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.config == other.config
    }
}

/// Whether `name` can name a plugin: its file's stem, letters, digits, `-`
/// and `_`, at most 64 bytes.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Diagnostics pointing at a route's plugin entry, or at one of its settings.
impl PluginRef {
    pub fn diagnostic(&self, file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            line: self.location.0,
            column: self.location.1,
            message: message.into(),
        }
    }

    /// The plugin's rejection of its settings, at the setting it names (or
    /// the nearest enclosing one written in the file), with the setting's
    /// full path in the config: `routes[0].plugins[1].config.keys: MESSAGE`.
    pub fn setting_diagnostic(&self, file: &Path, rejection: &Rejection) -> Diagnostic {
        // The settings as a whole: at the plugin's entry.
        let (line, column) = if rejection.path.is_empty() {
            self.location
        } else {
            self.settings
                .locate(&rejection.path)
                .unwrap_or(self.location)
        };
        let (route, plugin) = self.index;
        let mut full = format!("routes[{route}].plugins[{plugin}].config");
        if !rejection.path.is_empty() {
            let rest = rejection.path_text();
            if !rest.starts_with('[') {
                full.push('.');
            }
            full.push_str(&rest);
        }
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message: format!("{full}: plugin {:?}: {}", self.name, rejection.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathStep;

    fn rejection(path: Vec<PathStep>, message: &str) -> Rejection {
        Rejection {
            path,
            message: message.into(),
        }
    }

    fn entry() -> PluginRef {
        PluginRef {
            name: "auth".into(),
            config: serde_json::json!({"keys": 5}),
            location: (21, 3),
            index: (0, 1),
            settings: SettingLocations::default(),
        }
    }

    #[test]
    fn a_setting_the_file_does_not_have_is_reported_at_the_entry() {
        let file = Path::new("weir.toml");
        let d =
            entry().setting_diagnostic(file, &rejection(vec![PathStep::Key("keys".into())], "bad"));
        assert_eq!((d.line, d.column), (21, 3));
        assert_eq!(
            d.message,
            "routes[0].plugins[1].config.keys: plugin \"auth\": bad"
        );
        // A plugin's path is untrusted: a long or odd one is only text.
        let odd: Vec<PathStep> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    PathStep::Index(usize::MAX)
                } else {
                    PathStep::Key("a\"b\n".into())
                }
            })
            .collect();
        let d = entry().setting_diagnostic(file, &rejection(odd, "x"));
        assert_eq!((d.line, d.column), (21, 3));
        assert!(
            d.message.starts_with("routes[0].plugins[1].config["),
            "{}",
            &d.message[..60]
        );
        assert!(!d.message.contains('\n'), "a key's newline is escaped");
    }
}
