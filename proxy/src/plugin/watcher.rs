//! Watches the plugins directory (debounced) and reports which plugin files
//! changed. It only reports: the server validates and swaps.

use std::path::Path;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

/// How long a file must be quiet before its change is reported. Writers
/// should write-then-rename; a half-written file that slips through fails
/// validation and is retried on its next change.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the watch alive; dropping it stops watching.
pub struct PluginWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for PluginWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginWatch")
    }
}

/// Calls `on_change(file)` (from the watcher's thread) for every `.wasm`
/// file in `dir` that was created, changed, renamed or deleted.
pub fn watch_dir(
    dir: &Path,
    on_change: impl Fn(&Path) + Send + 'static,
) -> notify::Result<PluginWatch> {
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let mut seen = std::collections::BTreeSet::new();
            for event in events {
                if event.path.extension().and_then(|e| e.to_str()) == Some("wasm")
                    && seen.insert(event.path.clone())
                {
                    on_change(&event.path);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "plugin directory watch error"),
    })?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)?;
    Ok(PluginWatch {
        _debouncer: debouncer,
    })
}
