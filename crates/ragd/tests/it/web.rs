//! Issue 9: the web dashboard, end to end in a real browser. A real ragd (authentication on, the
//! built-in models) and Debian's Chromium driven by Playwright (`tests/web/e2e.mjs`): sign in,
//! create a collection, drop two files and watch their jobs finish, search, ask and watch the answer
//! stream, open a citation's passage, read the status page, delete a document and see it gone from
//! answers, and check labels, contrast, keyboard focus and a narrow screen. Screenshots of each page
//! are left in `target/tmp/web-artifacts/`.

use std::path::Path;
use std::process::Command;

use crate::gateway::create_key;
use crate::support::Server;

#[test]
fn the_dashboard_works_end_to_end_in_chromium() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    // scripts/test.sh installs both; a bare `cargo test` on a machine without them says so loudly.
    let missing: Vec<&str> = [
        (!web.join("node_modules/playwright-core").exists()).then_some("playwright-core (npm ci in crates/ragd/tests/web)"),
        (!Path::new(&chromium).exists()).then_some("chromium (apt-get install chromium)"),
        Command::new("node").arg("--version").output().is_err().then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        eprintln!("skipped: the web dashboard test needs {}; scripts/test.sh installs them", missing.join(", "));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "admin", "default");
    let server = Server::start_with(dir.path(), &[("RAGD_AUTH__ENABLED", "true")]);
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-artifacts");
    let out = Command::new("node")
        .arg(web.join("e2e.mjs"))
        .current_dir(&web)
        .env("RAGD_URL", &server.base)
        .env("RAGD_KEY", &key)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    for page in ["signin", "collections", "documents", "chat", "chat-citation", "status", "chat-narrow"] {
        assert!(artifacts.join(format!("{page}.png")).exists(), "no screenshot of {page}");
    }
}
