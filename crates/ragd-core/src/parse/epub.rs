//! E-books (.epub): the chapters in the reading order the package's spine gives, each converted as
//! HTML and starting with a `#` heading (its own, or the table of contents' label for it when the
//! chapter has none), so a chunk's heading path names its chapter.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::zipdoc::{ZipDoc, dir_of, resolve_part};
use super::{Meter, PageSpan, ParsedDocument, SpanUnit, attr, push_block};
use crate::error::{Error, Result};

/// Chapters one book may have; more: 422 `document_too_complex`.
const MAX_CHAPTERS: usize = 2_000;

pub(super) fn parse_epub(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let limits = meter.limits;
    let mut zip = ZipDoc::open(bytes, ".epub")?;
    let container = zip
        .part("META-INF/container.xml", meter)?
        .ok_or_else(|| Error::Unparseable("not an e-book: the .epub has no META-INF/container.xml".into()))?;
    let opf_path = first_attr(&container, b"rootfile", b"full-path")
        .ok_or_else(|| Error::Unparseable("the .epub's container names no package file".into()))?;
    let opf_path = resolve_part("", &opf_path);
    let opf = zip
        .part(&opf_path, meter)?
        .ok_or_else(|| Error::Unparseable(format!("the .epub's package file {opf_path} is missing")))?;
    let package = read_package(&opf)?;
    if package.spine.len() > MAX_CHAPTERS {
        return Err(Error::limit("document_too_complex", format!("the book has more than {MAX_CHAPTERS} chapters")));
    }
    let base = dir_of(&opf_path).to_owned();
    // Labels from the table of contents (EPUB 3 nav document, else EPUB 2 NCX), by chapter path.
    let mut labels = HashMap::new();
    if let Some(nav) = &package.nav {
        let path = resolve_part(&base, nav);
        if let Some(x) = zip.optional(&path, meter)? {
            labels = toc_labels(&x, dir_of(&path));
        }
    }

    let mut text = String::new();
    let (mut pages, mut chars) = (Vec::new(), 0usize);
    for idref in &package.spine {
        limits.check_time()?;
        let Some((href, media)) = package.manifest.get(idref) else { continue };
        if !(media.contains("html") || media.contains("xml")) {
            continue;
        }
        let path = resolve_part(&base, href);
        let Some(xhtml) = zip.optional(&path, meter)? else { continue };
        // Each chapter within what is left of the document's text allowance.
        let mut chapter_limits = limits.clone();
        chapter_limits.text_bytes = limits.text_bytes.saturating_sub(text.len() as u64);
        let chapter = super::parse_html(&xhtml, &chapter_limits)?;
        let body = chapter.text.trim();
        if body.is_empty() {
            continue;
        }
        let before = text.len();
        if !body.starts_with('#')
            && let Some(label) = labels.get(&path).cloned().or(chapter.title)
        {
            push_block(&mut text, &format!("# {label}"));
        }
        push_block(&mut text, body);
        limits.check_text(text.len())?;
        // Each chapter is a span of its own, so no chunk runs from one chapter into the next.
        pages.push(PageSpan::appended(&text, before, &mut chars, pages.len() as u32 + 1, SpanUnit::Chapter, None));
    }
    if text.is_empty() {
        return Err(Error::Unparseable("the e-book has no readable chapters".into()));
    }
    Ok(ParsedDocument { title: package.title, text, markdown: true, pages, attachments: Vec::new() })
}

fn first_attr(xml: &[u8], element: &[u8], key: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == element => return attr(&e, key),
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

#[derive(Debug, Default)]
struct Package {
    title: Option<String>,
    /// id → (href, media type).
    manifest: HashMap<String, (String, String)>,
    /// Reading order: manifest ids.
    spine: Vec<String>,
    /// The table of contents: the EPUB 3 nav document, else the NCX.
    nav: Option<String>,
}

fn read_package(xml: &[u8]) -> Result<Package> {
    let mut reader = Reader::from_reader(xml);
    let mut p = Package::default();
    let (mut in_title, mut title, mut ncx_id) = (false, String::new(), None);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"title" if p.title.is_none() => in_title = true,
                b"item" => {
                    if let (Some(id), Some(href)) = (attr(&e, b"id"), attr(&e, b"href")) {
                        let media = attr(&e, b"media-type").unwrap_or_default();
                        if attr(&e, b"properties").is_some_and(|v| v.split_whitespace().any(|w| w == "nav")) {
                            p.nav = Some(href.clone());
                        }
                        if p.manifest.len() < 4 * MAX_CHAPTERS {
                            p.manifest.insert(id, (href, media));
                        }
                    }
                }
                b"spine" => ncx_id = attr(&e, b"toc"),
                b"itemref" => {
                    // Non-linear items (pop-ups, answer keys) are still the book's text.
                    if let Some(id) = attr(&e, b"idref") {
                        p.spine.push(id);
                        if p.spine.len() > MAX_CHAPTERS {
                            break;
                        }
                    }
                }
                _ => {}
            },
            Ok(Event::Text(t)) if in_title => title.push_str(&t.unescape().unwrap_or_default()),
            Ok(Event::End(e)) if in_title && e.local_name().as_ref() == b"title" => {
                in_title = false;
                p.title = super::non_empty(std::mem::take(&mut title));
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(Error::Unparseable(format!("the .epub's package file is not well-formed XML: {e}"))),
            _ => {}
        }
    }
    if p.nav.is_none() {
        p.nav = ncx_id.and_then(|id| p.manifest.get(&id)).map(|(href, _)| href.clone());
    }
    Ok(p)
}

/// Chapter path → its label in the table of contents: `<a href>` text in a nav document,
/// `<navLabel><text>` + `<content src>` in an NCX. The first label of a file wins.
fn toc_labels(xml: &[u8], base: &str) -> HashMap<String, String> {
    let mut reader = Reader::from_reader(xml);
    let mut labels = HashMap::new();
    let (mut label, mut in_label, mut href): (String, bool, Option<String>) = (String::new(), false, None);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"a" => {
                    href = attr(&e, b"href");
                    label.clear();
                    in_label = true;
                }
                b"text" => {
                    label.clear();
                    in_label = true;
                }
                _ => {}
            },
            Ok(Event::Empty(e)) if e.local_name().as_ref() == b"content" => {
                if let Some(src) = attr(&e, b"src") {
                    let l = label.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !l.is_empty() {
                        labels.entry(resolve_part(base, &src)).or_insert(l);
                    }
                }
            }
            Ok(Event::Text(t)) if in_label => label.push_str(&t.unescape().unwrap_or_default()),
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"a" => {
                    in_label = false;
                    let l = label.split_whitespace().collect::<Vec<_>>().join(" ");
                    if let Some(h) = href.take()
                        && !l.is_empty()
                    {
                        labels.entry(resolve_part(base, &h)).or_insert(l);
                    }
                }
                b"text" => in_label = false,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        if labels.len() > 4 * MAX_CHAPTERS {
            break;
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_gives_title_manifest_spine_and_toc() {
        let opf = br#"<package><metadata><dc:title>Field Guide to Lichens</dc:title></metadata>
            <manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
              <item id="c1" href="Text/ch%201.xhtml" media-type="application/xhtml+xml"/></manifest>
            <spine><itemref idref="c1"/></spine></package>"#;
        let p = read_package(opf).unwrap();
        assert_eq!(p.title.as_deref(), Some("Field Guide to Lichens"));
        assert_eq!(p.spine, vec!["c1"]);
        assert_eq!(p.nav.as_deref(), Some("nav.xhtml"));
        let nav = br#"<html><body><nav><ol><li><a href="Text/ch%201.xhtml#top">Crusts and  scales</a></li></ol></nav></body></html>"#;
        let labels = toc_labels(nav, "OEBPS/");
        assert_eq!(labels.get("OEBPS/Text/ch 1.xhtml").map(String::as_str), Some("Crusts and scales"));
    }
}
