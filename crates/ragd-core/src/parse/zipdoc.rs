//! The zip container the Office Open XML (docx, xlsx, pptx), OpenDocument (odt, ods) and EPUB
//! formats share: parts read by name within the document's inflation allowance, relationship
//! files, and part paths resolved against the part that names them.

use std::collections::HashMap;
use std::io::Cursor;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{MAX_DOCX_PART_BYTES, Meter, attr, read_zip_part};
use crate::error::{Error, Result};

/// Entries an archive may list; more: 422 `document_too_complex` (a real document has dozens to
/// a few thousand: one per slide, sheet, chapter, image).
pub(super) const MAX_ZIP_ENTRIES: usize = 20_000;

pub(super) struct ZipDoc<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
}

impl<'a> ZipDoc<'a> {
    /// `label` names the format in errors (".xlsx").
    pub fn open(bytes: &'a [u8], label: &str) -> Result<Self> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| Error::Unparseable(format!("the {label} is not a readable zip archive: {e}")))?;
        if zip.len() > MAX_ZIP_ENTRIES {
            return Err(Error::limit(
                "document_too_complex",
                format!("the {label} lists more than {MAX_ZIP_ENTRIES} parts"),
            ));
        }
        Ok(ZipDoc { zip })
    }

    /// A part the format needs: missing → `None`, broken or over the allowance → error.
    pub fn part(&mut self, name: &str, meter: &mut Meter<'_>) -> Result<Option<Vec<u8>>> {
        read_zip_part(&mut self.zip, name, MAX_DOCX_PART_BYTES, meter)
    }

    /// A part that only refines the result: broken → `None`; past the document's allowance still
    /// refuses the document.
    pub fn optional(&mut self, name: &str, meter: &mut Meter<'_>) -> Result<Option<Vec<u8>>> {
        match self.part(name, meter) {
            Err(e @ Error::Limit { .. }) => Err(e),
            r => Ok(r.ok().flatten()),
        }
    }
}

/// A relationships part (`_rels/*.rels`): id → (type, target).
pub(super) fn relationships(xml: &[u8]) -> HashMap<String, (String, String)> {
    let mut reader = Reader::from_reader(xml);
    let mut map = HashMap::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == b"Relationship" => {
                if let (Some(id), Some(target)) = (attr(&e, b"Id"), attr(&e, b"Target")) {
                    let kind = attr(&e, b"Type").unwrap_or_default();
                    map.insert(id, (kind, target));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    map
}

/// A target as the archive names it: absolute targets ("/xl/worksheets/sheet1.xml") from the root,
/// relative ones ("../notesSlides/notesSlide1.xml", "chapter%201.xhtml") against `base_dir`
/// (which ends in `/` or is empty), with `.`/`..` steps applied and %-escapes decoded.
pub(super) fn resolve_part(base_dir: &str, target: &str) -> String {
    let target = target.split(['#', '?']).next().unwrap_or("");
    let target = percent_decode(target);
    let joined = match target.strip_prefix('/') {
        Some(abs) => abs.to_owned(),
        None => format!("{base_dir}{target}"),
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The folder of a part, with its trailing slash ("OEBPS/content.opf" → "OEBPS/").
pub(super) fn dir_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..=i])
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_against_their_folder() {
        assert_eq!(resolve_part("xl/", "worksheets/sheet1.xml"), "xl/worksheets/sheet1.xml");
        assert_eq!(resolve_part("xl/", "/xl/worksheets/sheet2.xml"), "xl/worksheets/sheet2.xml");
        assert_eq!(resolve_part("ppt/slides/", "../notesSlides/notesSlide1.xml"), "ppt/notesSlides/notesSlide1.xml");
        assert_eq!(resolve_part("OEBPS/", "Text/chapter%201.xhtml#start"), "OEBPS/Text/chapter 1.xhtml");
        assert_eq!(resolve_part("", "../../../etc/passwd"), "etc/passwd");
        assert_eq!(dir_of("OEBPS/content.opf"), "OEBPS/");
        assert_eq!(dir_of("content.opf"), "");
    }

    #[test]
    fn relationships_map_ids_to_targets() {
        let rels = br#"<Relationships><Relationship Id="rId2" Type="http://x/slide" Target="slides/slide1.xml"/></Relationships>"#;
        let map = relationships(rels);
        assert_eq!(map.get("rId2").map(|(_, t)| t.as_str()), Some("slides/slide1.xml"));
    }
}
