//! Watches files for changes of their content and calls back, debounced.
//! Only events that can change what a file holds count — created, written
//! (modify or close-after-write), renamed, deleted. Opens, reads,
//! closes after reading and metadata changes are ignored, so that reading
//! a watched file (Weir's own re-read, a backup job, `cat`) never feeds the
//! watch. The parent directory is watched rather than the file itself, so
//! that an editor's or a deploy tool's write-then-rename is seen like an
//! in-place write. Callers still compare content before acting: an event
//! says a file may have changed, not that it did.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

/// How long a config or discovery file must be quiet before its change is
/// reported.
pub const FILE_DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a plugin file must be quiet before its change is reported.
/// Writers should write-then-rename; a half-written file that slips through
/// fails validation and is tried again on its next change.
pub const PLUGIN_DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps a watch alive; dropping it stops watching (and its thread).
pub struct Watch {
    _watcher: RecommendedWatcher,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Calls `on_change` (from the watch's thread) whenever `file` may have
/// changed.
pub fn watch_file(file: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<Watch> {
    let file: PathBuf = std::path::absolute(file)?;
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    watch(
        &dir,
        FILE_DEBOUNCE,
        move |path| path == file,
        move |_| on_change(),
    )
}

/// Calls `on_change(file)` (from the watch's thread) for every file in
/// `dir` with the extension `extension` that may have changed: created,
/// written, renamed or deleted.
pub fn watch_dir(
    dir: &Path,
    extension: &'static str,
    on_change: impl Fn(&Path) + Send + 'static,
) -> notify::Result<Watch> {
    watch(
        dir,
        PLUGIN_DEBOUNCE,
        move |path| path.extension().and_then(|e| e.to_str()) == Some(extension),
        on_change,
    )
}

fn watch(
    dir: &Path,
    quiet: Duration,
    wanted: impl Fn(&Path) -> bool + Send + 'static,
    on_change: impl Fn(&Path) + Send + 'static,
) -> notify::Result<Watch> {
    let (changed, receiver) = mpsc::channel::<PathBuf>();
    let watched = dir.display().to_string();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        match event {
            Ok(event) if changes_content(event.kind) => {
                for path in event.paths {
                    if wanted(&path) {
                        // The debounce thread is gone only when the watch is.
                        let _ = changed.send(path);
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, dir = %watched, "file watch error"),
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("weir-watch".into())
        .spawn(move || debounce(&receiver, quiet, on_change))
        .map_err(notify::Error::io)?;
    Ok(Watch { _watcher: watcher })
}

/// Whether an event of this kind can mean the file's content changed.
fn changes_content(kind: EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Reports each changed path once it has been quiet for `quiet`. Ends when
/// the watcher (the sender) is dropped.
fn debounce(changes: &Receiver<PathBuf>, quiet: Duration, on_change: impl Fn(&Path)) {
    let mut pending = BTreeSet::new();
    loop {
        let next = if pending.is_empty() {
            changes.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            changes.recv_timeout(quiet)
        };
        match next {
            Ok(path) => {
                pending.insert(path);
            }
            Err(RecvTimeoutError::Timeout) => {
                for path in std::mem::take(&mut pending) {
                    on_change(&path);
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counted_watch(file: &Path) -> (Watch, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let watch = watch_file(file, move || {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (watch, count)
    }

    fn settle() {
        std::thread::sleep(FILE_DEBOUNCE * 4);
    }

    #[test]
    fn reading_a_watched_file_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let (_watch, count) = counted_watch(&file);
        for _ in 0..200 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 1\n");
        }
        // Metadata alone (a `touch`, a chmod) is not a content change either.
        let permissions = std::fs::metadata(&file).unwrap().permissions();
        std::fs::set_permissions(&file, permissions).unwrap();
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_save_is_reported_once_whether_in_place_or_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let (_watch, count) = counted_watch(&file);
        // In place: truncate, then write in pieces.
        {
            use std::io::Write as _;
            let mut out = std::fs::File::create(&file).unwrap();
            out.write_all(b"a = ").unwrap();
            out.write_all(b"2\n").unwrap();
        }
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Write-then-rename.
        let tmp = dir.path().join(".weir.toml.swp");
        std::fs::write(&tmp, "a = 3\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Other files in the directory are not this file.
        std::fs::write(dir.path().join("other.toml"), "b = 1\n").unwrap();
        settle();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
