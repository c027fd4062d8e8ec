//! Excel workbooks (.xlsx, SpreadsheetML): the sheets xl/workbook.xml lists, in its order, each read
//! from its XML part as a stream of cells — never as a grid sized by the sheet's declared dimension,
//! so a lone cell at XFD1048576 costs one cell — with shared strings and date formats resolved.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::sheet::{MAX_SHEET_COLUMNS, MAX_SHEETS, MAX_TABLE_CELLS, Sheet, too_many_sheets, too_wide, workbook_document};
use super::zipdoc::{ZipDoc, relationships, resolve_part};
use super::{Meter, ParsedDocument, attr};
use crate::error::{Error, Result};

pub(super) fn parse_xlsx(bytes: &[u8], meter: &mut Meter<'_>) -> Result<ParsedDocument> {
    let limits = meter.limits;
    let mut zip = ZipDoc::open(bytes, ".xlsx")?;
    let workbook = zip
        .part("xl/workbook.xml", meter)?
        .ok_or_else(|| Error::Unparseable("not an Excel workbook: the .xlsx has no xl/workbook.xml".into()))?;
    let rels = zip.optional("xl/_rels/workbook.xml.rels", meter)?.map(|x| relationships(&x)).unwrap_or_default();
    let (listed, date1904) = workbook_sheets(&workbook)?;
    if listed.len() > MAX_SHEETS {
        return Err(too_many_sheets());
    }
    let shared = match zip.optional("xl/sharedStrings.xml", meter)? {
        Some(x) => shared_strings(&x, limits.max_depth)?,
        None => Vec::new(),
    };
    let dates = zip.optional("xl/styles.xml", meter)?.map(|x| date_styles(&x)).unwrap_or_default();
    let title = zip.optional("docProps/core.xml", meter)?.and_then(|x| super::docx_core_title(&x));

    let mut sheets = Vec::with_capacity(listed.len());
    let mut cells_left = MAX_TABLE_CELLS;
    for (name, rid) in listed {
        limits.check_time()?;
        let Some((_, target)) = rels.get(&rid) else { continue };
        let path = resolve_part("xl/", target);
        let Some(xml) = zip.optional(&path, meter)? else { continue };
        let cells = Cells { shared: &shared, dates: &dates, date1904 };
        let mut sheet = read_sheet(&xml, &cells, limits, cells_left)?;
        cells_left = sheet.cells_left;
        sheet.name = Some(name);
        sheets.push(sheet);
    }
    if sheets.iter().all(|s| s.rows.is_empty()) {
        return Err(Error::Unparseable("the workbook's sheets are empty".into()));
    }
    workbook_document(title, sheets, limits)
}

/// The sheets' names and relationship ids in workbook order, and whether dates count from 1904.
fn workbook_sheets(xml: &[u8]) -> Result<(Vec<(String, String)>, bool)> {
    let mut reader = Reader::from_reader(xml);
    let mut sheets = Vec::new();
    let mut date1904 = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"sheet" => {
                    if let (Some(name), Some(rid)) = (attr(&e, b"name"), attr(&e, b"r:id")) {
                        sheets.push((name, rid));
                        if sheets.len() > MAX_SHEETS {
                            break;
                        }
                    }
                }
                b"workbookPr" => {
                    date1904 = attr(&e, b"date1904").is_some_and(|v| v == "1" || v == "true");
                }
                _ => {}
            },
            Ok(Event::Eof) => break,
            Err(e) => return Err(Error::Unparseable(format!("xl/workbook.xml is not well-formed XML: {e}"))),
            _ => {}
        }
    }
    Ok((sheets, date1904))
}

/// xl/sharedStrings.xml: each `<si>` is one string, plain (`<t>`) or rich (runs of `<r><t>`);
/// phonetic guides (`<rPh>`) are not part of the text.
fn shared_strings(xml: &[u8], max_depth: usize) -> Result<Vec<String>> {
    let mut reader = Reader::from_reader(xml);
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let (mut in_t, mut in_phonetic, mut depth) = (false, false, 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::limit("document_too_complex", "xl/sharedStrings.xml nests too deep (ingest.max_nesting_depth)"));
                }
                match e.local_name().as_ref() {
                    b"si" => current = Some(String::new()),
                    b"t" => in_t = true,
                    b"rPh" => in_phonetic = true,
                    _ => {}
                }
            }
            Ok(Event::Empty(e)) if e.local_name().as_ref() == b"si" => {
                out.push(String::new());
                if out.len() > MAX_TABLE_CELLS {
                    return Err(too_many_strings());
                }
            }
            Ok(Event::Text(t)) if in_t && !in_phonetic => {
                if let (Some(s), Ok(text)) = (current.as_mut(), t.unescape()) {
                    s.push_str(&text);
                }
            }
            Ok(Event::End(e)) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    b"si" => {
                        out.push(current.take().unwrap_or_default());
                        if out.len() > MAX_TABLE_CELLS {
                            return Err(too_many_strings());
                        }
                    }
                    b"t" => in_t = false,
                    b"rPh" => in_phonetic = false,
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(Error::Unparseable(format!("xl/sharedStrings.xml is not well-formed XML: {e}"))),
            _ => {}
        }
    }
    Ok(out)
}

fn too_many_strings() -> Error {
    Error::limit("document_too_large", format!("the workbook has more than {MAX_TABLE_CELLS} shared strings"))
}

/// For each cell format (`<cellXfs>` entry, by index), whether it shows a number as a date.
fn date_styles(xml: &[u8]) -> Vec<bool> {
    let mut reader = Reader::from_reader(xml);
    let mut custom: HashMap<u32, bool> = HashMap::new();
    let mut formats = Vec::new();
    let mut in_cell_xfs = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"numFmt" => {
                    if let (Some(id), Some(code)) = (attr(&e, b"numFmtId").and_then(|v| v.parse().ok()), attr(&e, b"formatCode")) {
                        custom.insert(id, is_date_format(&code));
                    }
                }
                b"cellXfs" => in_cell_xfs = true,
                b"xf" if in_cell_xfs => {
                    let id: u32 = attr(&e, b"numFmtId").and_then(|v| v.parse().ok()).unwrap_or(0);
                    // Built-in formats 14–22 and 45–47 are dates and times.
                    let builtin = (14..=22).contains(&id) || (45..=47).contains(&id);
                    formats.push(custom.get(&id).copied().unwrap_or(builtin));
                    if formats.len() > 65_536 {
                        break;
                    }
                }
                _ => {}
            },
            Ok(Event::End(e)) if e.local_name().as_ref() == b"cellXfs" => in_cell_xfs = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    formats
}

/// A number format shows a date when it has day or year parts outside quoted text and `[...]`
/// sections (colours, locales, elapsed time).
fn is_date_format(code: &str) -> bool {
    let (mut quoted, mut bracket) = (false, false);
    for c in code.chars() {
        match c {
            '"' => quoted = !quoted,
            '[' if !quoted => bracket = true,
            ']' if !quoted => bracket = false,
            'd' | 'D' | 'y' | 'Y' if !quoted && !bracket => return true,
            _ => {}
        }
    }
    false
}

struct Cells<'a> {
    shared: &'a [String],
    dates: &'a [bool],
    date1904: bool,
}

impl Cells<'_> {
    /// A cell's text as Excel shows it, near enough: shared strings looked up, booleans as
    /// TRUE/FALSE, numbers under a date format as dates, other numbers as written.
    fn value(&self, kind: Option<&str>, style: Option<usize>, raw: &str, inline: &str) -> String {
        match kind {
            Some("s") => raw.trim().parse::<usize>().ok().and_then(|i| self.shared.get(i)).cloned().unwrap_or_default(),
            Some("inlineStr") => inline.to_owned(),
            Some("b") => if raw.trim() == "1" { "TRUE".into() } else { "FALSE".into() },
            Some("str") | Some("e") | Some("d") => raw.to_owned(),
            _ => {
                let is_date = style.and_then(|s| self.dates.get(s)).copied().unwrap_or(false);
                match raw.trim().parse::<f64>() {
                    Ok(serial) if is_date => excel_date(serial, self.date1904).unwrap_or_else(|| raw.to_owned()),
                    _ => raw.trim().to_owned(),
                }
            }
        }
    }
}

/// An Excel serial day number as an ISO date (with the time of day when it has one).
fn excel_date(serial: f64, date1904: bool) -> Option<String> {
    if !serial.is_finite() || !(0.0..2_958_466.0).contains(&serial) {
        return None;
    }
    // The 1900 system counts from 1899-12-30 (it keeps Lotus's phantom 1900-02-29, so serials
    // from 61 on are exact from that base).
    let base = if date1904 { chrono::NaiveDate::from_ymd_opt(1904, 1, 1)? } else { chrono::NaiveDate::from_ymd_opt(1899, 12, 30)? };
    let days = serial.floor();
    let date = base.checked_add_days(chrono::Days::new(days as u64))?;
    let seconds = ((serial - days) * 86_400.0).round() as u32;
    if seconds == 0 || seconds >= 86_400 {
        Some(date.format("%Y-%m-%d").to_string())
    } else {
        Some(format!("{} {:02}:{:02}", date.format("%Y-%m-%d"), seconds / 3600, seconds / 60 % 60))
    }
}

/// "AB12" → column 27 (0-based).
fn column_of(reference: &str) -> Option<usize> {
    let letters: String = reference.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if letters.is_empty() || letters.len() > 4 {
        return None;
    }
    let n = letters.bytes().fold(0usize, |n, b| n * 26 + (b.to_ascii_uppercase() - b'A' + 1) as usize);
    Some(n - 1)
}

fn read_sheet(xml: &[u8], cells: &Cells<'_>, limits: &super::ParseLimits, cells_left: usize) -> Result<Sheet> {
    let mut reader = Reader::from_reader(xml);
    let mut sheet = Sheet::new(None, cells_left);
    let mut row: Vec<String> = Vec::new();
    // The cell being read: column, type, style; its <v> text and its inline string.
    let mut cell: Option<(usize, Option<String>, Option<usize>)> = None;
    let (mut raw, mut inline) = (String::new(), String::new());
    let (mut in_v, mut in_inline_t, mut depth, mut events) = (false, false, 0usize, 0u32);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Error::Unparseable(format!("a worksheet of the .xlsx is not well-formed XML: {e}")))?;
        events = events.wrapping_add(1);
        if events.is_multiple_of(4096) {
            limits.check_time()?;
        }
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(limits.too_deep(".xlsx XML"));
                }
                match e.local_name().as_ref() {
                    b"row" => row.clear(),
                    b"c" => {
                        let col = attr(&e, b"r").and_then(|r| column_of(&r)).unwrap_or(row.len());
                        if col >= MAX_SHEET_COLUMNS {
                            return Err(too_wide("a sheet of the workbook"));
                        }
                        cell = Some((col, attr(&e, b"t"), attr(&e, b"s").and_then(|s| s.parse().ok())));
                        raw.clear();
                        inline.clear();
                    }
                    b"v" => in_v = true,
                    b"t" if cell.is_some() => in_inline_t = true,
                    _ => {}
                }
            }
            Event::Text(t) if in_v || in_inline_t => {
                let text = t.unescape().map_err(|e| Error::Unparseable(format!("a worksheet of the .xlsx has a bad character reference: {e}")))?;
                if in_v { raw.push_str(&text) } else { inline.push_str(&text) }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.local_name().as_ref() {
                    b"v" => in_v = false,
                    b"t" => in_inline_t = false,
                    b"c" => {
                        if let Some((col, kind, style)) = cell.take() {
                            let value = cells.value(kind.as_deref(), style, &raw, &inline);
                            if !value.trim().is_empty() {
                                if row.len() <= col {
                                    row.resize(col + 1, String::new());
                                }
                                row[col] = value;
                            }
                        }
                    }
                    b"row" => sheet.push_row(std::mem::take(&mut row))?,
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(sheet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_columns_and_values() {
        assert_eq!(column_of("A1"), Some(0));
        assert_eq!(column_of("AB12"), Some(27));
        assert_eq!(column_of("XFD1048576"), Some(16_383));
        assert_eq!(excel_date(46_023.0, false).as_deref(), Some("2026-01-01"));
        assert_eq!(excel_date(46_023.5, false).as_deref(), Some("2026-01-01 12:00"));
        assert_eq!(excel_date(0.0, true).as_deref(), Some("1904-01-01"));
        assert!(is_date_format("yyyy-mm-dd") && is_date_format("d/m/yy h:mm") && !is_date_format("#,##0.00"));
        assert!(!is_date_format("[Red]0.00") && !is_date_format("0.0\" days\""));
    }

    #[test]
    fn a_sheet_streams_cells_into_rows() {
        let shared = vec!["Region".to_owned(), "Q3".to_owned(), "North".to_owned()];
        let dates = vec![false, true];
        let cells = Cells { shared: &shared, dates: &dates, date1904: false };
        let xml = br#"<worksheet><sheetData>
            <row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c></row>
            <row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" s="1"><v>46023</v></c><c r="C2"><v>918400</v></c></row>
            <row r="3"><c r="A3" t="inlineStr"><is><t>South</t></is></c><c r="C3" t="b"><v>1</v></c></row>
            <row r="4"></row>
        </sheetData></worksheet>"#;
        let sheet = read_sheet(xml, &cells, &super::super::ParseLimits::default(), MAX_TABLE_CELLS).unwrap();
        assert_eq!(
            sheet.rows,
            vec![vec!["Region", "", "Q3"], vec!["North", "2026-01-01", "918400"], vec!["South", "", "TRUE"]]
        );
    }

    #[test]
    fn rows_padded_to_a_far_cell_run_out_of_cells_not_memory() {
        let cells = Cells { shared: &[], dates: &[], date1904: false };
        let mut xml = b"<worksheet><sheetData>".to_vec();
        xml.extend(br#"<row><c r="A1"><v>1</v></c><c r="AMJ1"><v>2</v></c></row>"#.repeat(5_000));
        xml.extend(b"</sheetData></worksheet>");
        let e = read_sheet(&xml, &cells, &super::super::ParseLimits::default(), 1_000_000).unwrap_err();
        assert!(e.to_string().contains("cells"), "{e}");
    }

    #[test]
    fn a_cell_far_to_the_right_is_refused_not_allocated() {
        let cells = Cells { shared: &[], dates: &[], date1904: false };
        let xml = br#"<worksheet><sheetData><row r="1"><c r="XFD1"><v>1</v></c></row></sheetData></worksheet>"#;
        let e = read_sheet(xml, &cells, &super::super::ParseLimits::default(), MAX_TABLE_CELLS).unwrap_err();
        assert!(e.to_string().contains("column"), "{e}");
    }
}
