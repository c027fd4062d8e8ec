//! Splits a parsed document into overlapping chunks that fit the embedder's context, each with its
//! heading path, char offsets into the document text and (for PDFs) the page it starts on.

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

use crate::embed::TokenCounter;
use crate::parse::{PageSpan, ParsedDocument, SpanUnit};

fn default_max_tokens() -> usize {
    250
}

fn default_overlap_tokens() -> usize {
    32
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkingConfig {
    /// Upper bound on a chunk's size in the embedder's tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// How many tokens of the previous chunk's end are repeated at the next one's start, so a sentence
    /// cut at a boundary is still found whole.
    #[serde(default = "default_overlap_tokens")]
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        ChunkingConfig {
            max_tokens: default_max_tokens(),
            overlap_tokens: default_overlap_tokens(),
        }
    }
}

impl ChunkingConfig {
    /// max_tokens in 16..=8192, overlap < max_tokens/2.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(16..=8192).contains(&self.max_tokens) {
            return Err(format!(
                "max_tokens must be between 16 and 8192, got {}",
                self.max_tokens
            ));
        }
        if self.overlap_tokens >= self.max_tokens / 2 {
            return Err(format!(
                "overlap_tokens must be less than half of max_tokens ({}), got {}",
                self.max_tokens / 2,
                self.overlap_tokens
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Chunk {
    /// 0-based, in document order.
    pub index: u32,
    pub text: String,
    /// Headings in force at the chunk's start, outermost first (text of `#`, `##`, ... without the hashes).
    pub heading_path: Vec<String>,
    /// Char (not byte) offsets of `text` within ParsedDocument.text; text == doc.text.chars()[start..end].
    pub char_start: usize,
    pub char_end: usize,
    /// PDF: page where the chunk starts.
    pub page: Option<u32>,
    /// pptx: slide where the chunk starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<u32>,
    /// xlsx, ods: name of the sheet the chunk is from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// The chunk starts in text read by OCR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

/// Lets text-splitter measure candidate chunks in the embedder's own tokens.
struct TokenSizer<'a>(&'a dyn TokenCounter);

impl ChunkSizer for TokenSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count_tokens(chunk)
    }
}

pub fn chunk_document(
    doc: &ParsedDocument,
    cfg: &ChunkingConfig,
    counter: &dyn TokenCounter,
) -> Vec<Chunk> {
    let text = doc.text.as_str();
    if text.trim().is_empty() {
        return Vec::new();
    }
    // This function cannot fail, so a config that skipped validate() is clamped rather than trusted:
    // text-splitter rejects a zero capacity and an overlap that is not below it.
    let max = cfg.max_tokens.max(1);
    let overlap = cfg.overlap_tokens.min(max - 1);
    let config = || {
        ChunkConfig::new(max)
            .with_overlap(overlap)
            .unwrap_or_else(|_| ChunkConfig::new(max))
            .with_sizer(TokenSizer(counter))
    };

    // Markdown goes through the Markdown splitter so chunks break at headings and block boundaries
    // before sentences. Each page, slide or sheet is split on its own, so a chunk never runs from
    // one into the next and the place it gives is where all of its text is.
    let markdown = doc.markdown.then(|| MarkdownSplitter::new(config()));
    let plain = (!doc.markdown).then(|| TextSplitter::new(config()));
    let mut pieces: Vec<(usize, &str)> = Vec::new();
    for (from, to) in segments(doc) {
        let part = &text[from..to];
        match (&markdown, &plain) {
            (Some(m), _) => pieces.extend(m.chunk_indices(part).map(|(i, s)| (from + i, s))),
            (None, Some(t)) => pieces.extend(t.chunk_indices(part).map(|(i, s)| (from + i, s))),
            (None, None) => {}
        }
    }

    let headings = if doc.markdown {
        markdown_headings(text)
    } else {
        Vec::new()
    };
    let mut next_heading = 0;
    let mut stack: Vec<&Heading> = Vec::new();
    let mut offsets = CharOffsets::new(text);
    let mut chunks = Vec::with_capacity(pieces.len());

    for (byte_start, piece) in pieces {
        // text-splitter keeps indentation in Markdown chunks; we promise fully trimmed text.
        let trimmed = piece.trim();
        if trimmed.is_empty() {
            continue;
        }
        let byte_start = byte_start + (piece.len() - piece.trim_start().len());

        // Chunk starts only move forward, so the heading stack is advanced, never rebuilt.
        while let Some(h) = headings
            .get(next_heading)
            .filter(|h| h.byte_offset <= byte_start)
        {
            while stack.last().is_some_and(|top| top.level >= h.level) {
                stack.pop();
            }
            stack.push(h);
            next_heading += 1;
        }

        let char_start = offsets.char_at(byte_start);
        let char_end = char_start + trimmed.chars().count();
        let span = span_at(doc, char_start);
        let (page, slide, sheet) = match span {
            None => (None, None, None),
            Some(p) => match p.unit {
                SpanUnit::Page => (Some(p.page), None, None),
                SpanUnit::Slide => (None, Some(p.page), None),
                SpanUnit::Sheet => (None, None, p.name.clone()),
                SpanUnit::Chapter => (None, None, None),
            },
        };
        chunks.push(Chunk {
            index: chunks.len() as u32,
            text: trimmed.to_string(),
            heading_path: stack.iter().map(|h| h.text.clone()).collect(),
            char_start,
            char_end,
            page,
            slide,
            sheet,
            ocr: span.is_some_and(|p| p.ocr),
        });
    }
    chunks
}

/// Byte ranges of the text to split separately: each page (slide, sheet) on its own; the whole
/// text when the document has none. Text between two pages (their separator) belongs to neither.
fn segments(doc: &ParsedDocument) -> Vec<(usize, usize)> {
    let text = doc.text.as_str();
    if doc.pages.is_empty() {
        return vec![(0, text.len())];
    }
    // Char offsets to byte offsets, in one pass over the text.
    let mut wanted: Vec<usize> = doc.pages.iter().flat_map(|p| [p.char_start, p.char_end]).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut bytes = std::collections::HashMap::with_capacity(wanted.len());
    let mut next = wanted.iter().peekable();
    for (c, (b, _)) in text.char_indices().enumerate() {
        while next.peek().is_some_and(|w| **w <= c) {
            bytes.insert(*next.next().expect("peeked"), b);
        }
    }
    for w in next {
        bytes.insert(*w, text.len());
    }
    doc.pages
        .iter()
        .map(|p| (bytes[&p.char_start], bytes[&p.char_end].max(bytes[&p.char_start])))
        .filter(|(a, b)| b > a)
        .collect()
}

/// The page (slide, sheet) whose text contains `char_pos`; positions between two go to the next.
fn span_at(doc: &ParsedDocument, char_pos: usize) -> Option<&PageSpan> {
    if doc.pages.is_empty() {
        return None;
    }
    let idx = doc.pages.partition_point(|p| p.char_end <= char_pos);
    doc.pages.get(idx).or(doc.pages.last())
}

/// Converts byte offsets to char offsets in one pass when queried in increasing order (as chunk
/// starts are), and still correctly, if slower, when not.
struct CharOffsets<'a> {
    text: &'a str,
    byte: usize,
    char: usize,
}

impl<'a> CharOffsets<'a> {
    fn new(text: &'a str) -> Self {
        CharOffsets {
            text,
            byte: 0,
            char: 0,
        }
    }

    fn char_at(&mut self, byte: usize) -> usize {
        if byte >= self.byte {
            self.char += self.text[self.byte..byte].chars().count();
        } else {
            self.char -= self.text[byte..self.byte].chars().count();
        }
        self.byte = byte;
        self.char
    }
}

/// An ATX heading line (`## Title`) in Markdown text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heading {
    /// Byte offset of the start of the heading's line.
    pub byte_offset: usize,
    /// 1 for `#` … 6 for `######`.
    pub level: usize,
    /// The heading text without hashes, closing hashes or surrounding spaces.
    pub text: String,
}

/// ATX headings in document order, skipping fenced code blocks (where `# comment` is code, not a
/// heading) and empty headings. Setext (underlined) headings are not recognised.
pub(crate) fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    // The open fence's character and length: it closes only on a run of the same char at least as long.
    let mut fence: Option<(char, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_offset = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        // Up to three spaces of indentation; four make an indented code block.
        let indent = content.len() - content.trim_start_matches(' ').len();
        if indent > 3 {
            continue;
        }
        let body = &content[indent..];

        if let Some((ch, len)) = fence {
            let run = body.len() - body.trim_start_matches(ch).len();
            if run >= len && body[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if let Some(ch) = body.chars().next().filter(|c| *c == '`' || *c == '~') {
            let run = body.len() - body.trim_start_matches(ch).len();
            // A backtick fence's info string may not contain backticks.
            if run >= 3 && !(ch == '`' && body[run..].contains('`')) {
                fence = Some((ch, run));
                continue;
            }
        }

        let hashes = body.len() - body.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) {
            continue;
        }
        let rest = &body[hashes..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            continue; // "#hashtag" is not a heading
        }
        let mut title = rest.trim();
        // An optional closing sequence of hashes, if preceded by a space: "## Title ##".
        let without_closing = title.trim_end_matches('#');
        if without_closing.is_empty() || without_closing.ends_with([' ', '\t']) {
            title = without_closing.trim_end();
        }
        if title.is_empty() {
            continue;
        }
        headings.push(Heading {
            byte_offset: line_offset,
            level: hashes,
            text: title.to_string(),
        });
    }
    headings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::PageSpan;

    /// One token per whitespace-separated word: easy to reason about in assertions.
    struct Words;
    impl TokenCounter for Words {
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    fn doc(text: &str, markdown: bool) -> ParsedDocument {
        ParsedDocument {
            title: None,
            text: text.to_string(),
            markdown,
            pages: vec![],
            attachments: Vec::new(),
        }
    }

    fn cfg(max_tokens: usize, overlap_tokens: usize) -> ChunkingConfig {
        ChunkingConfig {
            max_tokens,
            overlap_tokens,
        }
    }

    /// The invariants every chunking must keep, whatever the input.
    fn check_invariants(d: &ParsedDocument, c: &ChunkingConfig, chunks: &[Chunk]) {
        let chars: Vec<char> = d.text.chars().collect();
        for (i, ch) in chunks.iter().enumerate() {
            assert_eq!(ch.index as usize, i);
            assert!(!ch.text.is_empty());
            assert_eq!(ch.text, ch.text.trim(), "chunk {i} not trimmed");
            assert!(
                Words.count_tokens(&ch.text) <= c.max_tokens,
                "chunk {i} too big: {:?}",
                ch.text
            );
            let slice: String = chars[ch.char_start..ch.char_end].iter().collect();
            assert_eq!(slice, ch.text, "chunk {i} offsets");
        }
        for w in chunks.windows(2) {
            assert!(w[0].char_start < w[1].char_start, "chunks out of order");
        }
    }

    fn numbered_words(n: usize) -> String {
        (0..n)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn config_defaults_serde_and_validation() {
        let d = ChunkingConfig::default();
        assert_eq!((d.max_tokens, d.overlap_tokens), (250, 32));
        assert!(d.validate().is_ok());
        let parsed: ChunkingConfig = serde_json::from_str(r#"{"max_tokens": 100}"#).unwrap();
        assert_eq!(parsed, cfg(100, 32));
        assert_eq!(serde_json::from_str::<ChunkingConfig>("{}").unwrap(), d);
        assert!(serde_json::from_str::<ChunkingConfig>(r#"{"max_token": 100}"#).is_err());

        assert!(cfg(16, 0).validate().is_ok());
        assert!(cfg(8192, 4095).validate().is_ok());
        assert!(cfg(15, 0).validate().unwrap_err().contains("max_tokens"));
        assert!(cfg(8193, 0).validate().is_err());
        assert!(
            cfg(100, 50)
                .validate()
                .unwrap_err()
                .contains("overlap_tokens")
        );
        assert!(cfg(100, 49).validate().is_ok());
    }

    #[test]
    fn empty_documents_have_no_chunks() {
        for text in ["", "  \n\n\t "] {
            assert!(chunk_document(&doc(text, false), &cfg(16, 4), &Words).is_empty());
            assert!(chunk_document(&doc(text, true), &cfg(16, 4), &Words).is_empty());
        }
    }

    #[test]
    fn short_text_is_one_trimmed_chunk() {
        let chunks = chunk_document(&doc("\n\n  Hello there.  \n", false), &cfg(250, 32), &Words);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Hello there.");
        assert_eq!((chunks[0].char_start, chunks[0].char_end), (4, 16));
        assert!(chunks[0].heading_path.is_empty());
        assert_eq!(chunks[0].page, None);
    }

    #[test]
    fn chunks_respect_max_tokens_and_overlap() {
        let text = numbered_words(1000);
        for markdown in [false, true] {
            let d = doc(&text, markdown);
            let c = cfg(50, 10);
            let chunks = chunk_document(&d, &c, &Words);
            check_invariants(&d, &c, &chunks);
            assert!(chunks.len() >= 20, "{}", chunks.len());
            for w in chunks.windows(2) {
                assert!(
                    w[1].char_start < w[0].char_end,
                    "no overlap between {:?} and {:?}",
                    w[0].text,
                    w[1].text
                );
            }
            // Every word is covered.
            let covered: std::collections::HashSet<&str> = chunks
                .iter()
                .flat_map(|c| c.text.split_whitespace())
                .collect();
            assert_eq!(covered.len(), 1000);
        }
    }

    #[test]
    fn no_overlap_when_overlap_is_zero() {
        let d = doc(&numbered_words(300), false);
        let c = cfg(40, 0);
        let chunks = chunk_document(&d, &c, &Words);
        check_invariants(&d, &c, &chunks);
        for w in chunks.windows(2) {
            assert!(w[1].char_start >= w[0].char_end);
        }
    }

    #[test]
    fn char_offsets_hold_for_non_ascii_text() {
        let para = "Café crème brûlée — 日本語のテキスト 🎉🚀 naïve façade. Ünïcödé 👩‍👩‍👧 ok.";
        let text = format!("é\n\n{}", vec![para; 40].join("\n\n"));
        for markdown in [false, true] {
            let d = doc(&text, markdown);
            let c = cfg(16, 4);
            let chunks = chunk_document(&d, &c, &Words);
            assert!(chunks.len() > 10);
            check_invariants(&d, &c, &chunks);
        }
    }

    #[test]
    fn heading_paths_follow_the_markdown_structure() {
        let body = |w: &str| format!("{w} ").repeat(30);
        let text = format!(
            "Preamble text.\n\n# Guide\n\n{}\n\n## Install\n\n{}\n\n```sh\n# not a heading\n```\n\n### Linux ###\n\n{}\n\n## Usage\n\n{}\n\n# Appendix\n\n{}",
            body("intro"),
            body("install"),
            body("linux"),
            body("usage"),
            body("appendix")
        );
        let d = doc(&text, true);
        let c = cfg(20, 0);
        let chunks = chunk_document(&d, &c, &Words);
        check_invariants(&d, &c, &chunks);
        let path_of = |word: &str| {
            let ch = chunks
                .iter()
                .find(|c| c.text.contains(word))
                .unwrap_or_else(|| panic!("{word}"));
            ch.heading_path.clone()
        };
        assert_eq!(path_of("Preamble"), Vec::<String>::new());
        assert_eq!(path_of("intro"), vec!["Guide"]);
        assert_eq!(path_of("install"), vec!["Guide", "Install"]);
        assert_eq!(path_of("not a heading"), vec!["Guide", "Install"]);
        assert_eq!(path_of("linux"), vec!["Guide", "Install", "Linux"]);
        assert_eq!(path_of("usage"), vec!["Guide", "Usage"]);
        assert_eq!(path_of("appendix"), vec!["Appendix"]);
        // Markdown chunks break at headings: no chunk mixes two sections' bodies.
        for ch in &chunks {
            let kinds = ["intro", "install", "linux", "usage", "appendix"]
                .iter()
                .filter(|w| ch.text.contains(*w))
                .count();
            assert!(kinds <= 1, "{:?}", ch.text);
        }
    }

    #[test]
    fn plain_text_ignores_hash_lines() {
        let d = doc("# not markdown\n\nbody", false);
        let chunks = chunk_document(&d, &cfg(250, 32), &Words);
        assert!(chunks.iter().all(|c| c.heading_path.is_empty()));
    }

    #[test]
    fn pdf_chunks_carry_their_start_page() {
        let p1 = numbered_words(60);
        let p2 = "".to_string();
        let p3 = (0..60)
            .map(|i| format!("z{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!("{p1}\n\n{p3}");
        let n1 = p1.chars().count();
        let d = ParsedDocument {
            title: None,
            text: text.clone(),
            markdown: false,
            pages: vec![
                PageSpan {
                    page: 1,
                    char_start: 0,
                    char_end: n1,
                    ..Default::default()
                },
                PageSpan {
                    page: 2,
                    char_start: n1 + 2,
                    char_end: n1 + 2 + p2.len(),
                    ..Default::default()
                },
                PageSpan {
                    page: 3,
                    char_start: n1 + 2,
                    char_end: text.chars().count(),
                    ..Default::default()
                },
            ],
            attachments: Vec::new(),
        };
        let c = cfg(25, 5);
        let chunks = chunk_document(&d, &c, &Words);
        check_invariants(&d, &c, &chunks);
        for ch in &chunks {
            let expected = if ch.char_start < n1 { 1 } else { 3 };
            assert_eq!(ch.page, Some(expected), "{:?}", ch.text);
        }
        assert!(chunks.iter().any(|c| c.page == Some(3)));
    }

    #[test]
    fn invalid_config_is_clamped_not_panicking() {
        let d = doc(&numbered_words(100), false);
        for c in [cfg(0, 0), cfg(10, 10), cfg(10, 50)] {
            let chunks = chunk_document(&d, &c, &Words);
            assert!(!chunks.is_empty());
        }
    }

    #[test]
    fn markdown_heading_scanner() {
        let text = "# One\n  ## Two ##\n    # indented code\n#hashtag\n####### seven\n###\n~~~\n# in tilde fence\n~~~~\n###### Six #not-closing\n``` rust\n# x\n```\n## Trailing #";
        let hs: Vec<(usize, String)> = markdown_headings(text)
            .into_iter()
            .map(|h| (h.level, h.text))
            .collect();
        assert_eq!(
            hs,
            vec![
                (1, "One".to_string()),
                (2, "Two".to_string()),
                (6, "Six #not-closing".to_string()),
                (2, "Trailing".to_string()),
            ]
        );
        let offsets: Vec<usize> = markdown_headings(text)
            .iter()
            .map(|h| h.byte_offset)
            .collect();
        assert_eq!(&text[offsets[1]..offsets[1] + 4], "  ##");
    }

    #[test]
    fn parsed_fixtures_chunk_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let read = |n: &str| std::fs::read(root.join(n)).unwrap();
        let c = cfg(16, 4);

        let pdf =
            crate::parse::parse(crate::parse::SourceKind::Pdf, &read("two_pages.pdf")).unwrap();
        let chunks = chunk_document(&pdf, &c, &Words);
        check_invariants(&pdf, &c, &chunks);
        assert_eq!(chunks.first().unwrap().page, Some(1));
        assert_eq!(chunks.last().unwrap().page, Some(2));

        let docx =
            crate::parse::parse(crate::parse::SourceKind::Docx, &read("sample.docx")).unwrap();
        let chunks = chunk_document(&docx, &c, &Words);
        check_invariants(&docx, &c, &chunks);
        let compost = chunks
            .iter()
            .find(|c| c.text.contains("nutrients"))
            .unwrap();
        assert_eq!(compost.heading_path, vec!["Soil", "Compost"]);
        let table = chunks
            .iter()
            .find(|c| c.text.contains("Tomato | Daily"))
            .unwrap();
        assert_eq!(table.heading_path, vec!["Watering"]);

        let html =
            crate::parse::parse(crate::parse::SourceKind::Html, &read("sample.html")).unwrap();
        let chunks = chunk_document(&html, &c, &Words);
        check_invariants(&html, &c, &chunks);
        let espresso = chunks.iter().find(|c| c.text.contains("pressure")).unwrap();
        assert_eq!(espresso.heading_path, vec!["Brewing Coffee", "Espresso"]);
    }
}
