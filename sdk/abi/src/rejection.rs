//! A plugin's rejection of one of its settings, as `configure` hands it to
//! the host: JSON `{"error": "…", "path": ["limits", "burst"]}` in the call's
//! output. The host reports it at that setting's line and column in its
//! config file; output that is not this JSON is a rejection of the settings
//! as a whole, reported at the plugin's entry.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde_json::Value;

/// One step of a setting's path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// A key of a table.
    Key(String),
    /// A position in an array, from 0.
    Index(usize),
}

/// A rejected setting: where (empty path: the settings as a whole) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The setting's path within the plugin's settings.
    pub path: Vec<PathStep>,
    /// What is wrong with it.
    pub message: String,
}

impl Rejection {
    /// The JSON the host reads.
    pub fn to_json(&self) -> String {
        let path: Vec<Value> = self
            .path
            .iter()
            .map(|step| match step {
                PathStep::Key(k) => Value::String(k.clone()),
                PathStep::Index(i) => Value::from(*i),
            })
            .collect();
        serde_json::json!({ "error": self.message, "path": path }).to_string()
    }

    /// Reads what a plugin's `configure` handed back: the JSON form, or
    /// plain text (a rejection of the settings as a whole).
    pub fn parse(output: &[u8]) -> Self {
        let text = String::from_utf8_lossy(output);
        let structured = serde_json::from_str::<Value>(&text).ok().and_then(|v| {
            let message = v.get("error")?.as_str()?.to_string();
            let path = v
                .get("path")?
                .as_array()?
                .iter()
                .map(|step| match step {
                    Value::String(k) => Some(PathStep::Key(k.clone())),
                    other => other
                        .as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .map(PathStep::Index),
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Self { path, message })
        });
        structured.unwrap_or_else(|| Self {
            path: Vec::new(),
            message: text.into_owned(),
        })
    }

    /// The path as a user reads it: `limits.burst`, `keys[2]`.
    pub fn path_text(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                PathStep::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if bare {
                        out.push_str(k);
                    } else {
                        out.push_str(&alloc::format!("{k:?}"));
                    }
                }
                PathStep::Index(i) => out.push_str(&alloc::format!("[{i}]")),
            }
        }
        out
    }
}

/// `path: message`, or the message alone for the settings as a whole.
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path_text(), self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_renders_paths_as_written() {
        let r = Rejection {
            path: alloc::vec![
                PathStep::Key("limits".into()),
                PathStep::Key("per second".into()),
                PathStep::Index(2),
            ],
            message: "too big".into(),
        };
        assert_eq!(Rejection::parse(r.to_json().as_bytes()), r);
        assert_eq!(r.to_string(), r#"limits."per second"[2]: too big"#);
        let plain = Rejection::parse(b"{not json");
        assert!(plain.path.is_empty());
        assert_eq!(plain.message, "{not json");
    }
}
