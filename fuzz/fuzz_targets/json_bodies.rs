//! Any bytes as each JSON request body ragd accepts: a value or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragd_core::answer::QueryRequest;
use ragd_core::chunk::ChunkingConfig;
use ragd_core::engine::{NewCollection, SearchRequest};
use ragd_core::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<SearchRequest>(data);
    let _ = serde_json::from_slice::<QueryRequest>(data);
    let _ = serde_json::from_slice::<NewCollection>(data);
    if let Ok(c) = serde_json::from_slice::<ChunkingConfig>(data) {
        let _ = c.validate();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(table) = text.parse::<toml::Table>() {
            let _ = toml::Value::Table(table).try_into::<Settings>().map(|s| s.problems());
        }
    }
});
