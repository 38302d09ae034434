//! Watches one file for changes (debounced) and calls back. The parent
//! directory is watched rather than the file itself, so that an editor's or a
//! deploy tool's write-then-rename is seen like an in-place write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

/// How long the file must be quiet before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

/// Calls `on_change` (from the watcher's thread) whenever `file` changes.
pub fn watch_file(file: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<FileWatch> {
    let file: PathBuf = std::path::absolute(file)?;
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let target = file.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|e| e.path == target) {
                on_change();
            }
        }
        Err(error) => tracing::warn!(%error, file = %target.display(), "config watch error"),
    })?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch {
        _debouncer: debouncer,
    })
}
