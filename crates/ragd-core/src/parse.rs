//! PLACEHOLDER until the parse module lands (being written in parallel); lets the rest type-check.
use crate::error::{Error, Result};
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind { Text, Markdown, Html, Pdf, Docx }
impl SourceKind {
    pub fn detect(_f: Option<&str>, _c: Option<&str>, _b: &[u8]) -> Result<SourceKind> { Ok(SourceKind::Text) }
}
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PageSpan { pub page: u32, pub char_start: usize, pub char_end: usize }
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParsedDocument { pub title: Option<String>, pub text: String, pub markdown: bool, pub pages: Vec<PageSpan> }
pub fn parse(_k: SourceKind, b: &[u8]) -> Result<ParsedDocument> {
    let text = String::from_utf8(b.to_vec()).map_err(|e| Error::Unparseable(e.to_string()))?;
    Ok(ParsedDocument { title: None, text, markdown: false, pages: vec![] })
}
