//! Any bytes given as a Markdown file: ragd must return a document or an error, never panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragd_core::parse::{SourceKind, parse};

fuzz_target!(|data: &[u8]| {
    let _ = parse(SourceKind::Markdown, data);
});
