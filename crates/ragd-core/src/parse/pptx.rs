//! PowerPoint decks (.pptx, PresentationML): the slides in the order ppt/presentation.xml lists
//! them, each as a `#` heading (its title), its text boxes and bullet points, its tables as rows
//! under their header, and its speaker notes; a page span per slide so a chunk knows its slide.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::zipdoc::{ZipDoc, dir_of, relationships, resolve_part};
use super::{Meter, PageSpan, ParseLimits, ParsedDocument, SpanUnit, attr, push_block};
use crate::error::{Error, Result};

/// Slides one deck may have; more: 422 `document_too_complex`.
const MAX_SLIDES: usize = 2_000;

pub(super) fn parse_pptx(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let limits = meter.limits;
    let mut zip = ZipDoc::open(bytes, ".pptx")?;
    let presentation = zip
        .part("ppt/presentation.xml", meter)?
        .ok_or_else(|| Error::Unparseable("not a PowerPoint deck: the .pptx has no ppt/presentation.xml".into()))?;
    let rels = zip.optional("ppt/_rels/presentation.xml.rels", meter)?.map(|x| relationships(&x)).unwrap_or_default();
    let order = slide_ids(&presentation);
    if order.len() > MAX_SLIDES {
        return Err(Error::limit("document_too_complex", format!("the deck has more than {MAX_SLIDES} slides")));
    }
    let core_title = zip.optional("docProps/core.xml", meter)?.and_then(|x| super::docx_core_title(&x));

    let mut text = String::new();
    let mut pages = Vec::new();
    let mut chars = 0usize;
    let mut first_title = None;
    for (n, rid) in order.iter().enumerate() {
        limits.check_time()?;
        let Some((_, target)) = rels.get(rid) else { continue };
        let path = resolve_part("ppt/", target);
        let Some(xml) = zip.optional(&path, meter)? else { continue };
        let slide = read_shapes(&xml, limits, false)?;
        // The notes slide is found through the slide's own relationships.
        let slide_rels = format!("{}_rels/{}.rels", dir_of(&path), &path[dir_of(&path).len()..]);
        let notes_path = zip
            .optional(&slide_rels, meter)?
            .map(|x| relationships(&x))
            .and_then(|r| r.into_values().find(|(kind, _)| kind.ends_with("/notesSlide")))
            .map(|(_, t)| resolve_part(dir_of(&path), &t));
        let notes = match notes_path {
            Some(p) => match zip.optional(&p, meter)? {
                Some(x) => read_shapes(&x, limits, true)?.body_text(),
                None => String::new(),
            },
            None => String::new(),
        };

        let number = (n + 1) as u32;
        let heading = slide.title.clone().unwrap_or_else(|| format!("Slide {number}"));
        if first_title.is_none() {
            first_title = slide.title.clone();
        }
        let before = text.len();
        push_block(&mut text, &format!("# {heading}"));
        for block in &slide.blocks {
            push_block(&mut text, block);
        }
        if !notes.trim().is_empty() {
            push_block(&mut text, &format!("Speaker notes: {}", notes.trim()));
        }
        limits.check_text(text.len())?;
        pages.push(PageSpan::appended(&text, before, &mut chars, number, SpanUnit::Slide, None));
    }
    if pages.is_empty() {
        return Err(Error::Unparseable("the deck has no slides".into()));
    }
    Ok(ParsedDocument { title: core_title.or(first_title), text, markdown: true, pages, attachments: Vec::new() })
}

/// The relationship ids of the slides, in presentation order (`<p:sldIdLst>`).
fn slide_ids(xml: &[u8]) -> Vec<String> {
    let mut reader = Reader::from_reader(xml);
    let mut ids = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.local_name().as_ref() == b"sldId" => {
                if let Some(rid) = attr(&e, b"r:id") {
                    ids.push(rid);
                    if ids.len() > MAX_SLIDES {
                        break;
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    ids
}

/// What a slide (or notes page) says.
#[derive(Debug, Default)]
struct Shapes {
    title: Option<String>,
    /// Rendered blocks in reading order: paragraphs, bullet lists, tables.
    blocks: Vec<String>,
}

impl Shapes {
    fn body_text(&self) -> String {
        self.blocks.join(" ")
    }
}

/// What a shape's placeholder makes it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Title,
    /// A body placeholder: its paragraphs are bullet points.
    Body,
    /// A text box or other shape: plain paragraphs.
    Text,
    /// Slide number, date, footer, header, the slide image on a notes page: not content.
    Skip,
}

/// Walks a slide's (or a notes page's) shape tree. On a notes page only body placeholders count.
fn read_shapes(xml: &[u8], limits: &ParseLimits, notes: bool) -> Result<Shapes> {
    let mut reader = Reader::from_reader(xml);
    let mut out = Shapes::default();
    let mut roles: Vec<Role> = Vec::new();
    // Paragraphs of the current shape: (bullet level, text).
    let mut paras: Vec<(usize, String)> = Vec::new();
    let mut para: Option<(usize, String)> = None;
    // Table being read: rows of cells, current row, current cell.
    let mut table: Option<(Vec<Vec<String>>, Vec<String>, Option<String>)> = None;
    let (mut in_t, mut depth, mut events) = (false, 0usize, 0u32);
    let bad = |e: quick_xml::Error| Error::Unparseable(format!("a slide of the .pptx is not well-formed XML: {e}"));
    loop {
        let event = reader.read_event().map_err(bad)?;
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) {
            limits.check_time()?;
        }
        match &event {
            Event::Start(_) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(limits.too_deep(".pptx XML"));
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        let empty = matches!(event, Event::Empty(_));
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                match e.local_name().as_ref() {
                    b"sp" | b"graphicFrame" if !empty => {
                        roles.push(if notes { Role::Skip } else { Role::Text });
                        paras.clear();
                    }
                    b"ph" => {
                        let kind = attr(e, b"type").unwrap_or_default();
                        let role = match kind.as_str() {
                            "title" | "ctrTitle" => if notes { Role::Skip } else { Role::Title },
                            "sldNum" | "dt" | "ftr" | "hdr" | "sldImg" => Role::Skip,
                            // "body", "subTitle", "obj" and a placeholder without a type.
                            "subTitle" => if notes { Role::Skip } else { Role::Text },
                            _ => Role::Body,
                        };
                        if let Some(r) = roles.last_mut() {
                            *r = role;
                        }
                    }
                    b"p" if para.is_none() && !empty => para = Some((0, String::new())),
                    b"pPr" => {
                        if let (Some((lvl, _)), Some(l)) = (para.as_mut(), attr(e, b"lvl").and_then(|v| v.parse::<usize>().ok())) {
                            *lvl = l.min(8);
                        }
                    }
                    b"t" if !empty => in_t = true,
                    b"br" => {
                        if let Some((_, s)) = para.as_mut() {
                            s.push(' ');
                        }
                    }
                    b"tbl" if !empty => table = Some((Vec::new(), Vec::new(), None)),
                    b"tc" => {
                        if let Some((_, _, cell)) = table.as_mut() {
                            *cell = Some(String::new());
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_t => {
                if let (Some((_, s)), Ok(text)) = (para.as_mut(), t.unescape()) {
                    s.push_str(&text);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_t = false,
                b"p" => {
                    let Some((lvl, s)) = para.take() else { continue };
                    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
                    if s.is_empty() {
                        continue;
                    }
                    if let Some((_, _, Some(cell))) = table.as_mut() {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&s);
                    } else {
                        paras.push((lvl, s));
                    }
                }
                b"tc" => {
                    if let Some((_, row, cell)) = table.as_mut() {
                        row.push(super::sheet::clean_cell(&cell.take().unwrap_or_default()));
                    }
                }
                b"tr" => {
                    if let Some((rows, row, _)) = table.as_mut() {
                        rows.push(std::mem::take(row));
                    }
                }
                b"tbl" => {
                    if let Some((rows, _, _)) = table.take() {
                        let mut rendered = String::new();
                        super::sheet::render_table(&rows, &mut rendered);
                        if !rendered.is_empty() && roles.last() != Some(&Role::Skip) {
                            out.blocks.push(rendered);
                        }
                    }
                }
                b"sp" | b"graphicFrame" => {
                    let role = roles.pop().unwrap_or(Role::Text);
                    let lines = std::mem::take(&mut paras);
                    if lines.is_empty() {
                        continue;
                    }
                    match role {
                        Role::Skip => {}
                        Role::Title => {
                            let title = lines.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join(" ");
                            // A second title shape (rare) reads as text.
                            if out.title.is_some() {
                                out.blocks.push(title);
                            } else {
                                out.title = Some(title);
                            }
                        }
                        Role::Body if !notes => {
                            let list = lines
                                .into_iter()
                                .map(|(lvl, s)| format!("{}- {s}", "  ".repeat(lvl)))
                                .collect::<Vec<_>>()
                                .join("\n");
                            out.blocks.push(list);
                        }
                        Role::Body | Role::Text => {
                            out.blocks.extend(lines.into_iter().map(|(_, s)| s));
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLIDE: &[u8] = br#"<p:sld xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree>
        <p:sp><p:nvSpPr><p:nvPr><p:ph type="title"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>Open risks</a:t></a:r></a:p></p:txBody></p:sp>
        <p:sp><p:nvSpPr><p:nvPr><p:ph idx="1"/></p:nvPr></p:nvSpPr><p:txBody>
            <a:p><a:r><a:t>Ground water</a:t></a:r></a:p><a:p><a:pPr lvl="1"/><a:r><a:t>pumps on order</a:t></a:r></a:p></p:txBody></p:sp>
        <p:sp><p:nvSpPr><p:nvPr/></p:nvSpPr><p:txBody><a:p><a:r><a:t>A text box</a:t></a:r></a:p></p:txBody></p:sp>
        <p:graphicFrame><a:graphic><a:graphicData><a:tbl>
            <a:tr><a:tc><a:txBody><a:p><a:r><a:t>Phase</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>Cost</a:t></a:r></a:p></a:txBody></a:tc></a:tr>
            <a:tr><a:tc><a:txBody><a:p><a:r><a:t>Boring</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>41.2 million</a:t></a:r></a:p></a:txBody></a:tc></a:tr>
        </a:tbl></a:graphicData></a:graphic></p:graphicFrame>
        <p:sp><p:nvSpPr><p:nvPr><p:ph type="sldNum"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:fld><a:t>3</a:t></a:fld></a:p></p:txBody></p:sp>
        </p:spTree></p:cSld></p:sld>"#;

    #[test]
    fn a_slide_has_its_title_bullets_text_boxes_and_tables_but_not_its_number() {
        let s = read_shapes(SLIDE, &ParseLimits::default(), false).unwrap();
        assert_eq!(s.title.as_deref(), Some("Open risks"));
        assert_eq!(s.blocks, vec!["- Ground water\n  - pumps on order", "A text box", "Phase | Cost\nBoring | 41.2 million"]);
    }

    #[test]
    fn a_notes_page_keeps_only_its_body() {
        let notes = br#"<p:notes xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree>
            <p:sp><p:nvSpPr><p:nvPr><p:ph type="sldImg"/></p:nvPr></p:nvSpPr></p:sp>
            <p:sp><p:nvSpPr><p:nvPr><p:ph type="body" idx="1"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>Ask about the survey.</a:t></a:r></a:p></p:txBody></p:sp>
            <p:sp><p:nvSpPr><p:nvPr><p:ph type="sldNum" idx="5"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>3</a:t></a:r></a:p></p:txBody></p:sp>
            </p:spTree></p:cSld></p:notes>"#;
        assert_eq!(read_shapes(notes, &ParseLimits::default(), true).unwrap().body_text(), "Ask about the survey.");
    }
}
