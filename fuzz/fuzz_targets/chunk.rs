//! Any text (as markdown, so headings are exercised), any chunk size: chunks are non-empty and each is
//! exactly the span of the document its char offsets name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragd_core::chunk::{ChunkingConfig, chunk_document};
use ragd_core::embed::ApproxTokenCounter;
use ragd_core::parse::{SourceKind, parse};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max_tokens = 16 + usize::from(data[0]) * 2;
    let overlap_tokens = usize::from(data[1]) % (max_tokens / 2);
    let Ok(doc) = parse(SourceKind::Markdown, &data[2..]) else { return };
    let cfg = ChunkingConfig { max_tokens, overlap_tokens };
    if cfg.validate().is_err() {
        return;
    }
    let chars: Vec<char> = doc.text.chars().collect();
    for c in chunk_document(&doc, &cfg, &ApproxTokenCounter) {
        assert!(!c.text.trim().is_empty(), "empty chunk");
        assert!(c.char_start <= c.char_end && c.char_end <= chars.len(), "offsets out of the text");
        let span: String = chars[c.char_start..c.char_end].iter().collect();
        assert_eq!(span, c.text, "a chunk's text is exactly its span of the document");
    }
});
