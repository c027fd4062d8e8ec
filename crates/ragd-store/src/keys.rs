//! `KeyFile`: API keys and service tokens in `keys.json` in the data folder. The server and the
//! `ragd keys` command change it at the same time safely: every change takes an exclusive lock on
//! `keys.lock`, rewrites the file to a temporary one, syncs it and renames it over the old one. A
//! reader notices a change by the file's identity (inode, size, modification time) and reloads, so a
//! revocation made by the CLI is seen by the server's next request.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use parking_lot::Mutex;
use ragd_core::auth::{KeyRecord, KeyStore};
use ragd_core::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct KeysDoc {
    keys: BTreeMap<String, KeyRecord>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

struct Loaded {
    stamp: Option<Stamp>,
    keys: Arc<BTreeMap<String, KeyRecord>>,
}

pub struct KeyFile {
    path: PathBuf,
    lock_path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl KeyFile {
    /// The key file of a data folder (created on the first key).
    pub fn open(data_dir: &Path) -> Result<KeyFile> {
        fs::create_dir_all(data_dir).map_err(|e| Error::internal(format!("creating {}: {e}", data_dir.display())))?;
        let kf = KeyFile {
            path: data_dir.join("keys.json"),
            lock_path: data_dir.join("keys.lock"),
            loaded: Mutex::new(Loaded { stamp: None, keys: Arc::new(BTreeMap::new()) }),
        };
        kf.current()?;
        Ok(kf)
    }

    fn stamp(&self) -> Result<Option<Stamp>> {
        match fs::metadata(&self.path) {
            Ok(m) => Ok(Some(Stamp { ino: m.ino(), len: m.len(), modified: m.modified().ok() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::internal(format!("reading {}: {e}", self.path.display()))),
        }
    }

    /// The keys as the file holds them now (reloaded only when the file changed).
    fn current(&self) -> Result<Arc<BTreeMap<String, KeyRecord>>> {
        let stamp = self.stamp()?;
        let mut loaded = self.loaded.lock();
        if loaded.stamp != stamp || stamp.is_none() && !loaded.keys.is_empty() {
            loaded.keys = Arc::new(self.read()?.keys);
            loaded.stamp = stamp;
        }
        Ok(loaded.keys.clone())
    }

    fn read(&self) -> Result<KeysDoc> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::internal(format!("{} is corrupt: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysDoc::default()),
            Err(e) => Err(Error::internal(format!("reading {}: {e}", self.path.display()))),
        }
    }

    /// Read, change and write the file under the exclusive lock; durable when it returns.
    fn update<T>(&self, change: impl FnOnce(&mut KeysDoc) -> Result<T>) -> Result<T> {
        let io = |what: &str, e: std::io::Error| Error::internal(format!("{what} {}: {e}", self.path.display()));
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&self.lock_path).map_err(|e| io("locking", e))?;
        lock.lock().map_err(|e| io("locking", e))?;
        let mut doc = self.read()?;
        let out = change(&mut doc)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            // Digests only, but still nobody else's business: 0600.
            let mut f = ragd_core::snapshot::create_private(&tmp).map_err(|e| io("writing", e))?;
            f.write_all(&serde_json::to_vec_pretty(&doc).map_err(Error::internal)?).map_err(|e| io("writing", e))?;
            f.sync_all().map_err(|e| io("syncing", e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| io("replacing", e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the folder of", e))?;
        }
        drop(lock);
        Ok(out)
    }
}

#[async_trait]
impl KeyStore for KeyFile {
    async fn insert(&self, record: KeyRecord) -> Result<()> {
        self.update(|doc| {
            if doc.keys.contains_key(&record.id) {
                return Err(Error::conflict("key_exists", "a key with this id exists"));
            }
            doc.keys.insert(record.id.clone(), record);
            Ok(())
        })
    }

    async fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self.current()?.get(id).cloned())
    }

    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>> {
        Ok(self.current()?.values().filter(|k| tenant.is_none_or(|t| k.tenant == t)).cloned().collect())
    }

    async fn revoke(&self, id: &str, now: String) -> Result<bool> {
        self.update(|doc| match doc.keys.get_mut(id) {
            Some(k) => {
                if k.revoked_at.is_none() {
                    k.revoked_at = Some(now);
                }
                Ok(true)
            }
            None => Ok(false),
        })
    }

    /// The file is only ever replaced whole (rename), so a plain copy is one version of it.
    async fn backup(&self, dest: &Path) -> Result<()> {
        match fs::copy(&self.path, dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(format!("copying {}: {e}", self.path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragd_core::auth::{KeyKind, Role, generate_key, verify_key};

    #[tokio::test]
    async fn a_revocation_by_another_handle_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let server = KeyFile::open(dir.path()).unwrap();
        let cli = KeyFile::open(dir.path()).unwrap();
        let k = generate_key(KeyKind::ApiKey, "acme", Role::Read, None, None, "t0".into()).unwrap();
        cli.insert(k.record.clone()).await.unwrap();
        let found = verify_key(&server, &k.secret, KeyKind::ApiKey).await.unwrap();
        assert_eq!(found.tenant, "acme");
        assert!(found.revoked_at.is_none());
        // A wrong secret with the right id, and the right key as the wrong kind, are refused alike.
        let forged = format!("{}{}", &k.secret[..k.secret.len() - 1], if k.secret.ends_with('0') { '1' } else { '0' });
        assert_eq!(verify_key(&server, &forged, KeyKind::ApiKey).await.unwrap_err().code(), "invalid_api_key");
        assert_eq!(verify_key(&server, &k.secret, KeyKind::ServiceToken).await.unwrap_err().code(), "invalid_service_token");
        assert!(cli.revoke(&k.record.id, "t1".into()).await.unwrap());
        assert_eq!(verify_key(&server, &k.secret, KeyKind::ApiKey).await.unwrap_err().code(), "api_key_revoked");
        assert!(!cli.revoke("nope", "t1".into()).await.unwrap());
        // Only the digest is on disk.
        let on_disk = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!on_disk.contains(&k.secret));
        assert!(on_disk.contains(&k.record.digest));
    }
}
