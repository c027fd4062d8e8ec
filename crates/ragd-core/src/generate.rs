//! The `Generator` trait: turns a prompt into an answer, streamed piece by piece. The built-in
//! llama.cpp model, Ollama and any OpenAI-compatible server implement it.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;

/// One earlier exchange of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
}

/// What to generate. ragd composes the text; each generator only lays it out for its model: a chat
/// model gets `instructions` as the system message, `history` as earlier messages and `prompt` as the
/// user message; a base (completion) model gets them concatenated.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub instructions: String,
    pub history: Vec<Turn>,
    /// The user message: fenced passages, then the question, ending with the answer cue.
    pub prompt: String,
    pub max_tokens: usize,
    /// 0 means greedy decoding (deterministic for the built-in model).
    pub temperature: f32,
    /// Generation stops before any of these strings (they are not part of the answer).
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended the answer or a stop sequence was reached.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The receiver of the pieces went away (the client disconnected).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish: FinishReason,
}

#[async_trait]
pub trait Generator: Send + Sync + 'static {
    /// A stable name, e.g. `builtin:gemma-3-270m` or `ollama:llama3.2`.
    fn id(&self) -> &str;
    /// Tokens the model can attend to: prompt and answer together must fit.
    fn context_tokens(&self) -> usize;
    /// Tokens `text` takes in this model's prompt (exact for the built-in model, estimated otherwise).
    fn count_tokens(&self, text: &str) -> usize;
    /// Generates an answer, sending each new piece of text to `pieces` as soon as it is known, and
    /// returns the whole. Stops early with [`FinishReason::Cancelled`] once `pieces` is closed.
    async fn generate(&self, req: GenerationRequest, pieces: mpsc::Sender<String>) -> Result<Generated>;
    /// Cheap liveness probe for `/health/ready`.
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// The circuit breaker in front of this generator, if any.
    fn breaker_status(&self) -> Option<crate::breaker::BreakerStatus> {
        None
    }
}

/// A base (completion) model does not know where an answer ends: after a blank line or a new `[n]`
/// line it goes on writing more passages or questions. Completion-style generators add these stops.
pub const BASE_MODEL_STOPS: [&str; 2] = ["\n\n", "\n["];

/// Lays a request out for a base (completion) model: instructions, earlier exchanges, then the prompt.
pub fn completion_prompt(req: &GenerationRequest) -> String {
    let mut text = String::with_capacity(req.instructions.len() + req.prompt.len() + 256);
    text.push_str(&req.instructions);
    text.push_str("\n\n");
    if !req.history.is_empty() {
        text.push_str("Earlier in this conversation:\n");
        for t in &req.history {
            text.push_str(&format!("Question: {}\nAnswer: {}\n", t.question, t.answer));
        }
        text.push('\n');
    }
    text.push_str(&req.prompt);
    text
}

/// The stop sequences a completion-style generator applies: the request's, plus
/// [`BASE_MODEL_STOPS`] unless the request has none (a benchmark that runs to `max_tokens`).
pub fn completion_stops(req: &GenerationRequest) -> Vec<String> {
    let mut stops = req.stop.clone();
    if !stops.is_empty() {
        stops.extend(BASE_MODEL_STOPS.iter().map(|s| s.to_string()));
    }
    stops
}

/// Holds back the end of a stream of text that could still become a stop sequence, so that a stop
/// sequence split over several tokens is never sent to the client.
#[derive(Debug, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    text: String,
    sent: usize,
    stopped: bool,
}

impl StopScanner {
    pub fn new(stops: &[String]) -> Self {
        StopScanner { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Default::default() }
    }

    /// Adds a piece; returns the text that is now safe to send, and whether a stop sequence was hit.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.text.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.text[self.sent..].find(s.as_str()).map(|i| self.sent + i)).min() {
            self.text.truncate(at);
            self.stopped = true;
            let out = self.text[self.sent..].to_owned();
            self.sent = self.text.len();
            return (out, true);
        }
        // Keep back the longest suffix that is a prefix of some stop sequence.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.text.len() - self.sent >= i && self.text.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let upto = self.text.len() - keep;
        let out = self.text[self.sent..upto].to_owned();
        self.sent = upto;
        (out, false)
    }

    /// Ends the stream: returns what was held back (unless a stop sequence was hit) and the whole text.
    pub fn finish(mut self) -> (String, String) {
        let rest = if self.stopped { String::new() } else { self.text[self.sent..].to_owned() };
        self.sent = self.text.len();
        (rest, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopScanner::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            let (o, stop) = s.push(p);
            out.push(o);
            if stop {
                break;
            }
        }
        let (rest, whole) = s.finish();
        out.push(rest);
        (out, whole)
    }

    #[test]
    fn stop_sequence_split_over_pieces_is_never_sent() {
        let (out, whole) = run(&["\nQuestion:"], &["Paris", " is", "\nQue", "stion:", " more"]);
        assert_eq!(out.concat(), "Paris is");
        assert_eq!(whole, "Paris is");
        assert!(!out.iter().any(|p| p.contains('\n')), "{out:?}");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_complete() {
        let (out, whole) = run(&["\nQuestion:"], &["a", "\nQ", "uick", " end"]);
        assert_eq!(out.concat(), "a\nQuick end");
        assert_eq!(whole, "a\nQuick end");
        // "\nQ" was held back until "uick" proved it was not a stop sequence.
        assert_eq!(out[1], "");
    }

    #[test]
    fn text_without_stops_passes_through() {
        let (out, whole) = run(&[], &["one ", "two"]);
        assert_eq!(out, vec!["one ", "two", ""]);
        assert_eq!(whole, "one two");
    }
}
