//! Evidence units: retrieved chunks split into the smallest pieces that can prove an answer —
//! sentences, list items, and table rows carried with their header cells — each with its char span
//! inside its chunk and the headings (and table caption) it sits under.
//!
//! Also the question's shape (what kind of value answers it) and the values of each kind found in a
//! text. Pure functions: scoring with the embedder happens in `select.rs`.

use std::sync::LazyLock;

use regex::Regex;

/// One piece of evidence from one retrieved passage.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Index of the passage (0-based, in rank order) the unit comes from.
    pub passage: usize,
    /// Char offsets of the unit's source text inside the passage's text.
    pub char_start: usize,
    pub char_end: usize,
    /// The unit as a reader should see it: a table row reads "Header: cell; Header: cell".
    pub text: String,
    /// Headings in force, outermost first, then the table caption when the unit is a table row.
    pub context: Vec<String>,
    /// The unit is a section heading that dates a release: evidence for dates and versions only.
    pub heading: bool,
    /// For a sentence that opens with a pronoun ("It was later revised to £42,300"), the sentence
    /// before it, which says what the pronoun is: matched and embedded with the unit, never a
    /// source of its values.
    pub lead: Option<String>,
}

impl Unit {
    /// The innermost heading or caption, the sentence a pronoun refers to, and the unit: what is
    /// embedded and matched.
    pub fn with_context(&self) -> String {
        let text = match &self.lead {
            Some(l) => format!("{l} {}", self.text),
            None => self.text.clone(),
        };
        match self.context.last() {
            Some(c) => format!("{c}: {text}"),
            None => text,
        }
    }
}

/// A sentence that opens with a pronoun standing for something said before it.
fn opens_with_pronoun(sentence: &str) -> bool {
    let first = sentence.split_whitespace().next().unwrap_or("").trim_matches(|c: char| !c.is_alphanumeric());
    matches!(first, "It" | "This" | "That" | "These" | "Those" | "They" | "Its" | "Their" | "He" | "She")
}

/// A line of the chunk with its byte range (without the newline).
struct Line<'a> {
    start: usize,
    text: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split('\n') {
        out.push(Line { start, text: piece });
        start += piece.len() + 1;
    }
    out
}

/// Markdown heading level and text, for `#`-lines.
fn md_heading(line: &str) -> Option<(usize, String)> {
    let t = line.trim_start();
    let level = t.chars().take_while(|c| *c == '#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !rest.starts_with(' ') {
        return None;
    }
    let h = rest.trim().trim_matches('#').trim();
    (!h.is_empty()).then(|| (level, h.to_owned()))
}

static NUMBERED_HEADING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{1,2}(\.\d{1,2})*\.?\s+\p{Lu}[^.!?:;]{1,60}$").expect("regex"));
static CAPTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\**\s*(Table|Figure)\s+\d+[^\n]{0,120}$").expect("regex"));
static LIST_ITEM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*([-*•▪◦]|\d{1,2}[.)])\s+").expect("regex"));
static WIDE_GAP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\S {2,}\S").expect("regex"));
static MD_RULE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$").expect("regex"));

/// A plain-text heading (PDF text has no `#`): a short numbered line without sentence punctuation.
fn plain_heading(line: &str) -> Option<String> {
    let t = line.trim();
    (t.split_whitespace().count() <= 9 && NUMBERED_HEADING.is_match(t)).then(|| t.to_owned())
}

fn caption(line: &str) -> Option<String> {
    let t = line.trim();
    CAPTION.is_match(t).then(|| t.trim_matches('*').trim().to_owned())
}

#[derive(Clone, Copy, PartialEq)]
enum TableStyle {
    /// `| a | b |` (Markdown) or `a | b` (docx).
    Pipes,
    /// Columns padded with runs of spaces (HTML tables as text).
    Gaps,
}

fn table_style(line: &str) -> Option<TableStyle> {
    let t = line.trim();
    if t.is_empty() {
        return None;
    }
    if t.matches('|').count() >= 1 && (t.starts_with('|') || t.contains(" | ")) {
        return Some(TableStyle::Pipes);
    }
    if WIDE_GAP.find_iter(t).count() >= 1 && !t.ends_with('.') {
        return Some(TableStyle::Gaps);
    }
    None
}

fn cells(line: &str, style: TableStyle) -> Vec<String> {
    let t = line.trim();
    match style {
        TableStyle::Pipes => t.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect(),
        TableStyle::Gaps => {
            static GAP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r" {2,}").expect("regex"));
            GAP.split(t).map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect()
        }
    }
}

/// Column starts (char positions) of a table laid out with spaces: a position every row has a space
/// before, where at least half of the rows have text. Finds a column whose header is set off by a
/// single space ("Extension Email") from the rows below it.
fn gap_columns(rows: &[&str]) -> Vec<usize> {
    let rows: Vec<Vec<char>> = rows.iter().map(|r| r.trim_end().chars().collect()).collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let at = |r: &Vec<char>, p: usize| r.get(p).copied().unwrap_or(' ');
    let mut cols = vec![0];
    for p in 1..width {
        let before_blank = rows.iter().all(|r| at(r, p - 1) == ' ');
        let starts = rows.iter().filter(|r| at(r, p) != ' ').count();
        // Runs of two or more spaces in some row mark a real gap, not a space inside a cell.
        let wide = rows.iter().any(|r| p >= 2 && at(r, p - 2) == ' ' && at(r, p) != ' ');
        if before_blank && wide && starts * 2 >= rows.len() {
            cols.push(p);
        }
    }
    cols
}

fn cut(row: &str, cols: &[usize]) -> Vec<String> {
    let chars: Vec<char> = row.chars().collect();
    cols.iter()
        .enumerate()
        .map(|(k, &c)| {
            let end = cols.get(k + 1).copied().unwrap_or(chars.len()).min(chars.len());
            chars.get(c.min(chars.len())..end).map(|s| s.iter().collect::<String>().trim().to_owned()).unwrap_or_default()
        })
        .collect()
}

/// Splits one passage into evidence units. `heading_path` is the passage's headings at its start;
/// headings met inside the passage replace the innermost ones from there on.
pub fn units(passage: usize, text: &str, heading_path: &[String]) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut headings: Vec<String> = heading_path.to_vec();
    let mut caption_ctx: Option<String> = None;
    let all = lines(text);
    let char_of = |byte: usize| text[..byte].chars().count();
    let mut i = 0;
    let push = |out: &mut Vec<Unit>, start: usize, end: usize, shown: String, headings: &[String], caption: &Option<String>, heading: bool| {
        let shown = one_line(&shown);
        if shown.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return;
        }
        let mut context: Vec<String> = headings.to_vec();
        if let Some(c) = caption {
            context.push(c.clone());
        }
        out.push(Unit { passage, char_start: char_of(start), char_end: char_of(end), text: shown, context, heading, lead: None });
    };
    while i < all.len() {
        let line = &all[i];
        let t = line.text.trim();
        if t.is_empty() {
            i += 1;
            continue;
        }
        if let Some((level, h)) = md_heading(t) {
            headings.truncate(level.saturating_sub(1).min(headings.len()));
            // A section heading that names a release and its date ("4.1.0 — released 9 September
            // 2024") is evidence of its own: it answers "when did 4.1 come out?", which none of
            // the lines under it says in so many words. (Not the document's title.)
            if !headings.is_empty() && (VERSION.is_match(&h) && DATE.is_match(&h)) {
                let start = line.start + (line.text.len() - line.text.trim_start().len());
                push(&mut out, start, line.start + line.text.trim_end().len(), h.clone(), &headings, &caption_ctx, true);
            }
            headings.push(h);
            caption_ctx = None;
            i += 1;
            continue;
        }
        if let Some(c) = caption(t) {
            caption_ctx = Some(c);
            i += 1;
            continue;
        }
        // A table: two or more consecutive lines of one style (the first is the header).
        if let Some(style) = table_style(t) {
            let mut j = i;
            while j < all.len() && table_style(all[j].text) == Some(style) {
                j += 1;
            }
            if j - i >= 2 {
                let mut header: Option<Vec<String>> = None;
                let cols = (style == TableStyle::Gaps).then(|| gap_columns(&all[i..j].iter().map(|l| l.text).collect::<Vec<_>>()));
                for row in &all[i..j] {
                    if MD_RULE.is_match(row.text) {
                        continue;
                    }
                    let c = match &cols {
                        Some(cols) if cols.len() >= 2 => cut(row.text, cols),
                        _ => cells(row.text, style),
                    };
                    match &header {
                        None => header = Some(c),
                        Some(h) => {
                            let shown = if h.len() == c.len() && h.iter().all(|x| !x.is_empty()) {
                                h.iter().zip(&c).filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")
                            } else {
                                c.join("; ")
                            };
                            let start = row.start + (row.text.len() - row.text.trim_start().len());
                            push(&mut out, start, row.start + row.text.trim_end().len(), shown, &headings, &caption_ctx, false);
                        }
                    }
                }
                i = j;
                continue;
            }
        }
        if let Some(h) = plain_heading(t) {
            // Numbered PDF headings: not nested reliably, so they replace the innermost plain one.
            if headings.len() > heading_path.len() {
                headings.pop();
            }
            headings.push(h);
            caption_ctx = None;
            i += 1;
            continue;
        }
        // A list item, with its continuation lines (until a blank line or the next item).
        if LIST_ITEM.is_match(line.text) {
            let mut j = i + 1;
            while j < all.len() && !all[j].text.trim().is_empty() && !LIST_ITEM.is_match(all[j].text) && md_heading(all[j].text).is_none() {
                j += 1;
            }
            let start = line.start + (line.text.len() - line.text.trim_start().len());
            let end = all[j - 1].start + all[j - 1].text.trim_end().len();
            let body = LIST_ITEM.replace(&text[start..end], "").into_owned();
            let skipped = text[start..end].len() - body.len();
            for (s, e) in sentence_spans(&body) {
                push(&mut out, start + skipped + s, start + skipped + e, body[s..e].to_owned(), &headings, &caption_ctx, false);
            }
            i = j;
            continue;
        }
        // A paragraph: consecutive non-blank lines, split into sentences.
        let mut j = i + 1;
        while j < all.len() {
            let n = all[j].text.trim();
            if n.is_empty() || md_heading(n).is_some() || LIST_ITEM.is_match(all[j].text) || caption(n).is_some() || plain_heading(n).is_some() {
                break;
            }
            j += 1;
        }
        let start = line.start + (line.text.len() - line.text.trim_start().len());
        let end = all[j - 1].start + all[j - 1].text.trim_end().len();
        let para = &text[start..end];
        let mut before: Option<String> = None;
        for (s, e) in sentence_spans(para) {
            let n = out.len();
            push(&mut out, start + s, start + e, para[s..e].to_owned(), &headings, &caption_ctx, false);
            if out.len() > n {
                let u = out.last_mut().expect("pushed");
                if opens_with_pronoun(&u.text) {
                    u.lead = before.clone();
                }
                before = Some(u.text.clone());
            }
        }
        // A table's caption covers the rows that follow it, not the prose after the table.
        if !para.contains('\n') && para.split_whitespace().count() > 12 {
            caption_ctx = None;
        }
        i = j;
    }
    out
}

/// Byte spans of the sentences of a paragraph: a sentence ends at `.`, `!` or `?` followed by a
/// space and an upper-case letter, digit or quote — not after an abbreviation or a lone initial.
fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    const ABBREV: &[&str] = &["e.g", "i.e", "etc", "approx", "no", "nos", "vs", "dr", "mr", "mrs", "ms", "st", "fig", "ref", "incl", "ca", "cf"];
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(b, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let Some(&(_, next)) = chars.get(k + 1) else {
            continue;
        };
        if !next.is_whitespace() {
            continue;
        }
        let after = chars[k + 1..].iter().map(|x| x.1).find(|x| !x.is_whitespace());
        if !after.is_some_and(|a| a.is_uppercase() || a.is_ascii_digit() || "\"'“‘(".contains(a)) {
            continue;
        }
        let word: String = text[start..b].rsplit(|x: char| x.is_whitespace()).next().unwrap_or("").to_lowercase();
        if c == '.' && (ABBREV.contains(&word.trim_start_matches('(')) || word.chars().count() == 1) {
            continue;
        }
        let end = b + c.len_utf8();
        if text[start..end].trim().chars().any(char::is_alphanumeric) {
            out.push(trim_span(text, start, end));
        }
        start = end;
    }
    if text[start..].trim().chars().any(char::is_alphanumeric) {
        out.push(trim_span(text, start, text.len()));
    }
    out
}

fn trim_span(text: &str, start: usize, end: usize) -> (usize, usize) {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    (start + lead, start + s.trim_end().len())
}

pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What kind of value answers a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Money,
    Date,
    Time,
    Duration,
    Count,
    Quantity,
    Version,
    Code,
    Phone,
    /// A number that names something ("the room number", "the part number"): a code or a number.
    Number,
    /// No single value: the answer is the evidence itself.
    Open,
}

/// The question's shape, from its wording (English question words).
pub fn shape(question: &str) -> Shape {
    let q = format!(" {} ", question.to_lowercase().replace(['?', ',', '\''], " "));
    let has = |w: &str| q.contains(&format!(" {w} "));
    let any = |ws: &[&str]| ws.iter().any(|w| has(w));
    if any(&["cost", "costs", "costing", "costed", "price", "priced", "fee", "fees", "fare", "fares", "charge", "charged", "payment", "budget", "salary", "spend", "spent", "revenue", "allowance"])
        || (has("how") && has("much") && any(&["pay", "paid", "costs", "cost", "charge"]))
    {
        return Shape::Money;
    }
    if q.contains(" what time ") || q.contains(" which time ") || q.contains(" time do ") || q.contains(" time does ") {
        return Shape::Time;
    }
    if any(&["date", "dated"])
        || q.contains(" by when ")
        || q.contains(" which day ")
        || q.contains(" what day ")
        || q.contains(" what year ")
        || q.contains(" which year ")
    {
        return Shape::Date;
    }
    if any(&["version", "release", "releases"]) && any(&["which", "what"]) {
        return Shape::Version;
    }
    if any(&["code", "codes"]) && any(&["which", "what"]) {
        return Shape::Code;
    }
    // "What number do I ring/call…": a phone number, not a number that names something.
    if any(&["extension", "phone", "telephone", "dial"]) || (q.contains(" what number ") && any(&["ring", "call", "reach", "contact"])) {
        return Shape::Phone;
    }
    // "the room number", "the number of the room" — not "the number of people" (a count).
    static COUNTED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r" number of (?:the|a|an|this|that|its|their|our|your|my) ").expect("regex"));
    let counts = q.contains(" number of ") && !COUNTED.is_match(&q);
    if q.contains(" number ") && !counts && !q.contains(" what number ") {
        return Shape::Number;
    }
    if q.contains(" how long ") {
        return Shape::Duration;
    }
    if q.contains(" how many ") {
        return Shape::Count;
    }
    if q.contains(" when ") {
        return Shape::Date;
    }
    if q.contains(" how much ")
        || q.contains(" how fast ")
        || q.contains(" how far ")
        || q.contains(" how big ")
        || q.contains(" how high ")
        || q.contains(" how heavy ")
        || any(&["maximum", "minimum", "most", "least", "limit", "target", "length", "speed", "percentage", "rate"])
    {
        return Shape::Quantity;
    }
    Shape::Open
}

const MONTHS: &str =
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?";
const NUMBER_WORDS: &str = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|sixty|hundred";

static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:[£$€¥]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:m|bn|k|million|billion|thousand)\b)?|\b\d[\d,]*(?:\.\d+)?\s?(?:p|pence|pounds|euros?|dollars?|eur|gbp|usd|chf)\b|\b(?:eur|gbp|usd|chf)\s?\d[\d,]*(?:\.\d+)?)").expect("regex")
});
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{MONTHS})\b(?:\s+\d{{4}})?|(?:{MONTHS})\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|(?:{MONTHS})\s+\d{{4}}|the\s+\d{{1,2}}(?:st|nd|rd|th)|(?:1[5-9]|20)\d{{2}})\b")).expect("regex")
});
static TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b\d{1,2}:\d{2}(?:\s?[ap]\.?m\.?)?\b|\b\d{1,2}\.\d{2}\s?[ap]\.?m\.?|\b\d{1,2}\s?[ap]\.?m\.?|\b(?:noon|midnight)\b").expect("regex")
});
static DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\b(?:\d[\d,]*(?:\.\d+)?|{NUMBER_WORDS}|a|an)[\s-]?(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|h|days?|weeks?|months?|years?|shifts?)\b"
    ))
    .expect("regex")
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!(r"(?i)\b\d[\d,]*(?:\.\d+)?%?|\b(?:{NUMBER_WORDS})\b")).expect("regex"));
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)(?:\b\d[\d,]*(?:\.\d+)?|\b(?:{NUMBER_WORDS}))(?:\s?%|\s?[a-zµ°/]+(?:/[a-z]+)?(?:\s(?:per|an?|each)\s[a-z]+)?)?")).expect("regex")
});
static VERSION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\bv?\d+\.\d+(?:\.\d+)*\b").expect("regex"));
/// `E07`, `CD-420`, `HF-4207-D`.
const CODE_PATTERN: &str = r"\b[A-Z]{1,4}-?\d{1,5}(?:-[A-Z0-9]+)*\b";
static CODE: LazyLock<Regex> = LazyLock::new(|| Regex::new(CODE_PATTERN).expect("regex"));
// Whole phone numbers first, so the area code of `01632 960000` is not taken for an extension.
static PHONE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+?\(?\d[\d ()-]{6,}\d|\b\d{3,5}\b").expect("regex"));
/// A code (`B03`, `HF-4207-D`), a dotted number (`2.10`) or a plain number.
static LABEL: LazyLock<Regex> = LazyLock::new(|| Regex::new(&format!(r"{CODE_PATTERN}|\b\d+(?:\.\d+)+\b|\b\d{{1,6}}[A-Z]?\b")).expect("regex"));

/// The values of the shape's kind in a text, as (byte start, byte end) spans.
pub fn values(shape: Shape, text: &str) -> Vec<(usize, usize)> {
    let re: &Regex = match shape {
        Shape::Money => &MONEY,
        Shape::Date => &DATE,
        Shape::Time => &TIME,
        Shape::Duration => &DURATION,
        Shape::Count => &NUMBER,
        Shape::Quantity => &QUANTITY,
        Shape::Version => &VERSION,
        Shape::Code => &CODE,
        Shape::Phone => &PHONE,
        Shape::Number => &LABEL,
        Shape::Open => return Vec::new(),
    };
    if shape == Shape::Date {
        // "When" asks for a date or a time of day: a time answers too (`opens at 6 am`).
        let mut both = values_of(&DATE, shape, text);
        both.extend(values_of(&TIME, Shape::Time, text));
        both.sort_unstable();
        return both;
    }
    values_of(re, shape, text)
}

fn values_of(re: &Regex, shape: Shape, text: &str) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = re
        .find_iter(text)
        // A number inside a code (`CD-420`, `HF-4207-D`) is not a value of its own.
        .filter(|m| shape == Shape::Code || !text[..m.start()].ends_with(|c: char| c == '-' || c.is_alphabetic()))
        .filter(|m| m.as_str().chars().any(|c| c.is_alphanumeric()))
        // A bare year is not a count or a quantity.
        .filter(|m| !(matches!(shape, Shape::Count | Shape::Quantity | Shape::Phone | Shape::Number) && is_year(m.as_str())))
        // Nor is the tail of a larger number (`100` in `3,100`).
        .filter(|m| shape == Shape::Code || !after_digit_separator(&text[..m.start()]))
        // Trailing punctuation belongs to the sentence (`£15,`).
        .map(|m| (m.start(), m.start() + m.as_str().trim_end_matches(['.', ',', ';', ':']).len()))
        .filter(|(s, e)| e > s)
        .collect();
    if matches!(shape, Shape::Count | Shape::Quantity | Shape::Phone | Shape::Number) {
        // The day, month and time of a date are not counts, quantities or numbers (`5` in
        // `5 September 2024`, `10` in `10:00`).
        let dated: Vec<(usize, usize)> = DATE.find_iter(text).chain(TIME.find_iter(text)).map(|m| (m.start(), m.end())).collect();
        out.retain(|(s, e)| !dated.iter().any(|(a, b)| s < b && a < e));
    }
    if shape == Shape::Count {
        // A count is whole: a dotted number is a version, a measure or a room (`DockMate 4.0`,
        // `firmware 2.7.3`), not how many.
        out.retain(|(s, e)| !text[*s..*e].contains('.'));
    }
    if shape == Shape::Quantity {
        // Quantities must carry a number (the pattern also takes number words).
        out.retain(|(s, e)| text[*s..*e].chars().any(|c| c.is_ascii_digit()) || text[*s..*e].split_whitespace().count() > 1);
    }
    out
}

/// `before` ends in a digit and a thousands or decimal separator (`3,` of `3,100`).
fn after_digit_separator(before: &str) -> bool {
    let mut c = before.chars().rev();
    matches!((c.next(), c.next()), (Some(',' | '.'), Some(d)) if d.is_ascii_digit())
}

fn is_year(s: &str) -> bool {
    s.len() == 4 && s.chars().all(|c| c.is_ascii_digit()) && (s.starts_with("19") || s.starts_with("20"))
}

/// Identifiers a question names (codes such as `E07`, versions such as `4.1`): evidence about another
/// identifier of the same form is about something else.
pub fn identifiers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = CODE.find_iter(text).map(|m| m.as_str().to_owned()).collect();
    out.extend(VERSION.find_iter(text).map(|m| m.as_str().trim_start_matches(['v', 'V']).to_owned()));
    out.sort();
    out.dedup();
    out
}

/// Whether two identifiers name the same thing: equal, or versions of which one is the other's
/// line (`4.1` and `4.1.0` or `4.1.2`; not `4.10`).
pub fn same_identifier(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    fn version(s: &str) -> Option<Vec<&str>> {
        s.starts_with(|c: char| c.is_ascii_digit()).then(|| s.split('.').collect())
    }
    match (version(a), version(b)) {
        (Some(x), Some(y)) => {
            let (short, long) = if x.len() <= y.len() { (x, y) } else { (y, x) };
            short.len() >= 2 && long.starts_with(&short)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(u: &[Unit]) -> Vec<String> {
        u.iter().map(|u| u.text.clone()).collect()
    }

    #[test]
    fn table_rows_carry_their_headers_in_every_table_form() {
        let md = "## Rates\n\n**Table 1 — Allowances**\n\n| City | Daily meal allowance | Hotel cap |\n| --- | --- | --- |\n| Hamburg | EUR 61 | EUR 180 |\n| Lyon | EUR 50 | EUR 150 |";
        let docx = "# Rates\n\nCity | Daily meal allowance | Hotel cap\nHamburg | EUR 61 | EUR 180\nLyon | EUR 50 | EUR 150";
        let html = "City       Daily meal allowance  Hotel cap\nHamburg    EUR 61                EUR 180\nLyon       EUR 50                EUR 150";
        for (form, text) in [("md", md), ("docx", docx), ("html", html)] {
            let u = units(0, text, &[]);
            let rows = texts(&u);
            assert!(rows.contains(&"City: Hamburg; Daily meal allowance: EUR 61; Hotel cap: EUR 180".to_owned()), "{form}: {rows:?}");
            let row = u.iter().find(|x| x.text.starts_with("City: Hamburg")).unwrap();
            let span: String = text.chars().skip(row.char_start).take(row.char_end - row.char_start).collect();
            assert!(span.contains("Hamburg") && span.contains("180"), "{form}: span {span:?}");
        }
        let u = units(0, md, &[]);
        assert_eq!(u[0].context, vec!["Rates".to_owned(), "Table 1 — Allowances".to_owned()]);
    }

    /// Through the real parsers: a table row reads with its header cells in md, html and docx.
    #[test]
    fn parsed_tables_give_rows_with_headers() {
        use crate::parse::{SourceKind, parse};
        let fixture = |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap();
        let docx = parse(SourceKind::Docx, &fixture("sample.docx")).unwrap();
        let rows = texts(&units(0, &docx.text, &[]));
        assert!(rows.contains(&"Plant: Tomato; Water: Daily".to_owned()), "docx: {rows:?}\n{}", docx.text);
        let html = b"<html><body><h2>Rates</h2><table><tr><th>City</th><th>Daily meal allowance</th><th>Hotel cap</th></tr>\
            <tr><td>Hamburg</td><td>EUR 61</td><td>EUR 180</td></tr><tr><td>Lyon</td><td>EUR 50</td><td>EUR 150</td></tr></table></body></html>";
        let html = parse(SourceKind::Html, html).unwrap();
        let rows = texts(&units(0, &html.text, &[]));
        assert!(rows.contains(&"City: Hamburg; Daily meal allowance: EUR 61; Hotel cap: EUR 180".to_owned()), "html: {rows:?}\n{}", html.text);
        let md = parse(SourceKind::Markdown, b"# Rates\n\n| City | Daily meal allowance | Hotel cap |\n| --- | --- | --- |\n| Hamburg | EUR 61 | EUR 180 |\n")
            .unwrap();
        let rows = texts(&units(0, &md.text, &[]));
        assert!(rows.contains(&"City: Hamburg; Daily meal allowance: EUR 61; Hotel cap: EUR 180".to_owned()), "md: {rows:?}");
    }

    #[test]
    fn sentences_and_list_items_are_units_with_offsets() {
        let text = "# Leave\n\nStaff get 27 days. After five years, e.g. in 2029, it rises to 30 days.\n\n- Carry over up to 5 days.\n- Sick leave needs a note\n  from a doctor.";
        let u = units(3, text, &[]);
        assert_eq!(
            texts(&u),
            vec![
                "Staff get 27 days.",
                "After five years, e.g. in 2029, it rises to 30 days.",
                "Carry over up to 5 days.",
                "Sick leave needs a note from a doctor."
            ]
        );
        for x in &u {
            assert_eq!(x.passage, 3);
            assert_eq!(x.context, vec!["Leave".to_owned()]);
            let span: String = text.chars().skip(x.char_start).take(x.char_end - x.char_start).collect();
            assert_eq!(one_line(&span), x.text);
        }
    }

    #[test]
    fn pdf_rows_and_numbered_headings() {
        let text = "3. Technical specifications\n\nTable 1 — Specifications\n\nParameter Value\n\nMaximum flow rate 42 L/h at 10 bar\n\n4. Installation notes\n\nMount the pump on the bracket.";
        let u = units(0, text, &[]);
        let flow = u.iter().find(|x| x.text.starts_with("Maximum flow")).unwrap();
        assert_eq!(flow.context, vec!["3. Technical specifications".to_owned(), "Table 1 — Specifications".to_owned()]);
        let mount = u.iter().find(|x| x.text.starts_with("Mount")).unwrap();
        assert_eq!(mount.context, vec!["4. Installation notes".to_owned()]);
    }

    #[test]
    fn question_shapes_and_values() {
        assert_eq!(shape("How much does a replacement kit cost?"), Shape::Money);
        assert_eq!(shape("What time do the stores open on a Saturday?"), Shape::Time);
        assert_eq!(shape("By what date is the fix due?"), Shape::Date);
        assert_eq!(shape("How long can a session last?"), Shape::Duration);
        assert_eq!(shape("How many properties lost supply?"), Shape::Count);
        assert_eq!(shape("What did the repair end up costing?"), Shape::Money);
        assert_eq!(shape("What number do I ring to speak to someone in payroll?"), Shape::Phone);
        assert_eq!(shape("In which version did the export go away?"), Shape::Version);
        assert_eq!(shape("Which code means the pump keeps dosing?"), Shape::Code);
        assert_eq!(shape("What's the extension for facilities?"), Shape::Phone);
        assert_eq!(shape("What is the maximum flow?"), Shape::Quantity);
        assert_eq!(shape("What does E07 mean?"), Shape::Open);
        assert_eq!(shape("What is the room number of the room where we met?"), Shape::Number);
        assert_eq!(shape("What is the part number of the pump head?"), Shape::Number);
        assert_eq!(shape("What is the number of people on the rota?"), Shape::Open);
        // Days, times and the tail of a larger number are not counts or extensions.
        let v = |shape, t: &str| values(shape, t).into_iter().map(|(a, b)| t[a..b].to_owned()).collect::<Vec<_>>();
        assert!(v(Shape::Number, "Meeting held on Thursday 5 September 2024, 10:00–12:30, in the Boardroom").is_empty());
        assert_eq!(v(Shape::Phone, "Bottled water: 3,100 litres handed out"), Vec::<String>::new());
        assert_eq!(v(Shape::Number, "Boardroom 2.10 Second floor"), vec!["2.10"]);
        let t = "Call-out: £42.00 per call-out, at 42 L/h, on 15 October 2024 at 07:00 for 4 hours (v4.0, code W14, ext 4300).";
        let get = |s: Shape| values(s, t).into_iter().map(|(a, b)| t[a..b].to_owned()).collect::<Vec<_>>();
        assert_eq!(get(Shape::Money), vec!["£42.00"]);
        assert_eq!(get(Shape::Date), vec!["15 October 2024", "07:00"]);
        assert_eq!(get(Shape::Time), vec!["07:00"]);
        assert_eq!(get(Shape::Duration), vec!["4 hours"]);
        assert!(get(Shape::Version).contains(&"v4.0".to_owned()));
        assert_eq!(get(Shape::Code), vec!["W14"]);
        assert!(get(Shape::Phone).contains(&"4300".to_owned()));
        assert_eq!(identifiers("When is HydroLog 4.1 out, and what is E07?"), vec!["4.1".to_owned(), "E07".to_owned()]);
        // A release line names its point releases.
        assert!(same_identifier("4.1", "4.1.0") && same_identifier("4.1.2", "4.1") && same_identifier("E07", "E07"));
        assert!(!same_identifier("4.1", "4.10") && !same_identifier("4.1.2", "4.1.3") && !same_identifier("E07", "E071"));
        // Counts are whole: versions and dotted numbers are not how many.
        assert_eq!(v(Shape::Count, "firmware (version 2.7.3) was pushed from DockMate 4.0 to every station"), Vec::<String>::new());
        assert_eq!(v(Shape::Count, "revised to 212 of our 340 stations"), vec!["212", "340"]);
    }
}
