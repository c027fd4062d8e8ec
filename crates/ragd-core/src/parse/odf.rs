//! OpenDocument text (.odt) and spreadsheets (.ods), read from content.xml: headings by outline
//! level, paragraphs, lists and tables for text; sheets as tables for spreadsheets, with repeated
//! rows and columns (LibreOffice writes a sheet's empty tail as one row "repeated 1,048,000 times")
//! expanded only where they hold content, within the sheet caps.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::sheet::{MAX_SHEET_COLUMNS, MAX_SHEETS, MAX_TABLE_CELLS, Sheet, too_many_sheets, too_wide, workbook_document};
use super::zipdoc::ZipDoc;
use super::{Meter, ParseLimits, ParsedDocument, attr, push_block};
use crate::error::{Error, Result};

/// Spaces one `<text:s text:c="N"/>` may stand for.
const MAX_SPACE_RUN: usize = 64;

fn content(bytes: &[u8], label: &str, meter: &mut Meter<'_>) -> Result<(Vec<u8>, Option<String>)> {
    let mut zip = ZipDoc::open(bytes, label)?;
    let xml = zip
        .part("content.xml", meter)?
        .ok_or_else(|| Error::Unparseable(format!("not an OpenDocument file: the {label} has no content.xml")))?;
    let title = zip.optional("meta.xml", meter)?.and_then(|x| super::docx_core_title(&x));
    Ok((xml, title))
}

fn bad_xml(e: quick_xml::Error) -> Error {
    Error::Unparseable(format!("content.xml is not well-formed XML: {e}"))
}

fn repeat(e: &BytesStart<'_>, key: &[u8]) -> usize {
    attr(e, key).and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1)
}

/// Elements whose text is not the document's: comments, tracked deletions, a footnote's number.
fn skipped(name: &[u8]) -> bool {
    matches!(name, b"annotation" | b"tracked-changes" | b"note-citation" | b"sequence-decls")
}

/// Depth and clock checks shared by both walks.
struct Guard<'a> {
    limits: &'a ParseLimits,
    depth: usize,
    events: u32,
}

impl Guard<'_> {
    /// The next event, depth and clock checked; elements whose text is not the document's
    /// (`skipped`) are read past whole.
    fn next<'x>(&mut self, reader: &mut Reader<&'x [u8]>) -> Result<Event<'x>> {
        loop {
            let event = reader.read_event().map_err(bad_xml)?;
            if let Event::Start(e) = &event
                && skipped(e.local_name().as_ref())
            {
                reader.read_to_end(e.to_end().name()).map_err(bad_xml)?;
                continue;
            }
            self.event(&event)?;
            return Ok(event);
        }
    }

    fn event(&mut self, event: &Event<'_>) -> Result<()> {
        self.events = self.events.wrapping_add(1);
        if self.events.is_multiple_of(4096) {
            self.limits.check_time()?;
        }
        match event {
            Event::Start(_) => {
                self.depth += 1;
                if self.depth > self.limits.max_depth {
                    return Err(self.limits.too_deep("OpenDocument XML"));
                }
            }
            Event::End(_) => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Ok(())
    }
}

/// Text inside a paragraph: `text:s` spaces, tabs and line breaks as characters.
fn inline_char(name: &[u8], e: &BytesStart<'_>) -> Option<String> {
    match name {
        b"s" => Some(" ".repeat(repeat(e, b"text:c").min(MAX_SPACE_RUN))),
        b"tab" => Some("\t".into()),
        b"line-break" => Some("\n".into()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Spreadsheets

pub(super) fn parse_ods(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let limits = meter.limits;
    let (xml, title) = content(bytes, ".ods", meter)?;
    let sheets = read_sheets(&xml, limits)?;
    if sheets.iter().all(|s| s.rows.is_empty()) {
        return Err(Error::Unparseable("the spreadsheet's sheets are empty".into()));
    }
    workbook_document(title, sheets, limits)
}

fn read_sheets(xml: &[u8], limits: &ParseLimits) -> Result<Vec<Sheet>> {
    let mut reader = Reader::from_reader(xml);
    let mut guard = Guard { limits, depth: 0, events: 0 };
    let mut sheets: Vec<Sheet> = Vec::new();
    let mut sheet: Option<Sheet> = None;
    let mut cells_left = MAX_TABLE_CELLS;
    // The row being read and how often it repeats; empty cells not yet placed (they matter only
    // when a cell with content follows them).
    let mut row: Vec<String> = Vec::new();
    let (mut row_repeat, mut pending_empty) = (1usize, 0usize);
    // The cell being read: its text, the value its attributes give, how often it repeats.
    let mut cell: Option<(String, String, usize)> = None;
    let mut in_text = 0usize;
    loop {
        let event = guard.next(&mut reader)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let qname = e.local_name();
                let name = qname.as_ref();
                match name {
                    b"table" if !empty && cell.is_none() => {
                        if sheets.len() >= MAX_SHEETS {
                            return Err(too_many_sheets());
                        }
                        sheet = Some(Sheet::new(attr(e, b"table:name"), cells_left));
                    }
                    b"table-row" => {
                        row.clear();
                        pending_empty = 0;
                        row_repeat = repeat(e, b"table:number-rows-repeated");
                        if empty {
                            row_repeat = 1;
                        }
                    }
                    b"table-cell" | b"covered-table-cell" => {
                        let value = attr(e, b"office:value")
                            .or_else(|| attr(e, b"office:date-value"))
                            .or_else(|| attr(e, b"office:boolean-value"))
                            .or_else(|| attr(e, b"office:time-value"))
                            .or_else(|| attr(e, b"office:string-value"))
                            .unwrap_or_default();
                        let times = repeat(e, b"table:number-columns-repeated");
                        if empty {
                            place(&mut row, &mut pending_empty, String::new(), value, times)?;
                        } else {
                            cell = Some((String::new(), value, times));
                        }
                    }
                    b"p" | b"h" if cell.is_some() && !empty => {
                        in_text += 1;
                        if let Some((text, _, _)) = cell.as_mut()
                            && !text.is_empty()
                        {
                            text.push(' ');
                        }
                    }
                    other if in_text > 0 => {
                        if let (Some(c), Some((text, _, _))) = (inline_char(other, e), cell.as_mut()) {
                            text.push_str(&c);
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_text > 0 => {
                if let (Some((text, _, _)), Ok(s)) = (cell.as_mut(), t.unescape()) {
                    text.push_str(&s);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"p" | b"h" if in_text > 0 => in_text -= 1,
                b"table-cell" | b"covered-table-cell" => {
                    if let Some((text, value, times)) = cell.take() {
                        place(&mut row, &mut pending_empty, text, value, times)?;
                    }
                }
                b"table-row" => {
                    if let Some(s) = sheet.as_mut()
                        && row.iter().any(|c| !c.trim().is_empty())
                    {
                        // A row with content repeated: each copy is a row (the caps bound it).
                        for _ in 0..row_repeat {
                            s.push_row(row.clone())?;
                        }
                    }
                    row.clear();
                }
                b"table" if cell.is_none() => {
                    if let Some(s) = sheet.take() {
                        cells_left = s.cells_left;
                        sheets.push(s);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(sheets)
}

/// Places a cell `times` times at the end of `row`: an empty one only counts towards the gap
/// before the next cell with content.
fn place(row: &mut Vec<String>, pending_empty: &mut usize, text: String, value: String, times: usize) -> Result<()> {
    // What the sheet shows is the cell's text; a cell without text shows its value.
    let shown = if text.trim().is_empty() { value } else { text };
    if shown.trim().is_empty() {
        *pending_empty = pending_empty.saturating_add(times);
        return Ok(());
    }
    let end = row.len().saturating_add(*pending_empty).saturating_add(times);
    if end > MAX_SHEET_COLUMNS {
        return Err(too_wide("a sheet of the spreadsheet"));
    }
    row.resize(row.len() + *pending_empty, String::new());
    *pending_empty = 0;
    for _ in 0..times {
        row.push(shown.clone());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Text documents

pub(super) fn parse_odt(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let limits = meter.limits;
    let (xml, meta_title) = content(bytes, ".odt", meter)?;
    let (text, first_heading) = read_text(&xml, limits)?;
    Ok(ParsedDocument { title: meta_title.or(first_heading), text, markdown: true, pages: vec![], attachments: Vec::new() })
}

/// A paragraph being read: its text and what it is.
struct Para {
    text: String,
    heading: Option<usize>,
    /// List depth when it is a list item's paragraph.
    list: usize,
}

fn read_text(xml: &[u8], limits: &ParseLimits) -> Result<(String, Option<String>)> {
    let mut reader = Reader::from_reader(xml);
    let mut guard = Guard { limits, depth: 0, events: 0 };
    let mut out = String::new();
    let mut first_heading = None;
    // Paragraphs nest (a text box or a footnote inside a paragraph): a stack.
    let mut paras: Vec<Para> = Vec::new();
    let mut list_depth = 0usize;
    // Tables nest in cells: a stack of (rows, current row, current cell).
    let mut tables: Vec<(Vec<Vec<String>>, Vec<String>, Option<String>)> = Vec::new();
    let mut in_body = false;
    loop {
        let event = guard.next(&mut reader)?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let qname = e.local_name();
                let name = qname.as_ref();
                match name {
                    b"text" if e.name().as_ref() == b"office:text" => in_body = true,
                    _ if !in_body => {}
                    b"h" if !empty => {
                        let level = attr(e, b"text:outline-level").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
                        paras.push(Para { text: String::new(), heading: Some(level.clamp(1, 6)), list: 0 });
                    }
                    b"p" if !empty => paras.push(Para { text: String::new(), heading: None, list: list_depth }),
                    b"list" if !empty => list_depth += 1,
                    b"table" if !empty => tables.push((Vec::new(), Vec::new(), None)),
                    b"table-cell" | b"covered-table-cell" if !empty => {
                        if let Some(t) = tables.last_mut() {
                            t.2 = Some(String::new());
                        }
                    }
                    b"table-cell" | b"covered-table-cell" => {
                        if let Some(t) = tables.last_mut() {
                            t.1.push(String::new());
                        }
                    }
                    other => {
                        if let (Some(c), Some(p)) = (inline_char(other, e), paras.last_mut()) {
                            p.text.push_str(&c);
                        }
                    }
                }
            }
            Event::Text(t) if in_body => {
                if let (Some(p), Ok(s)) = (paras.last_mut(), t.unescape()) {
                    p.text.push_str(&s);
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"text" if e.name().as_ref() == b"office:text" => in_body = false,
                b"h" | b"p" => {
                    let Some(p) = paras.pop() else { continue };
                    let flat = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
                    if flat.is_empty() {
                        continue;
                    }
                    if let Some(cell) = tables.last_mut().and_then(|t| t.2.as_mut()) {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&flat);
                    } else if let Some(level) = p.heading {
                        if level == 1 && first_heading.is_none() {
                            first_heading = Some(flat.clone());
                        }
                        push_block(&mut out, &format!("{} {flat}", "#".repeat(level)));
                    } else if p.list > 0 {
                        // Items of one list stay one block.
                        let item = format!("{}- {flat}", "  ".repeat(p.list - 1));
                        if out.ends_with('\n') || out.is_empty() {
                            out.push_str(&item);
                        } else if out.rsplit('\n').next().is_some_and(|l| l.trim_start().starts_with("- ")) {
                            out.push('\n');
                            out.push_str(&item);
                        } else {
                            push_block(&mut out, &item);
                        }
                    } else {
                        push_block(&mut out, &flat);
                    }
                    limits.check_text(out.len())?;
                }
                b"list" => list_depth = list_depth.saturating_sub(1),
                b"table-cell" | b"covered-table-cell" => {
                    if let Some(t) = tables.last_mut() {
                        let cell = t.2.take().unwrap_or_default();
                        t.1.push(super::sheet::clean_cell(&cell));
                    }
                }
                b"table-row" => {
                    if let Some(t) = tables.last_mut() {
                        let row = std::mem::take(&mut t.1);
                        if t.0.len() < super::sheet::MAX_SHEET_ROWS {
                            t.0.push(row);
                        }
                    }
                }
                b"table" => {
                    let Some((rows, _, _)) = tables.pop() else { continue };
                    let mut rendered = String::new();
                    super::sheet::render_table(&rows, &mut rendered);
                    if let Some(cell) = tables.last_mut().and_then(|t| t.2.as_mut()) {
                        // A table in a cell stays on the outer row's line.
                        cell.push(' ');
                        cell.push_str(&rendered.replace('\n', "; "));
                    } else if !rendered.is_empty() {
                        push_block(&mut out, &rendered);
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((out, first_heading))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odt_headings_lists_tables_and_no_comments() {
        let xml = br#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:table="ta"><office:body><office:text>
            <text:sequence-decls><text:sequence-decl text:name="Table"/></text:sequence-decls>
            <text:h text:outline-level="1">Volunteer Handbook</text:h>
            <text:p>Shifts start at<text:s text:c="2"/>nine.<office:annotation><text:p>a reviewer's comment</text:p></office:annotation></text:p>
            <text:h text:outline-level="2">Kit</text:h>
            <text:list><text:list-item><text:p>gloves</text:p></text:list-item><text:list-item><text:p>boots</text:p>
              <text:list><text:list-item><text:p>steel toe</text:p></text:list-item></text:list></text:list-item></text:list>
            <table:table><table:table-row><table:table-cell><text:p>Day</text:p></table:table-cell><table:table-cell><text:p>Lead</text:p></table:table-cell></table:table-row>
              <table:table-row><table:table-cell><text:p>Monday</text:p></table:table-cell><table:table-cell><text:p>Ana</text:p></table:table-cell></table:table-row></table:table>
            </office:text></office:body></office:document-content>"#;
        let (text, h1) = read_text(xml, &ParseLimits::default()).unwrap();
        assert_eq!(h1.as_deref(), Some("Volunteer Handbook"));
        assert_eq!(
            text,
            "# Volunteer Handbook\n\nShifts start at nine.\n\n## Kit\n\n- gloves\n- boots\n  - steel toe\n\nDay | Lead\nMonday | Ana"
        );
    }

    #[test]
    fn ods_repeats_expand_only_where_they_hold_content() {
        let xml = br#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:table="ta"><office:body><office:spreadsheet>
            <table:table table:name="Regional sales">
              <table:table-row><table:table-cell office:value-type="string"><text:p>Region</text:p></table:table-cell><table:table-cell table:number-columns-repeated="2"/><table:table-cell><text:p>Q3</text:p></table:table-cell><table:table-cell table:number-columns-repeated="16000"/></table:table-row>
              <table:table-row><table:table-cell><text:p>North</text:p></table:table-cell><table:table-cell table:number-columns-repeated="2" office:value-type="float" office:value="7"><text:p>7</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="918400"/></table:table-row>
              <table:table-row table:number-rows-repeated="1048000"><table:table-cell table:number-columns-repeated="1024"/></table:table-row>
            </table:table></office:spreadsheet></office:body></office:document-content>"#;
        let sheets = read_sheets(xml, &ParseLimits::default()).unwrap();
        assert_eq!(sheets.len(), 1);
        assert_eq!(sheets[0].name.as_deref(), Some("Regional sales"));
        assert_eq!(sheets[0].rows, vec![vec!["Region", "", "", "Q3"], vec!["North", "7", "7", "918400"]]);
    }

    #[test]
    fn ods_content_past_the_column_cap_is_refused() {
        let xml = br#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:table="ta"><office:body><office:spreadsheet>
            <table:table table:name="S"><table:table-row><table:table-cell table:number-columns-repeated="100000"><text:p>x</text:p></table:table-cell></table:table-row></table:table>
            </office:spreadsheet></office:body></office:document-content>"#;
        assert!(read_sheets(xml, &ParseLimits::default()).is_err());
    }
}
