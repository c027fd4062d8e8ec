//! Text from pictures: scanned PDF pages and png/jpeg/tiff images, read by Tesseract.
//!
//! Tesseract and Poppler's `pdftoppm` (which draws a PDF page as a picture) run as child
//! processes, through their command lines rather than their C libraries: a hostile image that
//! crashes Leptonica or Poppler takes down one child, not the server; a child that runs past its
//! time is killed; and the build needs no C headers. Every picture is bounded before a child sees
//! it: an image's size is read from its header and refused past `ocr.max_image_pixels`, and a PDF
//! page is drawn to fit in `RENDER_PIXELS` × `RENDER_PIXELS` whatever size the page claims.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{PageSpan, ParseLimits, ParsedDocument, SpanUnit, normalise_newlines, tidy_lines};
use crate::error::{Error, Result};
use crate::settings::OcrSettings;

/// The longer side, in pixels, a PDF page is drawn at for OCR: about 220 dpi on a Letter or A4
/// page, which Tesseract reads well, and at most 6.25 M pixels however large the page claims to be.
const RENDER_PIXELS: u32 = 2_500;

/// The picture formats read by OCR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImageKind {
    Png,
    Jpeg,
    Tiff,
}

impl ImageKind {
    pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageKind::Png)
        } else if bytes.starts_with(b"\xFF\xD8\xFF") {
            Some(ImageKind::Jpeg)
        } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
            Some(ImageKind::Tiff)
        } else {
            None
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Tiff => "tif",
        }
    }
}

/// 422 when OCR is needed but off or not installed.
fn unavailable(why: &str) -> Error {
    Error::Unparseable(format!("{why}; the document has no text layer to read without OCR"))
}

fn settings(limits: &ParseLimits) -> Result<&OcrSettings> {
    let ocr = limits.ocr.as_ref().ok_or_else(|| unavailable("OCR is turned off (ocr.enabled = false)"))?;
    if !tesseract_installed() {
        return Err(unavailable("OCR needs Tesseract, which is not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"));
    }
    Ok(ocr)
}

/// Whether `tesseract` runs here (asked once per process).
pub fn tesseract_installed() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        Command::new("tesseract")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// An image upload: its text, one page per image (a multi-page TIFF's pages come back as one).
pub(super) fn parse_image(bytes: &[u8], kind: ImageKind, limits: &ParseLimits) -> Result<ParsedDocument> {
    let ocr = settings(limits)?;
    let (width, height, frames) = dimensions(bytes, kind)
        .ok_or_else(|| Error::Unparseable(format!("the {} image is corrupt: its size could not be read", kind.extension())))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > ocr.max_image_pixels {
        return Err(Error::limit(
            "document_too_large",
            format!("the image is {width} x {height} pixels; OCR reads images up to {} pixels (ocr.max_image_pixels)", ocr.max_image_pixels),
        ));
    }
    if frames > ocr.max_pages {
        return Err(Error::limit(
            "document_too_large",
            format!("the image has more than {} pages (ocr.max_pages)", ocr.max_pages),
        ));
    }
    let dir = TempDir::new()?;
    let input = dir.path().join(format!("image.{}", kind.extension()));
    std::fs::write(&input, bytes).map_err(Error::internal)?;
    let text = tesseract(&input, &dir, ocr, limits)?;
    if text.is_empty() {
        return Err(Error::Unparseable("OCR found no text in the image".into()));
    }
    let chars = text.chars().count();
    Ok(ParsedDocument {
        title: None,
        text,
        markdown: false,
        pages: vec![PageSpan { page: 1, char_start: 0, char_end: chars, unit: SpanUnit::Page, name: None, ocr: true }],
        attachments: Vec::new(),
    })
}

/// The text of the given pages of a PDF, drawn by `pdftoppm` then read by Tesseract, in order.
/// Stops at the parse deadline (`parse_timeout`); a page that fails to draw reads as empty.
pub(super) fn pdf_pages(pdf: &[u8], pages: &[u32], limits: &ParseLimits) -> Result<Vec<(u32, String)>> {
    let ocr = settings(limits)?;
    if pages.len() as u64 > u64::from(ocr.max_pages) {
        return Err(Error::limit(
            "document_too_large",
            format!("the PDF has {} pages without text; OCR reads at most {} per document (ocr.max_pages)", pages.len(), ocr.max_pages),
        ));
    }
    let dir = TempDir::new()?;
    let input = dir.path().join("document.pdf");
    std::fs::write(&input, pdf).map_err(Error::internal)?;
    let mut out = Vec::with_capacity(pages.len());
    for &page in pages {
        limits.check_time()?;
        let picture = dir.path().join(format!("page-{page}"));
        let mut draw = Command::new("pdftoppm");
        draw.args(["-q", "-gray", "-png", "-singlefile", "-scale-to"])
            .arg(RENDER_PIXELS.to_string())
            .args(["-f", &page.to_string(), "-l", &page.to_string()])
            .arg(&input)
            .arg(&picture);
        match run(draw, limits) {
            Ok(()) => {}
            Err(e @ Error::Limit { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(page, error = %e, "could not draw PDF page for OCR");
                out.push((page, String::new()));
                continue;
            }
        }
        let text = tesseract(&picture.with_extension("png"), &dir, ocr, limits)?;
        out.push((page, text));
    }
    Ok(out)
}

/// Runs Tesseract on one picture file; its text with lines tidied.
fn tesseract(input: &Path, dir: &TempDir, ocr: &OcrSettings, limits: &ParseLimits) -> Result<String> {
    let base = dir.path().join("ocr");
    let mut cmd = Command::new("tesseract");
    cmd.arg(input).arg(&base).args(["-l", &ocr.languages.join("+")])
        // One thread per Tesseract: uploads are OCR'd side by side, and on a few cores OpenMP's
        // threads only contend.
        .env("OMP_THREAD_LIMIT", "1");
    run(cmd, limits)?;
    let txt = base.with_extension("txt");
    let raw = std::fs::read(&txt).map_err(|e| Error::Unparseable(format!("OCR produced no output: {e}")))?;
    let _ = std::fs::remove_file(&txt);
    let text = String::from_utf8_lossy(&raw).replace('\x0c', "\n");
    Ok(tidy_lines(&normalise_newlines(text)))
}

/// Runs a child to completion before the parse deadline; past it the child is killed and the
/// parse fails with `parse_timeout`.
fn run(mut cmd: Command, limits: &ParseLimits) -> Result<()> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable(&format!("{name} could not be started: {e}")))?;
    loop {
        match child.try_wait().map_err(Error::internal)? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.by_ref().take(2_000).read_to_string(&mut err);
                }
                return Err(Error::Unparseable(format!("{name} failed ({status}): {}", err.trim())));
            }
            None => {}
        }
        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(super::parse_timeout());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A folder of this parse's own under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("ragd-ocr-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&path).map_err(Error::internal)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Width, height and number of pages (frames), read from the image's header without decoding it.
fn dimensions(bytes: &[u8], kind: ImageKind) -> Option<(u32, u32, u32)> {
    let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match kind {
        // Signature, then the IHDR chunk: length, "IHDR", width, height.
        ImageKind::Png => (bytes.get(12..16) == Some(b"IHDR")).then(|| Some((be32(16)?, be32(20)?, 1)))?,
        ImageKind::Jpeg => jpeg_size(bytes).map(|(w, h)| (w, h, 1)),
        ImageKind::Tiff => tiff_size(bytes),
    }
}

/// The frame header (SOFn) of a JPEG: its height and width.
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let h = u32::from(u16::from_be_bytes([b[i + 5], b[i + 6]]));
            let w = u32::from(u16::from_be_bytes([b[i + 7], b[i + 8]]));
            return Some((w, h));
        }
        if len < 2 {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// The largest page of a TIFF (its width and height tags) and how many pages it has; the chain of
/// pages is followed at most 10,000 steps (a loop in it ends there).
fn tiff_size(b: &[u8]) -> Option<(u32, u32, u32)> {
    let little = b.starts_with(b"II");
    let u16_at = |at: usize| b.get(at..at + 2).map(|x| if little { u16::from_le_bytes([x[0], x[1]]) } else { u16::from_be_bytes([x[0], x[1]]) });
    let u32_at = |at: usize| {
        b.get(at..at + 4).map(|x| if little { u32::from_le_bytes([x[0], x[1], x[2], x[3]]) } else { u32::from_be_bytes([x[0], x[1], x[2], x[3]]) })
    };
    let (mut best, mut frames) = ((0u32, 0u32), 0u32);
    let mut ifd = u32_at(4)? as usize;
    while ifd != 0 && frames < 10_000 {
        let entries = usize::from(u16_at(ifd)?);
        let (mut w, mut h) = (0u32, 0u32);
        for e in 0..entries {
            let at = ifd + 2 + e * 12;
            let (tag, typ) = (u16_at(at)?, u16_at(at + 2)?);
            // SHORT (3) values sit in the first two bytes of the value field, LONG (4) in all four.
            let value = if typ == 3 { u32::from(u16_at(at + 8)?) } else { u32_at(at + 8)? };
            match tag {
                256 => w = value,
                257 => h = value,
                _ => {}
            }
        }
        if u64::from(w) * u64::from(h) > u64::from(best.0) * u64::from(best.1) {
            best = (w, h);
        }
        frames += 1;
        ifd = u32_at(ifd + 2 + entries * 12)? as usize;
    }
    (frames > 0).then_some((best.0, best.1, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_headers() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(ImageKind::sniff(&png), Some(ImageKind::Png));
        assert_eq!(dimensions(&png, ImageKind::Png), Some((100_000, 100_000, 1)));
        // SOI, an APP0 segment, then SOF0 with height 600 and width 800.
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xC0, 0, 11, 8, 0x02, 0x58, 0x03, 0x20, 1, 0, 0, 0];
        assert_eq!(dimensions(&jpeg, ImageKind::Jpeg), Some((800, 600, 1)));
        // A little-endian TIFF whose one page is 640 x 480 (SHORT values) and whose next-page
        // pointer points back at itself.
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&2u16.to_le_bytes());
        for (tag, v) in [(256u16, 640u16), (257, 480)] {
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&3u16.to_le_bytes());
            tiff.extend_from_slice(&1u32.to_le_bytes());
            tiff.extend_from_slice(&v.to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        }
        tiff.extend_from_slice(&8u32.to_le_bytes());
        assert_eq!(dimensions(&tiff, ImageKind::Tiff), Some((640, 480, 10_000)));
    }

    #[test]
    fn an_image_past_the_pixel_cap_is_refused_before_tesseract_runs() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        let limits = ParseLimits { ocr: Some(OcrSettings::default()), ..ParseLimits::default() };
        match parse_image(&png, ImageKind::Png, &limits) {
            Err(Error::Limit { code, .. }) => assert_eq!(code, "document_too_large"),
            // Without Tesseract the refusal comes earlier and says so.
            Err(Error::Unparseable(msg)) if !tesseract_installed() => assert!(msg.contains("Tesseract"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let off = ParseLimits { ocr: None, ..ParseLimits::default() };
        assert!(matches!(parse_image(&png, ImageKind::Png, &off), Err(Error::Unparseable(m)) if m.contains("ocr.enabled")));
    }
}
