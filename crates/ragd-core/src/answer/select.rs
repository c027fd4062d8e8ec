//! Picks the evidence for a question among the units of the retrieved passages, decides whether
//! the documents answer it at all, and says the answer briefly; checks a generated answer against
//! the evidence it was given.
//!
//! A unit's score mixes what the embedder thinks (cosine of question and unit, with its heading)
//! with how much of the question's wording it holds (terms weighted by rarity among the candidate
//! units), plus a small bonus for better-ranked passages. The question's shape (money, date, code…)
//! says which units can answer: one that holds no value of that kind cannot.
//!
//! "The documents don't say" is decided on the best answering unit's support (dense + lexical,
//! without the bonuses): below `NOT_FOUND_BELOW` (`NOT_FOUND_BELOW_OPEN` when no kind of value is
//! asked for) nothing is claimed. The constant is calibrated on
//! qa-dev (see docs/answers.md): the midpoint, to two decimals, between the strongest unanswerable
//! question and the weakest question whose best unit is right; re-derive it when the scoring changes.
//!
//! A question that reaches its subject through another document (the room where a meeting was held)
//! gets a `Bridge`: the anchor unit's names, searched again, and `link` picks the unit that names them.

use std::collections::{HashMap, HashSet};

use super::evidence::{self, Shape, Unit};

/// Weight of the embedder's cosine in a unit's support (the rest is lexical coverage).
const DENSE_WEIGHT: f32 = 0.55;
/// Confidence below which the answer is "the documents don't say", for a question that asks for a
/// kind of value (a unit must hold one to answer at all).
pub const NOT_FOUND_BELOW: f32 = 0.39;
/// The same line for a question no kind of value answers ("who…", "what does E07 mean"): no value
/// filter stands between a loosely related sentence and the answer, so it needs more support.
pub const NOT_FOUND_BELOW_OPEN: f32 = 0.42;

/// Most that standing out from the other candidates adds to the confidence.
const MAX_MARGIN: f32 = 0.2;
/// Weight of a question term found only in the headings above a unit's innermost one.
const OUTER_WEIGHT: f32 = 0.5;
/// How far below the best unit a unit still votes for its release (see `vote_releases`).
const VOTE_WINDOW: f32 = 0.1;
/// What borrowing its date from a heading costs a unit (see `select_as`).
const BORROWED_DATE: f32 = 0.05;

/// A unit that gives its value as a revision ("later revised to £42,300") scores this much above
/// one that gives it as a first figure ("first estimated at £18,500"), unless the question asks for
/// the first figure: a document that corrects a number means the correction.
const REVISED: f32 = 0.05;
static REVISION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:revised|updated|corrected|amended|later|subsequently|finally|eventually|now)\b|\b(?:increased|reduced|raised|lowered|changed|cut)\s+to\b").expect("regex")
});
static FIRST_FIGURE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)\bfirst\s+(?:estimated|reported|quoted|set|planned|announced|put|given)\b|\b(?:initially|originally|previously|provisionally)\b|\boriginal\b").expect("regex")
});
/// Longest extractive answer, in words (a longer unit is cut around its value).
const MAX_ANSWER_WORDS: usize = 40;

/// The not-found line for a question of this shape.
pub fn not_found_below(shape: Shape) -> f32 {
    if shape == Shape::Open { NOT_FOUND_BELOW_OPEN } else { NOT_FOUND_BELOW }
}

#[derive(Debug, Clone)]
pub struct Scored {
    pub unit: Unit,
    /// Dense + lexical support (0..1).
    pub support: f32,
    /// Support with the rank and shape bonuses: the order units are chosen in.
    pub score: f32,
    /// Values of the question's shape in the unit's text (byte spans of `unit.text`).
    pub values: Vec<(usize, usize)>,
    /// The value was found in the unit's heading, not its text (e.g. a version in a section title).
    pub value_in_context: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Selection {
    pub shape: Shape,
    /// Units by score, best first (only the units that can answer when the shape needs a value).
    pub ranked: Vec<Scored>,
    /// `false`: the documents do not answer the question.
    pub found: bool,
    pub confidence: f32,
    /// The best unit was chosen by comparing table rows ("which region had the highest Q3
    /// sales"): the answer is said extractively, as no generator can be trusted to compare numbers.
    pub compared: bool,
}

impl Selection {
    pub fn best(&self) -> Option<&Scored> {
        self.ranked.first()
    }

    /// The values of the question's kind the best unit gives (its own, else its heading's), each
    /// once: the short answer leads with the only one, a generated answer must state one of them.
    pub fn best_values(&self) -> Vec<String> {
        let Some(b) = self.best() else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        let mut push = |v: &str| {
            if !out.iter().any(|o| o == v) {
                out.push(v.to_owned());
            }
        };
        // A release's version in the heading owns the unit: the versions its text mentions
        // ("deprecated since 3.4") are other releases.
        let owned_by_heading = self.shape == Shape::Version && b.value_in_context.is_some();
        for (s, e) in b.values.iter().filter(|_| !owned_by_heading) {
            push(&b.unit.text[*s..*e]);
        }
        if let Some(c) = &b.value_in_context {
            for (s, e) in evidence::values(self.shape, c) {
                push(&c[s..e]);
            }
        }
        out
    }
}

const STOP: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the",
    "this", "to", "was", "what", "when", "where", "which", "who", "why", "will", "with", "you", "your", "me", "my", "we", "our", "there", "their", "they",
    "into", "about", "should", "would", "could", "did", "has", "have", "get", "got", "here", "s", "m", "ve", "ll", "re", "d", "t", "much", "many", "long",
    "one", "any", "some", "if", "am", "been", "being", "were", "whats", "what's", "going", "supposed", "actually", "allowed", "let", "first", "tell", "say",
    "said", "mean", "means",
];

/// Lower-cased content words, crudely stemmed so `administrators` meets `administrator` and
/// `released` meets `release`. Units of measure are spelled out (`42 L/h` holds `per` and `hour`,
/// as "per hour" does) and words for the largest and smallest meet (`most` = `maximum`).
pub fn terms(text: &str) -> Vec<String> {
    let spelled = spell_units(text);
    spelled
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .filter(|w| w.chars().count() > 1 || w.chars().all(|c| c.is_ascii_digit()))
        .map(|w| canonical(stem(&w)))
        .collect()
}

/// `L/h` → `L per hour`, `mph` → `miles per hour`: rates written as symbols read as words.
fn spell_units(text: &str) -> std::borrow::Cow<'_, str> {
    static RATE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?i)/(h|hr|hrs|hour|d|day|wk|week|mo|month|yr|year|annum|min|s|sec)\b|\b(mph|kph|rpm)\b").expect("regex")
    });
    if !RATE.is_match(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    RATE.replace_all(text, |c: &regex::Captures<'_>| {
        let unit = c.get(1).or_else(|| c.get(2)).map(|m| m.as_str().to_lowercase()).unwrap_or_default();
        match unit.as_str() {
            "h" | "hr" | "hrs" | "hour" => " per hour",
            "d" | "day" => " per day",
            "wk" | "week" => " per week",
            "mo" | "month" => " per month",
            "yr" | "year" | "annum" => " per year",
            "min" => " per minute",
            "s" | "sec" => " per second",
            "mph" => "miles per hour",
            "kph" => "kilometres per hour",
            "rpm" => "revolutions per minute",
            _ => " ",
        }
        .to_owned()
    })
}

/// One word for the largest and one for the smallest.
fn canonical(w: String) -> String {
    match w.as_str() {
        "most" | "max" | "highest" | "greatest" | "largest" | "upper" => "maximum".to_owned(),
        "least" | "min" | "lowest" | "smallest" | "fewest" => "minimum".to_owned(),
        _ => w,
    }
}

fn stem(w: &str) -> String {
    if w.chars().any(|c| c.is_ascii_digit()) {
        return w.to_owned();
    }
    let n = w.chars().count();
    // automatically → automatic, manually → manual
    if n > 7 && w.ends_with("ically") {
        return w[..w.len() - 4].to_owned();
    }
    if n > 6 && w.ends_with("ally") {
        return w[..w.len() - 2].to_owned();
    }
    let mut out = w;
    for suffix in ["ing", "ed", "es", "s"] {
        if n > suffix.len() + 3 && w.ends_with(suffix) {
            out = &w[..w.len() - suffix.len()];
            break;
        }
    }
    // A final `e` goes too, so the stripped and the plain forms meet: released, releases, release →
    // releas; operates, operate → operat.
    match out.strip_suffix('e') {
        Some(base) if out.chars().count() > 4 => base.to_owned(),
        _ => out.to_owned(),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Vectors are L2-normalised by every embedder.
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>().clamp(-1.0, 1.0)
}

/// Scores `units` for `question`. `vectors` are the question's and the units' embeddings when the
/// embedder answered (`with_context` texts); without them only the lexical part counts.
pub fn select(question: &str, units: &[Unit], vectors: Option<(&[f32], &[Vec<f32>])>) -> Selection {
    let sel = select_as(evidence::shape(question), question, units, vectors);
    // "What is the launch code?" may be answered by words ("blue falcon"), not an identifier; "which
    // version of Android" by a name and a number ("Android 11"), not a dotted version.
    if matches!(sel.shape, Shape::Code | Shape::Version) && sel.ranked.is_empty() {
        return select_as(Shape::Open, question, units, vectors);
    }
    sel
}

pub fn select_as(shape: Shape, question: &str, units: &[Unit], vectors: Option<(&[f32], &[Vec<f32>])>) -> Selection {
    // An open question's names (`Brannock Valley Water`, not codes such as `E07`) say which thing it
    // is about, not what about it: a unit holding only the names ("Brannock Valley Water · Issued
    // October 2024") does not answer "who is the Brannock Valley Water chief executive?". Its
    // support counts the question's other words; a question's names that no passage holds at all
    // are caught before (`unknown_names`). Questions asking for a value keep their names: the value
    // filter already stands between a name-only match and the answer.
    let mut named: HashSet<String> = if shape == Shape::Open {
        names(question).iter().filter(|n| !n.chars().any(|c| c.is_ascii_digit())).flat_map(|n| terms(n)).collect()
    } else {
        HashSet::new()
    };
    // "What does HydroLog do?" is about the name alone: then the name is the description.
    if terms(question).iter().all(|t| named.contains(t)) {
        named.clear();
    }
    let q_terms: Vec<String> = {
        let mut seen = HashSet::new();
        terms(question).into_iter().filter(|t| !named.contains(t) && seen.insert(t.clone())).collect()
    };
    let q_ids = evidence::identifiers(question);
    let asks_first = FIRST_FIGURE.is_match(question) || question.to_lowercase().contains(" at first");
    let unit_terms: Vec<HashSet<String>> = units.iter().map(|u| terms(&u.with_context()).into_iter().collect()).collect();
    // The headings above the innermost one (the document's title, its section): they say what the
    // unit is about, so their words count, at half weight (every unit under them shares them).
    let outer_terms: Vec<HashSet<String>> = units.iter().map(|u| u.context.iter().rev().skip(1).flat_map(|c| terms(c)).collect()).collect();
    let n = units.len().max(1) as f32;
    let mut df: HashMap<&str, usize> = HashMap::new();
    for t in &q_terms {
        df.insert(t, unit_terms.iter().zip(&outer_terms).filter(|(s, o)| s.contains(t) || o.contains(t)).count());
    }
    // A term no unit holds weighs as much as the rarest term that is held: questions paraphrase.
    let idf = |t: &str| (1.0 + n / (df[t].max(1) as f32 + 0.5)).ln();
    let total: f32 = q_terms.iter().map(|t| idf(t)).sum::<f32>().max(1e-6);

    // An extension is a short number: a whole phone number does not answer "which extension".
    let wants_extension = shape == Shape::Phone && {
        let q = question.to_lowercase();
        q.contains("extension") || q.contains(" ext ") || q.contains("dial") || q.contains("internal")
    };
    // "How many docking stations…": a count of stations, not of days. When some unit counts the
    // question's thing (the noun within four words after the number), counts of other things drop.
    let counted: Vec<String> = if shape == Shape::Count { counted_terms(question) } else { Vec::new() };
    let someone_counts = !counted.is_empty()
        && units.iter().any(|u| evidence::values(shape, &u.text).iter().any(|(_, e)| counts(&counted, &u.text, *e)));
    // A code that many candidate units mention is what they are about (a product's model), not an answer.
    let mut code_units: HashMap<String, usize> = HashMap::new();
    if shape == Shape::Code {
        for u in units {
            let here: HashSet<String> = evidence::values(shape, &u.text).into_iter().map(|(a, b)| u.text[a..b].to_owned()).collect();
            for c in here {
                *code_units.entry(c).or_default() += 1;
            }
        }
    }

    let q_norm = question.to_lowercase();
    let mut ranked: Vec<Scored> = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let lex = q_terms
            .iter()
            .map(|t| {
                if unit_terms[i].contains(t) {
                    idf(t)
                } else if outer_terms[i].contains(t) {
                    OUTER_WEIGHT * idf(t)
                } else {
                    0.0
                }
            })
            .sum::<f32>()
            / total;
        let support = match vectors {
            Some((q, vs)) => DENSE_WEIGHT * cosine(q, &vs[i]) + (1.0 - DENSE_WEIGHT) * lex,
            None => lex,
        };
        if u.heading && !matches!(shape, Shape::Date | Shape::Version) {
            continue;
        }
        let ids_here = evidence::identifiers(&u.with_context());
        let names_other = !q_ids.is_empty() && !q_ids.iter().any(|id| ids_here.iter().any(|h| evidence::same_identifier(id, h)));
        if names_other && !ids_here.is_empty() {
            // About another release, code or model than the one the question names.
            continue;
        }
        // A value the question itself names (`CD-420` in "which code on the CD-420…") is not its answer.
        let vals: Vec<(usize, usize)> = evidence::values(shape, &u.text)
            .into_iter()
            .filter(|(a, b)| !q_norm.contains(&u.text[*a..*b].to_lowercase()))
            .filter(|(a, b)| !wants_extension || u.text[*a..*b].chars().filter(char::is_ascii_digit).count() <= 5)
            .filter(|(a, b)| code_units.get(&u.text[*a..*b]).is_none_or(|n| *n < 3))
            .filter(|(_, b)| !someone_counts || counts(&counted, &u.text, *b))
            .collect();
        let mut value_in_context = None;
        // A version in the heading owns the unit (a release's notes): it is the answer, not versions the text mentions.
        if (vals.is_empty() || shape == Shape::Version) && shape != Shape::Open {
            // Values in the headings count, unless that heading is about another identifier than the question's.
            // A release's version may come from any heading above the unit; a date from a section
            // heading, not the document's title (its date is not every sentence's date); nothing else.
            let allowed: &[String] = match shape {
                Shape::Version => &u.context,
                Shape::Date => u.context.get(1..).unwrap_or(&[]),
                _ => &[],
            };
            for c in allowed.iter().rev() {
                let c_ids = evidence::identifiers(c);
                let other = !q_ids.is_empty() && !c_ids.is_empty() && !q_ids.iter().any(|id| c_ids.iter().any(|c| evidence::same_identifier(id, c)));
                if !other && evidence::values(shape, c).iter().any(|(a, b)| !q_norm.contains(&c[*a..*b].to_lowercase())) {
                    value_in_context = Some(c.clone());
                    break;
                }
            }
        }
        let can_answer = shape == Shape::Open || !vals.is_empty() || value_in_context.is_some();
        if !can_answer {
            continue;
        }
        let mut score = support + 0.04 / (1 + u.passage) as f32;
        if shape == Shape::Date && vals.is_empty() && value_in_context.is_some() {
            // A date the unit borrows from its section heading (the release it is listed under) is
            // weaker evidence than a date a unit states itself (a due date in an action's row).
            score -= BORROWED_DATE;
        }
        if names_other {
            score -= 0.15;
        }
        if !vals.is_empty() {
            // +1 for a revised figure, -1 for a first one, 0 for both or neither.
            let revision = REVISION.is_match(&u.text) as i32 - FIRST_FIGURE.is_match(&u.text) as i32;
            score += REVISED * revision as f32 * if asks_first { -1.0 } else { 1.0 };
        }
        ranked.push(Scored { unit: u.clone(), support: if names_other { support - 0.15 } else { support }, score, values: vals, value_in_context });
    }
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if shape == Shape::Version {
        vote_releases(&mut ranked);
    }
    // Confidence: the best unit's support plus how far it stands out from the next unit that could
    // answer (capped), so a unit that alone fits the question counts even when its wording differs.
    let best = ranked.first().map(|s| s.support).unwrap_or(0.0);
    // A table row keyed by one of the question's words that no other candidate holds (the
    // directory's `Payroll` row for "…someone in payroll?") has no rival: the units after it are
    // about other things, however close their scores.
    let keyed = shape != Shape::Open
        && ranked.first().and_then(|b| row_key(&b.unit.text)).is_some_and(|key| {
            let key: HashSet<String> = terms(key).into_iter().collect();
            q_terms.iter().filter(|t| key.contains(*t)).any(|t| ranked.iter().skip(1).all(|s| !terms(&s.unit.text).contains(t)))
        });
    let next = if keyed { 0.0 } else { ranked.iter().skip(1).map(|s| s.support).fold(0.0f32, f32::max) };
    let confidence = best + (best - next).clamp(0.0, MAX_MARGIN);
    let mut sel = Selection { shape, found: confidence >= not_found_below(shape), confidence, ranked, compared: false };
    if let Some(i) = superlative(question, units) {
        // The row the comparison picks goes first, as surely found as its table is relevant.
        let row = &units[i];
        let support = sel.ranked.iter().find(|s| s.unit == *row).map_or(sel.confidence, |s| s.support).max(not_found_below(shape));
        sel.ranked.retain(|s| s.unit != *row);
        sel.ranked.insert(0, Scored { unit: row.clone(), support, score: f32::MAX, values: Vec::new(), value_in_context: None });
        sel.confidence = sel.confidence.max(support + MAX_MARGIN);
        sel.found = true;
        sel.compared = true;
    }
    sel
}

static MOST: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:highest|largest|biggest|greatest|most|maximum|top|longest|heaviest|busiest)\b").expect("regex")
});
static LEAST: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)\b(?:lowest|smallest|least|fewest|minimum|shortest|lightest|cheapest|quietest)\b").expect("regex")
});

/// A table row's cells with their headers ("Region: Coastal North; Q3: 918400").
fn row_cells(text: &str) -> Option<Vec<(&str, &str)>> {
    let cells: Vec<(&str, &str)> = text.split("; ").map(|c| c.split_once(": ")).collect::<Option<_>>()?;
    (cells.len() >= 2).then_some(cells)
}

/// A cell's number: "918,400", "£41.2", "12%", "3.5 kg" (the leading number).
fn cell_number(cell: &str) -> Option<f64> {
    let t = cell.trim().trim_start_matches(['£', '$', '€', '¥', '+']);
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',' || c == '-')).unwrap_or(t.len());
    let n = t[..end].replace(',', "");
    if n.is_empty() || n == "-" { None } else { n.parse().ok() }
}

/// "Which region had the highest Q3 sales?" is answered by comparing rows, which no single row's
/// wording shows. Among the table rows with the same columns, the row whose cell under the column
/// the question names is the largest (smallest for "lowest", "fewest"...), when the question also
/// names the table's key column or its heading ("region", "sales") and the extreme is not a tie.
pub fn superlative(question: &str, units: &[Unit]) -> Option<usize> {
    let (most, least) = (MOST.is_match(question), LEAST.is_match(question));
    if most == least {
        return None;
    }
    let q: HashSet<String> = terms(question).into_iter().filter(|t| t != "maximum" && t != "minimum").collect();
    // Rows grouped by their columns and the headings above them: one table.
    let mut tables: HashMap<(Vec<&str>, &[String]), Vec<(usize, Vec<(&str, &str)>)>> = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        if let Some(cells) = row_cells(&u.text) {
            let headers: Vec<&str> = cells.iter().map(|(h, _)| *h).collect();
            tables.entry((headers, u.context.as_slice())).or_default().push((i, cells));
        }
    }
    let mut best: Option<(usize, usize)> = None; // (overlap, unit)
    for ((headers, context), rows) in &tables {
        // Rows repeated in two passages (overlapping chunks) count once.
        let mut seen = HashSet::new();
        let rows: Vec<&(usize, Vec<(&str, &str)>)> = rows.iter().filter(|(_, c)| seen.insert(c.clone())).collect();
        if rows.len() < 2 {
            continue;
        }
        // The compared column: the one whose header shares the most words with the question.
        let Some((col, overlap)) = headers
            .iter()
            .enumerate()
            .skip(1)
            .map(|(j, h)| (j, terms(h).iter().filter(|t| q.contains(*t)).count()))
            .filter(|(j, o)| *o > 0 && rows.iter().filter(|(_, c)| cell_number(c[*j].1).is_some()).count() >= 2)
            .max_by_key(|(_, o)| *o)
        else {
            continue;
        };
        let about = terms(headers[0]).iter().chain(context.iter().flat_map(|c| terms(c)).collect::<Vec<_>>().iter()).any(|t| q.contains(t));
        // "What is the maximum pressure of the P-200?" names its row (a lookup), and a column
        // called "Max pressure" is named, not compared: neither is a comparison.
        let names_a_row = rows.iter().any(|(_, c)| {
            let key = terms(c[0].1);
            !key.is_empty() && key.iter().all(|t| q.contains(t))
        });
        let extreme_column = MOST.is_match(headers[col]) || LEAST.is_match(headers[col]) || terms(headers[col]).iter().any(|t| t == "maximum" || t == "minimum");
        if !about || names_a_row || extreme_column {
            continue;
        }
        let mut valued: Vec<(f64, usize)> = rows.iter().filter_map(|(i, c)| Some((cell_number(c[col].1)?, *i))).collect();
        valued.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pick = if most { valued.len() - 1 } else { 0 };
        let runner = if most { valued.len() - 2 } else { 1 };
        if valued[pick].0 == valued[runner].0 {
            continue;
        }
        if best.is_none_or(|(o, _)| overlap > o) {
            best = Some((overlap, valued[pick].1));
        }
    }
    best.map(|(_, i)| i)
}

/// Which release did something: each unit votes for the release it answers with (its heading's,
/// else its own first version). Units close to the best (within `VOTE_WINDOW`) count, the best of a
/// release fully and its second at half, so two units under "4.0" (`Removed: Legacy CSV export`,
/// `Upgrade notes: … the legacy CSV export stop working`) outweigh one slightly better unit under
/// "3.4" (`Deprecated: Legacy CSV export`). The winning release's best unit goes first.
fn vote_releases(ranked: &mut Vec<Scored>) {
    let Some(top) = ranked.first().map(|s| s.score) else {
        return;
    };
    let release = |s: &Scored| -> Option<String> {
        match &s.value_in_context {
            Some(c) => evidence::values(Shape::Version, c).first().map(|(a, b)| c[*a..*b].trim_start_matches(['v', 'V']).to_owned()),
            None => s.values.first().map(|(a, b)| s.unit.text[*a..*b].trim_start_matches(['v', 'V']).to_owned()),
        }
    };
    let mut tally: Vec<(String, f32, usize, usize)> = Vec::new(); // release, votes, units, best index
    for (i, s) in ranked.iter().enumerate().filter(|(_, s)| s.score >= top - VOTE_WINDOW) {
        let Some(r) = release(s) else { continue };
        match tally.iter_mut().find(|t| t.0 == r) {
            Some(t) if t.2 == 1 => {
                t.1 += 0.5 * s.score;
                t.2 += 1;
            }
            Some(_) => {}
            None => tally.push((r, s.score, 1, i)),
        }
    }
    if let Some(win) = tally.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        let best = ranked.remove(win.3);
        ranked.insert(0, best);
    }
}

/// A second search for a question that names what it asks about only through something else ("the
/// room where the committee met", "the person responsible for the action"): the unit that best
/// matches the question's description (the anchor) holds no value of the asked kind, but names the
/// thing that has it. `names` are the anchor's names the question does not use (capitalised words
/// and codes, not dates); `query` is them with the question's words the anchor does not hold.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub anchor: Scored,
    pub names: Vec<String>,
    /// The question's words the anchor does not hold, and the identifiers the question names.
    pub rest: String,
    pub query: String,
}

impl Bridge {
    /// One lexical query per name (the most specific names first): a name shared by many passages
    /// (a building) must not crowd out the rare one (a room) in a single query.
    pub fn queries(&self, max: usize) -> Vec<String> {
        let mut names: Vec<&String> = self.names.iter().collect();
        names.sort_by_key(|n| std::cmp::Reverse(terms(n).len()));
        names.into_iter().take(max).map(|n| format!("{n} {}", self.rest)).collect()
    }
}

/// How much better the anchor must match the question than the best unit holding a value.
const BRIDGE_LEAD: f32 = 0.1;
/// Fewest of the question's own words (not its names) the anchor must hold.
const BRIDGE_DESCRIBED: usize = 2;
/// Most names a bridge query carries.
const BRIDGE_NAMES: usize = 6;

/// The bridge for `sel` (scored from the same `units` and `vectors`), when the question needs one.
pub fn bridge(question: &str, units: &[Unit], vectors: Option<(&[f32], &[Vec<f32>])>, sel: &Selection) -> Option<Bridge> {
    if sel.shape == Shape::Open {
        return None;
    }
    let open = select_as(Shape::Open, question, units, vectors);
    let anchor = open.ranked.first()?;
    // The anchor must be what the question is about, clearly more than any unit holding a value,
    // and must not hold a value itself (then the answer is right there).
    let best_value = sel.best().map(|b| b.support).unwrap_or(0.0);
    if anchor.support < NOT_FOUND_BELOW_OPEN || anchor.support < best_value + BRIDGE_LEAD {
        return None;
    }
    if !evidence::values(sel.shape, &anchor.unit.text).is_empty() {
        return None;
    }
    // A count of exactly the question's thing ("212 … docking stations" for "how many docking
    // stations") answers by itself, however the sentences around it are worded.
    let counted = counted_terms(question);
    if sel.shape == Shape::Count && sel.best().is_some_and(|b| b.values.iter().any(|(_, e)| counts(&counted, &b.unit.text, *e))) {
        return None;
    }
    let held = held_terms(&anchor.unit);
    // It must be about what the question names (a product, a place): a unit about a neighbour
    // would lead to the neighbour's value.
    if names(question).iter().any(|n| !terms(n).iter().all(|t| held.contains(t))) {
        return None;
    }
    // It must match what the question describes, not only the names it gives: an introduction
    // that names the company is no anchor for "the company's legal department".
    let named: HashSet<String> = names(question).iter().flat_map(|n| terms(n)).collect();
    let described = terms(question).into_iter().filter(|t| !named.contains(t)).collect::<HashSet<String>>();
    if described.iter().filter(|t| held.contains(*t)).count() < BRIDGE_DESCRIBED {
        return None;
    }
    // A unit that says the thing is not there ("revenue was not discussed") answers by itself;
    // following its names would find some other value.
    if says_none(&anchor.unit.text) {
        return None;
    }
    let q_words: HashSet<String> = terms(question).into_iter().collect();
    let names: Vec<String> = names(&anchor.unit.text).into_iter().filter(|n| terms(n).iter().any(|t| !q_words.contains(t))).take(BRIDGE_NAMES).collect();
    if names.is_empty() {
        return None;
    }
    let mut rest: Vec<String> = Vec::new();
    for w in question.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let t = terms(w);
        if !t.is_empty() && t.iter().all(|t| !held.contains(t)) && !rest.iter().any(|r| r.eq_ignore_ascii_case(w)) {
            rest.push(w.to_owned());
        }
    }
    // The identifiers the question names keep the second search's units about the same release or code.
    for id in evidence::identifiers(question) {
        if !rest.contains(&id) {
            rest.push(id);
        }
    }
    let rest = rest.join(" ");
    let query = format!("{} {rest}", names.join(" "));
    Some(Bridge { anchor: anchor.clone(), names, rest, query })
}

/// The names the question gives (see `names`) that none of `passages` holds (words compared as
/// `terms`, case aside): a question about "the Aquaflow X2" when no retrieved passage mentions it is
/// about something the documents do not cover, whatever else matches.
pub fn unknown_names(question: &str, passages: &[String]) -> Vec<String> {
    let held: Vec<HashSet<String>> = passages.iter().map(|p| terms(p).into_iter().collect()).collect();
    names(question).into_iter().filter(|n| {
        let t = terms(n);
        !t.is_empty() && !held.iter().any(|h| t.iter().all(|w| h.contains(w)))
    }).collect()
}

/// The thing a "how many" question counts: the content words of the three words after `how many`
/// (`docking`, `station` in "how many docking stations turned out…").
fn counted_terms(question: &str) -> Vec<String> {
    let lower = question.to_lowercase();
    let Some(at) = lower.find("how many ") else { return Vec::new() };
    terms(&lower[at + "how many ".len()..].split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The first cell of a table row as units show it (`Team / role: Payroll; Name: …` → `Payroll`).
fn row_key(text: &str) -> Option<&str> {
    let (first, rest) = text.split_once("; ")?;
    let (header, cell) = first.split_once(": ")?;
    (header.len() <= 40 && rest.contains(": ")).then_some(cell)
}

/// The number ending at `end` in `text` counts one of `counted` (it is among the next four words).
fn counts(counted: &[String], text: &str, end: usize) -> bool {
    let after = terms(&text[end..].split_whitespace().take(4).collect::<Vec<_>>().join(" "));
    counted.iter().any(|c| after.contains(c))
}

/// The words of a unit with every heading above it.
fn held_terms(u: &Unit) -> HashSet<String> {
    terms(&u.text).into_iter().chain(u.context.iter().flat_map(|c| terms(c))).collect()
}

/// The text denies or lacks something: `not`, `no`, `never`, `none`, `n't`, `without`.
fn says_none(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’')
        .map(|w| w.to_lowercase())
        .any(|w| matches!(w.as_str(), "not" | "no" | "never" | "none" | "nothing" | "without") || w.ends_with("n't") || w.ends_with("n’t"))
}

/// Names in a text: runs of capitalised words and codes that do not start a sentence, a cell's
/// label (`Owner:`) or a date (month and day names).
pub fn names(text: &str) -> Vec<String> {
    const CALENDAR: &[&str] = &[
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let mut sentence_start = true;
    let flush = |run: &mut Vec<&str>, out: &mut Vec<String>| {
        if !run.is_empty() {
            let n = run.join(" ");
            if !out.contains(&n) {
                out.push(n);
            }
            run.clear();
        }
    };
    // A table row's labels (`Owner: `) are its headers, not names.
    static LABEL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| regex::Regex::new(r"(?:^|;\s*)[^:;]{1,40}:\s").expect("regex"));
    let text = LABEL.replace_all(text, "; ");
    for raw in text.split_whitespace() {
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        let label = raw.ends_with(':');
        let capital = word.chars().next().is_some_and(char::is_uppercase);
        let calendar = CALENDAR.contains(&word.to_lowercase().as_str());
        if capital && !sentence_start && !label && !calendar && word.chars().count() > 1 {
            run.push(word);
        } else {
            flush(&mut run, &mut out);
        }
        if raw.ends_with([',', ';', ')', '(']) || raw.starts_with('(') {
            flush(&mut run, &mut out);
        }
        // A sentence's end, and a separator between fields (`· Report issued: …`, `| Action`,
        // `— Status`): a capital after them starts a phrase, it does not mark a name.
        let separator = matches!(raw, "·" | "•" | "|" | "—" | "–" | "-" | "/");
        sentence_start = (raw.ends_with(['.', '!', '?']) && !raw.ends_with("..")) || separator;
        if separator {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Keeps the units of a bridge's second search that hold one of the anchor's names whole (not the
/// anchor itself), best linked first, then by score. A unit's link is, for each name, the share of
/// the name's words it holds times the name's rarity among these units: `Boardroom` in one row
/// links more surely than `Millrace House` in the caption over every row.
pub fn link(sel: &mut Selection, bridge: &Bridge) {
    let name_terms: Vec<Vec<String>> = bridge.names.iter().map(|n| terms(n)).filter(|t| !t.is_empty()).collect();
    let anchor = &bridge.anchor.unit;
    let held: Vec<HashSet<String>> = sel.ranked.iter().map(|s| held_terms(&s.unit)).collect();
    let whole = |h: &HashSet<String>, n: &[String]| n.iter().all(|t| h.contains(t));
    let n = held.len().max(1) as f32;
    let rarity: Vec<f32> = name_terms.iter().map(|nt| (1.0 + n / (held.iter().filter(|h| whole(h, nt)).count() as f32 + 0.5)).ln()).collect();
    let mut kept: Vec<(f32, Scored)> = sel
        .ranked
        .drain(..)
        .zip(&held)
        .filter(|(s, _)| !(s.unit.passage == anchor.passage && s.unit.char_start == anchor.char_start))
        .filter(|(_, h)| name_terms.iter().any(|nt| whole(h, nt)))
        .map(|(s, h)| {
            let link = name_terms.iter().zip(&rarity).map(|(nt, r)| r * nt.iter().filter(|t| h.contains(*t)).count() as f32 / nt.len() as f32).sum();
            (link, s)
        })
        .collect();
    kept.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.score.total_cmp(&a.1.score)));
    sel.ranked = kept.into_iter().map(|(_, s)| s).collect();
}

/// The answer of a bridged question: the value from the second passage, then the anchor that
/// leads there, both cited.
pub fn bridged_answer(sel: &Selection, anchor: &Scored) -> Option<String> {
    let first = short_answer(sel)?;
    let link = crop(&anchor.unit.text, None, MAX_ANSWER_WORDS / 2);
    Some(format!("{first} (via: {} [{}])", link.trim_end_matches('.'), anchor.unit.passage + 1))
}

/// The extractive answer for a found selection: the value first when the unit holds exactly one,
/// then the unit (cut around its value when long), with its passage's `[n]` (`n` = passage + 1).
pub fn short_answer(sel: &Selection) -> Option<String> {
    let best = sel.best()?;
    let u = &best.unit;
    let mut body = crop(&u.text, best.values.first().copied(), MAX_ANSWER_WORDS);
    if let Some(c) = &best.value_in_context {
        body = format!("{c} — {body}");
    }
    if let ([v], None) = (sel.best_values().as_slice(), &best.value_in_context) {
        if !body.trim_start().starts_with(v.as_str()) {
            body = format!("{v} — {body}");
        }
    }
    Some(format!("{} [{}]", body.trim_end(), u.passage + 1))
}

/// At most `max` words of `text`, centred on the value at `at` when the text is longer.
fn crop(text: &str, at: Option<(usize, usize)>, max: usize) -> String {
    let words: Vec<(usize, &str)> = text.split_whitespace().map(|w| (w.as_ptr() as usize - text.as_ptr() as usize, w)).collect();
    if words.len() <= max {
        return text.to_owned();
    }
    let centre = at.map(|(s, _)| words.iter().take_while(|(b, _)| *b <= s).count().saturating_sub(1)).unwrap_or(0);
    let from = centre.saturating_sub(max / 3).min(words.len() - max);
    let mut out = words[from..from + max].iter().map(|(_, w)| *w).collect::<Vec<_>>().join(" ");
    if from > 0 {
        out = format!("… {out}");
    }
    if from + max < words.len() {
        out.push_str(" …");
    }
    out
}

/// Why a generated answer was not shown, or `None` when the evidence supports it: every number,
/// code and date in it appears in the evidence, most of its words do, and it states the value the
/// evidence holds when the question asks for one.
/// `restates`: for a question no single value answers, the best unit, whose content terms the answer
/// must mostly repeat (a free-form answer that says something else about the same words is not
/// supported by it).
pub fn ungrounded(answer: &str, evidence: &[String], expected_values: &[String], restates: Option<&str>) -> Option<String> {
    let clean = strip_citations(answer);
    let joined = evidence.iter().map(|e| normalise(e)).collect::<Vec<_>>().join(" \n ");
    static FACT: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\b[A-Z]{0,4}-?\d[\d,.:/]*\d\b|\b\d\b|\b[A-Z]{1,4}-?\d+\b").expect("regex"));
    for m in FACT.find_iter(&clean) {
        let f = normalise(m.as_str().trim_end_matches(['.', ',']));
        if !contains_token(&joined, &f) {
            return Some(format!("`{}` is not in the evidence", m.as_str()));
        }
    }
    let words = terms(&clean);
    if words.is_empty() {
        return Some("the answer says nothing".into());
    }
    let evidence_terms: HashSet<String> = evidence.iter().flat_map(|e| terms(e)).collect();
    let covered = words.iter().filter(|w| evidence_terms.contains(*w)).count() as f32 / words.len() as f32;
    if covered < 0.6 {
        return Some(format!("only {:.0}% of its words are in the evidence", covered * 100.0));
    }
    if let Some(unit) = restates {
        let unit_terms: HashSet<String> = terms(unit).into_iter().collect();
        let said: HashSet<String> = words.iter().cloned().collect();
        let kept = unit_terms.iter().filter(|t| said.contains(*t)).count() as f32 / unit_terms.len().max(1) as f32;
        if kept < 0.5 {
            return Some(format!("it repeats only {:.0}% of its evidence's terms", kept * 100.0));
        }
    }
    if !expected_values.is_empty() && !expected_values.iter().any(|v| contains_token(&normalise(&clean), &normalise(v))) {
        return Some(format!("it states none of {}, the values the evidence gives", expected_values.join(", ")));
    }
    None
}

fn strip_citations(text: &str) -> String {
    static CITE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| regex::Regex::new(r"\[\d+(,\s*\d+)*\]").expect("regex"));
    CITE.replace_all(text, "").into_owned()
}

fn normalise(s: &str) -> String {
    let s: String = s.chars().map(|c| if "‐‑‒–—―−".contains(c) { '-' } else { c }).collect();
    let s = s.to_lowercase();
    // 1,840 = 1840
    static THOUSANDS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| regex::Regex::new(r"(\d),(\d{3})").expect("regex"));
    THOUSANDS.replace_all(&s, "$1$2").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `needle` in `hay` not inside a longer number or word.
fn contains_token(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let mut from = 0;
    while let Some(i) = hay[from..].find(needle) {
        let s = from + i;
        let e = s + needle.len();
        let before = hay[..s].chars().next_back();
        let after = hay[e..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
        if !glued(before) && !glued(after) {
            return true;
        }
        from = s + needle.len().max(1);
        while !hay.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(passage: usize, text: &str, context: &[&str]) -> Unit {
        Unit { passage, char_start: 0, char_end: text.chars().count(), text: text.into(), context: context.iter().map(|s| s.to_string()).collect(), heading: false, lead: None }
    }

    #[test]
    fn a_superlative_compares_the_rows_under_the_named_column() {
        let md = "# Regional sales\n\nRegion | Q1 | Q2 | Q3 | Q4\nInland Valley | 990,000 | 870000 | 610000 | 905000\nCoastal North | 410000 | 402000 | 918,400 | 450000\nHarbour East | 120000 | 130000 | 140000 | 150000";
        let units = evidence::units(0, md, &[]);
        let sel = select("Which region had the highest Q3 sales?", &units, None);
        assert!(sel.found && sel.compared, "{sel:?}");
        let a = short_answer(&sel).unwrap();
        assert!(a.contains("Region: Coastal North") && !a.contains("Inland"), "{a}");
        let sel = select("Which region had the lowest Q1 sales?", &units, None);
        assert!(short_answer(&sel).unwrap().contains("Harbour East"), "{sel:?}");
        // A column the table does not have, or a question about something else: no comparison.
        assert!(superlative("Which region had the highest Q5 sales?", &units).is_none());
        assert!(superlative("Which engineer logged the most Q3 overtime?", &units).is_none());
        // A question that names its row is a lookup; a column named for its extreme is not compared.
        assert!(superlative("What were the highest Q3 sales in the Harbour East region?", &units).is_none());
        let spec = evidence::units(0, "Model | Max pressure | Flow\nP-100 | 6 bar | 40\nP-200 | 9 bar | 55", &["Pumps".into()]);
        assert!(superlative("What is the maximum pressure of the pumps?", &spec).is_none());
        // A tie at the top is not an answer.
        let tied = evidence::units(0, "Region | Q3\nNorth | 5\nSouth | 5\nWest | 1", &["Sales".into()]);
        assert!(superlative("Which region had the highest Q3 sales?", &tied).is_none());
    }

    #[test]
    fn the_unit_holding_the_asked_kind_of_value_answers() {
        let units = vec![
            unit(0, "The pump delivers at most 42 L/h.", &["Specifications"]),
            unit(0, "Allowance: Call-out; Rate: £42.00 per call-out", &["Allowances"]),
            unit(1, "Standby staff answer a call within 10 minutes.", &["Standby"]),
        ];
        let sel = select("What is the payment for each call-out on standby?", &units, None);
        assert_eq!(sel.shape, Shape::Money);
        assert!(sel.found, "{sel:?}");
        let a = short_answer(&sel).unwrap();
        assert!(a.starts_with("£42.00 — Allowance: Call-out") && a.ends_with("[1]"), "{a}");
    }

    #[test]
    fn a_question_about_another_identifier_is_not_answered_by_its_neighbour() {
        let units = vec![unit(0, "Classic map view. It will be removed in HydroLog 4.1.", &["HydroLog 4.0 — released 14 October 2024", "Deprecated"])];
        let sel = select("When is HydroLog 4.1 going to be released?", &units, None);
        assert!(sel.ranked.is_empty() && !sel.found, "{sel:?}");
        // The heading's version is the answer when the question does not name another one.
        let units = vec![unit(0, "Legacy CSV export, deprecated since 3.4.", &["Release notes", "HydroLog 4.0 — released 14 October 2024", "Removed"])];
        let sel = select("On what date did the release that removed the CSV export go live?", &units, None);
        let a = short_answer(&sel).unwrap();
        assert!(a.contains("14 October 2024"), "{a}");
    }

    #[test]
    fn a_version_spelled_as_a_name_and_a_number_is_answered_as_an_open_question() {
        let units = vec![
            unit(0, "Version: 4.2; Release date: 28 April 2025; Minimum Android: Android 11; Minimum iOS: iOS 16", &["Release notes", "Supported versions"]),
            unit(1, "Station photos can now be attached to a task after it has been closed.", &["Release notes", "Version 4.2"]),
        ];
        let sel = select("What's the oldest version of Android that DockMate 4.2 will run on?", &units, None);
        assert_eq!(sel.shape, Shape::Open, "{sel:?}");
        assert!(sel.best().is_some_and(|b| b.unit.text.contains("Android 11")), "{sel:?}");
    }

    #[test]
    fn a_count_counts_the_questions_thing() {
        let units = vec![
            unit(0, "If your device has not updated within two days of a release, contact the Service Desk.", &["FAQ"]),
            unit(1, "After analysing station logs, this was revised to 212 of our 340 docking stations.", &["Review", "Summary"]),
        ];
        let sel = select("How many docking stations were hit by the outage after the release?", &units, None);
        assert!(sel.ranked.iter().all(|s| s.unit.passage == 1), "{sel:?}");
        // With no unit counting the thing, any count stays a candidate.
        let sel = select("How many days until a release is installed?", &units[..1], None);
        assert_eq!(sel.ranked.len(), 1, "{sel:?}");
    }

    #[test]
    fn a_count_of_the_questions_thing_is_not_bridged_past() {
        let q = "In the end, how many docking stations turned out to be hit by the March firmware outage at Merrowfield?";
        let units = vec![
            unit(0, "On the morning of 3 March the firmware outage at Merrowfield hit docking stations across the network, pushed from DockMate.", &["Review", "Summary"]),
            unit(0, "After analysing logs, this was revised to 212 of our 340 docking stations.", &["Review", "Summary"]),
        ];
        let sel = select(q, &units, None);
        assert!(sel.best().is_some_and(|b| b.unit.text.contains("212")), "{sel:?}");
        assert!(bridge(q, &units, None, &sel).is_none());
    }

    #[test]
    fn a_release_heading_answers_when_the_release_came_out() {
        let text = "## Supported versions\n\n| Version line | Status | Support ends |\n|---|---|---|\n| 4.1.x | End of life | 31 March 2025 |\n\n## 4.1.0 — released 9 September 2024\n\n- **New:** Offline mode for handheld ticket scanners.\n- **Changed:** Ticket office session timeout increased from 15 to 30 minutes.";
        let units = evidence::units(0, text, &["DeckMate Release Notes".to_owned()]);
        assert!(units.iter().any(|u| u.heading && u.text.starts_with("4.1.0")), "{units:?}");
        let sel = select("When was DeckMate 4.1 released?", &units, None);
        assert!(sel.best().is_some_and(|b| b.unit.heading && b.unit.text.contains("9 September 2024")), "{sel:?}");
        // Only dates and versions read headings as evidence.
        let open = select("What is new for ticket scanners in DeckMate 4.1?", &units, None);
        assert!(open.ranked.iter().all(|s| !s.unit.heading), "{open:?}");
    }

    #[test]
    fn a_capital_after_a_field_separator_is_not_a_name() {
        let n = names("Date of incident: Thursday 14 November 2024 · Report issued: 9 December 2024 · led by Dr Ines Okafor");
        assert_eq!(n, vec!["Dr Ines Okafor".to_owned()]);
    }

    #[test]
    fn a_revised_figure_beats_the_first_one_unless_the_first_is_asked_for() {
        let text = "The repair cost was first estimated at £18,500, covering a replacement hose. It was later revised to £42,300 after the contractor found a damaged cylinder.";
        let units = evidence::units(0, text, &["Incident review".to_owned(), "Impact".to_owned()]);
        assert!(units[1].lead.is_some(), "a sentence opening with a pronoun reads with the one before: {units:?}");
        let best = |q: &str| select(q, &units, None).best().map(|b| b.unit.text.clone()).unwrap_or_default();
        assert!(best("What did the repair end up costing?").contains("42,300"));
        assert!(best("What was the repair cost first estimated at?").contains("18,500"));
    }

    #[test]
    fn a_row_keyed_by_the_questions_word_has_no_rival() {
        let units = vec![
            unit(0, "Team / role: Payroll; Name: Tom Aldous; Extension: 2340; Hours: Mon–Thu", &["FAQ", "Who do I contact?"]),
            unit(0, "Team / role: IT Service Desk; Name: IT team; Extension: 2400; Hours: 24 hours", &["FAQ", "Who do I contact?"]),
            unit(0, "From an outside line, dial 01632 96 followed by the four-digit extension.", &["FAQ", "Who do I contact?"]),
        ];
        let sel = select("What number do I ring to speak to someone in payroll?", &units, None);
        assert!(sel.best().is_some_and(|b| b.unit.text.contains("2340")), "{sel:?}");
        assert!(sel.confidence >= sel.best().unwrap().support + MAX_MARGIN - 1e-6, "{sel:?}");
        // A department no row is keyed by gets no such lift.
        let sel = select("What number do I ring to speak to someone in marketing?", &units, None);
        assert!(!sel.found, "{sel:?}");
    }

    #[test]
    fn nothing_matching_is_not_found() {
        let units = vec![unit(0, "Compassionate leave: up to 5 days of paid leave.", &["Other leave"])];
        let sel = select("How much does a diaphragm kit cost?", &units, None);
        assert!(!sel.found);
    }

    #[test]
    fn a_planted_wrong_number_is_ungrounded() {
        let ev = vec!["Allowance: Call-out; Rate: £42.00 per call-out".to_owned()];
        let v = vec!["£42.00".to_owned()];
        assert_eq!(ungrounded("The call-out rate is £42.00 per call-out [1].", &ev, &v, None), None);
        assert!(ungrounded("The call-out rate is £45.00 per call-out [1].", &ev, &[], None).unwrap().contains("45.00"));
        assert!(ungrounded("You get paid overtime for every weekend shift and holidays.", &ev, &[], None).is_some());
        assert!(ungrounded("The rate is per call-out [1].", &ev, &v, None).is_some());
    }

    #[test]
    fn rates_and_superlatives_read_as_words() {
        let t = terms("Maximum flow rate 42 L/h at 10 bar; speed limit 10 mph");
        for w in ["maximum", "per", "hour", "mile"] {
            assert!(t.contains(&w.to_owned()), "{w} in {t:?}");
        }
        assert!(terms("the most the pump can deliver per hour").contains(&"maximum".to_owned()));
        assert_eq!(terms("sent automatically"), terms("sent automatic"));
        assert_eq!(terms("released releases release"), vec!["releas"; 3]);
        assert_eq!(terms("the trip operates"), terms("the trip operate"));
        assert_eq!(terms("changed changing changes"), terms("change change change"));
        // `n/a` is not a rate.
        assert!(!terms("n/a").contains(&"per".to_owned()));
    }

    #[test]
    fn a_release_named_by_more_of_its_notes_wins_the_vote() {
        let units = vec![
            unit(0, "Legacy CSV export.", &["Release notes", "HydroLog 3.4 — released 12 February 2024", "Deprecated"]),
            unit(1, "Legacy CSV export, deprecated since 3.4.", &["Release notes", "HydroLog 4.0 — released 14 October 2024", "Removed"]),
            unit(
                1,
                "Scheduled jobs that used the legacy CSV export stop working with this release.",
                &["Release notes", "HydroLog 4.0 — released 14 October 2024", "Upgrade notes"],
            ),
        ];
        let sel = select("In which HydroLog version did the old CSV export go away?", &units, None);
        assert_eq!(sel.shape, Shape::Version);
        assert_eq!(sel.best_values(), vec!["4.0".to_owned()], "{sel:?}");
        assert!(short_answer(&sel).unwrap().starts_with("HydroLog 4.0"));
    }

    #[test]
    fn a_question_about_a_place_named_elsewhere_is_bridged_to_its_number() {
        let q = "What is the room number of the room where the operations committee met in September 2024?";
        let hop1 = vec![
            unit(0, "Meeting held on Thursday 5 September 2024, 10:00–12:30, in the Boardroom, Millrace House", &["Operations Committee — Minutes"]),
            unit(0, "In attendance for item 3: Imogen Thackeray (Asset Data Lead).", &["Operations Committee — Minutes"]),
        ];
        let sel = select(q, &hop1, None);
        assert_eq!(sel.shape, Shape::Number);
        let b = bridge(q, &hop1, None, &sel).expect("a bridge");
        assert!(b.names.contains(&"Boardroom".to_owned()) && b.names.contains(&"Millrace House".to_owned()), "{b:?}");
        assert!(!b.names.iter().any(|n| n == "Thursday" || n == "September"), "{b:?}");
        assert!(b.rest.contains("room") && b.rest.contains("number"), "{b:?}");
        // The second search: the row naming the rare name links, not the rows under a caption
        // naming the common one, and never the anchor itself.
        let hop2 = vec![
            unit(1, "Security office G04 ID badges and access cards", &["Table 1 — Main rooms at Millrace House"]),
            unit(1, "Staff canteen G12 Ground floor", &["Table 1 — Main rooms at Millrace House"]),
            unit(2, "Boardroom 2.10 Second floor; seats 18; book through Facilities", &[]),
            unit(3, "Parking at the depot: 40 spaces.", &[]),
        ];
        let mut sel2 = select_as(sel.shape, &b.query, &hop2, None);
        link(&mut sel2, &b);
        assert!(sel2.ranked.iter().all(|s| s.unit.passage != 3), "{sel2:?}");
        let a = bridged_answer(&sel2, &b.anchor).unwrap();
        assert!(a.starts_with("Boardroom 2.10") && a.contains("[3]") && a.contains("(via: Meeting held") && a.ends_with("[1])"), "{a}");
    }

    #[test]
    fn no_bridge_when_the_best_match_holds_the_value_or_nothing_matches() {
        let q = "What extension do I dial for the Facilities team?";
        let units = vec![unit(0, "Team or service: Facilities; Contact: Joaquín Ferreira; Extension: 4300", &["Who to contact"])];
        let sel = select(q, &units, None);
        assert!(bridge(q, &units, None, &sel).is_none());
        let units = vec![unit(0, "Compassionate leave: up to 5 days of paid leave, agreed with People & Payroll.", &["Other leave"])];
        let q = "What extension does the legal team have?";
        let sel = select(q, &units, None);
        assert!(bridge(q, &units, None, &sel).is_none(), "an anchor that does not match the question is no bridge");
    }

    #[test]
    fn an_open_question_is_not_answered_by_a_unit_holding_only_its_names() {
        let units = vec![
            unit(0, "Brannock Valley Water · Issued October 2024 by Facilities (Joaquín Ferreira, Facilities Manager)", &["Site Guide"]),
            unit(1, "The guide describes the four Brannock Valley Water sites that staff visit most often.", &["Site Guide"]),
        ];
        let sel = select("Who is the Brannock Valley Water chief executive?", &units, None);
        assert_eq!(sel.shape, Shape::Open);
        assert!(!sel.found, "{sel:?}");
        // A code the question names still counts.
        let units = vec![unit(0, "E07 Discharge overpressure (above 11 bar) Stops", &["Table 2 — Codes"]), unit(0, "E01 Motor overload Stops", &["Table 2 — Codes"])];
        let sel = select("The display shows E07. What does that mean?", &units, None);
        assert!(sel.found && sel.best().unwrap().unit.text.starts_with("E07"), "{sel:?}");
        // A question about the name alone is answered by what the documents say of it.
        let units = vec![unit(0, "HydroLog is the Brannock Valley Water system for work orders and field job cards.", &["HydroLog — Release Notes"])];
        assert!(select("What does HydroLog do?", &units, None).found);
    }

    #[test]
    fn a_name_no_passage_holds_is_unknown() {
        let passages = vec!["HydroLog 4.0 — released 14 October 2024. Offline mode lasts 7 days.".to_owned(), "The Coldharbour outage review.".to_owned()];
        assert!(unknown_names("When did the HydroLog release after the Coldharbour outage go live?", &passages).is_empty());
        assert!(unknown_names("what did hydrolog change?", &passages).is_empty(), "a lower-case first word is no name");
        assert_eq!(unknown_names("What is the battery capacity of the Aquaflow Pro handheld?", &passages), vec!["Aquaflow Pro"]);
    }

    #[test]
    fn no_bridge_from_an_anchor_about_a_neighbour_or_saying_there_is_none() {
        let other = unit(2, "Boardroom 2.10 Second floor; seats 18", &["Rooms at Millrace House"]);
        // The question names Hollins; the best match is about Millrace House.
        let q = "What is the room number of the room where the Hollins committee met in September 2024?";
        let units = vec![unit(0, "The committee met on Thursday 5 September 2024 in the Boardroom, Millrace House", &["Minutes"]), other.clone()];
        let sel = select(q, &units, None);
        assert!(bridge(q, &units, None, &sel).is_none());
        // The minutes say the figure was not discussed: no other document's figure is the answer.
        let q = "What revenue figure did the committee agree in September 2024?";
        let units = vec![unit(0, "Revenue for the year was not discussed at the September 2024 meeting of the Finance Committee", &["Minutes"]), other];
        let sel = select(q, &units, None);
        assert!(bridge(q, &units, None, &sel).is_none());
        // An introduction that only shares the company's name with the question.
        let q = "What is the extension of the Brannock Valley Water legal department?";
        let units = vec![unit(0, "Brannock Valley Water · Issued October 2024 by Facilities (Joaquín Ferreira, Facilities Manager)", &["Site Guide"])];
        let sel = select(q, &units, None);
        assert!(bridge(q, &units, None, &sel).is_none());
    }
}
