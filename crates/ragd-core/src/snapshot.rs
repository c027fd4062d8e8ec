//! Snapshots of an embedded data folder: one tar file holding a consistent copy of the catalog, of
//! every collection's vectors and of the keys, taken while the server keeps serving (see
//! `Engine::start_snapshot`), and restored offline into an empty data folder (`ragd snapshot restore`).
//!
//! The archive has the data folder's own layout, so restoring is unpacking:
//! `ragd-snapshot.json` (the [`Manifest`]), `catalog.redb`, `keys.json` (when the folder has keys),
//! `collections/<name>/` (one shard per collection).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest's file name inside an archive.
pub const MANIFEST: &str = "ragd-snapshot.json";
/// Version of the archive layout; `restore` refuses others.
pub const FORMAT: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub created_at: String,
    pub ragd_version: String,
    pub collections: Vec<SnapshotCollection>,
}

/// One collection as it was when the snapshot was taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotCollection {
    /// Stored name (`<tenant>.<name>` for collections of other tenants than the default).
    pub name: String,
    pub documents: u64,
    pub chunks: u64,
}

/// A snapshot as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotStatus {
    pub name: String,
    /// `creating`, `ready` or `failed`.
    pub status: String,
    pub created_at: String,
    /// Size of the archive, once ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// What it holds, once ready.
    #[serde(default)]
    pub collections: Vec<SnapshotCollection>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Snapshot names are made by the server (`ragd-<UTC time>-<4 hex>`); anything else is refused before
/// it gets near a path.
pub fn valid_name(name: &str) -> bool {
    name.starts_with("ragd-")
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(crate) fn new_name(now: &chrono::DateTime<chrono::Utc>) -> String {
    let tail = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("ragd-{}-{tail}", now.format("%Y%m%dT%H%M%SZ"))
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let at = format!("{what} {}", path.display());
    move |e| Error::internal(format!("{at}: {e}"))
}

/// Packs the folder `dir` into a tar file at `out`: written beside it, synced, then renamed into place,
/// so a file with the final name is always whole. Returns its size.
pub fn pack(dir: &Path, out: &Path) -> Result<u64> {
    let tmp = out.with_extension("tar.partial");
    // The archive holds every document and the keys' digests: readable by the owner only.
    let file = create_private(&tmp).map_err(io("creating", &tmp))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).map_err(io("packing", dir))?;
    let mut writer = builder.into_inner().map_err(io("writing", &tmp))?;
    writer.flush().map_err(io("writing", &tmp))?;
    let file = writer.into_inner().map_err(|e| Error::internal(format!("writing {}: {e}", tmp.display())))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    let size = file.metadata().map_err(io("reading", &tmp))?.len();
    fs::rename(&tmp, out).map_err(io("renaming", &tmp))?;
    Ok(size)
}

/// Creates (or truncates) a file only its owner may read or write (0600 on Unix).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // A file that already existed keeps its mode through `open`: set it.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    options.open(path)
}

/// Reads the manifest of an archive without unpacking the rest.
pub fn read_manifest(archive: &Path) -> Result<Manifest> {
    let file = File::open(archive).map_err(io("opening", archive))?;
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries().map_err(io("reading", archive))? {
        let entry = entry.map_err(io("reading", archive))?;
        let path = entry.path().map_err(io("reading", archive))?.into_owned();
        if path.file_name().is_some_and(|n| n == MANIFEST) && path.components().count() <= 2 {
            return parse_manifest(entry, archive);
        }
    }
    Err(Error::invalid("not_a_snapshot", format!("{} holds no {MANIFEST}: not a ragd snapshot", archive.display())))
}

fn parse_manifest(r: impl std::io::Read, archive: &Path) -> Result<Manifest> {
    let m: Manifest = serde_json::from_reader(r)
        .map_err(|e| Error::invalid("not_a_snapshot", format!("{}: unreadable {MANIFEST}: {e}", archive.display())))?;
    if !valid_name(&m.name) {
        return Err(Error::invalid("not_a_snapshot", format!("{}: the manifest names no ragd snapshot", archive.display())));
    }
    if m.format != FORMAT {
        return Err(Error::invalid(
            "snapshot_format",
            format!("{} is in snapshot format {}; this ragd reads format {FORMAT}", archive.display(), m.format),
        ));
    }
    // The names become paths (shard folders) when the restore is checked: each must be a stored
    // collection name, `<collection>` or `<tenant>.<collection>`, never `../x` or `a/b`.
    if let Some(bad) = m.collections.iter().find(|c| !valid_stored_name(&c.name)) {
        return Err(Error::invalid(
            "not_a_snapshot",
            format!("{}: the manifest names a collection `{}` that is not a collection name", archive.display(), bad.name.escape_debug()),
        ));
    }
    Ok(m)
}

/// Whether `name` is a collection's stored name: a collection name, with a valid tenant in front.
pub fn valid_stored_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((tenant, collection)) => {
            crate::auth::validate_tenant(tenant).is_ok() && crate::engine::validate_collection_name(collection).is_ok()
        }
        None => crate::engine::validate_collection_name(name).is_ok(),
    }
}

/// Unpacks an archive into `data_dir`, which must not hold a catalog yet (an existing data folder is
/// never overwritten). Everything is unpacked into a folder beside the final places first; the catalog
/// is moved in last, so an interrupted restore leaves a folder that does not look like a data folder.
pub fn unpack(archive: &Path, data_dir: &Path) -> Result<Manifest> {
    let manifest = read_manifest(archive)?;
    let catalog = data_dir.join("catalog.redb");
    let collections_in_use = data_dir.join("collections").read_dir().is_ok_and(|mut d| d.next().is_some());
    if catalog.exists() || collections_in_use || data_dir.join("keys.json").exists() {
        return Err(Error::conflict(
            "data_folder_not_empty",
            format!(
                "{} already holds a ragd data folder (or part of one: a catalog, collections or keys); restore into a new folder (or move this one aside)",
                data_dir.display()
            ),
        ));
    }
    fs::create_dir_all(data_dir).map_err(io("creating", data_dir))?;
    let staging = data_dir.join(format!(".restore-{}", manifest.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("clearing", &staging))?;
    }
    let placed = unpack_into(archive, &staging).and_then(|()| {
        if !staging.join("catalog.redb").exists() {
            return Err(Error::invalid("not_a_snapshot", format!("{} holds no catalog.redb", archive.display())));
        }
        let collections = staging.join("collections");
        if collections.exists() {
            move_into(&collections, &data_dir.join("collections"))?;
        }
        if staging.join("keys.json").exists() {
            rename(&staging.join("keys.json"), &data_dir.join("keys.json"))?;
        }
        rename(&staging.join("catalog.redb"), &catalog)
    });
    let cleared = fs::remove_dir_all(&staging).map_err(io("clearing", &staging));
    placed?;
    cleared?;
    Ok(manifest)
}

/// Unpacks only files and folders (a snapshot holds nothing else): a link in an archive could point a
/// restored collection anywhere. `unpack_in` refuses paths that would land outside `dir`.
fn unpack_into(archive: &Path, dir: &Path) -> Result<()> {
    use tar::EntryType;
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let file = File::open(archive).map_err(io("opening", archive))?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(false);
    for entry in tar.entries().map_err(io("reading", archive))? {
        let mut entry = entry.map_err(io("reading", archive))?;
        let kind = entry.header().entry_type();
        if !matches!(kind, EntryType::Regular | EntryType::Directory | EntryType::GNUSparse) {
            let path = entry.path().map(|p| p.display().to_string()).unwrap_or_default();
            return Err(Error::invalid("not_a_snapshot", format!("{}: `{path}` is a {kind:?}; a snapshot holds only files and folders", archive.display())));
        }
        let inside = entry.unpack_in(dir).map_err(io("unpacking", archive))?;
        if !inside {
            return Err(Error::invalid("not_a_snapshot", format!("{}: an entry points outside the archive", archive.display())));
        }
    }
    Ok(())
}

/// Moves every entry of `from` into `to` (created if needed).
fn move_into(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(io("creating", to))?;
    for entry in fs::read_dir(from).map_err(io("reading", from))? {
        let entry = entry.map_err(io("reading", from))?;
        rename(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(io("moving", from))
}

/// Copies a folder recursively (files and folders only).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(io("creating", to))?;
    for entry in fs::read_dir(from).map_err(io("reading", from))? {
        let entry = entry.map_err(io("reading", from))?;
        let kind = entry.file_type().map_err(io("reading", &entry.path()))?;
        let target: PathBuf = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            copy_sparse(&entry.path(), &target).map_err(io("copying", &entry.path()))?;
        }
    }
    Ok(())
}

/// Copies a file leaving its runs of zeros as holes. The store preallocates its files (a new collection
/// has ~180 MB of them, nearly all holes); a plain copy would fill them in, and the archive with them.
fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut src = File::open(from)?;
    let len = src.metadata()?.len();
    let mut dst = File::create(to)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..])? {
                0 => break,
                got => n += got,
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
    }
    dst.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(name: &str) -> Manifest {
        Manifest {
            format: FORMAT,
            name: name.into(),
            created_at: "2026-11-28T00:00:00Z".into(),
            ragd_version: "test".into(),
            collections: vec![SnapshotCollection { name: "kb".into(), documents: 1, chunks: 2 }],
        }
    }

    fn folder(root: &Path, name: &str) -> PathBuf {
        let dir = root.join("made");
        fs::create_dir_all(dir.join("collections/kb/segments")).unwrap();
        fs::write(dir.join("collections/kb/segments/a.bin"), b"vectors").unwrap();
        fs::write(dir.join("catalog.redb"), b"catalog").unwrap();
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest(name)).unwrap()).unwrap();
        dir
    }

    #[test]
    fn copies_keep_the_bytes_and_leave_zeros_as_holes() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let (from, to) = (root.path().join("a"), root.path().join("b"));
        fs::create_dir_all(from.join("inner")).unwrap();
        let mut bytes = vec![0u8; 8 << 20];
        bytes[5] = 1;
        bytes[(4 << 20) + 3] = 7;
        bytes.extend_from_slice(b"tail");
        fs::write(from.join("inner/f"), &bytes).unwrap();
        copy_dir(&from, &to).unwrap();
        assert_eq!(fs::read(to.join("inner/f")).unwrap(), bytes);
        let blocks = fs::metadata(to.join("inner/f")).unwrap().blocks() * 512;
        assert!(blocks < 1 << 20, "{blocks} bytes on disk for 3 non-zero 64 KiB pieces");
    }

    #[test]
    fn archives_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = folder(root.path(), "ragd-x");
        let out = root.path().join("s.tar");
        // Even over a world-readable leftover of the same name.
        fs::write(root.path().join("s.tar.partial"), b"old").unwrap();
        fs::set_permissions(root.path().join("s.tar.partial"), fs::Permissions::from_mode(0o644)).unwrap();
        pack(&dir, &out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn links_and_foreign_names_in_an_archive_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = folder(root.path(), "ragd-x");
        std::os::unix::fs::symlink("/etc", dir.join("collections/link")).unwrap();
        let out = root.path().join("s.tar");
        pack(&dir, &out).unwrap();
        let data = root.path().join("d");
        assert_eq!(unpack(&out, &data).unwrap_err().code(), "not_a_snapshot");
        assert!(!data.join("collections").exists() && !data.join("catalog.redb").exists());
        assert_eq!(fs::read_dir(&data).unwrap().count(), 0, "the staging folder is cleared");

        fs::remove_file(dir.join("collections/link")).unwrap();
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&manifest("x/../../../escape")).unwrap()).unwrap();
        pack(&dir, &out).unwrap();
        assert_eq!(unpack(&out, &root.path().join("e")).unwrap_err().code(), "not_a_snapshot");
    }

    #[test]
    fn names_are_checked_before_they_become_paths() {
        let name = new_name(&chrono::Utc::now());
        assert!(valid_name(&name), "{name}");
        for bad in ["../etc", "ragd-../x", "ragd-a/b", "other", "ragd-a.tar", ""] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_packed_folder_unpacks_into_a_new_data_folder_and_never_over_an_existing_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = folder(root.path(), "ragd-x");
        let out = root.path().join("s.tar");
        let size = pack(&dir, &out).unwrap();
        assert_eq!(size, fs::metadata(&out).unwrap().len());
        assert!(!root.path().join("s.tar.partial").exists());
        assert_eq!(read_manifest(&out).unwrap(), manifest("ragd-x"));

        let data = root.path().join("restored");
        assert_eq!(unpack(&out, &data).unwrap().name, "ragd-x");
        assert_eq!(fs::read(data.join("collections/kb/segments/a.bin")).unwrap(), b"vectors");
        assert_eq!(fs::read(data.join("catalog.redb")).unwrap(), b"catalog");
        assert_eq!(fs::read_dir(&data).unwrap().count(), 2, "only catalog.redb and collections/ are left");

        let again = unpack(&out, &data).unwrap_err();
        assert_eq!(again.code(), "data_folder_not_empty");
    }

    #[test]
    fn an_archive_without_manifest_or_of_another_format_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = folder(root.path(), "ragd-x");
        fs::remove_file(dir.join(MANIFEST)).unwrap();
        let out = root.path().join("s.tar");
        pack(&dir, &out).unwrap();
        assert_eq!(unpack(&out, &root.path().join("d")).unwrap_err().code(), "not_a_snapshot");

        let mut m = manifest("ragd-y");
        m.format = 99;
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        pack(&dir, &out).unwrap();
        assert_eq!(read_manifest(&out).unwrap_err().code(), "snapshot_format");
    }

    #[test]
    fn manifest_collection_names_must_be_stored_collection_names() {
        for ok in ["docs", "acme.docs", "a-b_c.D1"] {
            assert!(valid_stored_name(ok), "{ok}");
        }
        for bad in ["../docs", "acme/../../x", "a/b", "", ".docs", "acme.", "acme.docs.x", "ACME.docs", "docs\0", "acme..docs"] {
            assert!(!valid_stored_name(bad), "{bad}");
        }
    }
}
