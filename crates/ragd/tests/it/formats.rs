//! Issue 24: every document format ragd reads, from fixtures made by each format's own tools
//! (crates/ragd-core/tests/fixtures/formats/make.py): uploaded through the API, each found by a
//! phrase only it has, with its page, slide, sheet or chapter in the hit; e-mail attachments as
//! documents of their own; scanned pages read by OCR, and a page with a text layer not.

use serde_json::{Value, json};

use crate::support::{Server, fixture};

fn format_fixture(name: &str) -> Vec<u8> {
    fixture(&format!("formats/{name}"))
}

/// Lower case, letters and digits only: OCR and the renderers may differ in spacing and case.
fn norm(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

#[tokio::test]
async fn every_format_is_found_by_its_own_phrase_in_its_place() {
    let ocr = ragd_core::parse::tesseract_installed()
        && std::process::Command::new("pdftoppm").arg("-v").output().is_ok();
    if !ocr {
        eprintln!("SKIPPED (OCR part): tesseract or pdftoppm is not installed; scripts/test.sh installs both (tesseract-ocr, poppler-utils)");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    s.create("formats").await;
    let manifest: Vec<Value> = serde_json::from_slice(&format_fixture("manifest.json")).unwrap();
    let needs_ocr = |file: &str| file.starts_with("scan") || file == "mixed.pdf";

    let mut files: Vec<&str> = manifest.iter().filter_map(|e| e["file"].as_str()).collect();
    files.dedup();
    for file in &files {
        if needs_ocr(file) && !ocr {
            continue;
        }
        let (st, job) = s.upload("formats", file, format_fixture(file)).await;
        assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{file}: {job}");
    }
    // The message's two attachments are documents of their own, under the message.
    let (st, doc) = s.get("/api/v1/collections/formats/documents/message.eml%2Freadings.csv").await;
    assert_eq!(st, 200, "{doc}");
    assert_eq!(doc["metadata"]["parent_doc_id"], "message.eml", "{doc}");

    for entry in &manifest {
        let (file, phrase, place) = (entry["file"].as_str().unwrap(), entry["phrase"].as_str().unwrap(), &entry["where"]);
        if needs_ocr(file) && !ocr {
            continue;
        }
        let r = s.search("formats", json!({"query": phrase, "mode": "lexical", "top_k": 3})).await;
        let doc_id = match place["attachment"].as_str() {
            Some(a) => format!("{file}/{a}"),
            None => file.to_owned(),
        };
        // message_nested.eml forwards message.eml, attachments and all: its copy (under its own id)
        // holds the same phrases.
        let ours = |id: &Value| id == doc_id.as_str() || (file == "message.eml" && id == format!("message_nested.eml/{doc_id}").as_str());
        let hit = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| ours(&h["doc_id"]) && norm(h["text"].as_str().unwrap_or("")).contains(&norm(phrase)))
            .unwrap_or_else(|| panic!("{file}: no hit of {doc_id} holds {phrase:?}: {r}"));
        assert!(ours(&r["results"][0]["doc_id"]), "{file}: {phrase:?} finds its own file first: {r}");
        let offsets = &hit["offsets"];
        if let Some(slide) = place["slide"].as_u64() {
            assert_eq!(offsets["slide"].as_u64(), Some(slide), "{file}: {phrase:?}: {hit}");
        }
        if let Some(sheet) = place["sheet"].as_str() {
            assert_eq!(offsets["sheet"].as_str(), Some(sheet), "{file}: {phrase:?}: {hit}");
        }
        if let Some(page) = place["page"].as_u64() {
            assert_eq!(offsets["page"].as_u64(), Some(page), "{file}: {phrase:?}: {hit}");
        }
        if let Some(chapter) = place["chapter"].as_str() {
            assert_eq!(hit["heading_path"][0].as_str(), Some(chapter), "{file}: {phrase:?}: {hit}");
        }
        // Text read from pictures says so; the text layer of mixed.pdf's first page does not.
        let pictured = file.starts_with("scan") || (file == "mixed.pdf" && place["page"] == 2);
        assert_eq!(offsets["ocr"].as_bool().unwrap_or(false), pictured, "{file}: {phrase:?}: {hit}");
        assert_eq!(hit["metadata"]["ocr"].as_bool().unwrap_or(false), pictured, "{file}: {phrase:?}: {hit}");
    }

    // OCR'd text can be filtered on: only mixed.pdf's second page among its chunks.
    if ocr {
        let r = s.search("formats", json!({"query": "sailings fog horn", "mode": "lexical", "top_k": 10, "filter": {"doc_id": "mixed.pdf", "metadata": {"ocr": true}}})).await;
        let pages: Vec<u64> = r["results"].as_array().unwrap().iter().filter_map(|h| h["offsets"]["page"].as_u64()).collect();
        assert_eq!(pages, vec![2], "{r}");
    }

    // A spreadsheet's rows keep their header: the Q3 cell of a region reads as such.
    let r = s.search("formats", json!({"query": "Coastal North Q3", "mode": "lexical", "top_k": 1, "filter": {"doc_id": "sales.xlsx"}})).await;
    let text = r["results"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("Region | Q1 | Q2 | Q3 | Q4") && text.contains("Coastal North"), "{r}");
    assert_eq!(r["results"][0]["offsets"]["sheet"], "Regional sales", "{r}");
}

#[tokio::test]
async fn a_spreadsheet_question_is_answered_from_its_table_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.create("sheets").await;
    let (st, job) = s.upload("sheets", "sales.xlsx", format_fixture("sales.xlsx")).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    let (st, a) = s.post("/api/v1/collections/sheets/query", json!({"question": "Which region had the highest Q3 sales?"})).await;
    assert_eq!(st, 200, "{a}");
    let answer = a["answer"].as_str().unwrap_or("");
    assert!(answer.contains("Coastal North"), "{a}");
    // Not the region that leads the other quarters.
    assert!(!answer.contains("Inland Valley"), "{a}");
    let cited = a["citations"].as_array().unwrap();
    assert!(cited.iter().any(|c| c["doc_id"] == "sales.xlsx" && c["offsets"]["sheet"] == "Regional sales"), "{a}");
}

#[tokio::test]
async fn hostile_office_files_get_a_clear_4xx_and_the_server_stays_up() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[("RAGD_GENERATOR__KIND", "none")]);
    s.create("h").await;
    let zip_of = |entries: &[(&str, Vec<u8>)]| {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
        out.into_inner()
    };
    let workbook = br#"<workbook><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_vec();
    let rels = br#"<Relationships><Relationship Id="rId1" Type="x/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_vec();
    // A sheet that inflates past the document's allowance (a zip bomb): 78 MB of one cell repeated.
    let mut bomb = b"<worksheet><sheetData>".to_vec();
    bomb.extend(b"<row><c><v>1</v></c></row>".repeat(3_000_000));
    let xlsx = zip_of(&[("xl/workbook.xml", workbook.clone()), ("xl/_rels/workbook.xml.rels", rels.clone()), ("xl/worksheets/sheet1.xml", bomb)]);
    assert!(xlsx.len() < 2 << 20, "{}", xlsx.len());
    let (st, b) = s.upload("h", "bomb.xlsx", xlsx).await;
    assert_eq!(st, 422, "{b}");
    // A cell at the last column of the last row: refused, not a 17-billion-cell grid.
    let far = br#"<worksheet><sheetData><row r="1048576"><c r="XFD1048576"><v>1</v></c></row></sheetData></worksheet>"#.to_vec();
    let xlsx = zip_of(&[("xl/workbook.xml", workbook), ("xl/_rels/workbook.xml.rels", rels), ("xl/worksheets/sheet1.xml", far)]);
    let (st, b) = s.upload("h", "far.xlsx", xlsx).await;
    assert_eq!((st, b["error"]["code"].as_str()), (422, Some("document_too_complex")), "{b}");
    // XML nested past the depth limit in a slide.
    let deep = format!("<p:sld>{}{}</p:sld>", "<p:grpSp>".repeat(5_000), "</p:grpSp>".repeat(5_000));
    let pres = br#"<p:presentation><p:sldIdLst><p:sldId id="256" r:id="rId2"/></p:sldIdLst></p:presentation>"#.to_vec();
    let prels = br#"<Relationships><Relationship Id="rId2" Type="x/slide" Target="slides/slide1.xml"/></Relationships>"#.to_vec();
    let pptx = zip_of(&[("ppt/presentation.xml", pres), ("ppt/_rels/presentation.xml.rels", prels), ("ppt/slides/slide1.xml", deep.into_bytes())]);
    let (st, b) = s.upload("h", "deep.pptx", pptx).await;
    assert_eq!((st, b["error"]["code"].as_str()), (422, Some("document_too_complex")), "{b}");
    // JSON nested 100,000 deep.
    let json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (st, b) = s.upload("h", "deep.json", json.into_bytes()).await;
    assert_eq!((st, b["error"]["code"].as_str()), (422, Some("unparseable_document")), "{b}");
    // An image that claims 100,000 x 100,000 pixels.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0, 0]);
    let (st, b) = s.upload("h", "huge.png", png).await;
    assert_eq!(st, 422, "{b}");

    let (st, _) = s.get("/health/live").await;
    assert_eq!(st, 200, "the server is still up");
    let (_, info) = s.get("/api/v1/collections/h").await;
    assert_eq!(info["documents"], 0, "nothing hostile was kept: {info}");
}
