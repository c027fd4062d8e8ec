//! E-mail messages (.eml, message/rfc822), read with the `mail-parser` crate (MIME structure,
//! transfer encodings, charsets): the headers a reader looks at, then the text bodies (an HTML-only
//! body converted as HTML). Attachments, forwarded messages included, are handed back to the
//! engine, which ingests each as a document of its own with this message as its parent.

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::{Attachment, ParseLimits, ParsedDocument, push_block};
use crate::error::{Error, Result};

/// Attachments taken from one message; past it the rest are left out (and logged).
const MAX_ATTACHMENTS: usize = 32;
/// MIME boundary lines one message may have: bounds the parts the parser builds.
const MAX_BOUNDARY_LINES: usize = 10_000;

pub(super) fn parse_eml(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument> {
    // mail-parser indexes freely on malformed input (a forwarded message without parts panicked
    // in `raw_message`, found by fuzzing): a bad message must fail on its own.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_eml(bytes, limits))) {
        Ok(result) => result,
        Err(panic) => {
            tracing::warn!(reason = super::panic_message(&*panic), "e-mail parser panicked");
            Err(Error::Unparseable("the e-mail message is malformed and could not be read".into()))
        }
    }
}

fn read_eml(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument> {
    let boundaries = bytes.split(|b| *b == b'\n').filter(|l| l.starts_with(b"--")).count();
    if boundaries > MAX_BOUNDARY_LINES {
        return Err(Error::limit(
            "document_too_complex",
            format!("the message has more than {MAX_BOUNDARY_LINES} MIME parts"),
        ));
    }
    let message = MessageParser::default()
        .parse(bytes)
        .filter(|m| !m.headers().is_empty())
        .ok_or_else(|| Error::Unparseable("the e-mail message has no headers and could not be read".into()))?;
    limits.check_time()?;

    let mut text = String::new();
    let mut header = Vec::new();
    if let Some(from) = addresses(message.from()) {
        header.push(format!("From: {from}"));
    }
    if let Some(to) = addresses(message.to()) {
        header.push(format!("To: {to}"));
    }
    if let Some(cc) = addresses(message.cc()) {
        header.push(format!("Cc: {cc}"));
    }
    if let Some(date) = message.date() {
        header.push(format!("Date: {}", date.to_rfc3339()));
    }
    let subject = message.subject().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty());
    if let Some(s) = &subject {
        header.push(format!("Subject: {s}"));
    }
    if !header.is_empty() {
        push_block(&mut text, &header.join("\n"));
    }

    // The text bodies in order; an HTML body (no plain alternative) goes through the HTML parser.
    for part in message.text_bodies() {
        limits.check_time()?;
        let body = match &part.body {
            PartType::Html(html) => super::parse_html(html.as_bytes(), limits)?.text,
            PartType::Text(t) => super::normalise_newlines(t.to_string()),
            _ => continue,
        };
        let body = body.trim();
        if !body.is_empty() {
            push_block(&mut text, body);
        }
        limits.check_text(text.len())?;
    }

    let mut attachments = Vec::new();
    for (n, part) in message.attachments().enumerate() {
        // Pictures shown inside the body (logos, signatures) are not attachments a reader opens.
        let inline = part.content_disposition().is_none_or(|d| !d.is_attachment()) && part.content_id().is_some();
        if inline || part.is_empty() {
            continue;
        }
        if attachments.len() >= MAX_ATTACHMENTS {
            tracing::warn!(limit = MAX_ATTACHMENTS, "e-mail has more attachments than are taken; the rest are left out");
            break;
        }
        let content_type = part.content_type().map(|c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub),
            None => c.ctype().to_owned(),
        });
        let nested = matches!(part.body, PartType::Message(_));
        let filename = part
            .attachment_name()
            .map(|s| s.rsplit(['/', '\\']).next().unwrap_or(s).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| if nested { format!("message-{}.eml", n + 1) } else { format!("attachment-{}", n + 1) });
        attachments.push(Attachment {
            filename,
            content_type: if nested { Some("message/rfc822".into()) } else { content_type },
            bytes: part.contents().to_vec(),
        });
    }
    if text.trim().is_empty() && attachments.is_empty() {
        return Err(Error::Unparseable("the e-mail message has no text".into()));
    }
    Ok(ParsedDocument { title: subject, text, markdown: true, pages: vec![], attachments })
}

/// "Name <address>, address" as a reader sees a header's addresses.
fn addresses(a: Option<&mail_parser::Address<'_>>) -> Option<String> {
    let list = a?
        .iter()
        .map(|x| match (x.name(), x.address()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    (!list.is_empty()).then_some(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_body_and_attachments() {
        let eml = b"From: Ana Silva <ana@example.org>\r\nTo: ops@example.org\r\nSubject: Boiler\r\n =?utf-8?q?inspection?=\r\nDate: Thu, 1 Jan 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nThe pilot light flickered twice during test=\r\ning.\r\n--b1\r\nContent-Type: text/csv; name=\"readings.csv\"\r\nContent-Disposition: attachment; filename=\"readings.csv\"\r\n\r\nBoiler,Pressure\r\nB2,1.4\r\n--b1--\r\n";
        let doc = parse_eml(eml, &ParseLimits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Boiler inspection"));
        assert!(doc.text.starts_with("From: Ana Silva <ana@example.org>\nTo: ops@example.org\nDate: 2026-01-01T09:00:00Z\nSubject: Boiler inspection"), "{}", doc.text);
        assert!(doc.text.contains("flickered twice during testing."), "{}", doc.text);
        assert_eq!(doc.attachments.len(), 1);
        assert_eq!(doc.attachments[0].filename, "readings.csv");
        assert_eq!(doc.attachments[0].content_type.as_deref(), Some("text/csv"));
        assert!(String::from_utf8_lossy(&doc.attachments[0].bytes).contains("B2,1.4"));
    }

    /// Found by fuzzing: a forwarded message with no parts made mail-parser index out of bounds.
    #[test]
    fn a_malformed_forwarded_message_is_unparseable_not_a_panic() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-eml-nested-without-parts.eml");
        let bytes = std::fs::read(path).unwrap();
        if let Err(e) = parse_eml(&bytes, &ParseLimits::default()) {
            assert!(matches!(e, Error::Unparseable(_)), "{e:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert!(parse_eml(b"\x00\x01 not mail", &ParseLimits::default()).is_err());
    }
}
