//! Any bytes given as a Pdf file: ragd must return a document or an error, never panic or hang.
#![no_main]
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use ragd_core::parse::{SourceKind, parse};

static QUIET_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // pdf-extract panics on some malformed files, and ragd's PDF parser catches those panics (the page
    // or document fails with a reason; see parse.rs). libFuzzer's panic hook aborts on every panic,
    // caught or not, so this target replaces it with a silent one. A panic that escapes `parse` is
    // still a crash: libfuzzer-sys aborts when the closure unwinds.
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let _ = parse(SourceKind::Pdf, data);
});
