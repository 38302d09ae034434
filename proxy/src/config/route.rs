//! The `[[routes]]` tables: what each route matches (host, path prefix,
//! methods), the upstream it sends to, and its plugin chain with each
//! plugin's settings located in the file.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::uri::Authority;
use serde::Serialize;
use toml::Spanned;

use super::raw::{RawRoute, RawUpstream};
use super::{
    Diagnostic, Locator, OnPluginError, PluginRef, SettingLocations, duration_text, is_plugin_name,
    list_or_none, settings_at,
};

/// One route: what it matches and where it sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSpec {
    pub name: String,
    /// Lower-cased host to match, without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Methods to match; empty matches any.
    #[serde(serialize_with = "methods_text")]
    pub methods: Vec<http::Method>,
    pub upstream: String,
    /// The overall deadline from request to response head, retries included.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// The route's plugin chain, outermost first.
    pub plugins: Vec<PluginRef>,
    pub on_plugin_error: OnPluginError,
}

/// Checks every route, adding what is wrong to `errors`; `default_timeout`
/// is the route timeout of a route that names none.
pub(super) fn validate_routes(
    raw_routes: &[Spanned<RawRoute>],
    upstreams: &BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
    default_timeout: Duration,
    locate: &Locator<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<RouteSpec> {
    let mut routes = Vec::new();
    let mut seen_routes = HashSet::new();
    let mut seen_names = HashSet::new();
    // A second, span-keeping parse, done only if some plugin has settings.
    let settings_index = std::cell::OnceCell::new();
    for (index, route) in raw_routes.iter().enumerate() {
        let r = route.get_ref();
        if !upstreams
            .keys()
            .any(|k| k.get_ref() == r.upstream.get_ref())
        {
            let known: Vec<&str> = upstreams.keys().map(|k| k.get_ref().as_str()).collect();
            errors.push(locate.at(
                r.upstream.span(),
                format!(
                    "route points at unknown upstream {:?} (known: {})",
                    r.upstream.get_ref(),
                    list_or_none(&known)
                ),
            ));
        }
        let path_prefix = match &r.path_prefix {
            Some(p) if !p.get_ref().starts_with('/') => {
                errors.push(locate.at(
                    p.span(),
                    format!("path_prefix {:?} must start with '/'", p.get_ref()),
                ));
                String::from("/")
            }
            Some(p) => p.get_ref().clone(),
            None => String::from("/"),
        };
        let host = match &r.host {
            Some(h) if h.get_ref() == "*" => None,
            Some(h)
                if h.get_ref().is_empty()
                    || h.get_ref().parse::<Authority>().is_err()
                    || h.get_ref().contains(':') =>
            {
                errors.push(locate.at(
                    h.span(),
                    format!(
                        "invalid host {:?}: expected a host name without port, or \"*\"",
                        h.get_ref()
                    ),
                ));
                None
            }
            Some(h) => Some(h.get_ref().to_ascii_lowercase()),
            None => None,
        };
        let mut methods = Vec::new();
        for m in r.methods.iter().flatten() {
            match http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(method) if !methods.contains(&method) => methods.push(method),
                Ok(_) => errors.push(locate.at(
                    m.span(),
                    format!("method {:?} is listed twice", m.get_ref()),
                )),
                Err(_) => {
                    errors.push(locate.at(m.span(), format!("invalid method {:?}", m.get_ref())))
                }
            }
        }
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let key = (host.clone(), path_prefix.clone(), methods.clone());
        if !seen_routes.insert(key) {
            errors.push(locate.at(
                route.span(),
                "duplicate route: another route has the same host, path_prefix and methods",
            ));
        }
        let name = r.name.clone().unwrap_or_else(|| format!("route-{index}"));
        if !seen_names.insert(name.clone()) {
            errors.push(locate.at(route.span(), format!("duplicate route name {name:?}")));
        }
        let mut plugins = Vec::new();
        for (plugin_index, entry) in r.plugins.iter().enumerate() {
            let name = &entry.get_ref().name;
            if !is_plugin_name(name.get_ref()) {
                errors.push(locate.at(
                    name.span(),
                    format!(
                        "invalid plugin name {:?}: use letters, digits, '-' and '_' (the file's stem)",
                        name.get_ref()
                    ),
                ));
                continue;
            }
            let config = entry
                .get_ref()
                .config
                .as_ref()
                .map_or(Ok(serde_json::Value::Null), serde_json::to_value);
            match config {
                Ok(config) => {
                    let at = locate.at(entry.span(), "");
                    let settings = match &config {
                        serde_json::Value::Null => SettingLocations::default(),
                        _ => settings_index
                            .get_or_init(|| settings_at::SettingsIndex::new(locate.text))
                            .plugin_settings(index, plugin_index, |span| {
                                let at = locate.at(span, "");
                                (at.line, at.column)
                            }),
                    };
                    plugins.push(PluginRef {
                        name: name.get_ref().clone(),
                        config,
                        location: (at.line, at.column),
                        index: (index, plugin_index),
                        settings,
                    });
                }
                Err(e) => errors.push(locate.at(
                    entry.span(),
                    format!("plugin settings cannot be passed on: {e}"),
                )),
            }
        }
        routes.push(RouteSpec {
            name,
            host,
            path_prefix,
            methods,
            upstream: r.upstream.get_ref().clone(),
            timeout: r.timeout.unwrap_or(default_timeout),
            plugins,
            on_plugin_error: r.on_plugin_error.unwrap_or_default(),
        });
    }
    routes
}

fn methods_text<S: serde::Serializer>(methods: &[http::Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(http::Method::as_str))
}
