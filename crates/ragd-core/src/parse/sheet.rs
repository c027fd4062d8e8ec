//! Tables of cells — spreadsheets (xlsx, ods) and delimited text (csv, tsv) — as the Markdown the
//! chunker and the answer path read: a sheet under a `#` heading of its name, its rows as
//! `cell | cell` lines under a header row, the header repeated at the top of every block of rows so
//! that every chunk of a long table still says what its columns are.

use super::{PageSpan, ParseLimits, ParsedDocument, SpanUnit, push_block};
use crate::error::{Error, Result};

/// Rows with content one sheet (or one csv file) may have; more: 422 `document_too_large`.
pub(super) const MAX_SHEET_ROWS: usize = 100_000;
/// Columns a row may reach; a cell further right: 422 `document_too_complex`.
pub(super) const MAX_SHEET_COLUMNS: usize = 1_024;
/// Sheets one workbook may have; more: 422 `document_too_complex`.
pub(super) const MAX_SHEETS: usize = 256;
/// Cells (up to each row's last one with content) one document's tables may hold; more: 422
/// `document_too_large`. Rows are padded to their last cell, so without it 100,000 rows of two
/// cells at A and AMJ — 5.7 MB of XML — would hold 100 million cells in memory.
pub(super) const MAX_TABLE_CELLS: usize = 4_000_000;
/// A block of rows ends once its text reaches this many bytes, and the next block starts with the
/// header again: about one chunk of the default size (256 tokens).
const BLOCK_BYTES: usize = 900;
/// Rows above the header that may be a sheet's title or notes ("Regional sales, 2026").
const HEADER_SEARCH_ROWS: usize = 6;

/// One sheet as read: its rows in order, each a list of cells (empty rows already dropped).
#[derive(Debug)]
pub(super) struct Sheet {
    pub name: Option<String>,
    pub rows: Vec<Vec<String>>,
    /// Cells the document's tables may still hold (`MAX_TABLE_CELLS`, shared by its sheets).
    pub cells_left: usize,
}

impl Default for Sheet {
    fn default() -> Self {
        Sheet::new(None, MAX_TABLE_CELLS)
    }
}

impl Sheet {
    pub fn new(name: Option<String>, cells_left: usize) -> Sheet {
        Sheet { name, rows: Vec::new(), cells_left }
    }

    /// Adds a row, dropping trailing empty cells; an all-empty row is skipped.
    pub fn push_row(&mut self, mut row: Vec<String>) -> Result<()> {
        while row.last().is_some_and(|c| c.trim().is_empty()) {
            row.pop();
        }
        if row.is_empty() {
            return Ok(());
        }
        if row.len() > self.cells_left {
            return Err(Error::limit(
                "document_too_large",
                format!("the document's tables hold more than {MAX_TABLE_CELLS} cells; split it into several files"),
            ));
        }
        self.cells_left -= row.len();
        if self.rows.len() >= MAX_SHEET_ROWS {
            return Err(Error::limit(
                "document_too_large",
                format!(
                    "{} has more than {MAX_SHEET_ROWS} rows with content; split it into several files",
                    self.describe()
                ),
            ));
        }
        self.rows.push(row);
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("the sheet '{n}'"),
            None => "the table".to_owned(),
        }
    }
}

/// 422 for a cell beyond `MAX_SHEET_COLUMNS`.
pub(super) fn too_wide(what: &str) -> Error {
    Error::limit(
        "document_too_complex",
        format!("{what} has a cell beyond column {MAX_SHEET_COLUMNS}; ragd reads tables up to that width"),
    )
}

pub(super) fn too_many_sheets() -> Error {
    Error::limit("document_too_complex", format!("the workbook has more than {MAX_SHEETS} sheets"))
}

/// A cell as one line of a row: inner line breaks become spaces, and a `|` (the column separator
/// of the rendered row) becomes `/`.
pub(super) fn clean_cell(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.replace('|', "/")
}

fn is_number(s: &str) -> bool {
    let t = s.trim().trim_start_matches(['-', '+', '$', '€', '£']).trim_end_matches('%').replace([',', ' '], "");
    !t.is_empty() && t.parse::<f64>().is_ok()
}

/// Looks like a date or a time, which a header cell never is ("2026-03-01", "14:30").
fn is_date_like(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '/' | '.' | ':' | ' ' | 'T'))
}

/// The row that names the columns: among the first rows, the first with at least two cells, all of
/// its cells text (no numbers or dates) and none repeated, and wider than half of the row after it.
/// Rows above it are the sheet's notes. `None`: the table has no header (then the columns are
/// called "Column 1", "Column 2", ...).
fn header_row(rows: &[Vec<String>]) -> Option<usize> {
    for (i, row) in rows.iter().enumerate().take(HEADER_SEARCH_ROWS) {
        let cells: Vec<&str> = row.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect();
        if cells.len() < 2 {
            continue;
        }
        let texty = cells.iter().all(|c| !is_number(c) && !is_date_like(c));
        let distinct = cells.iter().enumerate().all(|(j, c)| !cells[..j].contains(c));
        let next_width = rows.get(i + 1).map_or(0, Vec::len);
        if texty && distinct && row.len() * 2 > next_width {
            return Some(i);
        }
        // The first row that looks like data ends the search: a header is never below data.
        return None;
    }
    None
}

/// Renders a sheet's rows: notes above the header as paragraphs, then the table in blocks of rows
/// of about `BLOCK_BYTES`, each block starting with the header line.
pub(super) fn render_table(rows: &[Vec<String>], out: &mut String) {
    if rows.is_empty() {
        return;
    }
    let (notes, header, body) = match header_row(rows) {
        Some(h) => (&rows[..h], rows[h].clone(), &rows[h + 1..]),
        None => (&rows[..0], Vec::new(), rows),
    };
    for note in notes {
        let line = note.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(" ");
        if !line.is_empty() {
            push_block(out, &line);
        }
    }
    let width = body.iter().map(Vec::len).chain(std::iter::once(header.len())).max().unwrap_or(0).max(2);
    let header_line = (0..width)
        .map(|i| match header.get(i).map(|c| c.trim()).filter(|c| !c.is_empty()) {
            Some(name) => clean_cell(name),
            None => format!("Column {}", i + 1),
        })
        .collect::<Vec<_>>()
        .join(" | ");
    let mut block = String::new();
    for row in body {
        let line = (0..width)
            .map(|i| row.get(i).map(|c| clean_cell(c)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" | ");
        if block.is_empty() {
            block.push_str(&header_line);
        }
        block.push('\n');
        block.push_str(line.trim_end());
        if block.len() >= BLOCK_BYTES {
            push_block(out, &std::mem::take(&mut block));
        }
    }
    if !block.is_empty() {
        push_block(out, &block);
    } else if body.is_empty() && !header.is_empty() {
        // A header without rows is still the sheet's content.
        push_block(out, &header_line);
    }
}

/// A workbook's sheets as one document: each sheet a `#` heading and its table, and a page span
/// per sheet so a chunk knows its sheet.
pub(super) fn workbook_document(title: Option<String>, sheets: Vec<Sheet>, limits: &ParseLimits) -> Result<ParsedDocument> {
    let mut text = String::new();
    let mut pages = Vec::new();
    let mut chars = 0usize;
    for (i, sheet) in sheets.iter().enumerate() {
        if sheet.rows.is_empty() {
            continue;
        }
        let before = text.len();
        let name = sheet.name.clone().unwrap_or_else(|| format!("Sheet {}", i + 1));
        push_block(&mut text, &format!("# {}", clean_cell(&name)));
        render_table(&sheet.rows, &mut text);
        limits.check_text(text.len())?;
        limits.check_time()?;
        pages.push(PageSpan::appended(&text, before, &mut chars, (i + 1) as u32, SpanUnit::Sheet, Some(name)));
    }
    Ok(ParsedDocument { title, text, markdown: true, pages, attachments: Vec::new() })
}

/// csv and tsv: one table, its header detected as for sheets. Quoted fields may hold the separator
/// and line breaks (RFC 4180, read by the `csv` crate); rows may differ in length.
pub(super) fn parse_delimited(bytes: &[u8], delimiter: u8, limits: &ParseLimits) -> Result<ParsedDocument> {
    let text = super::decode_text(bytes)?;
    limits.check_text(text.len())?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut sheet = Sheet::default();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Error::Unparseable(format!("the delimited text could not be read: {e}")))?;
        if record.len() > MAX_SHEET_COLUMNS {
            return Err(too_wide("the table"));
        }
        sheet.push_row(record.iter().map(str::to_owned).collect())?;
        if n % 4096 == 0 {
            limits.check_time()?;
        }
    }
    let mut out = String::new();
    render_table(&sheet.rows, &mut out);
    limits.check_text(out.len())?;
    Ok(ParsedDocument { title: None, text: out, markdown: true, pages: vec![], attachments: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[&[&str]]) -> Vec<Vec<String>> {
        lines.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect()
    }

    #[test]
    fn header_is_the_first_all_text_row_and_notes_stay_above_it() {
        let r = rows(&[&["Regional sales 2026"], &["Region", "Q1", "Q3"], &["North", "10", "30"], &["South", "20", "5"]]);
        assert_eq!(header_row(&r), Some(1));
        let mut out = String::new();
        render_table(&r, &mut out);
        assert_eq!(out, "Regional sales 2026\n\nRegion | Q1 | Q3\nNorth | 10 | 30\nSouth | 20 | 5");
    }

    #[test]
    fn a_table_of_numbers_gets_column_names() {
        let r = rows(&[&["1", "2"], &["3", "4"]]);
        assert_eq!(header_row(&r), None);
        let mut out = String::new();
        render_table(&r, &mut out);
        assert_eq!(out, "Column 1 | Column 2\n1 | 2\n3 | 4");
    }

    #[test]
    fn long_tables_repeat_their_header_in_every_block() {
        let mut r = rows(&[&["Station", "Platforms"]]);
        for i in 0..200 {
            r.push(vec![format!("Station number {i}"), i.to_string()]);
        }
        let mut out = String::new();
        render_table(&r, &mut out);
        let blocks: Vec<&str> = out.split("\n\n").collect();
        assert!(blocks.len() > 3, "{} blocks", blocks.len());
        assert!(blocks.iter().all(|b| b.starts_with("Station | Platforms\n")), "{out}");
        assert!(blocks.iter().all(|b| b.len() < BLOCK_BYTES + 64));
        // Every row is there once.
        assert_eq!(out.matches("Station number").count(), 200);
    }

    #[test]
    fn short_rows_are_padded_so_they_stay_table_rows_and_pipes_in_cells_are_escaped() {
        let r = rows(&[&["Name", "Note", "Amount"], &["Total"], &["a|b", "two\nlines", "3"]]);
        let mut out = String::new();
        render_table(&r, &mut out);
        assert_eq!(out, "Name | Note | Amount\nTotal |  |\na/b | two lines | 3");
    }

    #[test]
    fn csv_with_quotes_separators_and_ragged_rows() {
        let csv = "City,Note,Count\n\"Lyon, FR\",\"said \"\"hi\"\"\",3\nOslo,,\n\n";
        let limits = ParseLimits::default();
        let doc = parse_delimited(csv.as_bytes(), b',', &limits).unwrap();
        assert_eq!(doc.text, "City | Note | Count\nLyon, FR | said \"hi\" | 3\nOslo |  |");
        let tsv = "a\tb\nx\ty\n";
        let doc = parse_delimited(tsv.as_bytes(), b'\t', &limits).unwrap();
        assert_eq!(doc.text, "a | b\nx | y");
    }

    #[test]
    fn too_many_rows_or_columns_are_refused() {
        let wide = format!("{}\n", vec!["x"; MAX_SHEET_COLUMNS + 1].join(","));
        let limits = ParseLimits::default();
        let e = parse_delimited(wide.as_bytes(), b',', &limits).unwrap_err();
        assert!(e.to_string().contains("column"), "{e}");
        let mut sheet = Sheet::new(Some("Log".into()), MAX_TABLE_CELLS);
        for i in 0..MAX_SHEET_ROWS {
            sheet.push_row(vec![i.to_string()]).unwrap();
        }
        let e = sheet.push_row(vec!["one more".into()]).unwrap_err();
        assert!(e.to_string().contains("'Log'"), "{e}");
        // Cells are counted across the document's sheets: wide rows run out of them first.
        let mut wide = Sheet::new(None, 3_000);
        assert!(wide.push_row(vec![String::new(); 1_000]).is_ok_and(|_| wide.rows.is_empty()), "an empty row costs nothing");
        let mut row = vec![String::new(); 1_000];
        row[999] = "x".into();
        for _ in 0..3 {
            wide.push_row(row.clone()).unwrap();
        }
        let e = wide.push_row(row).unwrap_err();
        assert!(e.to_string().contains("cells"), "{e}");
    }
}
