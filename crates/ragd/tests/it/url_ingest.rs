//! URL ingest against a real server: pages, sitemaps and crawls served by a small HTTP site started
//! inside the test (`Site`), which counts the connections it accepts so a test can tell that a
//! refused URL was never connected to. Loopback is a denied address: tests that fetch put it on the
//! allow-list (`RAGD_FETCH__ALLOW`), the others check the refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::Server;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// What the site answers on one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send no `Content-Length` (the body ends when the connection closes).
    unannounced: bool,
    /// Accept the request and never answer.
    hang: bool,
}

impl Reply {
    fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status: 200, headers: vec![("Content-Type".into(), content_type.into())], body: body.into(), unannounced: false, hang: false }
    }
    fn html(body: &str) -> Reply {
        Reply::ok("text/html; charset=utf-8", body)
    }
    fn redirect(status: u16, to: &str) -> Reply {
        Reply { status, headers: vec![("Location".into(), to.into())], body: Vec::new(), unannounced: false, hang: false }
    }
}

/// A tiny HTTP/1.1 site: one request per connection, answers from its route table (404 otherwise).
/// It counts every connection it accepts and records every path asked for.
struct Site {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    /// `None` when the address cannot be bound here (no IPv6, say).
    async fn start(bind: &str) -> Option<Site> {
        let listener = TcpListener::bind(bind).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let (c, r, t) = (connections.clone(), requests.clone(), routes.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, t) = (r.clone(), t.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    r.lock().unwrap().push(path.clone());
                    let reply = t.lock().unwrap().get(&path).cloned();
                    let reply = reply.unwrap_or(Reply { status: 404, headers: vec![], body: b"not found".to_vec(), unannounced: false, hang: false });
                    if reply.hang {
                        std::future::pending::<()>().await;
                    }
                    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    if !reply.unannounced {
                        out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                    }
                    out.push_str("\r\n");
                    let _ = stream.write_all(out.as_bytes()).await;
                    let _ = stream.write_all(&reply.body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Some(Site { addr, connections, requests, routes, task })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requested(&self, path: &str) -> bool {
        self.requests.lock().unwrap().iter().any(|p| p == path)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn page(title: &str, body: &str) -> Reply {
    Reply::html(&format!("<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{body}</p></body></html>"))
}

const LOOPBACK_ALLOWED: (&str, &str) = ("RAGD_FETCH__ALLOW", "[\"127.0.0.0/8\"]");

async fn ingest(s: &Server, body: Value) -> (u16, Value) {
    s.post("/api/v1/collections/kb/documents?wait=true", body).await
}

fn ids(job: &Value) -> Vec<String> {
    let mut ids: Vec<String> = job["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn url_ingest_of_a_page_then_search_finds_it_and_the_cli_does_the_same() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    site.route("/guide.html", page("Lighthouse guide", "The quokka lighthouse keeper polishes the brass lens every Tuesday at dawn."));
    site.route("/other.html", page("Bakery", "Sourdough needs a lively starter and a long cold proof."));
    site.route("/moved", Reply::redirect(302, "/new-home.html"));
    site.route("/new-home.html", page("New home", "The marmot archive moved to the granite vault in 2021."));
    site.route("/cli.html", page("Ferry", "The pelican ferry leaves the harbour at half past nine."));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[LOOPBACK_ALLOWED]);
    s.create("kb").await;

    let url = site.url("/guide.html");
    let (st, job) = ingest(&s, json!({"url": url, "metadata": {"team": "docs"}})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    let (st, job) = ingest(&s, json!({"url": site.url("/other.html")})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    let (st, doc) = s.get(&format!("/api/v1/collections/kb/documents/{}", url.replace('/', "%2F").replace(':', "%3A"))).await;
    assert_eq!(st, 200, "the page's id is its URL: {doc}");
    assert_eq!(doc["metadata"]["source_url"], url, "{doc}");
    assert_eq!(doc["metadata"]["team"], "docs", "{doc}");
    assert_eq!(doc["title"], "Lighthouse guide", "{doc}");

    let r = s.search("kb", json!({"query": "quokka lighthouse keeper", "mode": "lexical", "top_k": 3})).await;
    let hits = r["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "only the guide holds the phrase: {r}");
    assert_eq!(hits[0]["doc_id"], url, "{r}");

    // A redirect is followed; the document is named by where it ended, and given id and title win.
    let (st, job) = ingest(&s, json!({"url": site.url("/moved")})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    assert_eq!(ids(&job), vec![site.url("/new-home.html")], "{job}");
    let (st, job) = ingest(&s, json!({"url": site.url("/moved"), "id": "marmots", "title": "Marmot archive"})).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(ids(&job), vec!["marmots"], "{job}");
    let (_, doc) = s.get("/api/v1/collections/kb/documents/marmots").await;
    assert_eq!((doc["title"].as_str(), doc["metadata"]["source_url"].as_str()), (Some("Marmot archive"), Some(site.url("/new-home.html").as_str())), "{doc}");

    // `ragd ingest URL`: the server fetches it. The command runs on a blocking thread, so this test's
    // runtime goes on serving the site meanwhile.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_ragd"));
    cli.args(["ingest", "--collection", "kb", "--server", &s.base]).arg(site.url("/cli.html")).arg(site.url("/missing.html"));
    let out = tokio::task::spawn_blocking(move || cli.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "the missing page fails the run: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 ingested") && stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("fetch_failed") && stdout.contains("404"), "{stdout}");
    let r = s.search("kb", json!({"query": "pelican ferry harbour", "mode": "lexical", "top_k": 1})).await;
    assert_eq!(r["results"][0]["doc_id"], site.url("/cli.html"), "{r}");
}

#[tokio::test]
async fn url_ingest_of_a_sitemap_ingests_every_page_it_lists() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    let pages = ["/a.html", "/b.html", "/notes.txt"];
    let locs: String = pages.iter().map(|p| format!("<url><loc>{}</loc></url>", site.url(p))).collect();
    site.route("/sitemap.xml", Reply::ok("application/xml", format!("<?xml version=\"1.0\"?><urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">{locs}</urlset>")));
    site.route("/index.xml", Reply::ok("application/xml", format!("<sitemapindex><sitemap><loc>{}</loc></sitemap></sitemapindex>", site.url("/sitemap.xml"))));
    site.route("/a.html", page("Alpha", "The alpaca shearing season starts in late spring."));
    site.route("/b.html", page("Beta", "Beekeepers smoke the hive before opening it."));
    site.route("/notes.txt", Reply::ok("text/plain", "Narwhal tusks are elongated teeth."));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[LOOPBACK_ALLOWED]);
    s.create("kb").await;

    let (st, job) = ingest(&s, json!({"sitemap": site.url("/sitemap.xml"), "metadata": {"source": "sitemap"}})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    let mut want: Vec<String> = pages.iter().map(|p| site.url(p)).collect();
    want.sort();
    assert_eq!(ids(&job), want, "{job}");
    assert!(job["documents"].as_array().unwrap().iter().all(|d| d["status"] == "ingested"), "{job}");
    let r = s.search("kb", json!({"query": "narwhal tusks", "mode": "lexical", "top_k": 1})).await;
    assert_eq!(r["results"][0]["doc_id"], site.url("/notes.txt"), "{r}");
    assert_eq!(r["results"][0]["metadata"]["source"], "sitemap", "{r}");

    // A sitemap index leads to the same pages; `max_pages` takes the first ones listed.
    let (st, job) = ingest(&s, json!({"sitemap": site.url("/index.xml"), "max_pages": 2})).await;
    assert_eq!(st, 200, "{job}");
    assert_eq!(ids(&job), vec![site.url("/a.html"), site.url("/b.html")], "{job}");

    // What is not a sitemap is said so.
    let (st, body) = ingest(&s, json!({"sitemap": site.url("/a.html")})).await;
    assert_eq!((st, code(&body)), (422, "unparseable_document"), "{body}");
}

#[tokio::test]
async fn url_ingest_crawl_honours_max_pages_and_stays_on_its_host() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    // Another host (127.0.0.2 is loopback too, and allowed): a same-host crawl never goes there.
    let elsewhere = Site::start("127.0.0.2:0").await.expect("bind 127.0.0.2");
    elsewhere.route("/away.html", page("Away", "A page on another host."));
    let links = format!(
        r#"<a href="/p1.html">1</a> <a href="p2.html">2</a> <a href="{}">away</a> <a href="/p3.html#part">3</a> <a href="/p4.html">4</a> <a href="/logo.png">logo</a>"#,
        elsewhere.url("/away.html")
    );
    site.route("/", Reply::html(&format!("<html><head><title>Home</title></head><body><p>Welcome to the orchard.</p>{links}</body></html>")));
    site.route("/p1.html", Reply::html(r#"<html><body><p>Apples ripen in autumn.</p><a href="/deep.html">deeper</a></body></html>"#));
    site.route("/p2.html", page("Pears", "Pears ripen off the tree."));
    site.route("/p3.html", page("Plums", "Plums bruise easily."));
    site.route("/p4.html", page("Quinces", "Quinces need long cooking."));
    site.route("/deep.html", page("Deep", "A page two links away."));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[LOOPBACK_ALLOWED, ("RAGD_FETCH__MAX_PAGES", "5")]);
    s.create("kb").await;

    let (st, job) = ingest(&s, json!({"url": site.url("/"), "crawl": {"max_pages": 3, "same_host": true}})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    // Breadth first: the start page, then its first two links.
    let mut want = vec![site.url("/"), site.url("/p1.html"), site.url("/p2.html")];
    want.sort();
    assert_eq!(ids(&job), want, "{job}");
    for not_fetched in ["/p3.html", "/p4.html", "/deep.html", "/logo.png"] {
        assert!(!site.requested(not_fetched), "{not_fetched} was fetched past max_pages");
    }
    assert_eq!(elsewhere.connections(), 0, "a same-host crawl connected to another host");

    // Up to the cap, the whole site: every page once (the fragment link is p3 itself).
    let (st, job) = ingest(&s, json!({"url": site.url("/"), "crawl": {"max_pages": 5}})).await;
    assert_eq!(st, 200, "{job}");
    let got = ids(&job);
    assert_eq!(got.len(), 5, "{job}");
    assert!(got.contains(&site.url("/p3.html")) && got.contains(&site.url("/p4.html")), "{job}");
    assert_eq!(elsewhere.connections(), 0);

    // More than the server allows is refused, as are single-page fields on a crawl.
    let (st, body) = ingest(&s, json!({"url": site.url("/"), "crawl": {"max_pages": 6}})).await;
    assert_eq!((st, code(&body)), (422, "too_many_pages"), "{body}");
    let (st, body) = ingest(&s, json!({"url": site.url("/"), "crawl": {}, "id": "x"})).await;
    assert_eq!((st, code(&body)), (400, "invalid_request"), "{body}");
}

#[tokio::test]
async fn url_ingest_refuses_loopback_by_default_before_connecting() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    site.route("/", page("Secret", "Internal only."));
    let port = site.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path());
    s.create("kb").await;

    let (st, body) = ingest(&s, json!({"url": format!("http://127.0.0.1:{port}/")})).await;
    assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("127.0.0.1") && message.contains("loopback") && message.contains("fetch.allow"), "{message}");

    // A name that resolves to loopback, other spellings of loopback, and every request form.
    let (st, body) = ingest(&s, json!({"url": format!("http://localhost:{port}/")})).await;
    assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`localhost`"), "{body}");
    for url in [
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
    ] {
        let (st, body) = ingest(&s, json!({"url": url})).await;
        assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{url}: {body}");
    }
    let (st, body) = ingest(&s, json!({"sitemap": format!("http://127.0.0.1:{port}/sitemap.xml")})).await;
    assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{body}");
    let (st, body) = ingest(&s, json!({"url": format!("http://127.0.0.1:{port}/"), "crawl": {"max_pages": 2}})).await;
    assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{body}");

    // Schemes other than http(s), and credentials in the URL.
    for url in ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/file.txt", "http://user:secret@example.com/"] {
        let (st, body) = ingest(&s, json!({"url": url})).await;
        assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{url}: {body}");
    }
    let (st, body) = ingest(&s, json!({"url": "not a url"})).await;
    assert_eq!((st, code(&body)), (400, "invalid_url"), "{body}");

    assert_eq!(site.connections(), 0, "a refused URL was connected to");
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!(info["documents"], 0, "{info}");

    // The OpenAPI document describes the URL forms beside the documents ones.
    let (_, api) = s.get("/api/v1/openapi.json").await;
    let forms = &api["components"]["schemas"]["JsonBody"]["oneOf"];
    assert!(forms.as_array().is_some_and(|f| f.len() == 3 && f.iter().any(|s| s["$ref"] == "#/components/schemas/UrlIngest")), "{forms}");
    let url_form = &api["components"]["schemas"]["UrlIngest"]["properties"];
    assert!(["url", "sitemap", "crawl", "metadata"].iter().all(|p| url_form.get(*p).is_some()), "{url_form}");
}

#[tokio::test]
async fn url_ingest_checks_every_redirect_target_before_connecting() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    let other = Site::start("127.0.0.2:0").await.expect("bind 127.0.0.2");
    other.route("/", page("Other", "Behind the redirect."));
    let v6 = Site::start("[::1]:0").await;
    site.route("/to-other", Reply::redirect(302, &other.url("/")));
    site.route("/to-metadata", Reply::redirect(301, "http://169.254.169.254/latest/meta-data/"));
    site.route("/to-private", Reply::redirect(307, "http://10.0.0.1/"));
    site.route("/to-file", Reply::redirect(302, "file:///etc/passwd"));
    site.route("/loop", Reply::redirect(302, "/loop"));
    if let Some(v6) = &v6 {
        site.route("/to-v6", Reply::redirect(308, &v6.url("/")));
    } else {
        eprintln!("skipped: the redirect to [::1]: no IPv6 loopback to listen on here");
    }
    let dir = tempfile::tempdir().unwrap();
    // Only 127.0.0.1 is allowed; 127.0.0.2 and ::1 are loopback like it, and stay denied.
    let s = Server::start_with(dir.path(), &[("RAGD_FETCH__ALLOW", "[\"127.0.0.1/32\"]")]);
    s.create("kb").await;

    let mut paths = vec!["/to-other", "/to-metadata", "/to-private", "/to-file"];
    if v6.is_some() {
        paths.push("/to-v6");
    }
    for path in paths {
        let (st, body) = ingest(&s, json!({"url": site.url(path)})).await;
        assert_eq!((st, code(&body)), (400, "url_not_allowed"), "{path}: {body}");
        assert!(site.requested(path), "the allowed first hop {path} was fetched");
    }
    assert_eq!(other.connections(), 0, "the redirect to 127.0.0.2 was connected to");
    if let Some(v6) = &v6 {
        assert_eq!(v6.connections(), 0, "the redirect to [::1] was connected to");
    }
    // The allowed address itself is fetched; a redirect loop ends at fetch.max_redirects.
    let (st, body) = ingest(&s, json!({"url": site.url("/loop")})).await;
    assert_eq!((st, code(&body)), (502, "fetch_failed"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("fetch.max_redirects"), "{body}");
}

#[tokio::test]
async fn url_ingest_refuses_oversize_pages_and_reports_remote_failures() {
    let site = Site::start("127.0.0.1:0").await.unwrap();
    let big = format!("<html><body><p>{}</p></body></html>", "lorem ipsum ".repeat(1_000));
    site.route("/big.html", Reply::html(&big));
    site.route("/big-unannounced.html", Reply { unannounced: true, ..Reply::html(&big) });
    site.route("/small.html", page("Small", "Small enough to fit."));
    site.route("/hang", Reply { hang: true, ..Reply::html("") });
    site.route("/program", Reply::ok("application/x-executable", vec![0x7f, b'E', b'L', b'F', 0, 1, 2, 3, 255, 254, 0, 0]));
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[LOOPBACK_ALLOWED, ("RAGD_FETCH__MAX_BYTES", "4096"), ("RAGD_FETCH__TIMEOUT_MS", "1000")]);
    s.create("kb").await;

    for path in ["/big.html", "/big-unannounced.html"] {
        let (st, body) = ingest(&s, json!({"url": site.url(path)})).await;
        assert_eq!((st, code(&body)), (422, "page_too_large"), "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("fetch.max_bytes"), "{body}");
    }
    let (st, body) = ingest(&s, json!({"url": site.url("/missing")})).await;
    assert_eq!((st, code(&body)), (502, "fetch_failed"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("404"), "{body}");
    let (st, body) = ingest(&s, json!({"url": format!("http://{closed}/")})).await;
    assert_eq!((st, code(&body)), (502, "fetch_failed"), "{body}");
    let (st, body) = ingest(&s, json!({"url": site.url("/hang")})).await;
    assert_eq!((st, code(&body)), (504, "fetch_timeout"), "{body}");
    // A type ragd cannot parse is refused as an upload of it would be.
    let (st, body) = ingest(&s, json!({"url": site.url("/program")})).await;
    assert_eq!((st, code(&body)), (415, "unsupported_media_type"), "{body}");

    let (st, job) = ingest(&s, json!({"url": site.url("/small.html")})).await;
    assert_eq!((st, job["status"].as_str()), (200, Some("done")), "{job}");
    let (_, info) = s.get("/api/v1/collections/kb").await;
    assert_eq!(info["documents"], 1, "refused pages left nothing behind: {info}");
}
