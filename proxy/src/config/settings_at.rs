//! Where each of a plugin's settings sits in the config file. A plugin that
//! rejects one setting names it by path (`keys`, `limits.burst`,
//! `keys[2]`); this maps the path to that key's line and column, so the
//! error points at the mistake rather than at the plugin entry.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
pub use weir_abi::rejection::PathStep;

/// The line and column (1-based) of every setting under one plugin entry's
/// `config`, by path; empty when the entry has no settings.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SettingLocations {
    entries: Vec<(Vec<PathStep>, (usize, usize))>,
}

impl fmt::Debug for SettingLocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SettingLocations({} settings)", self.entries.len())
    }
}

impl SettingLocations {
    /// The position of `path`, or of its nearest ancestor that has one (a
    /// setting the user did not write is reported where its table is).
    pub fn locate(&self, path: &[PathStep]) -> Option<(usize, usize)> {
        (0..=path.len())
            .rev()
            .find_map(|n| {
                self.entries
                    .iter()
                    .find(|(p, _)| p.as_slice() == &path[..n])
            })
            .map(|(_, at)| *at)
    }
}

/// The parsed config file, kept only for locating plugin settings.
pub struct SettingsIndex<'a> {
    doc: Option<Spanned<DeTable<'a>>>,
}

impl<'a> SettingsIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            doc: DeTable::parse(text).ok(),
        }
    }

    /// The settings of `routes[route].plugins[plugin].config`, with each
    /// position given by `to_line_col` from a byte span.
    pub fn plugin_settings(
        &self,
        route: usize,
        plugin: usize,
        to_line_col: impl Fn(Range<usize>) -> (usize, usize),
    ) -> SettingLocations {
        let config = self
            .doc
            .as_ref()
            .and_then(|doc| get(doc.get_ref(), "routes"))
            .and_then(|routes| index(routes, route))
            .and_then(|route| table(route.get_ref()))
            .and_then(|route| get(route, "plugins"))
            .and_then(|plugins| index(plugins, plugin))
            .and_then(|plugin| table(plugin.get_ref()))
            .and_then(|plugin| get_entry(plugin, "config"));
        let mut entries = Vec::new();
        if let Some((key_span, value)) = config {
            entries.push((Vec::new(), to_line_col(key_span)));
            walk(value, &mut Vec::new(), &mut entries, &to_line_col);
        }
        SettingLocations { entries }
    }
}

fn walk(
    value: &Spanned<DeValue<'_>>,
    path: &mut Vec<PathStep>,
    out: &mut Vec<(Vec<PathStep>, (usize, usize))>,
    to_line_col: &impl Fn(Range<usize>) -> (usize, usize),
) {
    match value.get_ref() {
        DeValue::Table(t) => {
            for (key, child) in t.iter() {
                path.push(PathStep::Key(key.get_ref().to_string()));
                out.push((path.clone(), to_line_col(key.span())));
                walk(child, path, out, to_line_col);
                path.pop();
            }
        }
        DeValue::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(PathStep::Index(i));
                out.push((path.clone(), to_line_col(child.span())));
                walk(child, path, out, to_line_col);
                path.pop();
            }
        }
        _ => {}
    }
}

fn table<'t, 'i>(value: &'t DeValue<'i>) -> Option<&'t DeTable<'i>> {
    match value {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

fn get<'t, 'i>(t: &'t DeTable<'i>, name: &str) -> Option<&'t Spanned<DeValue<'i>>> {
    get_entry(t, name).map(|(_, v)| v)
}

fn get_entry<'t, 'i>(
    t: &'t DeTable<'i>,
    name: &str,
) -> Option<(Range<usize>, &'t Spanned<DeValue<'i>>)> {
    t.iter()
        .find(|(k, _)| k.get_ref() == name)
        .map(|(k, v)| (k.span(), v))
}

fn index<'t, 'i>(value: &'t Spanned<DeValue<'i>>, i: usize) -> Option<&'t Spanned<DeValue<'i>>> {
    match value.get_ref() {
        DeValue::Array(items) => items.get(i),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_col(text: &str) -> impl Fn(Range<usize>) -> (usize, usize) + '_ {
        move |span: Range<usize>| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rfind('\n')
                .map_or(span.start, |nl| span.start - nl - 1)
                + 1;
            (line, column)
        }
    }

    const TEXT: &str = r#"[[routes]]
name = "a"
upstream = "u"
plugins = [
  { name = "first" },
  { name = "auth", config = { header = "x-key",
      keys = 5 } },
]

[[routes]]
name = "b"
upstream = "u"

[[routes.plugins]]
name = "third"
[routes.plugins.config]
limits = { burst = 3 }
keys = ["a", 7]
"#;

    #[test]
    fn locates_settings_in_inline_and_dotted_tables_and_arrays() {
        let index = SettingsIndex::new(TEXT);
        let at = index.plugin_settings(0, 1, line_col(TEXT));
        let key = |k: &str| PathStep::Key(k.into());
        assert_eq!(at.locate(&[key("keys")]), Some((7, 7)));
        assert_eq!(at.locate(&[key("header")]), Some((6, 31)));
        // A setting not written is reported where its table is.
        assert_eq!(at.locate(&[key("absent")]), Some((6, 20)));

        let third = index.plugin_settings(1, 0, line_col(TEXT));
        assert_eq!(third.locate(&[key("limits"), key("burst")]), Some((17, 12)));
        assert_eq!(
            third.locate(&[key("keys"), PathStep::Index(1)]),
            Some((18, 14))
        );

        let none = index.plugin_settings(0, 0, line_col(TEXT));
        assert_eq!(none.locate(&[key("keys")]), None);
    }
}
