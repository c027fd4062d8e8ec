//! ragd's search filter, checked once for both backends: each condition is a payload path with
//! one value or a list of values to match. Metadata keys are restricted to plain names so a key can
//! never be read as a JSON path into other payload fields.

use ragd_core::types::SearchFilter;
use ragd_core::{Error, Result};
use serde_json::Value;

/// What a payload field must equal: one string, integer or boolean, or any of a non-empty list of
/// strings or of integers.
pub(crate) enum Wanted {
    One(Value),
    Any(Vec<Value>),
}

pub(crate) fn conditions(f: &SearchFilter) -> Result<Vec<(String, Wanted)>> {
    let mut out = Vec::new();
    if let Some(ids) = &f.doc_id {
        out.push(("doc_id".to_owned(), Wanted::Any(ids.values().into_iter().map(Value::String).collect())));
    }
    for (key, value) in &f.metadata {
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::invalid("invalid_filter", format!("metadata key `{key}`: use letters, digits, `_` and `-`")));
        }
        let wanted = match value {
            Value::String(_) | Value::Bool(_) => Wanted::One(value.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Wanted::One(value.clone()),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => Wanted::Any(items.clone()),
            Value::Array(items) if !items.is_empty() && items.iter().all(|v| v.is_i64() || v.is_u64()) => Wanted::Any(items.clone()),
            _ => {
                return Err(Error::invalid(
                    "invalid_filter",
                    format!("metadata `{key}`: match a string, integer, boolean, or a non-empty list of strings or integers"),
                ));
            }
        };
        out.push((format!("metadata.{key}"), wanted));
    }
    Ok(out)
}
