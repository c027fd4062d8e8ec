//! Turns uploaded bytes into text: detects the format and extracts its text, keeping structure as
//! the Markdown the chunker and the answer path read — headings as `#` lines, lists as `- ` items,
//! tables as `cell | cell` rows under their header — and where each page, slide or sheet starts.
//!
//! Text, Markdown, HTML, PDF and Word are read here; the other formats each have a module of their
//! own below: `sheet` (tables; csv, tsv), `xlsx`, `odf` (odt, ods), `pptx`, `epub`, `mail` (eml),
//! `json` (json, jsonl) and `ocr` (scanned PDF pages and images, through Tesseract).

mod epub;
mod json;
mod mail;
mod ocr;
mod odf;
mod pptx;
mod sheet;
mod xlsx;
mod zipdoc;

pub use ocr::tesseract_installed;

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::error::{Error, Result};

/// Appended to every "unsupported" error so a client learns what it may send instead.
const SUPPORTED: &str = "ragd accepts plain text (.txt), Markdown (.md), HTML (.html), PDF (.pdf, scanned ones \
     through OCR), Word (.docx), PowerPoint (.pptx), Excel (.xlsx), OpenDocument text and spreadsheets \
     (.odt, .ods), EPUB (.epub), e-mail (.eml), CSV and TSV (.csv, .tsv), JSON and JSON Lines (.json, \
     .jsonl) and images to OCR (.png, .jpg, .tif)";

const DOCX_MIME: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
const PPTX_MIME: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
const XLSX_MIME: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const ODT_MIME: &str = "application/vnd.oasis.opendocument.text";
const ODS_MIME: &str = "application/vnd.oasis.opendocument.spreadsheet";
const EPUB_MIME: &str = "application/epub+zip";

/// Cap on any XML part inflated from a .docx: a zip of a few KiB can inflate to gigabytes (zip bomb),
/// and a real document.xml is rarely above a few MiB.
const MAX_DOCX_PART_BYTES: u64 = 64 * 1024 * 1024;

/// Stack of the threads that parse uploads. html2text recurses a few times per element level;
/// with `ingest.max_nesting_depth` at most `settings::MAX_NESTING_DEPTH_LIMIT` this leaves a wide
/// margin (a test converts HTML at that depth on a stack this size). Only the pages a parse touches
/// are committed.
pub const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Width handed to html2text: it hard-wraps at this width, and wrapping would put line breaks inside
/// paragraphs and headings that the chunker would then mistake for structure.
const HTML_WRAP_WIDTH: usize = 100_000;

/// Bounds on the work parsing one document may do (`ingest.*` in the settings). Each is checked
/// before the work it bounds: bytes are counted before a parser inflates them, nesting is measured
/// before any recursive code sees the tree.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Bytes this document may inflate to (PDF streams, .docx parts).
    pub inflated_bytes: u64,
    /// The code and setting reported when `inflated_bytes` is passed: the document's own limit, or
    /// what is left of its upload's (`request_too_large`).
    pub inflated_code: &'static str,
    pub inflated_setting: &'static str,
    /// UTF-8 bytes of extracted text.
    pub text_bytes: u64,
    pub text_code: &'static str,
    pub text_setting: &'static str,
    /// Element nesting of HTML and XML.
    pub max_depth: usize,
    /// Past it, parsing stops with `parse_timeout` at its next check.
    pub deadline: Option<Instant>,
    /// How to OCR scanned pages and images; `None`: OCR is off.
    pub ocr: Option<crate::settings::OcrSettings>,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits::for_document(&crate::settings::IngestSettings::default(), None)
    }
}

impl ParseLimits {
    /// The per-document limits of `ingest`.
    pub fn for_document(ingest: &crate::settings::IngestSettings, deadline: Option<Instant>) -> Self {
        ParseLimits {
            inflated_bytes: ingest.max_document_inflated_bytes,
            inflated_code: "document_too_large",
            inflated_setting: "ingest.max_document_inflated_bytes",
            text_bytes: ingest.max_document_text_bytes,
            text_code: "document_too_large",
            text_setting: "ingest.max_document_text_bytes",
            max_depth: ingest.max_nesting_depth,
            deadline,
            ocr: None,
        }
    }

    fn check_time(&self) -> Result<()> {
        match self.deadline {
            Some(d) if Instant::now() >= d => Err(parse_timeout()),
            _ => Ok(()),
        }
    }

    fn check_text(&self, len: usize) -> Result<()> {
        if len as u64 > self.text_bytes {
            return Err(Error::limit(
                self.text_code,
                format!("the document's text is larger than {} bytes ({})", self.text_bytes, self.text_setting),
            ));
        }
        Ok(())
    }

    fn too_deep(&self, what: &str) -> Error {
        Error::limit(
            "document_too_complex",
            format!("the {what} nests elements deeper than {} levels (ingest.max_nesting_depth)", self.max_depth),
        )
    }
}

pub(crate) fn parse_timeout() -> Error {
    Error::limit("parse_timeout", "parsing the upload took longer than its limit (ingest.parse_timeout_ms)")
}

/// Counts the bytes a document inflates to against its limit.
struct Meter<'a> {
    limits: &'a ParseLimits,
    inflated: u64,
}

impl<'a> Meter<'a> {
    fn new(limits: &'a ParseLimits) -> Self {
        Meter { limits, inflated: 0 }
    }

    /// Bytes that may still be inflated.
    fn left(&self) -> u64 {
        self.limits.inflated_bytes.saturating_sub(self.inflated)
    }

    fn add(&mut self, n: u64) -> Result<()> {
        self.inflated = self.inflated.saturating_add(n);
        if self.inflated > self.limits.inflated_bytes {
            return Err(self.exceeded());
        }
        Ok(())
    }

    fn exceeded(&self) -> Error {
        Error::limit(
            self.limits.inflated_code,
            format!(
                "the document inflates to more than {} bytes ({}); refusing it (possible decompression bomb)",
                self.limits.inflated_bytes, self.limits.inflated_setting
            ),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Pptx,
    Xlsx,
    Odt,
    Ods,
    Epub,
    Eml,
    Csv,
    Tsv,
    Json,
    Jsonl,
    Image,
}

impl SourceKind {
    /// From file extension and/or declared content type, confirmed by magic bytes (%PDF-, PK zip for docx).
    /// Unknown or unsupported (e.g. .png, application/octet-stream with binary content, .exe) →
    /// Error::UnsupportedMediaType with a message listing what is supported.
    /// Text without extension/type that is valid UTF-8 → Text.
    pub fn detect(
        filename: Option<&str>,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<SourceKind> {
        // The extension wins over the content type: clients commonly send text/plain for .md and
        // application/octet-stream for everything, while the file name is what the user chose.
        let declared = filename
            .and_then(kind_from_extension)
            .or_else(|| content_type.and_then(kind_from_content_type));

        // A PDF header is unambiguous, whatever the name says (report.txt that is really a PDF).
        if is_pdf(bytes) {
            return Ok(SourceKind::Pdf);
        }
        // So are the picture formats.
        if ocr::ImageKind::sniff(bytes).is_some() {
            return Ok(SourceKind::Image);
        }
        match declared {
            // It claims a format we support but the bytes are not that format: that is a broken
            // document (422), not an unsupported type (415).
            Some(SourceKind::Pdf) => Err(Error::Unparseable(
                "the file is declared as PDF but does not start with a %PDF- header".into(),
            )),
            Some(kind) if kind.is_zip() && is_zip(bytes) => Ok(kind),
            Some(kind) if kind.is_zip() => Err(Error::Unparseable(format!(
                "the file is declared as {} but is not a zip archive \
                 (legacy .doc, .ppt, .xls and password-protected Office files are not supported)",
                kind.label()
            ))),
            Some(SourceKind::Image) => Err(Error::Unparseable(
                "the file is declared as an image but is not a PNG, JPEG or TIFF".into(),
            )),
            Some(kind) if looks_binary(bytes) => Err(Error::UnsupportedMediaType(format!(
                "the file is declared as {} but its content is binary; {SUPPORTED}",
                kind.label()
            ))),
            Some(kind) => Ok(kind),
            None => sniff(bytes),
        }
    }

    fn label(self) -> &'static str {
        match self {
            SourceKind::Text => "plain text",
            SourceKind::Markdown => "Markdown",
            SourceKind::Html => "HTML",
            SourceKind::Pdf => "PDF",
            SourceKind::Docx => "Word (.docx)",
            SourceKind::Pptx => "PowerPoint (.pptx)",
            SourceKind::Xlsx => "Excel (.xlsx)",
            SourceKind::Odt => "OpenDocument text (.odt)",
            SourceKind::Ods => "OpenDocument spreadsheet (.ods)",
            SourceKind::Epub => "EPUB (.epub)",
            SourceKind::Eml => "e-mail (.eml)",
            SourceKind::Csv => "CSV",
            SourceKind::Tsv => "TSV",
            SourceKind::Json => "JSON",
            SourceKind::Jsonl => "JSON Lines",
            SourceKind::Image => "an image",
        }
    }

    /// Formats stored in a zip archive.
    fn is_zip(self) -> bool {
        matches!(self, SourceKind::Docx | SourceKind::Pptx | SourceKind::Xlsx | SourceKind::Odt | SourceKind::Ods | SourceKind::Epub)
    }
}

/// What a `PageSpan` is a part of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanUnit {
    #[default]
    Page,
    Slide,
    Sheet,
    /// An e-book's chapter: chunked on its own, found by its heading (no number of its own).
    Chapter,
}

/// A page (slide, sheet) of the document: its 1-based number and char offsets into
/// ParsedDocument.text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageSpan {
    pub page: u32,
    pub char_start: usize,
    pub char_end: usize,
    #[serde(default)]
    pub unit: SpanUnit,
    /// A sheet's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The text of this page was read by OCR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

impl PageSpan {
    /// The span of what was appended to `text` since byte `before` (its block separator left out);
    /// `chars` is the char length of `text` up to `before`, and is moved to its end.
    fn appended(text: &str, before: usize, chars: &mut usize, page: u32, unit: SpanUnit, name: Option<String>) -> PageSpan {
        let added = &text[before..];
        let char_start = *chars + (added.len() - added.trim_start_matches('\n').len());
        *chars += added.chars().count();
        PageSpan { page, char_start, char_end: *chars, unit, name, ocr: false }
    }
}

/// Serializable so the engine can store it with the job that will chunk and embed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParsedDocument {
    /// md: first `# ` heading; html: <title> or first h1; docx: core.xml title or first Title/Heading1
    /// paragraph; pdf: Info Title if present.
    pub title: Option<String>,
    /// The extracted text.
    pub text: String,
    /// True when `text` uses markdown headings (`#`, `##`) that the chunker should honour: md, html, docx.
    pub markdown: bool,
    /// PDF pages, slides, sheets: where each one's text sits in `text`.
    pub pages: Vec<PageSpan>,
    /// An e-mail's attachments, each ingested as a document of its own (not stored with the job).
    #[serde(skip)]
    pub attachments: Vec<Attachment>,
}

/// A file inside a document (an e-mail's attachment) to be parsed as a document of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Parses with the default limits (`ParseLimits::default()`).
pub fn parse(kind: SourceKind, bytes: &[u8]) -> Result<ParsedDocument> {
    parse_limited(kind, bytes, &ParseLimits::default()).map(|(doc, _)| doc)
}

/// Parses within `limits`; returns the document and the bytes it inflated to (for an upload's
/// total). Recursion in the parsers is bounded by `limits.max_depth`: run this on a thread whose
/// stack is sized for `settings::MAX_NESTING_DEPTH_LIMIT` (the engine's parse threads are).
pub fn parse_limited(kind: SourceKind, bytes: &[u8], limits: &ParseLimits) -> Result<(ParsedDocument, u64)> {
    let mut meter = Meter::new(limits);
    let doc = match kind {
        SourceKind::Text => {
            let text = decode_text(bytes)?;
            limits.check_text(text.len())?;
            ParsedDocument { title: None, text, markdown: false, pages: vec![], attachments: Vec::new() }
        }
        SourceKind::Markdown => {
            let text = decode_text(bytes)?;
            limits.check_text(text.len())?;
            // Nesting deeper than the chunker handles quickly is flattened, as for HTML.
            let text = flatten_prefixes(&text, MAX_MARKDOWN_LINE_PREFIX_CHARS);
            ParsedDocument { title: first_h1(&text), text, markdown: true, pages: vec![], attachments: Vec::new() }
        }
        SourceKind::Html => parse_html(bytes, limits)?,
        SourceKind::Pdf => parse_pdf(bytes, &mut meter)?,
        SourceKind::Docx => parse_docx(bytes, &mut meter)?,
        SourceKind::Pptx => pptx::parse_pptx(bytes, &mut meter)?,
        SourceKind::Xlsx => xlsx::parse_xlsx(bytes, &mut meter)?,
        SourceKind::Odt => odf::parse_odt(bytes, &mut meter)?,
        SourceKind::Ods => odf::parse_ods(bytes, &mut meter)?,
        SourceKind::Epub => epub::parse_epub(bytes, &mut meter)?,
        SourceKind::Eml => mail::parse_eml(bytes, limits)?,
        SourceKind::Csv => sheet::parse_delimited(bytes, b',', limits)?,
        SourceKind::Tsv => sheet::parse_delimited(bytes, b'\t', limits)?,
        SourceKind::Json => json::parse_json(bytes, limits)?,
        SourceKind::Jsonl => json::parse_jsonl(bytes, limits)?,
        SourceKind::Image => {
            let kind = ocr::ImageKind::sniff(bytes)
                .ok_or_else(|| Error::Unparseable("the image is not a PNG, JPEG or TIFF".into()))?;
            ocr::parse_image(bytes, kind, limits)?
        }
    };
    limits.check_text(doc.text.len())?;
    Ok((doc, meter.inflated))
}

// ---------------------------------------------------------------------------------------------
// Detection helpers

fn kind_from_extension(filename: &str) -> Option<SourceKind> {
    // Only the last path component counts: "v1.2/notes" has no extension.
    let name = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (_, ext) = name.rsplit_once('.')?;
    match ext.to_ascii_lowercase().as_str() {
        "txt" | "text" => Some(SourceKind::Text),
        "md" | "markdown" | "mdown" | "mkd" => Some(SourceKind::Markdown),
        "html" | "htm" | "xhtml" => Some(SourceKind::Html),
        "pdf" => Some(SourceKind::Pdf),
        "docx" => Some(SourceKind::Docx),
        "pptx" => Some(SourceKind::Pptx),
        "xlsx" | "xlsm" => Some(SourceKind::Xlsx),
        "odt" => Some(SourceKind::Odt),
        "ods" => Some(SourceKind::Ods),
        "epub" => Some(SourceKind::Epub),
        "eml" => Some(SourceKind::Eml),
        "csv" => Some(SourceKind::Csv),
        "tsv" | "tab" => Some(SourceKind::Tsv),
        "json" => Some(SourceKind::Json),
        "jsonl" | "ndjson" => Some(SourceKind::Jsonl),
        "png" | "jpg" | "jpeg" | "tif" | "tiff" => Some(SourceKind::Image),
        _ => None,
    }
}

fn kind_from_content_type(content_type: &str) -> Option<SourceKind> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/markdown" | "text/x-markdown" => Some(SourceKind::Markdown),
        "text/html" | "application/xhtml+xml" => Some(SourceKind::Html),
        "application/pdf" | "application/x-pdf" => Some(SourceKind::Pdf),
        DOCX_MIME => Some(SourceKind::Docx),
        PPTX_MIME => Some(SourceKind::Pptx),
        XLSX_MIME => Some(SourceKind::Xlsx),
        ODT_MIME => Some(SourceKind::Odt),
        ODS_MIME => Some(SourceKind::Ods),
        EPUB_MIME => Some(SourceKind::Epub),
        "message/rfc822" => Some(SourceKind::Eml),
        "text/csv" => Some(SourceKind::Csv),
        "text/tab-separated-values" => Some(SourceKind::Tsv),
        "application/json" => Some(SourceKind::Json),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => Some(SourceKind::Jsonl),
        "image/png" | "image/jpeg" | "image/tiff" => Some(SourceKind::Image),
        // text/plain and other text: readable as plain text.
        t if t.starts_with("text/") => Some(SourceKind::Text),
        // application/octet-stream and anything else says nothing reliable: sniff the bytes.
        _ => None,
    }
}

fn is_pdf(bytes: &[u8]) -> bool {
    // The PDF spec allows junk before the header within the first 1024 bytes, and real files have it;
    // but a text file that merely mentions "%PDF-" near its start is not a PDF, so the junk must not
    // read as text.
    let head = &bytes[..bytes.len().min(1024)];
    let Some(at) = head.windows(5).position(|w| w == b"%PDF-") else {
        return false;
    };
    let junk = &head[..at];
    junk.iter().all(u8::is_ascii_whitespace)
        || junk.contains(&0)
        || std::str::from_utf8(junk).is_err()
}

fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Binary signatures of formats people upload by mistake, or NUL bytes (which text never has, except
/// UTF-16, recognised by its BOM; executables and images all have them). Only signatures that cannot
/// start a text file are listed: "MZ" or "GIF8" could.
fn looks_binary(bytes: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"PK\x03\x04",       // zip, xlsx, pptx, odt
        b"\xD0\xCF\x11\xE0", // OLE: .doc, .xls, password-protected Office files
        b"\x89PNG",          // png
        b"\xFF\xD8\xFF",     // jpeg
        b"\x1F\x8B",         // gzip
        b"\x7FELF",          // elf executable
    ];
    if MAGIC.iter().any(|m| bytes.starts_with(m)) {
        return true;
    }
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return false;
    }
    bytes[..bytes.len().min(8192)].contains(&0)
}

/// Nothing usable was declared: decide from the content alone.
fn sniff(bytes: &[u8]) -> Result<SourceKind> {
    if is_zip(bytes)
        && let Some(kind) = zip_kind(bytes)
    {
        return Ok(kind);
    }
    if !looks_binary(bytes)
        && let Ok(text) = decode_text(bytes)
    {
        let head: String = text
            .trim_start()
            .chars()
            .take(64)
            .collect::<String>()
            .to_ascii_lowercase();
        if head.starts_with("<!doctype html") || head.starts_with("<html") {
            return Ok(SourceKind::Html);
        }
        return Ok(SourceKind::Text);
    }
    Err(Error::UnsupportedMediaType(format!(
        "the file type could not be recognised; {SUPPORTED}"
    )))
}

/// Which zip-based format an archive is: by its main part (Office) or its `mimetype` entry
/// (OpenDocument, EPUB), which those formats store uncompressed as the first entry.
fn zip_kind(bytes: &[u8]) -> Option<SourceKind> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    for (part, kind) in [
        ("word/document.xml", SourceKind::Docx),
        ("ppt/presentation.xml", SourceKind::Pptx),
        ("xl/workbook.xml", SourceKind::Xlsx),
    ] {
        if z.by_name(part).is_ok() {
            return Some(kind);
        }
    }
    let mut mimetype = String::new();
    z.by_name("mimetype").ok()?.take(100).read_to_string(&mut mimetype).ok()?;
    match mimetype.trim() {
        ODT_MIME => Some(SourceKind::Odt),
        ODS_MIME => Some(SourceKind::Ods),
        EPUB_MIME => Some(SourceKind::Epub),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Text and Markdown

/// UTF-8 (BOM stripped), else UTF-16 with a BOM; never lossy, since replacement characters would be
/// indexed and embedded as if they were content. Line endings become `\n`.
fn decode_text(bytes: &[u8]) -> Result<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(utf8_err) => {
            if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
                decode_utf16(rest, u16::from_le_bytes)?
            } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
                decode_utf16(rest, u16::from_be_bytes)?
            } else {
                return Err(Error::Unparseable(format!(
                    "the text is not valid UTF-8 (invalid byte at offset {}); save it as UTF-8 and upload again",
                    utf8_err.valid_up_to()
                )));
            }
        }
    };
    Ok(normalise_newlines(text))
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String> {
    if !bytes.len().is_multiple_of(2) {
        return Err(Error::Unparseable(
            "the UTF-16 text has an odd number of bytes".into(),
        ));
    }
    let units = bytes.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<std::result::Result<String, _>>()
        .map_err(|_| Error::Unparseable("the UTF-16 text contains an unpaired surrogate".into()))
}

/// `\r\n` (Windows) and lone `\r` (classic Mac) both become `\n`, so offsets and heading detection see
/// one kind of line break.
fn normalise_newlines(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn first_h1(markdown: &str) -> Option<String> {
    crate::chunk::markdown_headings(markdown)
        .into_iter()
        .find(|h| h.level == 1)
        .map(|h| h.text)
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Elements whose text is page chrome or code rather than content.
const HTML_NOISE: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "aside", "footer", "iframe", "svg", "canvas",
    "button", "select", "object", "embed", "dialog",
];

fn parse_html(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument> {
    let source = decode_text(bytes)?;
    // html5ever's tree builder slows down with depth (scope checks walk the stack of open
    // elements) and html2text's renderer recurses once per level: measure the nesting from the
    // tags first, then on the tree (which can be a little deeper: implied tbody, tr), and refuse
    // deeper documents before either runs.
    let scan = html_scan(&source, limits.max_depth);
    if scan.depth > limits.max_depth {
        return Err(limits.too_deep("HTML"));
    }
    // What the renderer would produce before trimming, allowed up to four times the text limit
    // (trailing spaces and blank lines go before the text is measured).
    let render_allowance = limits.text_bytes.saturating_mul(4);
    if scan.rendered_bytes > render_allowance {
        return Err(Error::limit(
            limits.text_code,
            format!(
                "the HTML would render to about {} bytes (quote and list prefixes on every line, table rows padded to the table's width), \
                 more than four times the text limit ({})",
                scan.rendered_bytes, limits.text_setting
            ),
        ));
    }
    limits.check_time()?;
    let config = html2text::config::with_decorator(MarkdownDecorator).no_table_borders();
    let html_err =
        |e: html2text::Error| Error::Unparseable(format!("the HTML could not be converted: {e}"));
    let dom = config.parse_html(source.as_bytes()).map_err(html_err)?;
    limits.check_time()?;
    if dom_depth(&dom.document, limits.max_depth) > limits.max_depth {
        return Err(limits.too_deep("HTML"));
    }

    let title = find_element(&dom.document, "title").and_then(|t| {
        // html2text skips <head>, so render the title's own children as a tiny document of their own:
        // that decodes entities the same way as the body.
        let tiny = html2text::RcDom::default();
        tiny.document
            .children
            .borrow_mut()
            .extend(t.children.borrow().iter().cloned());
        let tree = config.dom_to_render_tree(&tiny).ok()?;
        let text = config.render_to_string(tree, HTML_WRAP_WIDTH).ok()?;
        non_empty(text.split_whitespace().collect::<Vec<_>>().join(" "))
    });

    prune_html_noise(&dom.document);
    let tree = config.dom_to_render_tree(&dom).map_err(html_err)?;
    let rendered = config
        .render_to_string(tree, HTML_WRAP_WIDTH)
        .map_err(html_err)?;
    limits.check_time()?;
    let text = flatten_prefixes(&tidy_lines(&rendered), MAX_HTML_LINE_PREFIX_CHARS);
    drop(rendered);
    limits.check_text(text.len())?;
    let title = title.or_else(|| first_h1(&text));
    Ok(ParsedDocument {
        title,
        text,
        markdown: true,
        pages: vec![],
        attachments: Vec::new(),
    })
}

/// Elements that never have children.
const HTML_VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
    "input", "keygen", "link", "menuitem", "meta", "param", "source", "track", "wbr",
];
/// Elements whose content is text up to their end tag, never tags.
const HTML_RAW: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript",
    "plaintext",
];
/// HTML's "special" elements: an end tag looking for an open element stops at one of them, and so
/// does a `<li>` (or `<dd>`, `<dt>`) looking for the item it ends (except at `address`, `div`, `p`).
const HTML_SPECIAL: &[&str] = &[
    "address", "applet", "area", "article", "aside", "base", "basefont", "bgsound", "blockquote",
    "body", "br", "button", "caption", "center", "col", "colgroup", "dd", "details", "dir", "div",
    "dl", "dt", "embed", "fieldset", "figcaption", "figure", "footer", "form", "frame", "frameset",
    "h1", "h2", "h3", "h4", "h5", "h6", "head", "header", "hgroup", "hr", "html", "iframe", "img",
    "input", "keygen", "li", "link", "listing", "main", "marquee", "menu", "meta", "nav", "noembed",
    "noframes", "noscript", "object", "ol", "p", "param", "plaintext", "pre", "script", "search",
    "section", "select", "source", "style", "summary", "table", "tbody", "td", "template",
    "textarea", "tfoot", "th", "thead", "title", "tr", "track", "ul", "wbr", "xmp",
];
/// Start tags that close an open `<p>` first.
const HTML_CLOSES_P: &[&str] = &[
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hgroup", "hr", "listing", "main", "menu", "nav", "ol", "p", "pre", "search",
    "section", "summary", "ul", "xmp", "li", "dd", "dt", "plaintext",
];
/// Where the search for an open `<p>` stops ("button scope").
const HTML_P_SCOPE: &[&str] = &[
    "applet", "button", "caption", "html", "marquee", "object", "table", "td", "th", "template",
];

/// What the tags of an HTML document say, read without building a tree.
#[derive(Debug, Default, PartialEq, Eq)]
struct HtmlScan {
    /// Element nesting (see `html_scan`); stops growing once past the limit.
    depth: usize,
    /// About how many bytes html2text will render before blank lines and trailing spaces are
    /// trimmed: every line carries its quote and list prefixes, and every line of a table row is
    /// padded to the table's width (the widest cell of each column). Rendering is one library call
    /// that cannot be stopped, so this is checked before it: 1 MB of `<br>` inside 240 quotes
    /// rendered to 96 MB, a 620 KB table with one wide cell to 800 MB.
    rendered_bytes: u64,
}

/// A table being read by `html_scan`: its columns' widths and its rows' heights.
#[derive(Default)]
struct TableScan {
    col_width: Vec<u64>,
    col: usize,
    cell_text: u64,
    cell_lines: u64,
    row_lines: u64,
    lines: u64,
}

impl TableScan {
    fn end_cell(&mut self) {
        if self.col_width.len() <= self.col {
            self.col_width.resize(self.col + 1, 0);
        }
        self.col_width[self.col] = self.col_width[self.col].max(self.cell_text);
        self.row_lines = self.row_lines.max(self.cell_lines);
        self.col += 1;
        (self.cell_text, self.cell_lines) = (0, 0);
    }
    fn end_row(&mut self) {
        if self.cell_text > 0 || self.cell_lines > 0 {
            self.end_cell();
        }
        self.lines += self.row_lines.max(1);
        (self.col, self.row_lines) = (0, 0);
    }
    fn width(&self) -> u64 {
        self.col_width.iter().sum::<u64>().min(HTML_WRAP_WIDTH as u64)
    }
}

/// Extra width the lines inside an element get (html2text's `> ` and list indents).
fn html_prefix(name: &str) -> u64 {
    match name {
        "blockquote" => 2,
        "ul" | "ol" | "dl" | "menu" => 2,
        "li" | "dd" | "dt" => 8,
        _ => 0,
    }
}

/// Element nesting and rendered size as the tags say them (so they bound the time html5ever may
/// take, which grows with depth, and the memory html2text's renderer may use). A start tag opens
/// an element (except void ones, and `/>` in SVG and MathML), an end tag closes up to its open
/// element unless a special element is in the way, and the implied ends html5ever applies (`<li>`,
/// `<dd>`/`<dt>`, `<td>`/`<th>`, `<tr>`, `<option>`, and blocks closing an open `<p>`) are applied.
/// Where it differs from html5ever's tree it counts more, except for a bounded few reconstructed
/// formatting elements; the tree is measured again after parsing anyway. Linear in the input, no
/// recursion; stops once the depth passes `max_depth`.
fn html_scan(html: &str, max_depth: usize) -> HtmlScan {
    let b = html.as_bytes();
    // Open elements with the prefix width their content gets.
    let mut stack: Vec<(String, u64)> = Vec::new();
    let mut tables: Vec<TableScan> = Vec::new();
    let mut scan = HtmlScan::default();
    let mut i = 0;
    let is = |list: &[&str], name: &str| list.contains(&name);
    // A line of `len` bytes of text (or an element that may start a line) at the current prefix.
    fn line(scan: &mut HtmlScan, tables: &mut [TableScan], prefix: u64, text: u64, lines: u64) {
        scan.rendered_bytes = scan.rendered_bytes.saturating_add(text.saturating_add(lines.saturating_mul(prefix + 1)));
        if let Some(t) = tables.last_mut() {
            t.cell_text = t.cell_text.saturating_add(text);
            t.cell_lines = t.cell_lines.saturating_add(lines);
        }
    }
    // Closes the open elements from `at` up, finishing the cells, rows and tables among them.
    fn close_from(stack: &mut Vec<(String, u64)>, at: usize, tables: &mut Vec<TableScan>, scan: &mut HtmlScan) {
        while stack.len() > at {
            let (name, _) = stack.pop().expect("non-empty");
            match name.as_str() {
                "td" | "th" => {
                    if let Some(t) = tables.last_mut() {
                        t.end_cell();
                    }
                }
                "tr" => {
                    if let Some(t) = tables.last_mut() {
                        t.end_row();
                    }
                }
                "table" => {
                    let Some(mut t) = tables.pop() else { continue };
                    t.end_row();
                    let (width, lines) = (t.width(), t.lines);
                    // Every line of every row is as wide as the table.
                    scan.rendered_bytes = scan.rendered_bytes.saturating_add(lines.saturating_mul(width + 1));
                    if let Some(outer) = tables.last_mut() {
                        outer.cell_text = outer.cell_text.max(width);
                        outer.cell_lines = outer.cell_lines.saturating_add(lines);
                    }
                }
                _ => {}
            }
        }
    }
    loop {
        let next = b[i..].iter().position(|&c| c == b'<').map_or(b.len(), |off| i + off);
        // The text before the tag.
        let text = &b[i..next];
        if text.iter().any(|c| !c.is_ascii_whitespace()) {
            let prefix = stack.last().map_or(0, |e| e.1);
            let breaks = text.iter().filter(|c| **c == b'\n').count() as u64;
            line(&mut scan, &mut tables, prefix, text.len() as u64, breaks + 1);
        }
        if next >= b.len() {
            break;
        }
        i = next + 1;
        let rest = &b[i..];
        if rest.starts_with(b"!--") {
            i = find(b, i + 3, b"-->").map_or(b.len(), |e| e + 3);
            continue;
        }
        if rest.first().is_some_and(|c| *c == b'!' || *c == b'?') {
            i = find(b, i, b">").map_or(b.len(), |e| e + 1);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let start = i + usize::from(closing);
        let name_len = b[start..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b':').count();
        if name_len == 0 || !b[start].is_ascii_alphabetic() {
            continue; // text such as `a < b`
        }
        let name = html[start..start + name_len].to_ascii_lowercase();
        // The end of the tag, skipping quoted attribute values (which may contain `>`).
        let mut j = start + name_len;
        let mut quote = None;
        while j < b.len() {
            match (quote, b[j]) {
                (None, b'"' | b'\'') => quote = Some(b[j]),
                (Some(q), c) if c == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            j += 1;
        }
        let self_closing = b[j - 1] == b'/';
        i = (j + 1).min(b.len());
        if closing {
            for at in (0..stack.len()).rev() {
                if stack[at].0 == name {
                    close_from(&mut stack, at, &mut tables, &mut scan);
                    break;
                }
                if is(HTML_SPECIAL, &stack[at].0) {
                    break;
                }
            }
            continue;
        }
        let prefix = stack.last().map_or(0, |e| e.1);
        if is(HTML_RAW, &name) {
            // Skip to `</name`, whatever the case (its text is rendered, if at all, as one block).
            let end = format!("</{name}");
            let to = find_ascii_ci(b, i, end.as_bytes()).unwrap_or(b.len());
            let lines = b[i..to].iter().filter(|c| **c == b'\n').count() as u64 + 1;
            line(&mut scan, &mut tables, prefix, (to - i) as u64, lines);
            i = to;
            continue;
        }
        if is(HTML_CLOSES_P, &name) {
            for at in (0..stack.len()).rev() {
                if stack[at].0 == "p" {
                    close_from(&mut stack, at, &mut tables, &mut scan);
                    break;
                }
                if is(HTML_P_SCOPE, &stack[at].0) {
                    break;
                }
            }
        }
        match name.as_str() {
            "li" | "dd" | "dt" => {
                let ends: &[&str] = if name == "li" { &["li"] } else { &["dd", "dt"] };
                for at in (0..stack.len()).rev() {
                    let open = stack[at].0.as_str();
                    if ends.contains(&open) {
                        close_from(&mut stack, at, &mut tables, &mut scan);
                        break;
                    }
                    if is(HTML_SPECIAL, open) && !matches!(open, "address" | "div" | "p") {
                        break;
                    }
                }
            }
            // A cell or row ends the open cell or row (and anything left open inside it).
            "td" | "th" | "tr" | "thead" | "tbody" | "tfoot" => {
                let ends: &[&str] = match name.as_str() {
                    "td" | "th" => &["td", "th"],
                    "tr" => &["tr", "td", "th"],
                    _ => &["thead", "tbody", "tfoot", "tr", "td", "th"],
                };
                if let Some(table) = stack.iter().rposition(|n| n.0 == "table") {
                    if let Some(at) = (table + 1..stack.len()).find(|&k| ends.contains(&stack[k].0.as_str())) {
                        close_from(&mut stack, at, &mut tables, &mut scan);
                    }
                }
            }
            "option" | "optgroup" => {
                while stack.last().is_some_and(|n| n.0 == "option" || (name == "optgroup" && n.0 == "optgroup")) {
                    let at = stack.len() - 1;
                    close_from(&mut stack, at, &mut tables, &mut scan);
                }
            }
            _ => {}
        }
        let prefix = stack.last().map_or(prefix, |e| e.1);
        // Any element may start a line.
        line(&mut scan, &mut tables, prefix, 0, 1);
        // `/>` closes an element only in SVG and MathML; `<div/>` opens a div.
        let foreign = self_closing && stack.iter().any(|n| n.0 == "svg" || n.0 == "math");
        if foreign || is(HTML_VOID, &name) {
            continue;
        }
        if name == "table" {
            tables.push(TableScan::default());
        }
        let inner = prefix + html_prefix(&name);
        stack.push((name, inner));
        scan.depth = scan.depth.max(stack.len());
        if scan.depth > max_depth {
            return scan;
        }
    }
    close_from(&mut stack, 0, &mut tables, &mut scan);
    scan
}

/// The nesting part of `html_scan`.
#[cfg(test)]
fn html_tag_depth(html: &str, max: usize) -> usize {
    html_scan(html, max).depth
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn find_ascii_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|p| p + from)
}

/// The depth of the tree under `root`, counted without recursion; stops once past `max`.
fn dom_depth(root: &html2text::Handle, max: usize) -> usize {
    let mut stack = vec![(root.clone(), 0usize)];
    let mut deepest = 0;
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest > max {
            return deepest;
        }
        stack.extend(node.children.borrow().iter().map(|c| (c.clone(), depth + 1)));
    }
    deepest
}

fn element_name(node: &html2text::Handle) -> Option<&str> {
    match &node.data {
        html2text::Element { name, .. } => Some(&*name.local),
        _ => None,
    }
}

/// Depth-first search without recursion: hostile HTML can nest deeper than the stack.
fn find_element(root: &html2text::Handle, name: &str) -> Option<html2text::Handle> {
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        if element_name(&node) == Some(name) {
            return Some(node);
        }
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
    None
}

fn is_html_noise(node: &html2text::Handle) -> bool {
    let html2text::Element { name, attrs, .. } = &node.data else {
        return false;
    };
    if HTML_NOISE.contains(&&*name.local) {
        return true;
    }
    attrs.borrow().iter().any(|a| match &*a.name.local {
        "hidden" => true,
        "aria-hidden" => a.value.eq_ignore_ascii_case("true"),
        "role" => matches!(&*a.value.to_ascii_lowercase(), "navigation" | "search"),
        _ => false,
    })
}

fn prune_html_noise(root: &html2text::Handle) {
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        node.children.borrow_mut().retain(|c| !is_html_noise(c));
        stack.extend(node.children.borrow().iter().cloned());
    }
}

/// Renders HTML as Markdown-ish text: `#` headings, `-` list items, link text without URLs or
/// footnotes (they are clutter to an embedder), image alt text.
#[derive(Clone, Debug)]
struct MarkdownDecorator;

impl html2text::render::TextDecorator for MarkdownDecorator {
    type Annotation = ();

    fn decorate_link_start(&mut self, _url: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        String::new()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        (title.to_string(), ())
    }
    fn header_prefix(&self, level: usize) -> String {
        "#".repeat(level.clamp(1, 6)) + " "
    }
    fn quote_prefix(&self) -> String {
        "> ".to_string()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".to_string()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        MarkdownDecorator
    }
    fn decorate_superscript_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_superscript_end(&self) -> String {
        String::new()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<html2text::render::TaggedLine<()>> {
        Vec::new()
    }
}

/// Longest run of indentation and quote markers (`> `) kept at the start of a line of converted
/// HTML (8 quote levels, a few list levels); the rest of a deeper prefix is dropped, the innermost
/// part kept. The chunker's Markdown parsing slows down with nesting: a 1 MB HTML list nested 120
/// deep rendered to 2 MB whose chunking took 41 s (0.17 MB and 0.7 s flattened to this).
const MAX_HTML_LINE_PREFIX_CHARS: usize = 16;
/// The same for Markdown uploads, where indentation may be code: only deeper than 32 levels.
const MAX_MARKDOWN_LINE_PREFIX_CHARS: usize = 64;

/// Flattens deep structure: each line's leading run of spaces, tabs and `>` is cut to its last
/// `max` characters.
fn flatten_prefixes(text: &str, max: usize) -> String {
    let deep = |l: &str| l.bytes().take_while(|b| matches!(b, b' ' | b'\t' | b'>')).count() > max;
    if !text.lines().any(deep) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let prefix = line.bytes().take_while(|b| matches!(b, b' ' | b'\t' | b'>')).count();
        if prefix > max {
            out.push_str(&line[prefix - max..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Strips trailing spaces (html2text pads table cells), folds runs of blank lines into one and trims
/// the whole, so extracted text has no layout whitespace to count as tokens.
fn tidy_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

fn non_empty(s: String) -> Option<String> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else if t.len() == s.len() {
        Some(s)
    } else {
        Some(t.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// PDF

fn parse_pdf(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    // lopdf inflates every stream it touches without a bound (object streams as it loads, content
    // streams per page): count what each stream inflates to, with bounded decoders, before lopdf
    // sees the file.
    pdf_stream_bytes(bytes, meter)?;
    meter.limits.check_time()?;
    // lopdf and pdf-extract index and unwrap freely on malformed input: a bad upload must fail on its
    // own, never unwind through the server. (The default panic hook still prints the message; a global
    // hook to silence it would hide real bugs elsewhere.)
    let extracted = match catch_unwind(AssertUnwindSafe(|| extract_pdf(bytes, meter))) {
        Ok(result) => result?,
        Err(panic) => {
            tracing::warn!(reason = panic_message(&*panic), "PDF parser panicked");
            return Err(Error::Unparseable(
                "the PDF is malformed and could not be read".into(),
            ));
        }
    };
    let PdfText { title, mut pages, first_failure } = extracted;

    // Pages with pictures but no text are scans: OCR those, and only those (a page with a text
    // layer is never OCR'd).
    let scanned: Vec<u32> = pages.iter().filter(|p| p.needs_ocr).map(|p| p.page).collect();
    let mut ocr_error = None;
    if !scanned.is_empty() {
        match ocr::pdf_pages(bytes, &scanned, meter.limits) {
            Ok(read) => {
                for (page, text) in read {
                    if let Some(p) = pages.iter_mut().find(|p| p.page == page) {
                        p.text = text;
                        p.ocr = true;
                    }
                }
            }
            // Out of time or over a cap: the whole document is refused, as for any limit.
            Err(e @ Error::Limit { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, pages = scanned.len(), "scanned PDF pages could not be OCR'd");
                ocr_error = Some(e);
            }
        }
    }

    let mut text = String::new();
    let mut chars = 0usize;
    let mut spans = Vec::with_capacity(pages.len());
    for p in pages {
        if !p.text.is_empty() && !text.is_empty() {
            text.push_str("\n\n");
            chars += 2;
        }
        let char_start = chars;
        chars += p.text.chars().count();
        text.push_str(&p.text);
        spans.push(PageSpan { page: p.page, char_start, char_end: chars, ocr: p.ocr, ..Default::default() });
    }
    meter.limits.check_text(text.len())?;
    if text.is_empty() {
        return Err(match (ocr_error, first_failure) {
            (Some(e), _) => e,
            (None, Some(reason)) => Error::Unparseable(format!("no text could be extracted from the PDF: {reason}")),
            (None, None) if !scanned.is_empty() => Error::Unparseable("OCR found no text on the PDF's scanned pages".into()),
            (None, None) => Error::Unparseable("the PDF has no text and no scanned pages".into()),
        });
    }
    Ok(ParsedDocument { title, text, markdown: false, pages: spans, attachments: Vec::new() })
}

/// One page's text as the PDF's text layer gives it.
struct PdfPage {
    page: u32,
    text: String,
    /// No text, but pictures: a scan, to OCR.
    needs_ocr: bool,
    ocr: bool,
}

struct PdfText {
    title: Option<String>,
    pages: Vec<PdfPage>,
    first_failure: Option<String>,
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic")
}

fn encrypted_pdf() -> Error {
    Error::Unparseable(
        "the PDF is encrypted (password-protected); remove the password and upload again".into(),
    )
}

/// The filters lopdf applies (it knows these three; a chain with any other stops there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PdfFilter {
    Flate,
    Lzw,
    Ascii85,
}

fn pdf_filter(name: &[u8]) -> Option<PdfFilter> {
    match name {
        b"FlateDecode" => Some(PdfFilter::Flate),
        b"LZWDecode" => Some(PdfFilter::Lzw),
        b"ASCII85Decode" => Some(PdfFilter::Ascii85),
        _ => None,
    }
}

/// Adds to `meter` what every stream of the file inflates to, found in the raw bytes (`<< ...
/// /Filter ... >> stream ... endstream`), so object streams (inflated by lopdf while it loads)
/// are counted too. Each stream is decoded with bounded decoders, stopping as soon as the
/// document's allowance is passed. An encrypted file's streams do not decode here; they are
/// counted again after decryption (`pdf_loaded_stream_bytes`).
fn pdf_stream_bytes(bytes: &[u8], meter: &mut Meter<'_>) -> Result<()> {
    let mut from = 0;
    while let Some(at) = find(bytes, from, b"stream") {
        from = at + 6;
        if at >= 3 && &bytes[at - 3..at] == b"end" {
            continue;
        }
        // The data starts after the end of line that follows the keyword.
        let data_start = match bytes.get(at + 6..at + 8) {
            Some([b'\r', b'\n', ..]) => at + 8,
            Some([b'\n' | b'\r', ..]) => at + 7,
            _ => continue,
        };
        // The stream's dictionary: back to the `obj` keyword that opens the object.
        let dict_from = at.saturating_sub(64 * 1024);
        let dict_start = rfind(&bytes[dict_from..at], b"obj").map_or(dict_from, |p| dict_from + p);
        let filters = pdf_filters_in(&bytes[dict_start..at]);
        let data_end = find(bytes, data_start, b"endstream").unwrap_or(bytes.len());
        from = data_end.max(from);
        if filters.is_empty() {
            continue;
        }
        let used = decode_bounded(&filters, &bytes[data_start..data_end], meter.left()).map_err(|_| meter.exceeded())?;
        meter.add(used)?;
        meter.limits.check_time()?;
    }
    Ok(())
}

/// The same count over a loaded (decrypted) document's streams.
fn pdf_loaded_stream_bytes(doc: &pdf_extract::Document, meter: &mut Meter<'_>) -> Result<()> {
    for object in doc.objects.values() {
        let Ok(stream) = object.as_stream() else { continue };
        let Ok(names) = stream.filters() else { continue };
        let filters: Vec<PdfFilter> = names.iter().map_while(|n| pdf_filter(n)).collect();
        if filters.is_empty() {
            continue;
        }
        let used = decode_bounded(&filters, &stream.content, meter.left()).map_err(|_| meter.exceeded())?;
        meter.add(used)?;
        meter.limits.check_time()?;
    }
    Ok(())
}

/// The filter chain named directly in a dictionary's text (`/Filter /FlateDecode` or
/// `/Filter [/ASCII85Decode /FlateDecode]`), up to the first filter lopdf does not apply.
fn pdf_filters_in(dict: &[u8]) -> Vec<PdfFilter> {
    let Some(at) = find(dict, 0, b"/Filter") else { return Vec::new() };
    let mut rest = &dict[at + 7..];
    while rest.first().is_some_and(|c| c.is_ascii_whitespace()) {
        rest = &rest[1..];
    }
    let names: &[u8] = match rest.first() {
        Some(b'[') => &rest[1..find(rest, 0, b"]").unwrap_or(rest.len())],
        Some(b'/') => {
            let end = rest[1..].iter().position(|c| c.is_ascii_whitespace() || b"/[]<>()".contains(c)).map_or(rest.len(), |p| p + 1);
            &rest[..end]
        }
        _ => return Vec::new(),
    };
    names
        .split(|c| *c == b'/' || c.is_ascii_whitespace())
        .filter(|n| !n.is_empty())
        .map_while(pdf_filter)
        .collect()
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The stream would inflate past the allowance.
struct OverBudget;

/// Decodes `data` through `filters` and returns the size of the final output, never producing more
/// than `budget` bytes at any step (intermediate outputs are kept, the final one only counted).
/// Decoding errors end a step with what it produced so far, as lopdf does.
fn decode_bounded(filters: &[PdfFilter], data: &[u8], budget: u64) -> std::result::Result<u64, OverBudget> {
    let mut input: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(data);
    for (i, filter) in filters.iter().enumerate() {
        let last = i + 1 == filters.len();
        let mut out = BoundedSink { kept: (!last).then(Vec::new), len: 0, budget };
        match filter {
            PdfFilter::Flate => {
                if !input.is_empty() {
                    let mut decoder = flate2::read::ZlibDecoder::new(&input[..]);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match decoder.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => out.push(&buf[..n])?,
                        }
                    }
                }
            }
            PdfFilter::Lzw => {
                // As lopdf decodes it (MSB first, 8-bit symbols, early change by default).
                let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
                let mut buf = vec![0u8; 64 * 1024];
                let mut rest = &input[..];
                loop {
                    let r = decoder.decode_bytes(rest, &mut buf);
                    out.push(&buf[..r.consumed_out])?;
                    rest = &rest[r.consumed_in..];
                    match r.status {
                        Ok(weezl::LzwStatus::Ok) if r.consumed_in > 0 || r.consumed_out > 0 => {}
                        _ => break,
                    }
                }
            }
            PdfFilter::Ascii85 => {
                // At most 4 bytes per input byte (`z`); decoded for real only when another filter follows.
                if last {
                    out.len = (input.len() as u64).saturating_mul(4);
                    if out.len > budget {
                        return Err(OverBudget);
                    }
                } else {
                    out.push(&decode_ascii85(&input))?;
                }
            }
        }
        if last {
            return Ok(out.len);
        }
        input = std::borrow::Cow::Owned(out.kept.unwrap_or_default());
    }
    Ok(0)
}

struct BoundedSink {
    kept: Option<Vec<u8>>,
    len: u64,
    budget: u64,
}

impl BoundedSink {
    fn push(&mut self, bytes: &[u8]) -> std::result::Result<(), OverBudget> {
        self.len += bytes.len() as u64;
        if self.len > self.budget {
            return Err(OverBudget);
        }
        if let Some(k) = self.kept.as_mut() {
            k.extend_from_slice(bytes);
        }
        Ok(())
    }
}

/// ASCII85 as lopdf reads it: whitespace skipped, `z` for four zero bytes, `~>` ends the data.
fn decode_ascii85(input: &[u8]) -> Vec<u8> {
    let data = input.strip_suffix(b"~>").unwrap_or(input);
    let mut out = Vec::with_capacity(data.len());
    let (mut group, mut count) = (0u32, 0usize);
    for &c in data {
        match c {
            b'z' if count == 0 => out.extend_from_slice(&[0; 4]),
            c if c.is_ascii_whitespace() => {}
            b'!'..=b'u' => {
                group = group.wrapping_mul(85).wrapping_add(u32::from(c - b'!'));
                count += 1;
                if count == 5 {
                    out.extend_from_slice(&group.to_be_bytes());
                    (group, count) = (0, 0);
                }
            }
            _ => break,
        }
    }
    if count > 0 {
        for _ in count..5 {
            group = group.wrapping_mul(85).wrapping_add(84);
        }
        out.extend_from_slice(&group.to_be_bytes()[..count - 1]);
    }
    out
}

fn extract_pdf(bytes: &[u8], meter: &mut Meter<'_>) -> Result<PdfText> {
    // lopdf decrypts on load when the user password is empty (owner-only protection, readable by any
    // viewer); a document still encrypted after loading needs a password we do not have.
    let doc = pdf_extract::Document::load_mem(bytes).map_err(|e| {
        if matches!(e, pdf_extract::Error::Decryption(_))
            || bytes.windows(8).any(|w| w == b"/Encrypt")
        {
            encrypted_pdf()
        } else {
            Error::Unparseable(format!("the PDF is corrupt or truncated: {e}"))
        }
    })?;
    if doc.is_encrypted() {
        return Err(encrypted_pdf());
    }
    if bytes.windows(8).any(|w| w == b"/Encrypt") {
        // Decrypted on load: the raw scan saw ciphertext, so count the streams again as they are now.
        pdf_loaded_stream_bytes(&doc, meter)?;
    }

    let title = pdf_title(&doc);
    let page_objects = doc.get_pages();
    let page_numbers: Vec<u32> = page_objects.keys().copied().collect();
    if page_numbers.is_empty() {
        return Err(Error::Unparseable("the PDF has no pages".into()));
    }

    pdf_xobject_work(&doc, &page_objects, meter)?;

    let mut text_bytes = 0usize;
    let mut pages = Vec::with_capacity(page_numbers.len());
    let mut first_failure: Option<String> = None;
    for page in page_numbers {
        meter.limits.check_time()?;
        meter.limits.check_text(text_bytes)?;
        // One page at a time, each guarded: a broken page costs that page's text, not the document's.
        let looped = page_objects.get(&page).is_some_and(|&id| !parent_chain_ends(&doc, id));
        let extracted = if looped {
            Ok(Err("the page's /Parent chain loops".to_owned()))
        } else {
            catch_unwind(AssertUnwindSafe(|| pdf_page_text(&doc, page)))
        };
        let raw = match extracted {
            Ok(Ok(raw)) => raw,
            Ok(Err(reason)) => {
                tracing::warn!(page, %reason, "could not extract text from PDF page");
                first_failure.get_or_insert(reason);
                String::new()
            }
            Err(panic) => {
                let reason = panic_message(&*panic).to_string();
                tracing::warn!(page, %reason, "PDF parser panicked on page");
                first_failure.get_or_insert(reason);
                String::new()
            }
        };
        let page_text = tidy_lines(&normalise_newlines(raw.replace('\0', "")));
        text_bytes += page_text.len();
        let needs_ocr = page_text.is_empty() && page_objects.get(&page).is_some_and(|&id| page_has_pictures(&doc, id));
        pages.push(PdfPage { page, text: page_text, needs_ocr, ocr: false });
    }
    Ok(PdfText { title, pages, first_failure })
}

/// Whether a page draws pictures (image XObjects, or forms, which may hold them): a page with
/// pictures and no text is a scan.
fn page_has_pictures(doc: &pdf_extract::Document, page: pdf_extract::ObjectId) -> bool {
    let Some(xobjects) = page_resources(doc, page).and_then(|r| pdf_dict(doc, r.get(b"XObject").ok())) else {
        return false;
    };
    xobjects.iter().any(|(_, obj)| {
        let stream = match obj {
            pdf_extract::Object::Reference(id) => doc.get_object(*id).ok().and_then(|o| o.as_stream().ok()),
            other => other.as_stream().ok(),
        };
        stream.is_some_and(|s| {
            matches!(s.dict.get(b"Subtype").ok().and_then(|v| v.as_name().ok()), Some(b"Image") | Some(b"Form"))
        })
    })
}

/// Deepest nesting of XObjects (a form that runs a form that ...) pdf-extract is allowed to walk.
const MAX_XOBJECT_NESTING: usize = 32;

/// pdf-extract runs an XObject's content each time a `Do` names it, inflating its stream again
/// each time, and recurses into the XObjects that content names: a form that names itself recursed
/// without end (a stack overflow, which aborts the process), and forms naming each other a few
/// times per level make exponential work. This walks what pdf-extract will walk, page by page:
/// a cycle or nesting past `MAX_XOBJECT_NESTING` is `document_too_complex`, and every inflation
/// (at least 256 bytes a visit) counts against the document's allowance.
fn pdf_xobject_work(
    doc: &pdf_extract::Document,
    pages: &std::collections::BTreeMap<u32, pdf_extract::ObjectId>,
    meter: &mut Meter<'_>,
) -> Result<()> {
    for &page_id in pages.values() {
        if !parent_chain_ends(doc, page_id) {
            continue;
        }
        let Ok(content) = doc.get_page_content(page_id) else { continue };
        let resources = page_resources(doc, page_id);
        walk_xobjects(doc, &content, resources, &mut Vec::new(), meter)?;
    }
    Ok(())
}

/// The dictionary an object is, or refers to.
fn pdf_dict<'a>(doc: &'a pdf_extract::Document, object: Option<&'a pdf_extract::Object>) -> Option<&'a pdf_extract::Dictionary> {
    match object? {
        pdf_extract::Object::Dictionary(d) => Some(d),
        pdf_extract::Object::Reference(id) => doc.get_dictionary(*id).ok(),
        _ => None,
    }
}

/// A page's resources, inherited from its ancestors when it has none (as pdf-extract looks them up).
fn page_resources(doc: &pdf_extract::Document, page: pdf_extract::ObjectId) -> Option<&pdf_extract::Dictionary> {
    let mut node = doc.get_dictionary(page).ok()?;
    for _ in 0..64 {
        if let Some(r) = pdf_dict(doc, node.get(b"Resources").ok()) {
            return Some(r);
        }
        node = doc.get_dictionary(node.get(b"Parent").ok()?.as_reference().ok()?).ok()?;
    }
    None
}

/// Most tokens (operators and operands) one content stream may hold: lopdf's content decoder,
/// which pdf-extract runs on every page and every form it runs, took 550 bytes of memory per
/// operation (16 MiB of `q Q` decoded to 8.4 million operations in 4.6 GB and 17 s). A page of
/// text holds a few thousand.
pub const MAX_PDF_CONTENT_TOKENS: usize = 500_000;

/// The tokens of a content stream, roughly: whitespace separates, a `/` starts a name, and
/// delimiters stand alone. Strings are not parsed (a string of words counts as several tokens),
/// so this counts at least as many tokens as lopdf will decode.
fn pdf_content_tokens(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < content.len() && content[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= content.len() {
            return None;
        }
        let start = i;
        i += 1;
        if !b"()<>[]{}".contains(&content[start]) {
            while i < content.len() && !content[i].is_ascii_whitespace() && !b"()<>[]{}/".contains(&content[i]) {
                i += 1;
            }
        }
        Some(&content[start..i])
    })
}

/// The names a content stream runs with `Do`, after checking it is small enough to decode.
fn pdf_runs(content: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut runs = Vec::new();
    let mut previous: &[u8] = b"";
    for (n, token) in pdf_content_tokens(content).enumerate() {
        if n >= MAX_PDF_CONTENT_TOKENS {
            return Err(Error::limit(
                "document_too_complex",
                format!("a page or form of the PDF holds more than {MAX_PDF_CONTENT_TOKENS} operations and operands"),
            ));
        }
        if token == b"Do" && previous.len() > 1 && previous[0] == b'/' {
            runs.push(previous[1..].to_vec());
        }
        previous = token;
    }
    Ok(runs)
}

fn walk_xobjects<'a>(
    doc: &'a pdf_extract::Document,
    content: &[u8],
    resources: Option<&'a pdf_extract::Dictionary>,
    path: &mut Vec<pdf_extract::ObjectId>,
    meter: &mut Meter<'_>,
) -> Result<()> {
    meter.limits.check_time()?;
    let runs = pdf_runs(content)?;
    if runs.is_empty() {
        return Ok(());
    }
    let Some(xobjects) = pdf_dict(doc, resources.and_then(|r| r.get(b"XObject").ok())) else { return Ok(()) };
    for name in &runs {
        let Some(id) = xobjects.get(name).ok().and_then(|o| o.as_reference().ok()) else { continue };
        let Ok(stream) = doc.get_object(id).and_then(|o| o.as_stream()) else { continue };
        if path.contains(&id) || path.len() >= MAX_XOBJECT_NESTING {
            return Err(Error::limit(
                "document_too_complex",
                format!("the PDF's forms run each other in a cycle or more than {MAX_XOBJECT_NESTING} levels deep"),
            ));
        }
        let filters: Vec<PdfFilter> = stream.filters().map(|f| f.iter().map_while(|n| pdf_filter(n)).collect()).unwrap_or_default();
        let size = if filters.is_empty() {
            stream.content.len() as u64
        } else {
            decode_bounded(&filters, &stream.content, meter.left()).map_err(|_| meter.exceeded())?
        };
        meter.add(size.max(256))?;
        // Within the allowance just counted, so inflating it here is bounded.
        let inner = if filters.is_empty() { stream.content.clone() } else { stream.decompressed_content().unwrap_or_else(|_| stream.content.clone()) };
        let inner_resources = pdf_dict(doc, stream.dict.get(b"Resources").ok()).or(resources);
        path.push(id);
        let walked = walk_xobjects(doc, &inner, inner_resources, path, meter);
        path.pop();
        walked?;
    }
    Ok(())
}

/// Whether following /Parent from a page object ends. pdf-extract follows it without a bound when it
/// looks up an inherited attribute, so a page that is its own ancestor would hang it (found by
/// `fuzz/`). The page tree is at most a few levels deep in real files.
fn parent_chain_ends(doc: &pdf_extract::Document, page: (u32, u16)) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut id = page;
    loop {
        if !seen.insert(id) || seen.len() > 64 {
            return false;
        }
        let Ok(dict) = doc.get_dictionary(id) else { return true };
        match dict.get(b"Parent").and_then(|p| p.as_reference()) {
            Ok(parent) => id = parent,
            Err(_) => return true,
        }
    }
}

fn pdf_page_text(doc: &pdf_extract::Document, page: u32) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut sink = pdf_extract::PlainTextOutput::new(&mut out);
    pdf_extract::output_doc_page(doc, &mut sink, page).map_err(|e| e.to_string())?;
    Ok(out)
}

fn pdf_title(doc: &pdf_extract::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let (_, info) = doc.dereference(info).ok()?;
    let title = info.as_dict().ok()?.get(b"Title").ok()?;
    let (_, title) = doc.dereference(title).ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    non_empty(title.replace('\0', ""))
}

// ---------------------------------------------------------------------------------------------
// DOCX

fn parse_docx(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::Unparseable(format!("the .docx is not a readable zip archive: {e}")))?;
    let document =
        read_zip_part(&mut zip, "word/document.xml", MAX_DOCX_PART_BYTES, meter)?.ok_or_else(|| {
            Error::Unparseable("not a Word document: the .docx has no word/document.xml".into())
        })?;
    // Styles and metadata only refine the result: when they are missing or broken, carry on
    // without (but a part past the document's allowance refuses the document).
    let optional = |r: Result<Option<Vec<u8>>>| match r {
        Err(e @ Error::Limit { .. }) => Err(e),
        r => Ok(r.ok().flatten()),
    };
    let styles = optional(read_zip_part(&mut zip, "word/styles.xml", MAX_DOCX_PART_BYTES, meter))?
        .map(|x| docx_styles(&x))
        .unwrap_or_default();
    let core_title = optional(read_zip_part(&mut zip, "docProps/core.xml", MAX_DOCX_PART_BYTES, meter))?
        .and_then(|x| docx_core_title(&x));

    let body = docx_body(&document, &styles, meter.limits).map_err(|e| match e {
        DocxError::Limit(e) => e,
        DocxError::Xml(e) => Error::Unparseable(format!("word/document.xml is not well-formed XML: {e}")),
    })?;
    let title = core_title.or(body.first_title).or(body.first_heading1);
    Ok(ParsedDocument {
        title,
        text: body.text,
        markdown: true,
        pages: vec![],
        attachments: Vec::new(),
    })
}

fn read_zip_part(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
    cap: u64,
    meter: &mut Meter<'_>,
) -> Result<Option<Vec<u8>>> {
    let file = match zip.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => {
            return Err(Error::Unparseable(format!(
                "could not open {name} in the archive: {e}"
            )));
        }
    };
    // The part may use what is left of the document's allowance, and no more than its own cap.
    let allowed = cap.min(meter.left());
    let mut buf = Vec::new();
    // Read one byte past the allowance to tell "exactly at it" from "over it"; never trust the
    // size the archive declares.
    file.take(allowed + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Unparseable(format!("could not inflate {name} in the archive: {e}")))?;
    if buf.len() as u64 > cap {
        return Err(Error::Unparseable(format!(
            "{name} inflates to more than {} MiB; refusing it (possible zip bomb)",
            cap.div_ceil(1024 * 1024)
        )));
    }
    meter.add(buf.len() as u64)?;
    Ok(Some(buf))
}

/// What a paragraph style means to us: a title, or a heading of level 1–6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StyleRole {
    Title,
    Heading(usize),
}

impl StyleRole {
    fn level(self) -> usize {
        match self {
            StyleRole::Title => 1,
            StyleRole::Heading(n) => n,
        }
    }
}

/// Style ids are what paragraphs reference, but Word localises them ("berschrift1" in German);
/// the style's `w:name` ("heading 1", "Title") and outline level are stable, so map id → role from
/// styles.xml and fall back to the English ids when it is absent.
type StyleMap = std::collections::HashMap<String, StyleRole>;

fn role_from_style_id(id: &str) -> Option<StyleRole> {
    if id.eq_ignore_ascii_case("title") {
        return Some(StyleRole::Title);
    }
    let n = id
        .strip_prefix("Heading")
        .or_else(|| id.strip_prefix("heading"))?
        .parse::<usize>()
        .ok()?;
    (1..=6).contains(&n).then_some(StyleRole::Heading(n))
}

fn role_from_style_name(name: &str) -> Option<StyleRole> {
    let name = name.to_ascii_lowercase();
    if name == "title" {
        return Some(StyleRole::Title);
    }
    let n = name
        .strip_prefix("heading ")?
        .trim()
        .parse::<usize>()
        .ok()?;
    (1..=6).contains(&n).then_some(StyleRole::Heading(n))
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.try_get_attribute(key)
        .ok()
        .flatten()
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.into_owned())
}

fn docx_styles(xml: &[u8]) -> StyleMap {
    let mut map = StyleMap::new();
    let mut reader = Reader::from_reader(xml);
    // (style id, role from its name, role from its outline level) of the w:style being read.
    let mut current: Option<(String, Option<StyleRole>, Option<StyleRole>)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.name().as_ref() {
                b"w:style" => {
                    let paragraph = attr(&e, b"w:type").is_none_or(|t| t == "paragraph");
                    current = match attr(&e, b"w:styleId") {
                        Some(id) if paragraph => Some((id, None, None)),
                        _ => None,
                    };
                }
                b"w:name" => {
                    if let Some((_, by_name, _)) = current.as_mut() {
                        *by_name = attr(&e, b"w:val").as_deref().and_then(role_from_style_name);
                    }
                }
                b"w:outlineLvl" => {
                    if let Some((_, _, by_outline)) = current.as_mut() {
                        let level = attr(&e, b"w:val").and_then(|v| v.parse::<usize>().ok());
                        *by_outline = level.filter(|l| *l < 6).map(|l| StyleRole::Heading(l + 1));
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.name().as_ref() == b"w:style" => {
                if let Some((id, by_name, by_outline)) = current.take()
                    && let Some(role) = by_name.or(by_outline).or_else(|| role_from_style_id(&id))
                {
                    map.insert(id, role);
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    map
}

fn docx_core_title(xml: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(xml);
    let mut in_title = false;
    let mut title = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == b"title" => in_title = true,
            Event::End(e) if e.local_name().as_ref() == b"title" => break,
            Event::Text(t) if in_title => title.push_str(&t.unescape().ok()?),
            Event::Eof => break,
            _ => {}
        }
    }
    non_empty(title)
}

#[derive(Default)]
struct DocxTable {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: Option<String>,
}

impl DocxTable {
    fn render(&self, row_sep: &str) -> String {
        self.rows
            .iter()
            .map(|r| r.join(" | "))
            .filter(|r| !r.trim().is_empty())
            .collect::<Vec<_>>()
            .join(row_sep)
    }
}

struct DocxBody {
    text: String,
    first_title: Option<String>,
    first_heading1: Option<String>,
}

/// Walks word/document.xml. Paragraphs become blocks separated by a blank line (so the Markdown
/// splitter sees paragraph boundaries), heading paragraphs become `#` lines, table rows become lines
/// of cells joined by ` | `.
enum DocxError {
    Xml(quick_xml::Error),
    Limit(Error),
}

impl From<quick_xml::Error> for DocxError {
    fn from(e: quick_xml::Error) -> Self {
        DocxError::Xml(e)
    }
}

fn docx_body(xml: &[u8], styles: &StyleMap, limits: &ParseLimits) -> std::result::Result<DocxBody, DocxError> {
    let mut reader = Reader::from_reader(xml);
    let mut out = String::new();
    // Element nesting (quick-xml does not recurse, but paragraphs and tables nest in our stacks
    // and a document this deep is no Word document) and a clock check every few thousand events.
    let mut depth = 0usize;
    let mut events = 0u32;
    let mut first_title = None;
    let mut first_heading1 = None;
    // Paragraphs nest (a text box inside a run of an outer paragraph), so keep a stack.
    let mut paragraphs: Vec<(String, Option<StyleRole>)> = Vec::new();
    let mut tables: Vec<DocxTable> = Vec::new();
    let mut in_text = false;
    let mut run_depth = 0usize;

    loop {
        let event = reader.read_event()?;
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) {
            limits.check_time().map_err(DocxError::Limit)?;
            limits.check_text(out.len()).map_err(DocxError::Limit)?;
        }
        match &event {
            Event::Start(_) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(DocxError::Limit(limits.too_deep(".docx XML")));
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let empty = matches!(event, Event::Empty(_));
                match e.name().as_ref() {
                    b"w:p" if !empty => paragraphs.push((String::new(), None)),
                    b"w:pStyle" => {
                        if let Some((_, role)) = paragraphs.last_mut() {
                            *role = attr(e, b"w:val").and_then(|id| {
                                styles.get(&id).copied().or_else(|| role_from_style_id(&id))
                            });
                        }
                    }
                    b"w:r" if !empty => run_depth += 1,
                    b"w:t" if !empty => in_text = true,
                    // w:tab also appears in paragraph properties as a tab stop: only count it in a run.
                    b"w:tab" if run_depth > 0 => push_para(&mut paragraphs, "\t"),
                    b"w:br" | b"w:cr" if run_depth > 0 => push_para(&mut paragraphs, "\n"),
                    b"w:noBreakHyphen" if run_depth > 0 => push_para(&mut paragraphs, "-"),
                    b"w:tbl" if !empty => tables.push(DocxTable::default()),
                    b"w:tc" if !empty => {
                        if let Some(t) = tables.last_mut() {
                            t.cell = Some(String::new());
                        }
                    }
                    // Alternate content carries the same text twice (modern + legacy rendering); keep
                    // the first (mc:Choice) and skip the fallback.
                    b"mc:Fallback" if !empty => {
                        let end = e.to_end().into_owned();
                        reader.read_to_end(end.name())?;
                        depth = depth.saturating_sub(1);
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_text => {
                let text = t.unescape()?;
                push_para(&mut paragraphs, &text);
            }
            Event::End(e) => match e.name().as_ref() {
                b"w:t" => in_text = false,
                b"w:r" => run_depth = run_depth.saturating_sub(1),
                b"w:p" => {
                    let Some((text, role)) = paragraphs.pop() else {
                        continue;
                    };
                    let text = text.trim_end();
                    if let Some(cell) = tables.last_mut().and_then(|t| t.cell.as_mut()) {
                        // A cell's paragraphs share its one line of the row.
                        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
                        if !flat.is_empty() {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&flat);
                        }
                    } else if text.trim().is_empty() {
                        // Empty paragraphs are spacing in Word, not content.
                    } else if let Some(role) = role {
                        let heading = text.split_whitespace().collect::<Vec<_>>().join(" ");
                        let first = match role {
                            StyleRole::Title => &mut first_title,
                            StyleRole::Heading(1) => &mut first_heading1,
                            StyleRole::Heading(_) => &mut None,
                        };
                        first.get_or_insert_with(|| heading.clone());
                        push_block(&mut out, &format!("{} {heading}", "#".repeat(role.level())));
                    } else {
                        push_block(&mut out, text.trim_start_matches('\n'));
                    }
                }
                b"w:tc" => {
                    if let Some(t) = tables.last_mut() {
                        let cell = t.cell.take().unwrap_or_default();
                        t.row.push(cell);
                    }
                }
                b"w:tr" => {
                    if let Some(t) = tables.last_mut() {
                        let row = std::mem::take(&mut t.row);
                        t.rows.push(row);
                    }
                }
                b"w:tbl" => {
                    let Some(table) = tables.pop() else { continue };
                    if let Some(cell) = tables.last_mut().and_then(|t| t.cell.as_mut()) {
                        // A table nested in a cell must stay on the outer row's line.
                        let inner = table.render("; ");
                        if !inner.is_empty() {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&inner);
                        }
                    } else {
                        let rendered = table.render("\n");
                        if !rendered.is_empty() {
                            push_block(&mut out, &rendered);
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(DocxBody {
        text: out,
        first_title,
        first_heading1,
    })
}

fn push_para(paragraphs: &mut [(String, Option<StyleRole>)], s: &str) {
    if let Some((text, _)) = paragraphs.last_mut() {
        text.push_str(s);
    }
}

fn push_block(out: &mut String, block: &str) {
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(block);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn unparseable(result: Result<ParsedDocument>) -> String {
        match result {
            Err(Error::Unparseable(msg)) => msg,
            other => panic!("expected Unparseable, got {other:?}"),
        }
    }

    /// A zip holding the given (name, content) entries, deflated.
    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn docx_xml(body: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"
  xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>{body}</w:body></w:document>"#
        )
        .into_bytes()
    }

    #[test]
    fn detect_by_extension_content_type_and_magic() {
        let d = SourceKind::detect;
        assert_eq!(d(Some("notes.txt"), None, b"hi").unwrap(), SourceKind::Text);
        assert_eq!(
            d(Some("README.MD"), Some("text/plain"), b"# hi").unwrap(),
            SourceKind::Markdown
        );
        assert_eq!(
            d(None, Some("text/markdown; charset=utf-8"), b"# hi").unwrap(),
            SourceKind::Markdown
        );
        assert_eq!(
            d(Some("page.htm"), None, b"<p>x</p>").unwrap(),
            SourceKind::Html
        );
        assert_eq!(
            d(None, Some("text/html"), b"<p>x</p>").unwrap(),
            SourceKind::Html
        );
        assert_eq!(d(None, Some("text/csv"), b"a,b").unwrap(), SourceKind::Csv);
        assert_eq!(d(None, Some("text/x-log"), b"a,b").unwrap(), SourceKind::Text);
        assert_eq!(
            d(None, None, "plain é text".as_bytes()).unwrap(),
            SourceKind::Text
        );
        assert_eq!(
            d(None, Some("application/octet-stream"), b"plain").unwrap(),
            SourceKind::Text
        );
        assert_eq!(
            d(None, None, b"\n<!DOCTYPE html><html></html>").unwrap(),
            SourceKind::Html
        );
        // Text that merely starts like a binary signature is still text.
        assert_eq!(
            d(Some("a.txt"), None, b"MZ is not an executable").unwrap(),
            SourceKind::Text
        );
        assert_eq!(
            d(None, None, b"The header %PDF-1.7 starts a PDF.").unwrap(),
            SourceKind::Text
        );
        // Magic bytes beat a wrong name or type.
        let pdf = fixture("two_pages.pdf");
        assert_eq!(
            d(Some("report.pdf"), Some("application/pdf"), &pdf).unwrap(),
            SourceKind::Pdf
        );
        assert_eq!(
            d(Some("report.txt"), Some("text/plain"), &pdf).unwrap(),
            SourceKind::Pdf
        );
        assert_eq!(
            d(None, Some("application/octet-stream"), &pdf).unwrap(),
            SourceKind::Pdf
        );
        let docx = fixture("sample.docx");
        assert_eq!(d(Some("a.docx"), None, &docx).unwrap(), SourceKind::Docx);
        assert_eq!(d(None, Some(DOCX_MIME), &docx).unwrap(), SourceKind::Docx);
        assert_eq!(
            d(None, Some("application/octet-stream"), &docx).unwrap(),
            SourceKind::Docx
        );
    }

    #[test]
    fn detect_rejects_unsupported_types_listing_what_is_supported() {
        let gif = b"GIF89a\x01\0\x01\0\0\0\0";
        let exe = b"MZ\x90\0\x03\0\0\0\x04\0";
        let zip = zip_of(&[("data/readme.bin", b"\0\0")]);
        for (name, ctype, bytes) in [
            (Some("photo.gif"), None, &gif[..]),
            (None, Some("image/gif"), &gif[..]),
            (
                None,
                Some("application/octet-stream"),
                &b"\0\x01\x02\xff\xfe binary"[..],
            ),
            (Some("setup.exe"), None, &exe[..]),
            (
                Some("setup.exe"),
                Some("application/octet-stream"),
                &exe[..],
            ),
            (Some("archive.zip"), None, &zip[..]),
            (None, None, &zip[..]),
            (Some("photo.txt"), Some("text/plain"), &b"\x7FELF\x02\x01\x01\0"[..]),
            (None, None, &b"\xff\xff\xff not utf8"[..]),
        ] {
            match SourceKind::detect(name, ctype, bytes) {
                Err(Error::UnsupportedMediaType(msg)) => {
                    assert!(
                        msg.contains(".pdf") && msg.contains(".docx") && msg.contains(".md") && msg.contains(".xlsx"),
                        "{msg}"
                    )
                }
                other => panic!("{name:?} {ctype:?}: expected UnsupportedMediaType, got {other:?}"),
            }
        }
    }

    #[test]
    fn detect_new_formats_by_extension_content_type_and_zip_contents() {
        let d = SourceKind::detect;
        let xlsx = zip_of(&[("xl/workbook.xml", b"<workbook/>")]);
        let pptx = zip_of(&[("ppt/presentation.xml", b"<p/>")]);
        let odt = zip_of(&[("mimetype", ODT_MIME.as_bytes()), ("content.xml", b"<x/>")]);
        let epub = zip_of(&[("mimetype", EPUB_MIME.as_bytes())]);
        assert_eq!(d(Some("q3.xlsx"), None, &xlsx).unwrap(), SourceKind::Xlsx);
        assert_eq!(d(None, None, &xlsx).unwrap(), SourceKind::Xlsx);
        assert_eq!(d(None, Some("application/octet-stream"), &pptx).unwrap(), SourceKind::Pptx);
        assert_eq!(d(None, None, &odt).unwrap(), SourceKind::Odt);
        assert_eq!(d(Some("book.epub"), None, &epub).unwrap(), SourceKind::Epub);
        assert_eq!(d(None, Some(EPUB_MIME), &epub).unwrap(), SourceKind::Epub);
        assert_eq!(d(Some("mail.eml"), None, b"From: a@b\r\n\r\nhi").unwrap(), SourceKind::Eml);
        assert_eq!(d(None, Some("message/rfc822"), b"From: a@b\r\n\r\nhi").unwrap(), SourceKind::Eml);
        assert_eq!(d(Some("rows.tsv"), None, b"a\tb").unwrap(), SourceKind::Tsv);
        assert_eq!(d(Some("data.json"), Some("text/plain"), b"{}").unwrap(), SourceKind::Json);
        assert_eq!(d(Some("data.jsonl"), None, b"{}").unwrap(), SourceKind::Jsonl);
        // Pictures by their signature, whatever the name says.
        assert_eq!(d(Some("scan.txt"), None, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap(), SourceKind::Image);
        assert_eq!(d(None, None, b"\xFF\xD8\xFF\xE0\0\x10JFIF").unwrap(), SourceKind::Image);
        assert_eq!(d(Some("page.tif"), None, b"II*\0\x08\0\0\0").unwrap(), SourceKind::Image);
        // A declared zip-based format whose bytes are not a zip, or a picture that is none.
        assert!(matches!(d(Some("q3.xlsx"), None, b"Region,Q3"), Err(Error::Unparseable(m)) if m.contains("Excel")));
        assert!(matches!(d(Some("photo.png"), None, b"not a picture"), Err(Error::Unparseable(_))));
    }

    /// Every fixture made by its format's own tool (tests/fixtures/formats/make.py) parses, with its
    /// structure kept.
    #[test]
    fn format_fixtures_keep_their_structure() {
        let f = |name: &str| fixture(&format!("formats/{name}"));
        let deck = parse(SourceKind::Pptx, &f("deck.pptx")).unwrap();
        assert_eq!(deck.pages.iter().map(|p| (p.unit, p.page)).collect::<Vec<_>>(), vec![(SpanUnit::Slide, 1), (SpanUnit::Slide, 2), (SpanUnit::Slide, 3)]);
        assert!(deck.text.contains("# Budget by phase") && deck.text.contains("Phase | Cost | Finish"), "{}", deck.text);
        assert!(deck.text.contains("Speaker notes: ") && deck.text.contains("the ventilation contractor wants a second survey"), "{}", deck.text);
        for name in ["sales.xlsx", "sales_inline.xlsx"] {
            let book = parse(SourceKind::Xlsx, &f(name)).unwrap();
            let names: Vec<_> = book.pages.iter().map(|p| p.name.clone().unwrap_or_default()).collect();
            assert_eq!(names, vec!["Notes", "Regional sales"], "{name}");
            assert!(book.text.contains("# Regional sales\n\nRegion | Q1 | Q2 | Q3 | Q4\n"), "{name}: {}", book.text);
            assert!(book.text.contains("Coastal North |") && book.text.contains("| 918400 |"), "{name}: {}", book.text);
        }
        let ods = parse(SourceKind::Ods, &f("sales.ods")).unwrap();
        assert!(ods.text.contains("Region | Q1 | Q2 | Q3 | Q4") && ods.text.contains("918400"), "{}", ods.text);
        let odt = parse(SourceKind::Odt, &f("handbook.odt")).unwrap();
        assert_eq!(odt.title.as_deref(), Some("Volunteer Handbook"));
        assert!(odt.text.contains("\n## ") && odt.text.contains("- A pencil for the tally sheets"), "{}", odt.text);
        let book = parse(SourceKind::Epub, &f("guide.epub")).unwrap();
        assert_eq!(book.title.as_deref(), Some("Field Guide to Lichens"));
        let chapters: Vec<&str> = book.text.lines().filter(|l| l.starts_with("# ")).collect();
        assert!(chapters.contains(&"# Crustose lichens") && chapters.contains(&"# Fruticose lichens"), "{}", book.text);
        let mail = parse(SourceKind::Eml, &f("message.eml")).unwrap();
        assert_eq!(mail.title.as_deref(), Some("Quarterly boiler inspection"));
        assert!(mail.text.contains("the pilot light flickered twice during testing"), "{}", mail.text);
        let names: Vec<&str> = mail.attachments.iter().map(|a| a.filename.as_str()).collect();
        assert_eq!(names, vec!["readings.csv", "summary.txt"]);
        let nested = parse(SourceKind::Eml, &f("message_nested.eml")).unwrap();
        assert_eq!(nested.attachments.len(), 1);
        assert_eq!(nested.attachments[0].content_type.as_deref(), Some("message/rfc822"));
        let csv = parse(SourceKind::Csv, &f("stations.csv")).unwrap();
        assert!(csv.text.lines().count() >= 7 && csv.text.lines().all(|l| l.contains(" | ")), "{}", csv.text);
        for (kind, name) in [(SourceKind::Tsv, "stations.tsv"), (SourceKind::Json, "records.json"), (SourceKind::Jsonl, "records.jsonl")] {
            assert!(!parse(kind, &f(name)).unwrap().text.is_empty(), "{name}");
        }
    }

    /// OCR: a page with a text layer keeps it; only the scanned page is read from its picture.
    #[test]
    fn scanned_pages_are_read_by_ocr_and_text_pages_are_not() {
        if !tesseract_installed() {
            eprintln!("SKIPPED: tesseract is not installed (scripts/test.sh installs tesseract-ocr and poppler-utils)");
            return;
        }
        let limits = ParseLimits { ocr: Some(crate::settings::OcrSettings::default()), ..ParseLimits::default() };
        let f = |name: &str| fixture(&format!("formats/{name}"));
        let (doc, _) = parse_limited(SourceKind::Pdf, &f("mixed.pdf"), &limits).unwrap();
        assert_eq!(doc.pages.iter().map(|p| (p.page, p.ocr)).collect::<Vec<_>>(), vec![(1, false), (2, true)]);
        let lower = doc.text.to_lowercase();
        assert!(lower.contains("evening sailings are reduced in winter") && lower.contains("fog horn tests happen every thursday"), "{}", doc.text);
        let (doc, _) = parse_limited(SourceKind::Pdf, &f("scanned_two_pages.pdf"), &limits).unwrap();
        assert!(doc.pages.iter().all(|p| p.ocr) && doc.pages.len() == 2);
        let (img, _) = parse_limited(SourceKind::Image, &f("scan.png"), &limits).unwrap();
        assert!(img.text.to_lowercase().contains("fresh rye loaves sell out before nine"), "{}", img.text);
        // OCR off: a scan-only PDF is refused and says why.
        let off = ParseLimits::default();
        let e = parse_limited(SourceKind::Pdf, &f("scanned_two_pages.pdf"), &off).unwrap_err();
        assert!(e.to_string().contains("ocr.enabled"), "{e}");
    }

    #[test]
    fn detect_reports_a_declared_format_with_wrong_bytes_as_unparseable() {
        assert!(matches!(
            SourceKind::detect(Some("x.pdf"), None, b"hello"),
            Err(Error::Unparseable(_))
        ));
        assert!(matches!(
            SourceKind::detect(Some("x.docx"), None, b"hello"),
            Err(Error::Unparseable(_))
        ));
        let ole = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";
        assert!(matches!(
            SourceKind::detect(None, Some(DOCX_MIME), ole),
            Err(Error::Unparseable(_))
        ));
    }

    #[test]
    fn text_strips_bom_and_normalises_newlines() {
        let doc = parse(SourceKind::Text, b"\xEF\xBB\xBFone\r\ntwo\rthree\n").unwrap();
        assert_eq!(doc.text, "one\ntwo\nthree\n");
        assert!(!doc.markdown);
        assert_eq!(doc.title, None);
        assert!(doc.pages.is_empty());
    }

    #[test]
    fn text_decodes_utf16_with_bom_and_rejects_other_invalid_utf8() {
        let mut le = vec![0xFF, 0xFE];
        le.extend("héllo 日本\r\n".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(parse(SourceKind::Text, &le).unwrap().text, "héllo 日本\n");
        let mut be = vec![0xFE, 0xFF];
        be.extend("héllo 🎉".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(parse(SourceKind::Text, &be).unwrap().text, "héllo 🎉");

        let msg = unparseable(parse(SourceKind::Text, b"caf\xe9 latin-1"));
        assert!(msg.contains("UTF-8"), "{msg}");
        unparseable(parse(SourceKind::Text, &[0xFF, 0xFE, 0x41]));
        unparseable(parse(
            SourceKind::Text,
            &[0xFF, 0xFE, 0x00, 0xD8, 0x41, 0x00],
        )); // lone surrogate
    }

    #[test]
    fn markdown_title_is_the_first_h1_outside_code() {
        let md = "intro\n```\n# not a heading\n```\n## Sub\n# Real Title #\n# Second\n";
        let doc = parse(SourceKind::Markdown, md.as_bytes()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Real Title"));
        assert!(doc.markdown);
        assert_eq!(doc.text, md);
    }

    #[test]
    fn html_keeps_headings_and_drops_noise() {
        let doc = parse(SourceKind::Html, &fixture("sample.html")).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Coffee Brewing & Tea"));
        assert!(doc.markdown);
        let t = &doc.text;
        assert!(t.starts_with("# Brewing Coffee\n"), "{t}");
        assert!(t.contains("\n## French Press\n"), "{t}");
        assert!(t.contains("\n## Espresso\n"), "{t}");
        assert!(t.contains("filtered water"), "{t}");
        assert!(t.contains("four minutes"), "{t}");
        assert!(t.contains("- Coarse grind"), "{t}");
        for noise in [
            "SCRIPT_NOISE",
            "NAV_NOISE",
            "FOOTER_NOISE",
            "font-family",
            "http",
            "[1]",
        ] {
            assert!(!t.contains(noise), "{noise} leaked into {t}");
        }
    }

    #[test]
    fn html_without_title_uses_first_h1_and_does_not_wrap() {
        let long = "word ".repeat(200);
        let html = format!(
            "<html><body><p>pre</p><h1>Main &lt;Topic&gt;</h1><p>{long}</p><table><tr><td>a</td><td>b</td></tr></table></body></html>"
        );
        let doc = parse(SourceKind::Html, html.as_bytes()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Main <Topic>"));
        assert!(doc.text.contains(long.trim()), "{}", doc.text);
    }

    #[test]
    fn pdf_text_is_split_by_page() {
        let doc = parse(SourceKind::Pdf, &fixture("two_pages.pdf")).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Quarterly Report"));
        assert!(!doc.markdown);
        assert_eq!(
            doc.pages.iter().map(|p| p.page).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let chars: Vec<char> = doc.text.chars().collect();
        let page = |i: usize| {
            chars[doc.pages[i].char_start..doc.pages[i].char_end]
                .iter()
                .collect::<String>()
        };
        assert!(
            page(0).contains("Page one talks about apples."),
            "{:?}",
            page(0)
        );
        assert!(page(0).contains("grow on trees"), "{:?}", page(0));
        assert!(!page(0).contains("bananas"));
        assert!(
            page(1).contains("Page two talks about bananas."),
            "{:?}",
            page(1)
        );
        assert_eq!(doc.pages[1].char_end, chars.len());
    }

    #[test]
    fn encrypted_corrupt_and_scanned_pdfs_are_unparseable() {
        let msg = unparseable(parse(SourceKind::Pdf, &fixture("encrypted.pdf")));
        assert!(msg.contains("encrypted"), "{msg}");
        unparseable(parse(SourceKind::Pdf, &fixture("corrupt.pdf")));
        // Vector drawings and no text: nothing to OCR either.
        let msg = unparseable(parse(SourceKind::Pdf, &fixture("scanned.pdf")));
        assert!(msg.contains("no text"), "{msg}");
    }

    #[test]
    fn malformed_pdfs_never_panic() {
        let good = fixture("two_pages.pdf");
        let mut cases: Vec<Vec<u8>> = vec![
            b"%PDF-1.4".to_vec(),
            b"%PDF-1.4\ntrailer\n<< /Root 1 0 R >>\n%%EOF".to_vec(),
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\nxref\n0 2\n0000000000 65535 f \n0000000009 00000 n \ntrailer\n<< /Root 1 0 R /Size 2 >>\nstartxref\n58\n%%EOF".to_vec(),
        ];
        for cut in (16..good.len()).step_by(97) {
            cases.push(good[..cut].to_vec());
        }
        // Flip bytes throughout a valid file.
        for at in (0..good.len()).step_by(53) {
            let mut bad = good.clone();
            bad[at] ^= 0x5A;
            cases.push(bad);
        }
        for bytes in cases {
            // Either outcome is fine; a panic escaping would fail the test.
            let _ = parse(SourceKind::Pdf, &bytes);
        }
    }

    #[test]
    fn docx_headings_paragraphs_and_tables() {
        let doc = parse(SourceKind::Docx, &fixture("sample.docx")).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Gardening Guide"));
        assert!(doc.markdown);
        assert_eq!(
            doc.text,
            "# Gardening Guide\n\n\
             An introduction to growing vegetables at home.\n\n\
             # Soil\n\n\
             Good soil is loose.\nIt drains well.\tAlways.\n\n\
             ## Compost\n\n\
             Compost feeds the soil with nutrients.\n\n\
             # Watering\n\n\
             Plant | Water\nTomato | Daily\nCactus | Monthly\n\n\
             Water early in the morning."
        );
    }

    #[test]
    fn docx_title_falls_back_to_styles_and_skips_fallback_content() {
        let body = r#"<w:p><w:pPr><w:pStyle w:val="berschrift1"/><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr>
            <w:r><w:t xml:space="preserve">Kapitel &amp; Eins </w:t></w:r></w:p>
            <w:p><w:r><w:t>Text</w:t></w:r><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>!</w:t></mc:Choice>
            <mc:Fallback><w:t>DUPLICATE</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
            <w:p/><w:p><w:pPr><w:pStyle w:val="Heading3"/></w:pPr><w:r><w:t>Deep</w:t></w:r></w:p>"#;
        let styles = br#"<?xml version="1.0"?><w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
            <w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>
            <w:style w:type="character" w:styleId="Heading3"><w:name w:val="Heading 3 Char"/></w:style></w:styles>"#;
        let bytes = zip_of(&[
            ("word/document.xml", &docx_xml(body)),
            ("word/styles.xml", styles),
        ]);
        let doc = parse(SourceKind::Docx, &bytes).unwrap();
        assert_eq!(doc.text, "# Kapitel & Eins\n\nText!\n\n### Deep");
        assert_eq!(doc.title.as_deref(), Some("Kapitel & Eins"));
    }

    #[test]
    fn broken_docx_is_unparseable() {
        unparseable(parse(SourceKind::Docx, b"PK\x03\x04 not really a zip"));
        let msg = unparseable(parse(SourceKind::Docx, &zip_of(&[("other.xml", b"<a/>")])));
        assert!(msg.contains("word/document.xml"), "{msg}");
        let msg = unparseable(parse(
            SourceKind::Docx,
            &zip_of(&[("word/document.xml", b"<w:document><w:body></w:p>")]),
        ));
        assert!(msg.contains("XML"), "{msg}");
    }

    /// Found by `fuzz/` (parse_pdf): pdf-extract panics (`deref`) on page 1 of this mutated fixture.
    /// The panic must not escape `parse`, and the readable page must survive. (libFuzzer aborts on
    /// any panic, even one ragd catches, so this input is kept here rather than in the fuzz corpus.)
    #[test]
    fn a_pdf_page_that_panics_pdf_extract_is_skipped_not_fatal() {
        let bytes = fixture("fuzz-pdf-deref-panic.pdf");
        let doc = parse(SourceKind::Pdf, &bytes).expect("the readable page is kept");
        assert!(doc.text.contains("Bananas are yellow"), "{doc:?}");
        assert_eq!(doc.pages.len(), 2);
    }

    /// Found by `fuzz/` (parse_pdf, a 10 s timeout): page 1's /Parent is itself, and pdf-extract's
    /// inherited-attribute lookup followed it forever. That page is now skipped with a reason.
    #[test]
    fn a_pdf_page_that_is_its_own_parent_does_not_hang_the_parser() {
        let bytes = fixture("fuzz-pdf-parent-cycle.pdf");
        let t = std::time::Instant::now();
        let result = parse(SourceKind::Pdf, &bytes);
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "took {:?}", t.elapsed());
        // Its other page has no text either, so the upload is refused (422) and says why.
        let msg = unparseable(result);
        assert!(msg.contains("/Parent chain loops"), "{msg}");
    }

    #[test]
    fn docx_parts_are_capped_against_zip_bombs() {
        let big = docx_xml(&"<w:p><w:r><w:t>aaaaaaaaaaaaaaaa</w:t></w:r></w:p>".repeat(100));
        let bytes = zip_of(&[("word/document.xml", &big)]);
        let mut zip = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
        let cap = big.len() as u64;
        let limits = ParseLimits::default();
        assert_eq!(
            read_zip_part(&mut zip, "word/document.xml", cap, &mut Meter::new(&limits))
                .unwrap()
                .unwrap(),
            big
        );
        match read_zip_part(&mut zip, "word/document.xml", cap - 1, &mut Meter::new(&limits)) {
            Err(Error::Unparseable(msg)) => assert!(msg.contains("zip bomb"), "{msg}"),
            other => panic!("expected Unparseable, got {other:?}"),
        }
    }

    // ---- limits on hostile documents (issue 18) ----------------------------------------------

    fn limit_code(result: Result<ParsedDocument>) -> &'static str {
        match result {
            Err(Error::Limit { code, .. }) => code,
            other => panic!("expected a limit error, got {:?}", other.map(|d| d.text.len())),
        }
    }

    /// On a thread with the engine's parse stack, as the server parses.
    fn parse_on_big_stack(kind: SourceKind, bytes: Vec<u8>, limits: ParseLimits) -> Result<ParsedDocument> {
        std::thread::Builder::new()
            .stack_size(PARSE_STACK_BYTES)
            .spawn(move || parse_limited(kind, &bytes, &limits).map(|(d, _)| d))
            .unwrap()
            .join()
            .unwrap()
    }

    fn small_limits() -> ParseLimits {
        ParseLimits { inflated_bytes: 1 << 20, text_bytes: 1 << 20, ..ParseLimits::default() }
    }

    #[test]
    fn deeply_nested_html_is_refused_before_it_is_parsed_or_rendered() {
        for html in ["<ul><li>".repeat(50_000) + "deep", "<blockquote>".repeat(100_000) + "deep", "<div>".repeat(300) + "x"] {
            let t = Instant::now();
            assert_eq!(limit_code(parse(SourceKind::Html, html.as_bytes())), "document_too_complex");
            assert!(t.elapsed() < std::time::Duration::from_secs(2), "took {:?}", t.elapsed());
        }
    }

    #[test]
    fn html_as_deep_as_the_limit_is_converted() {
        let depth = ParseLimits::default().max_depth - 8;
        let html = format!("{}deep text{}", "<blockquote><ul><li>".repeat(depth / 3), "</li></ul></blockquote>".repeat(depth / 3));
        let doc = parse_on_big_stack(SourceKind::Html, html.into_bytes(), ParseLimits::default()).unwrap();
        assert!(doc.text.contains("deep text"), "{}", doc.text);
        // At the largest depth the settings allow, on the parse thread's stack.
        let max = crate::settings::MAX_NESTING_DEPTH_LIMIT;
        let limits = ParseLimits { max_depth: max, ..ParseLimits::default() };
        let html = "<ul><li>".repeat((max - 8) / 2) + "deepest";
        let doc = parse_on_big_stack(SourceKind::Html, html.into_bytes(), limits).unwrap();
        assert!(doc.text.contains("deepest"));
    }

    #[test]
    fn html_that_would_render_far_larger_than_it_is_is_refused_before_rendering() {
        // Measured before this check: 1 MB -> 96 MB of text in 21 s; 620 KB -> 800 MB in 61 s.
        let quotes = format!("{}{}", "<blockquote>".repeat(240), "x<br>".repeat(200_000));
        let rows: String = (0..20_000)
            .map(|i| if i == 0 { format!("<tr><td>{}</td><td>b</td></tr>", "w ".repeat(20_000)) } else { "<tr><td>a</td><td>b</td></tr>".to_owned() })
            .collect();
        let table = format!("<table>{rows}</table>");
        for html in [quotes, table] {
            let t = Instant::now();
            assert_eq!(limit_code(parse(SourceKind::Html, html.as_bytes())), "document_too_large");
            assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
        }
        // Ordinary tables, lists and quotes are estimated near their size.
        let table: String = (0..2_000).map(|i| format!("<tr><td>row {i}</td><td>some value</td><td>{}</td></tr>", "x".repeat(i % 50))).collect();
        let html = format!("<h1>T</h1><table>{table}</table><ul>{}</ul><blockquote><p>quoted</p></blockquote>", "<li>item</li>".repeat(1000));
        let scan = html_scan(&html, 256);
        assert!(scan.rendered_bytes < 4 * html.len() as u64, "{} for {}", scan.rendered_bytes, html.len());
    }

    #[test]
    fn deep_prefixes_are_flattened_to_their_innermost_part() {
        let deep = format!("{}- item\nshallow\n{}quoted", " ".repeat(200), "> ".repeat(100));
        let flat = flatten_prefixes(&deep, MAX_MARKDOWN_LINE_PREFIX_CHARS);
        let lines: Vec<&str> = flat.lines().collect();
        assert_eq!(lines[0], format!("{}- item", " ".repeat(MAX_MARKDOWN_LINE_PREFIX_CHARS)));
        assert_eq!(lines[1], "shallow");
        assert_eq!(lines[2], format!("{}quoted", "> ".repeat(MAX_MARKDOWN_LINE_PREFIX_CHARS / 2)));
        assert_eq!(flatten_prefixes("  a\n> b", 1), " a\n b");
        assert_eq!(flatten_prefixes("  a\n> b", 2), "  a\n> b");
        // HTML nested deeper than that comes out as deep as the chunker handles quickly.
        let html = "<blockquote>".repeat(100) + "inner";
        let doc = parse(SourceKind::Html, html.as_bytes()).unwrap();
        assert_eq!(doc.text, format!("{}inner", "> ".repeat(MAX_HTML_LINE_PREFIX_CHARS / 2)));
        // A Markdown upload too, so the chunker never sees nesting deeper than that.
        let doc = parse(SourceKind::Markdown, deep.as_bytes()).unwrap();
        assert_eq!(doc.text, flat);
    }

    #[test]
    fn the_tag_scan_applies_implied_ends_and_skips_raw_text() {
        assert_eq!(html_tag_depth("<ul><li>a<li>b<li>c</ul>", 100), 2);
        assert_eq!(html_tag_depth(&"<p>para ".repeat(10_000), 100), 1);
        assert_eq!(html_tag_depth(&format!("<table>{}</table>", "<tr><td>a<td>b".repeat(5_000)), 100), 3);
        assert_eq!(html_tag_depth("<div a='>' b=\"<div>\"><br><img src=x/><script><div><div></script></div>", 100), 1);
        assert_eq!(html_tag_depth("<!-- <div><div> --><x-y>1 < 2</x-y>", 100), 1);
        assert_eq!(html_tag_depth(&format!("<svg>{}</svg>", "<path d='M0 0'/>".repeat(1_000)), 100), 1);
        assert_eq!(html_tag_depth(&"<div/>".repeat(1_000), 100), 101);
        // Blocks close an open <p>; an end tag does not close past a special element.
        assert_eq!(html_tag_depth(&"<div><p>x".repeat(50), 1_000), 51);
        assert_eq!(html_tag_depth(&"<span><div></span>".repeat(50), 1_000), 100);
        assert_eq!(html_tag_depth(&"<span>".repeat(1_000), 10), 11);
    }

    /// A PDF file's bytes with one object per stream (enough for the raw scan, which runs first).
    fn pdf_with_stream(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n1 0 obj\n".to_vec();
        pdf.extend_from_slice(format!("<< /Length {} {dict} >>\nstream\n", data.len()).as_bytes());
        pdf.extend_from_slice(data);
        pdf.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
        pdf
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn pdf_streams_that_inflate_past_the_limit_are_refused_before_lopdf_inflates_them() {
        let bomb = zlib(&vec![b' '; 4 << 20]);
        assert!(bomb.len() < 64 << 10);
        let pdf = pdf_with_stream("/Filter /FlateDecode", &bomb);
        assert_eq!(limit_code(parse_limited(SourceKind::Pdf, &pdf, &small_limits()).map(|r| r.0)), "document_too_large");
        // Also behind ASCII85, and as an object stream.
        let a85 = ascii85(&bomb);
        let pdf = pdf_with_stream("/Type /ObjStm /N 1 /First 4 /Filter [/ASCII85Decode /FlateDecode]", &a85);
        assert_eq!(limit_code(parse_limited(SourceKind::Pdf, &pdf, &small_limits()).map(|r| r.0)), "document_too_large");
        // Within the limit it is only counted.
        let mut meter_limits = small_limits();
        meter_limits.inflated_bytes = 8 << 20;
        let mut meter = Meter::new(&meter_limits);
        pdf_stream_bytes(&pdf_with_stream("/Filter/FlateDecode", &bomb), &mut meter).unwrap();
        assert_eq!(meter.inflated, 4 << 20);
    }

    #[test]
    fn lzw_streams_are_counted_with_a_bounded_decoder() {
        let mut enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let data = enc.encode(&vec![b'x'; 3 << 20]).unwrap();
        assert!(data.len() < 64 << 10, "{}", data.len());
        assert_eq!(decode_bounded(&[PdfFilter::Lzw], &data, 8 << 20).ok(), Some(3 << 20));
        assert!(decode_bounded(&[PdfFilter::Lzw], &data, 1 << 20).is_err());
    }

    fn ascii85(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(4) {
            let mut group = [0u8; 4];
            group[..chunk.len()].copy_from_slice(chunk);
            let mut n = u32::from_be_bytes(group);
            let mut digits = [0u8; 5];
            for d in digits.iter_mut().rev() {
                *d = (n % 85) as u8 + b'!';
                n /= 85;
            }
            out.extend_from_slice(&digits[..chunk.len() + 1]);
        }
        out.extend_from_slice(b"~>");
        out
    }

    #[test]
    fn ascii85_decodes_as_lopdf_does() {
        let data = b"hello, bounded world!";
        assert_eq!(decode_ascii85(&ascii85(data)), data);
    }

    #[test]
    fn docx_parts_share_one_allowance_and_xml_depth_is_capped() {
        let part = docx_xml(&"<w:p><w:r><w:t>aaaaaaaaaaaaaaaa</w:t></w:r></w:p>".repeat(20_000));
        assert!(part.len() > 600_000 && part.len() < 1 << 20);
        let bytes = zip_of(&[("word/document.xml", &part), ("word/styles.xml", &part)]);
        assert_eq!(limit_code(parse_limited(SourceKind::Docx, &bytes, &small_limits()).map(|r| r.0)), "document_too_large");
        let deep = docx_xml(&format!("{}<w:p><w:r><w:t>x</w:t></w:r></w:p>{}", "<w:sdt>".repeat(400), "</w:sdt>".repeat(400)));
        let bytes = zip_of(&[("word/document.xml", &deep)]);
        assert_eq!(limit_code(parse(SourceKind::Docx, &bytes)), "document_too_complex");
    }

    #[test]
    fn extracted_text_and_parse_time_are_capped() {
        let limits = ParseLimits { text_bytes: 1000, ..ParseLimits::default() };
        assert_eq!(limit_code(parse_limited(SourceKind::Text, &[b'a'; 1001], &limits).map(|r| r.0)), "document_too_large");
        assert!(parse_limited(SourceKind::Text, &[b'a'; 1000], &limits).is_ok());
        let html = format!("<p>{}</p>", "word ".repeat(400));
        assert_eq!(limit_code(parse_limited(SourceKind::Html, html.as_bytes(), &limits).map(|r| r.0)), "document_too_large");
        let late = ParseLimits { deadline: Some(Instant::now()), ..ParseLimits::default() };
        assert_eq!(limit_code(parse_limited(SourceKind::Html, b"<p>x</p>", &late).map(|r| r.0)), "parse_timeout");
    }

    /// A loadable PDF made of these objects (numbered from 1; object 1 the catalog), with a
    /// correct cross-reference table.
    fn pdf_of(objects: &[String]) -> Vec<u8> {
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            pdf.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
        }
        let xref = pdf.len();
        pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for o in offsets {
            pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        pdf.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
        pdf
    }

    fn stream(dict: &str, content: &str) -> String {
        format!("<< {dict} /Length {} >>\nstream\n{content}\nendstream", content.len())
    }

    #[test]
    fn pdf_content_with_too_many_operations_is_refused_before_lopdf_decodes_it() {
        let tokens: Vec<&[u8]> = pdf_content_tokens(b"q 1 0 0 1 0 0 cm/F1 12 Tf[(a)-3(b)]TJ /X Do").collect();
        assert_eq!(tokens.len(), 23, "{:?}", tokens.iter().map(|t| String::from_utf8_lossy(t)).collect::<Vec<_>>());
        assert_eq!(pdf_runs(b"/Im1 Do q /Fm2 Do Q (Do) Tj").unwrap(), vec![b"Im1".to_vec(), b"Fm2".to_vec()]);
        let page = "q Q\n".repeat(MAX_PDF_CONTENT_TOKENS / 2 + 1);
        assert_eq!(pdf_runs(page.as_bytes()).unwrap_err().code(), "document_too_complex");
        // As an upload: a few KiB of compressed content; lopdf would have taken about 300 MB.
        let bytes = pdf_of(&[
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_owned(),
            stream("", &page),
        ]);
        assert_eq!(limit_code(parse_on_big_stack(SourceKind::Pdf, bytes, ParseLimits::default())), "document_too_complex");
    }

    /// Found while bounding PDFs: pdf-extract runs a form each time `Do` names it and recursed
    /// into a form that names itself until the stack overflowed (the process aborted).
    #[test]
    fn pdf_forms_that_run_themselves_or_each_other_exponentially_are_refused() {
        let text = "BT /F1 12 Tf 72 712 Td (Hello) Tj ET";
        let head = |xobjects: &str| {
            vec![
                "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
                "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
                format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> /XObject << {xobjects} >> >> >>"),
                stream("", &format!("{text} /X Do")),
            ]
        };
        let mut cycle = head("/X 5 0 R");
        cycle.push(stream("/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /X 5 0 R >> >>", "/X Do"));
        let bytes = pdf_of(&cycle);
        assert_eq!(limit_code(parse_on_big_stack(SourceKind::Pdf, bytes, ParseLimits::default())), "document_too_complex");

        // Twenty forms, each running the next twice: a million runs from a few KiB.
        let mut doubling = head("/X 5 0 R");
        for i in 0..20 {
            let next = if i < 19 { format!("/Resources << /XObject << /X {} 0 R >> >>", 6 + i) } else { String::new() };
            let body = if i < 19 { "/X Do /X Do" } else { "0 0 m" };
            doubling.push(stream(&format!("/Type /XObject /Subtype /Form /BBox [0 0 1 1] {next}"), body));
        }
        let t = Instant::now();
        assert_eq!(limit_code(parse_on_big_stack(SourceKind::Pdf, pdf_of(&doubling), ParseLimits::default())), "document_too_large");
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());

        // A form run once, as real documents do, is fine.
        let mut once = head("/X 5 0 R");
        once.push(stream("/Type /XObject /Subtype /Form /BBox [0 0 1 1]", "0 0 m"));
        let doc = parse_on_big_stack(SourceKind::Pdf, pdf_of(&once), ParseLimits::default()).unwrap();
        assert!(doc.text.contains("Hello"), "{}", doc.text);
    }
}
