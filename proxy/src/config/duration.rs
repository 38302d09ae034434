//! Durations in the config are human strings: `"250ms"`, `"2s"`, `"1m 30s"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error};

/// Deserializes an optional human duration, refusing zero.
pub(crate) fn optional<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    let duration = humantime::parse_duration(&text).map_err(|e| {
        D::Error::custom(format!(
            "invalid duration {text:?}: {e} (write e.g. \"250ms\", \"2s\", \"1m\")"
        ))
    })?;
    if duration.is_zero() {
        return Err(D::Error::custom(format!(
            "duration {text:?} must be greater than zero"
        )));
    }
    Ok(Some(duration))
}
