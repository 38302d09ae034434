//! The on-disk cache of compiled plugins, which a writer of the cache
//! directory cannot use to run code of its choosing.
//!
//! A compiled artifact is native code: wasmtime's `Module::deserialize`
//! trusts it entirely. So an entry is loaded only when it proves it was
//! written by this installation for exactly the `.wasm` being loaded:
//!
//! ```text
//! "WEIRCC01" | SHA-256 of the .wasm | engine compatibility (16 bytes) |
//! payload length (u64 LE) | HMAC-SHA-256(key, everything before it + payload) | payload
//! ```
//!
//! The key is 32 random bytes in a file of its own (created 0600 on first
//! use, refused if another user could read or change it), kept apart from
//! the entries. A missing, truncated, foreign or forged entry is recompiled
//! from the `.wasm` and overwritten, with one warning per entry. The
//! directory is kept under a size bound by removing the oldest entries.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 8] = b"WEIRCC01";
const COMPAT_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 32 + COMPAT_LEN + 8;
const TAG_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// Why the cache cannot be used at all (compilation goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum CacheKeyError {
    /// The key file could not be read or created.
    #[error("compile cache key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("compile cache key {path} is {len} bytes, not {KEY_LEN}; delete it to make a new one")]
    Length {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Another user could read or replace the key.
    #[error(
        "compile cache key {path} is open to other users (mode {mode:o}, owner {owner}); \
         it must be owned by this user with mode 0600"
    )]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner's uid.
        owner: u32,
    },
}

/// Where and how big the cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileCacheConfig {
    /// The directory of entries.
    pub dir: PathBuf,
    /// The key file.
    pub key_file: PathBuf,
    /// Past this total, the oldest entries are removed.
    pub max_bytes: u64,
}

/// The cache of one engine.
pub struct CompileCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    compat: [u8; COMPAT_LEN],
    max_bytes: u64,
    /// Entries already warned about, so a bad entry is reported once.
    warned: Mutex<BTreeSet<PathBuf>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl CompileCache {
    /// Opens the cache; creates the key on first use. `compat` identifies
    /// the engine (wasmtime version and settings) the entries are for.
    pub fn open(
        config: &CompileCacheConfig,
        compat: [u8; COMPAT_LEN],
    ) -> Result<Self, CacheKeyError> {
        let key = load_or_create_key(&config.key_file)?;
        Ok(Self {
            dir: config.dir.clone(),
            key,
            compat,
            max_bytes: config.max_bytes,
            warned: Mutex::default(),
        })
    }

    /// The entry's file for a `.wasm` with this SHA-256.
    fn path_for(&self, wasm_hash: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex(wasm_hash),
            hex(&self.compat[..8])
        ))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; 32 bytes never fails.
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// The verified payload of the entry for `wasm_hash`, if there is one
    /// that checks out. A bad entry is reported once and left for
    /// [`CompileCache::store`] to overwrite.
    pub fn load(&self, wasm_hash: &[u8; 32]) -> Option<Vec<u8>> {
        let path = self.path_for(wasm_hash);
        let mut file = std::fs::read(&path).ok()?;
        match self.verify(&file, wasm_hash) {
            Ok(()) => {
                file.drain(..HEADER_LEN + TAG_LEN);
                Some(file)
            }
            Err(why) => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(path.clone());
                if first {
                    tracing::warn!(path = %path.display(), "compile cache entry refused ({why}); recompiling from the .wasm");
                }
                None
            }
        }
    }

    fn verify(&self, file: &[u8], wasm_hash: &[u8; 32]) -> Result<(), &'static str> {
        let (header, rest) = file
            .split_at_checked(HEADER_LEN)
            .ok_or("truncated header")?;
        let (tag, payload) = rest.split_at_checked(TAG_LEN).ok_or("truncated")?;
        let (magic, header_rest) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err("not a Weir cache entry");
        }
        let (hash, header_rest) = header_rest.split_at(32);
        if hash != wasm_hash {
            return Err("made from another .wasm");
        }
        let (compat, length) = header_rest.split_at(COMPAT_LEN);
        if compat != self.compat {
            return Err("made by another engine version");
        }
        let mut length_bytes = [0u8; 8];
        length_bytes.copy_from_slice(length);
        if u64::from_le_bytes(length_bytes) != payload.len() as u64 {
            return Err("truncated payload");
        }
        let mut mac = self.mac();
        mac.update(header);
        mac.update(payload);
        mac.verify_slice(tag)
            .map_err(|_| "not signed with this installation's key")
    }

    /// Writes the entry for `wasm_hash` (write, then rename), then trims the
    /// directory to its size bound.
    pub fn store(&self, wasm_hash: &[u8; 32], payload: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(wasm_hash);
        header.extend_from_slice(&self.compat);
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let mut mac = self.mac();
        mac.update(&header);
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let path = self.path_for(wasm_hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(&header)?;
            out.write_all(&tag)?;
            out.write_all(payload)?;
        }
        std::fs::rename(&tmp, &path)?;
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&path);
        self.trim(&path);
        Ok(())
    }

    /// Removes the oldest entries (by modification time) until the total
    /// is within the bound; `keep` (the entry just written) stays.
    fn trim(&self, keep: &Path) {
        let Ok(read) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let metadata = e.metadata().ok()?;
                Some((metadata.modified().ok()?, metadata.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(path = %path.display(), "compile cache over its size bound; removed the oldest entry");
                total = total.saturating_sub(len);
            }
        }
    }
}

/// Lowercase hex (entry names, plugin hashes on the admin API).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads the key, or creates it (0600, 32 random bytes) if there is none.
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], CacheKeyError> {
    let io = |source| CacheKeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut key = [0u8; KEY_LEN];
    if !path.exists() {
        // Written whole to a private temporary file, then linked into place:
        // a concurrent starter either wins or reads a complete key.
        getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&key).map_err(io)?;
        file.sync_all().map_err(io)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created the compile cache key");
                return Ok(key);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    let mode = metadata.permissions().mode() & 0o777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if mode & 0o077 != 0 || metadata.uid() != me {
        return Err(CacheKeyError::Exposed {
            path: path.to_path_buf(),
            mode,
            owner: metadata.uid(),
        });
    }
    if metadata.len() != KEY_LEN as u64 {
        return Err(CacheKeyError::Length {
            path: path.to_path_buf(),
            len: metadata.len(),
        });
    }
    file.read_exact(&mut key).map_err(io)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(dir: &Path, max_bytes: u64) -> CompileCache {
        let config = CompileCacheConfig {
            dir: dir.join("entries"),
            key_file: dir.join("key"),
            max_bytes,
        };
        CompileCache::open(&config, [7; COMPAT_LEN]).unwrap()
    }

    #[test]
    fn an_entry_loads_only_for_its_own_wasm_with_this_key() {
        let dir = tempfile::tempdir().unwrap();
        let ours = cache(dir.path(), 1 << 20);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        ours.store(&a, b"payload of a").unwrap();
        assert_eq!(ours.load(&a).as_deref(), Some(&b"payload of a"[..]));
        assert_eq!(ours.load(&b), None, "nothing stored for b");

        // Substitution: a's entry copied to b's name is refused.
        std::fs::copy(ours.path_for(&a), ours.path_for(&b)).unwrap();
        assert_eq!(ours.load(&b), None);

        // Forgery: a well-formed entry signed with another key is refused.
        let other_dir = tempfile::tempdir().unwrap();
        let theirs = cache(other_dir.path(), 1 << 20);
        theirs.store(&a, b"evil code").unwrap();
        std::fs::copy(theirs.path_for(&a), ours.path_for(&a)).unwrap();
        assert_eq!(ours.load(&a), None);

        // Tampering and truncation are refused.
        ours.store(&a, b"payload of a").unwrap();
        let path = ours.path_for(&a);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(ours.load(&a), None);
        std::fs::write(&path, &bytes[..HEADER_LEN + 3]).unwrap();
        assert_eq!(ours.load(&a), None);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(ours.load(&a), None);

        // The same key is read back on the next start.
        let again = cache(dir.path(), 1 << 20);
        again.store(&a, b"payload of a").unwrap();
        assert_eq!(ours.load(&a).as_deref(), Some(&b"payload of a"[..]));
    }

    #[test]
    fn the_key_is_private_and_an_exposed_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _ = cache(dir.path(), 1 << 20);
        let key = dir.path().join("key");
        let metadata = std::fs::metadata(&key).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), KEY_LEN as u64);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = CompileCacheConfig {
            dir: dir.path().join("entries"),
            key_file: key.clone(),
            max_bytes: 1 << 20,
        };
        let error = CompileCache::open(&config, [7; COMPAT_LEN]).unwrap_err();
        assert!(matches!(error, CacheKeyError::Exposed { .. }), "{error}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key, b"short").unwrap();
        let error = CompileCache::open(&config, [7; COMPAT_LEN]).unwrap_err();
        assert!(
            matches!(error, CacheKeyError::Length { len: 5, .. }),
            "{error}"
        );
    }

    #[test]
    fn the_oldest_entries_go_past_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let entry = (HEADER_LEN + TAG_LEN + 100) as u64;
        let bounded = cache(dir.path(), entry * 2);
        for i in 0..4u8 {
            bounded.store(&[i; 32], &[i; 100]).unwrap();
            // Distinct modification times.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(bounded.load(&[0; 32]), None);
        assert_eq!(bounded.load(&[1; 32]), None);
        assert!(bounded.load(&[2; 32]).is_some());
        assert!(bounded.load(&[3; 32]).is_some());
    }
}
