//! Any bytes given as a Csv file: ragd must return a document or an error, never panic, hang or
//! allocate past its limits (libFuzzer's -rss_limit_mb catches the last).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragd_core::parse::{SourceKind, parse};

fuzz_target!(|data: &[u8]| {
    let _ = parse(SourceKind::Csv, data);
});
