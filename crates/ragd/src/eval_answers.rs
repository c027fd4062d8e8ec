//! `ragd eval answers`: runs a question set in qa-dev's format (`questions.jsonl` + `docs/`)
//! in-process on a temporary data folder and scores the answers the way qa-dev's `check.py` does:
//! answerable questions right with a supporting citation, unanswerable ones declined, retrieval
//! hits, median answer words and latency.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ragd_core::answer::{QueryRequest, QueryResponse};
use ragd_core::engine::{DocumentBody, NewCollection, NewDocument};
use ragd_core::settings::Settings;
use serde_json::{Value, json};

#[derive(Args)]
pub struct AnswersArgs {
    /// Folder with questions.jsonl and docs/.
    #[arg(long)]
    dataset: PathBuf,
    /// Print the summary as JSON on stdout (the per-question lines go to stderr).
    #[arg(long)]
    json: bool,
}

struct Question {
    q: String,
    expect: Vec<String>,
    forbid: Vec<String>,
    doc: Option<String>,
    kind: String,
}

fn load(dir: &Path) -> anyhow::Result<Vec<Question>> {
    let path = dir.join("questions.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let strings = |v: &Value| v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect::<Vec<_>>();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).with_context(|| format!("questions.jsonl line {}", i + 1))?;
            Ok(Question {
                q: v["q"].as_str().context("a question without `q`")?.to_owned(),
                expect: strings(&v["expect"]),
                forbid: strings(&v["forbid"]),
                doc: v["doc"].as_str().map(str::to_owned),
                kind: v["kind"].as_str().unwrap_or("lookup").to_owned(),
            })
        })
        .collect()
}

/// check.py's normalisation: case folded, dashes and apostrophes unified, thousands separators
/// dropped, whitespace collapsed.
pub fn norm(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{2043}' | '\u{fe58}' | '\u{fe63}' | '\u{ff0d}' => '-',
            '\u{2018}' | '\u{2019}' | '\u{201b}' | '\u{2032}' | '`' | '\u{b4}' => '\'',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect();
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        // 1,840 -> 1840 (a comma between a digit and exactly three digits).
        if c == ',' && i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1..i + 4).is_some_and(|d| d.iter().all(char::is_ascii_digit)) && !chars.get(i + 4).is_some_and(char::is_ascii_digit) {
            continue;
        }
        out.push(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// check.py's `contains`: a number never matches inside a longer number (42.00 matches 42); a
/// needle starting with a letter must start a word.
pub fn contains(hay: &str, needle: &str) -> bool {
    let n = norm(needle);
    if n.is_empty() {
        return false;
    }
    let h: Vec<char> = hay.chars().collect();
    let nc: Vec<char> = n.chars().collect();
    let digit = |i: usize| h.get(i).is_some_and(char::is_ascii_digit);
    'outer: for i in 0..h.len() {
        if h.len() - i < nc.len() {
            break;
        }
        if h[i..i + nc.len()] != nc[..] {
            continue;
        }
        let j = i + nc.len();
        if nc[0].is_ascii_digit() && i > 0 && (digit(i - 1) || (".,".contains(h[i - 1]) && i > 1 && digit(i - 2))) {
            continue;
        }
        if nc[0].is_alphabetic() && i > 0 && h[i - 1].is_alphanumeric() {
            continue;
        }
        if nc[nc.len() - 1].is_ascii_digit() && j < h.len() {
            if digit(j) {
                continue;
            }
            if ".,".contains(h[j]) && digit(j + 1) {
                // 42 == 42.00: only zeros may follow, then no digit.
                let mut k = j + 1;
                while h.get(k) == Some(&'0') {
                    k += 1;
                }
                if digit(k) {
                    continue 'outer;
                }
            }
        }
        return true;
    }
    false
}

fn any_in(text: &str, needles: &[String]) -> bool {
    let t = norm(text);
    needles.iter().any(|n| contains(&t, n))
}

pub fn declined(answer: &str) -> bool {
    let a = norm(answer);
    a.split(|c: char| !c.is_alphanumeric()).any(|w| w == "not")
        || ["n't", "no information", "cannot", "unable", "does not say", "isn't mentioned"].iter().any(|p| a.contains(p))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

pub async fn run(args: AnswersArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let questions = load(&args.dataset)?;
    let docs_dir = args.dataset.join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docs_dir)
        .with_context(|| format!("reading {}", docs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() || questions.is_empty() {
        bail!("{} needs questions.jsonl and files in docs/", args.dataset.display());
    }
    let tmp = tempfile::tempdir()?;
    let mut s = settings;
    s.data_dir = tmp.path().to_owned();
    // With the configured generators: the answers are scored as a server would give them.
    let engine = crate::app::engine(s, true).await?;
    let collection = "eval-answers";
    engine.create_collection(NewCollection { name: collection.into(), ..Default::default() }, "default").await?;
    let mut docs = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("document").to_owned();
        docs.push(NewDocument { id: Some(name.clone()), title: None, metadata: Default::default(), body: DocumentBody::File { filename: Some(name), content_type: None, bytes: std::fs::read(f)? } });
    }
    eprintln!("ingesting {} documents…", docs.len());
    let job = engine.submit(collection, docs, None).await?;
    let job = engine.wait_job(&job.id, Duration::from_secs(600)).await?;
    if job.status.as_str() != "done" {
        bail!("ingest failed: {:?}", job.error);
    }

    let log = |line: String| if args.json { eprintln!("{line}") } else { println!("{line}") };
    let (mut right, mut declined_n, mut hits) = (0, 0, 0);
    let (mut n_ans, mut n_una) = (0, 0);
    let mut times = Vec::new();
    let mut words = Vec::new();
    let mut results = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let t = Instant::now();
        let r: QueryResponse = engine.query_collect(collection, QueryRequest { question: q.q.clone(), ..Default::default() }).await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        times.push(ms);
        let (ok, why, hit) = if q.kind == "unanswerable" {
            n_una += 1;
            let invented: Vec<&String> = q.forbid.iter().filter(|f| any_in(&r.answer, std::slice::from_ref(f))).collect();
            let ok = declined(&r.answer) && invented.is_empty();
            declined_n += ok as usize;
            let why = if ok { None } else if !invented.is_empty() { Some(format!("gave {}", invented.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))) } else { Some("no refusal phrase".into()) };
            (ok, why, None)
        } else {
            n_ans += 1;
            words.push(r.answer.split_whitespace().count() as f64);
            let in_answer = any_in(&r.answer, &q.expect);
            let supported = r.citations.iter().any(|c| any_in(&c.text, &q.expect));
            let stem = q.doc.as_deref().map(|d| Path::new(d).file_stem().and_then(|s| s.to_str()).unwrap_or(d).to_lowercase()).unwrap_or_default();
            let hit = r.citations.iter().any(|c| c.doc_id.to_lowercase().contains(&stem) || c.title.as_deref().is_some_and(|t| t.to_lowercase().contains(&stem)));
            let ok = in_answer && supported;
            right += ok as usize;
            hits += hit as usize;
            let why = if ok { None } else if !in_answer { Some("answer lacks expected value".to_owned()) } else { Some("no citation contains it".to_owned()) };
            (ok, why, Some(hit))
        };
        let snippet: String = r.answer.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(100).collect();
        log(format!(
            "{:02} {:<4} {:<12} {:<104} {:>6.0} ms  {:?} {:.3}{}{}",
            i + 1,
            if ok { "ok" } else { "miss" },
            q.kind,
            serde_json::to_string(&snippet)?,
            ms,
            r.answer_kind,
            r.confidence,
            hit.map(|h| if h { "  retrieval hit" } else { "  retrieval miss" }).unwrap_or(""),
            why.as_deref().map(|w| format!("  ({w})")).unwrap_or_default()
        ));
        results.push(json!({"n": i + 1, "kind": q.kind, "ok": ok, "ms": ms.round(), "why": why, "retrieval_hit": hit, "q": q.q, "answer": r.answer,
            "answer_kind": r.answer_kind, "confidence": r.confidence, "generator": r.generator}));
    }
    let med_ms = median(times).map(|m| m.round());
    let med_words = median(words).map(|m| m.round());
    let fmt = |v: Option<f64>| v.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into());
    let summary = format!(
        "{}: {right}/{n_ans} answerable right with a supporting citation, {declined_n}/{n_una} unanswerable declined, retrieval hit {hits}/{n_ans}, median answer time {} ms, median answer {} words",
        args.dataset.file_name().and_then(|n| n.to_str()).unwrap_or("dataset"),
        fmt(med_ms),
        fmt(med_words)
    );
    engine.delete_collection(collection).await.ok();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!({"summary": summary, "answerable_right": right, "answerable": n_ans, "unanswerable_declined": declined_n,
            "unanswerable": n_una, "retrieval_hit": hits, "median_ms": med_ms, "median_answer_words": med_words, "results": results}))?);
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_matches_check_py() {
        let h = norm("It costs £42.00 and 1,840 homes; version 4.0.1");
        assert!(contains(&h, "£42") && contains(&h, "42") && contains(&h, "1840"));
        assert!(!contains(&norm("420 and 142 and 4.2"), "42"));
        assert!(!contains(&h, "4.0"), "4.0 does not match 4.0.1");
        assert!(declined("The documents do not say.") && declined("I can't tell") && !declined("Nothing here"));
    }
}
