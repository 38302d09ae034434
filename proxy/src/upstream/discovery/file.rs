//! File discovery: a JSON or TOML list of endpoints (by extension: `.toml`
//! is TOML, anything else JSON), re-read when the watcher says the file
//! changed. The file's directory is watched, so write-then-rename is seen.
//! For file systems where notifications are lost (network mounts), the
//! file's metadata (size, modification time, inode) is also compared every
//! few seconds; the file is read only when that differs, so an idle upstream
//! with a large list costs nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, Publisher};
use crate::config::{EndpointSpec, parse_endpoint_list};
use crate::watch::watch_file;

/// How often the file's metadata is compared, in case a notification was
/// lost.
const RECHECK: Duration = Duration::from_secs(5);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: metadata.len(),
        modified: metadata.modified().ok(),
        inode: metadata.ino(),
    })
}

/// Reads the file and publishes its endpoints; on error the last set stays.
/// Returns the published set.
pub(super) fn load(publisher: &Publisher, path: &Path) -> Option<Vec<EndpointSpec>> {
    match read(path) {
        Ok(specs) => {
            publisher.publish(&specs);
            Some(specs)
        }
        Err(error) => {
            publisher.failed(&error);
            None
        }
    }
}

fn read(path: &Path) -> Result<Vec<EndpointSpec>, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let toml_syntax = path.extension().is_some_and(|e| e == "toml");
    parse_endpoint_list(&text, toml_syntax).map_err(|message| DiscoveryError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// Watches the file until `stop` is cancelled or the upstream is gone.
pub(super) async fn run(publisher: Publisher, path: PathBuf, stop: CancellationToken) {
    let changed = Arc::new(Notify::new());
    let notify = Arc::clone(&changed);
    let _watch = match watch_file(&path, move || notify.notify_one()) {
        Ok(watch) => Some(watch),
        Err(source) => {
            publisher.failed(&DiscoveryError::Watch {
                path: path.display().to_string(),
                source,
            });
            None
        }
    };
    let mut seen = stamp(&path);
    let mut last = read(&path).ok();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => {}
            () = tokio::time::sleep(RECHECK) => {
                if stamp(&path) == seen {
                    continue;
                }
            }
        }
        if !publisher.alive() {
            return;
        }
        seen = stamp(&path);
        match read(&path) {
            Ok(specs) if last.as_ref() == Some(&specs) => {
                publisher.unchanged();
            }
            Ok(specs) => {
                publisher.publish(&specs);
                last = Some(specs);
            }
            Err(error) => {
                publisher.failed(&error);
            }
        }
    }
}
