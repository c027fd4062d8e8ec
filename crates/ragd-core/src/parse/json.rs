//! JSON and JSON Lines files as documents: an object's fields as `key: value` lines, a nested object
//! under a heading of its key, an array of records with the same fields as a table with those
//! fields as its header, other arrays item by item. serde_json refuses nesting deeper than 128
//! levels, so the walk below is bounded too.

use serde_json::{Map, Value};

use super::sheet::{MAX_SHEET_COLUMNS, MAX_SHEET_ROWS, MAX_TABLE_CELLS, clean_cell, render_table};
use super::{ParseLimits, ParsedDocument, push_block};
use crate::error::{Error, Result};

/// Nested objects deeper than this become `a.b.c: value` lines instead of headings.
const MAX_HEADING_LEVEL: usize = 4;
/// Values (counted by their separators, before parsing) one file may hold: a parsed value takes
/// about 32 bytes however short its text (by that estimate `[0,0,0,…]` would take about 16 times its size); more:
/// 422 `document_too_large`.
const MAX_JSON_VALUES: usize = 2_000_000;

fn check_values(text: &str) -> Result<()> {
    let values = text.bytes().filter(|b| matches!(b, b',' | b'[' | b'{' | b':')).count();
    if values > MAX_JSON_VALUES {
        return Err(Error::limit(
            "document_too_large",
            format!("the JSON holds more than {MAX_JSON_VALUES} values; ragd reads JSON documents, not data dumps of that size"),
        ));
    }
    Ok(())
}

pub(super) fn parse_json(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument> {
    let text = super::decode_text(bytes)?;
    limits.check_text(text.len())?;
    check_values(&text)?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::Unparseable(format!("the JSON could not be read: {e}")))?;
    let title = value.as_object().and_then(title_of);
    let mut out = String::new();
    render_value(&value, "", 1, &mut out, limits)?;
    limits.check_text(out.len())?;
    Ok(ParsedDocument { title, text: out, markdown: true, pages: vec![], attachments: Vec::new() })
}

pub(super) fn parse_jsonl(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument> {
    let text = super::decode_text(bytes)?;
    limits.check_text(text.len())?;
    check_values(&text)?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::Unparseable(format!("line {} of the JSON Lines file could not be read: {e}", n + 1)))?;
        records.push(value);
        if n % 4096 == 0 {
            limits.check_time()?;
        }
    }
    let mut out = String::new();
    render_array(&records, "", 1, &mut out, limits)?;
    limits.check_text(out.len())?;
    Ok(ParsedDocument { title: None, text: out, markdown: true, pages: vec![], attachments: Vec::new() })
}

/// A top-level "title" or "name" string names the document.
fn title_of(map: &Map<String, Value>) -> Option<String> {
    ["title", "name"].iter().find_map(|k| map.get(*k).and_then(Value::as_str)).map(|s| clean_cell(s)).filter(|s| !s.is_empty() && s.len() < 200)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn render_value(v: &Value, path: &str, level: usize, out: &mut String, limits: &ParseLimits) -> Result<()> {
    match v {
        Value::Object(map) => render_object(map, path, level, out, limits),
        Value::Array(items) => render_array(items, path, level, out, limits),
        other => {
            let s = scalar(other).unwrap_or_default();
            if !s.is_empty() {
                push_block(out, &if path.is_empty() { s } else { format!("{path}: {s}") });
            }
            Ok(())
        }
    }
}

fn render_object(map: &Map<String, Value>, path: &str, level: usize, out: &mut String, limits: &ParseLimits) -> Result<()> {
    limits.check_text(out.len())?;
    // Scalar fields first, as one block of `key: value` lines.
    let lines: Vec<String> = map
        .iter()
        .filter_map(|(k, v)| scalar(v).filter(|s| !s.is_empty()).map(|s| format!("{}: {}", join(path, k), s.split_whitespace().collect::<Vec<_>>().join(" "))))
        .collect();
    if !lines.is_empty() {
        push_block(out, &lines.join("\n"));
    }
    for (k, v) in map {
        if scalar(v).is_some() {
            continue;
        }
        if level <= MAX_HEADING_LEVEL {
            push_block(out, &format!("{} {}", "#".repeat(level), clean_cell(k)));
            render_value(v, "", level + 1, out, limits)?;
        } else {
            render_value(v, &join(path, k), level + 1, out, limits)?;
        }
    }
    Ok(())
}

/// Below the heading levels a field is named by its dotted path.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn render_array(items: &[Value], path: &str, level: usize, out: &mut String, limits: &ParseLimits) -> Result<()> {
    if items.len() > MAX_SHEET_ROWS {
        return Err(Error::limit("document_too_large", format!("an array of the JSON has more than {MAX_SHEET_ROWS} items")));
    }
    // Records whose fields are all scalars: a table, its header the union of their keys in order
    // of first appearance.
    let records: Option<Vec<&Map<String, Value>>> = items
        .iter()
        .map(|v| v.as_object().filter(|m| m.values().all(|x| scalar(x).is_some())))
        .collect();
    if let Some(records) = records.filter(|r| !r.is_empty()) {
        let mut keys: Vec<&String> = Vec::new();
        for r in &records {
            for k in r.keys() {
                if !keys.contains(&k) {
                    keys.push(k);
                    if keys.len() > MAX_SHEET_COLUMNS {
                        return Err(super::sheet::too_wide("a JSON table"));
                    }
                }
            }
        }
        if records.len().saturating_mul(keys.len()) > MAX_TABLE_CELLS {
            return Err(Error::limit("document_too_large", format!("a JSON table would hold more than {MAX_TABLE_CELLS} cells")));
        }
        let mut rows = vec![keys.iter().map(|k| k.to_string()).collect::<Vec<_>>()];
        rows.extend(records.iter().map(|r| keys.iter().map(|k| r.get(*k).and_then(scalar).unwrap_or_default()).collect()));
        if !path.is_empty() {
            push_block(out, &format!("{path}:"));
        }
        render_table(&rows, out);
        return Ok(());
    }
    // Scalars: one line.
    if items.iter().all(|v| scalar(v).is_some()) {
        let list = items.iter().filter_map(scalar).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(", ");
        if !list.is_empty() {
            push_block(out, &if path.is_empty() { list } else { format!("{path}: {list}") });
        }
        return Ok(());
    }
    // Anything else: item by item.
    for (i, v) in items.iter().enumerate() {
        limits.check_text(out.len())?;
        let name = if path.is_empty() { format!("[{}]", i + 1) } else { format!("{path}[{}]", i + 1) };
        render_value(v, &name, level, out, limits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_records_and_lists() {
        let json = br#"{"name": "Depot inventory", "site": {"city": "Ghent", "open": true},
            "bins": [{"code": "A1", "kg": 12}, {"code": "B7", "kg": 3.5, "note": "cold"}], "tags": ["x", "y"]}"#;
        let doc = parse_json(json, &ParseLimits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Depot inventory"));
        assert_eq!(
            doc.text,
            "name: Depot inventory\n\n# site\n\ncity: Ghent\nopen: true\n\n# bins\n\ncode | kg | note\nA1 | 12 |\nB7 | 3.5 | cold\n\n# tags\n\nx, y"
        );
    }

    #[test]
    fn json_lines_are_a_table_and_bad_lines_say_where() {
        let doc = parse_jsonl(b"{\"id\": 1, \"city\": \"Oslo\"}\n\n{\"id\": 2, \"city\": \"Lima\"}\n", &ParseLimits::default()).unwrap();
        assert_eq!(doc.text, "id | city\n1 | Oslo\n2 | Lima");
        let e = parse_jsonl(b"{\"id\": 1}\n{oops\n", &ParseLimits::default()).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn a_file_of_millions_of_tiny_values_is_refused_before_it_is_parsed() {
        let many = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES));
        let e = parse_json(many.as_bytes(), &ParseLimits::default()).unwrap_err();
        assert!(matches!(e, Error::Limit { code: "document_too_large", .. }), "{e:?}");
        assert!(parse_json(b"[0,1,2]", &ParseLimits::default()).is_ok());
    }

    #[test]
    fn nesting_past_serde_jsons_limit_is_refused_not_recursed() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json(deep.as_bytes(), &ParseLimits::default()).is_err());
    }
}
