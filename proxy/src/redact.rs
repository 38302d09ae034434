//! Keeps secrets out of what Weir shows: passwords in URLs, values of
//! secret-looking query parameters, and settings whose names say they hold
//! a secret (tokens, passwords, API keys). Used by `/admin/config` and by
//! messages that quote a configured URL.

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Whether a setting or parameter with this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    const PARTS: [&str; 9] = [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "api_key",
        "apikey",
        "api-key",
        "credential",
    ];
    PARTS.iter().any(|part| name.contains(part)) || matches!(name.as_str(), "keys" | "auth")
}

/// `text` with the password of a URL's userinfo (`scheme://user:PASSWORD@`)
/// and the values of secret-looking query parameters replaced.
pub fn redact_text(text: &str) -> String {
    let mut out = redact_userinfo(text);
    if let Some(query_at) = out.find('?') {
        let (head, query) = out.split_at(query_at + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

fn redact_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        // A lone userinfo part is a token in many schemes.
        None => REDACTED.to_owned(),
    };
    format!("{}{shown}{}", &text[..authority_start], &rest[at..])
}

/// Redacts secrets in a JSON document, in place: the values of
/// secret-named fields, and passwords and secret parameters in strings.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if is_secret_name(name) && !field.is_null() {
                    *field = Value::String(REDACTED.to_owned());
                } else {
                    redact_json(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::String(text) => {
            if text.contains("://") || text.contains('?') {
                *text = redact_text(text);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords_and_secret_parameters() {
        assert_eq!(
            redact_text("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:[redacted]@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_text("redis://app:hunter2@cache/1"),
            "redis://app:[redacted]@cache/1"
        );
        assert_eq!(
            redact_text("https://tok3n@api.example/x"),
            "https://[redacted]@api.example/x"
        );
        assert_eq!(
            redact_text("/health?token=abc&verbose=1"),
            "/health?token=[redacted]&verbose=1"
        );
        assert_eq!(redact_text("redis://cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(redact_text("/path@v2?x=1"), "/path@v2?x=1");
    }

    #[test]
    fn secret_fields_are_hidden_at_any_depth() {
        let mut config = serde_json::json!({
            "plugins": { "redis_url": "redis://:pw@h:1/0" },
            "routes": [{ "plugins": [{ "config": { "keys": ["k1", "k2"], "api_key": "x", "rate": 5, "key": "client" } }] }],
            "health_check": { "path": "/h?access_token=t" },
            "admin": { "token": null },
        });
        redact_json(&mut config);
        assert_eq!(config["plugins"]["redis_url"], "redis://:[redacted]@h:1/0");
        let plugin = &config["routes"][0]["plugins"][0]["config"];
        assert_eq!(plugin["keys"], REDACTED);
        assert_eq!(plugin["api_key"], REDACTED);
        assert_eq!(plugin["rate"], 5);
        assert_eq!(plugin["key"], "client");
        assert_eq!(config["health_check"]["path"], "/h?access_token=[redacted]");
        assert!(config["admin"]["token"].is_null());
    }
}
