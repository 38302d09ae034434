//! One endpoint's entry — an address, or a table with weight, zone and
//! metadata — as the config, a discovery file or an etcd value writes it,
//! and its checks.

use std::collections::BTreeMap;

use http::uri::Authority;
use serde::{Deserialize, Serialize};

/// One endpoint as written in the config, a discovery file or an etcd value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawEndpoint {
    Address(String),
    Detailed(RawEndpointDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpointDetail {
    pub address: String,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSpec {
    #[serde(serialize_with = "super::display_text")]
    pub address: Authority,
    pub weight: u32,
    pub zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

impl EndpointSpec {
    /// An endpoint with weight 1, no zone and no metadata.
    pub fn new(address: Authority) -> Self {
        Self {
            address,
            weight: 1,
            zone: None,
            metadata: BTreeMap::new(),
        }
    }
}

/// Checks one endpoint entry (from the config, a file or etcd).
pub(crate) fn endpoint_spec(raw: RawEndpoint) -> Result<EndpointSpec, String> {
    let detail = match raw {
        RawEndpoint::Address(address) => RawEndpointDetail {
            address,
            weight: None,
            zone: None,
            metadata: BTreeMap::new(),
        },
        RawEndpoint::Detailed(detail) => detail,
    };
    let weight = detail.weight.unwrap_or(1);
    if weight == 0 {
        return Err(String::from("endpoint weight must be at least 1"));
    }
    Ok(EndpointSpec {
        address: super::address::parse_endpoint(&detail.address)?,
        weight,
        zone: detail.zone,
        metadata: detail.metadata,
    })
}

/// Parses a list of endpoints in JSON (`[...]` or `{"endpoints": [...]}`)
/// or TOML (`endpoints = [...]`), as discovery files hold. An error names
/// the entry (its position and address) and the field.
pub fn parse_endpoint_list(text: &str, toml_syntax: bool) -> Result<Vec<EndpointSpec>, String> {
    let document: serde_json::Value = if toml_syntax {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        serde_json::to_value(table).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    let entries = match &document {
        serde_json::Value::Array(entries) => entries,
        serde_json::Value::Object(map) => match map.get("endpoints") {
            Some(serde_json::Value::Array(entries)) if map.len() == 1 => entries,
            _ => {
                return Err(
                    "expected a list of endpoints, or a table with only `endpoints = [...]`".into(),
                );
            }
        },
        _ => return Err("expected a list of endpoints".into()),
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            endpoint_from_value(entry).map_err(|message| {
                match entry
                    .get("address")
                    .and_then(serde_json::Value::as_str)
                    .or(entry.as_str())
                {
                    Some(address) => format!("entry {i} ({address}): {message}"),
                    None => format!("entry {i}: {message}"),
                }
            })
        })
        .collect()
}

/// Parses one endpoint written as JSON (an etcd value): an object with
/// `address` (and optionally weight, zone, metadata) or a bare string.
pub fn parse_endpoint_json(text: &[u8]) -> Result<EndpointSpec, String> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    endpoint_from_value(&value)
}

/// One endpoint from a parsed document, field by field, so that an error
/// names the field (serde's untagged enums say only "did not match").
fn endpoint_from_value(value: &serde_json::Value) -> Result<EndpointSpec, String> {
    use serde_json::Value;
    let map = match value {
        Value::String(address) => return endpoint_spec(RawEndpoint::Address(address.clone())),
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "expected an address string or a table with `address`, not {other}"
            ));
        }
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "address" | "weight" | "zone" | "metadata"))
    {
        return Err(format!(
            "unknown field `{unknown}` (expected address, weight, zone, metadata)"
        ));
    }
    let address = match map.get("address") {
        Some(Value::String(address)) => address.clone(),
        Some(other) => {
            return Err(format!(
                "field `address`: expected a string like \"10.0.0.1:80\", not {other}"
            ));
        }
        None => return Err("missing field `address`".into()),
    };
    let weight = match map.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => Some(
            w.as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .filter(|w| *w >= 1)
                .ok_or_else(|| {
                    format!(
                        "field `weight`: expected a whole number from 1 to {}, not {w}",
                        u32::MAX
                    )
                })?,
        ),
    };
    let zone = match map.get("zone") {
        None | Some(Value::Null) => None,
        Some(Value::String(zone)) => Some(zone.clone()),
        Some(other) => return Err(format!("field `zone`: expected a string, not {other}")),
    };
    let mut metadata = BTreeMap::new();
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(pairs)) => {
            for (key, value) in pairs {
                let Value::String(value) = value else {
                    return Err(format!(
                        "field `metadata.{key}`: expected a string, not {value}"
                    ));
                };
                metadata.insert(key.clone(), value.clone());
            }
        }
        Some(other) => {
            return Err(format!(
                "field `metadata`: expected a table of strings, not {other}"
            ));
        }
    }
    endpoint_spec(RawEndpoint::Detailed(RawEndpointDetail {
        address,
        weight,
        zone,
        metadata,
    }))
}
