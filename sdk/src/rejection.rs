//! How a plugin rejects its settings so that the error points at the
//! setting: the message and the setting's path (`keys`, `limits.burst`,
//! `keys[2]`), handed to the host as a [`Rejection`], which the host turns
//! into the line and column of that setting in its config file. A rejection
//! that is plain text is reported at the plugin's entry.

use alloc::string::ToString;
use alloc::vec::Vec;
use core::fmt;

use serde_json::Value;
pub use weir_abi::rejection::{PathStep, Rejection};

/// A rejection of the setting at `path` (`"keys"`, `"limits.burst"`,
/// `"keys[2]"`), to return from [`Plugin::configure`](crate::Plugin::configure):
/// Weir reports it at that setting's line and column in its config file.
///
/// ```
/// # #[derive(serde::Deserialize)] struct Config { percent: f64 }
/// fn check(config: &Config) -> Result<(), String> {
///     if !(0.0..=100.0).contains(&config.percent) {
///         return Err(weir_sdk::config::reject_at("percent", "must be between 0 and 100"));
///     }
///     Ok(())
/// }
/// ```
pub fn reject_at(path: &str, message: impl fmt::Display) -> String {
    Rejection {
        path: parse_path(path),
        message: message.to_string(),
    }
    .to_json()
}

/// `limits.burst` / `keys[2]` / `a.b[0][1]` → steps.
fn parse_path(path: &str) -> Vec<PathStep> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            steps.push(PathStep::Key(key.into()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                steps.push(PathStep::Index(i));
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    steps
}

/// Parses the route's plugin settings into the plugin's config type. No
/// settings means JSON `null` or `{}`, whichever the type accepts (`()`
/// takes the first, a struct with defaults the second). A mismatch is a
/// [`Rejection`] naming the setting.
pub(crate) fn parse_settings<C: serde::de::DeserializeOwned>(input: &[u8]) -> Result<C, Rejection> {
    let whole = |message: String| Rejection {
        path: Vec::new(),
        message,
    };
    if input.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_value(Value::Null)
            .or_else(|_| serde_json::from_value(Value::Object(serde_json::Map::new())))
            .map_err(|e| whole(alloc::format!("settings missing: {e}")));
    }
    let value: Value = serde_json::from_slice(input)
        .map_err(|e| whole(alloc::format!("settings are not JSON: {e}")))?;
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(PathStep::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathStep::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => {
                    Some(PathStep::Key(variant.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        Rejection {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Limits {
        burst: u32,
    }

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        keys: Vec<String>,
        limits: Limits,
    }

    fn rejection(json: &str) -> Rejection {
        parse_settings::<Config>(json.as_bytes())
            .err()
            .unwrap_or_else(|| Rejection {
                path: Vec::new(),
                message: "accepted".into(),
            })
    }

    #[test]
    fn a_mismatch_names_the_setting_without_json_positions() {
        let r = rejection(r#"{"keys": 5}"#);
        assert_eq!(r.path, [PathStep::Key("keys".into())]);
        assert_eq!(
            r.to_string(),
            "keys: invalid type: integer `5`, expected a sequence"
        );
        let r = rejection(r#"{"keys": ["a", 7]}"#);
        assert_eq!(r.path_text(), "keys[1]");
        let r = rejection(r#"{"limits": {"burst": -1}}"#);
        assert_eq!(r.path_text(), "limits.burst");
        assert!(!r.message.contains("line"), "{r}");
    }

    #[test]
    fn an_unknown_setting_is_named() {
        let r = rejection(r#"{"limits": {"brust": 3}}"#);
        assert!(r.to_string().contains("brust"), "{r}");
        assert!(r.path_text().starts_with("limits"), "{r}");
    }

    #[test]
    fn no_settings_fit_unit_and_defaulted_structs() {
        assert!(parse_settings::<()>(b"").is_ok());
        assert!(parse_settings::<Config>(b" ").is_ok());
    }

    #[test]
    fn rejections_round_trip_through_json_and_plain_text_stays_whole() {
        let json = reject_at("limits.rates[2].burst", "too big");
        let r = Rejection::parse(json.as_bytes());
        assert_eq!(r.path_text(), "limits.rates[2].burst");
        assert_eq!(r.message, "too big");
        let plain = Rejection::parse(b"header must not be empty");
        assert!(plain.path.is_empty());
        assert_eq!(plain.to_string(), "header must not be empty");
    }
}
