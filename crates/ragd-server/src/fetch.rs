//! URL ingest: fetches the pages a documents request names (`{"url"}`, `{"url", "crawl"}`,
//! `{"sitemap"}`) and hands each to the engine as an uploaded file, so the normal parser detects its
//! format from the page's content type.
//!
//! Every hop — the first URL, each redirect target, each crawled or sitemap page — is checked before
//! ragd connects: http or https only, no user name or password, and every address its host resolves
//! to must pass the egress policy (`ragd_core::egress`: public addresses only, unless `fetch.allow`
//! lists them). The connection then goes to exactly the addresses that were checked: each host gets
//! its own client whose DNS is pinned to them (`resolve_to_addrs`), with redirects off (they are
//! followed here, each target checked) and no proxy (a proxy would resolve names itself). Requests go
//! through the outbound stack (`Outbound`, dependency `fetch`: breaker, concurrency cap, timeout).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ragd_core::breaker::BreakerObserver;
use ragd_core::egress::EgressPolicy;
use ragd_core::engine::{DocumentBody, NewDocument};
use ragd_core::parse::SourceKind;
use ragd_core::resilience::Outbound;
use ragd_core::settings::{FetchSettings, Settings};
use ragd_core::types::Metadata;
use ragd_core::{Error, Result};
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use url::Host;

/// What ragd asks remote servers for: the formats it parses first.
const ACCEPT_FORMATS: &str = "text/html,application/xhtml+xml,application/pdf,text/markdown,text/plain;q=0.9,*/*;q=0.5";

/// The engine's limit on document ids; a longer final URL is shortened (see `default_id`).
const MAX_ID_BYTES: usize = 512;

/// Sitemap files one request reads (a sitemap index and the sitemaps it lists).
const MAX_SITEMAPS: usize = 20;

/// URLs a crawl keeps waiting in its queue; links found past it are dropped.
const MAX_QUEUE: usize = 10_000;

/// Links to these are not followed by a crawl: ragd cannot parse them, and fetching them only to
/// learn that would spend the crawl's time.
const SKIPPED_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "css", "js", "mjs", "json", "xml", "rss", "atom",
    "zip", "gz", "tgz", "bz2", "xz", "tar", "rar", "7z", "exe", "dmg", "iso", "bin", "apk", "msi", "mp3", "mp4", "m4a", "avi",
    "mov", "webm", "ogg", "wav", "flac", "woff", "woff2", "ttf", "otf", "eot",
];

/// The JSON body of the documents route when it names a `url` or a `sitemap` (instead of `text`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlIngest {
    /// An http(s) page to ingest; with `crawl`, where the crawl starts.
    pub url: Option<String>,
    /// An http(s) sitemap (`<urlset>`, `<sitemapindex>`, or one URL per line) whose pages are ingested.
    pub sitemap: Option<String>,
    /// Follow the links of `url` (HTML pages), breadth first.
    pub crawl: Option<CrawlOptions>,
    /// With `sitemap`: most pages ingested, the first ones listed (default and upper bound:
    /// `fetch.max_pages`).
    pub max_pages: Option<usize>,
    /// A single page's document id (default: its final URL, after redirects).
    pub id: Option<String>,
    /// A single page's title (default: the page's own).
    pub title: Option<String>,
    /// Given to every page, with `source_url` (the page's final URL) set by ragd.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrawlOptions {
    /// Most pages ingested, the start page included (default and upper bound: `fetch.max_pages`).
    pub max_pages: Option<usize>,
    /// Follow links to the start page's host only (default `true`).
    #[serde(default = "yes")]
    pub same_host: bool,
}

fn yes() -> bool {
    true
}

/// Whether a JSON body asks for URL ingest rather than carrying documents.
pub fn is_url_ingest(body: &Value) -> bool {
    body.get("url").is_some() || body.get("sitemap").is_some()
}

/// Fetches pages for URL ingest, within `fetch.*` and the `ingest.*` limits of one upload.
pub struct Fetcher {
    settings: FetchSettings,
    policy: EgressPolicy,
    outbound: Outbound,
    /// `ingest.max_upload_bytes`: everything one request fetches.
    max_request_bytes: u64,
    /// `ingest.max_documents_per_request`.
    max_documents: usize,
    /// Half of `limits.ingest_timeout_ms`: a crawl leaves the other half to parsing and the job.
    max_crawl_time: Duration,
}

impl Fetcher {
    pub fn new(settings: &Settings, observer: Arc<dyn BreakerObserver>) -> Fetcher {
        let fetch = settings.fetch.clone();
        // The settings were validated at start-up; a list that still does not parse allows nothing.
        let policy = EgressPolicy::new(&fetch.allow).unwrap_or_else(|problems| {
            tracing::error!(?problems, "fetch.allow does not parse; only public addresses will be fetched");
            EgressPolicy::default()
        });
        // The stack's own timeout is a backstop: each hop has a deadline of its own (`fetch.timeout_ms`).
        let backstop = Duration::from_millis(fetch.timeout_ms) + Duration::from_secs(1);
        Fetcher {
            policy,
            outbound: Outbound::new("fetch", "fetch", &settings.resilience.fetch, backstop, observer),
            max_request_bytes: settings.ingest.max_upload_bytes,
            max_documents: settings.ingest.max_documents_per_request,
            max_crawl_time: Duration::from_millis(fetch.crawl_timeout_ms.min(settings.limits.ingest_timeout_ms / 2).max(1)),
            settings: fetch,
        }
    }

    /// The documents a URL ingest request names, fetched: one for `url`, up to the page cap for a
    /// crawl or a sitemap.
    pub async fn documents(&self, req: UrlIngest) -> Result<Vec<NewDocument>> {
        if !self.settings.enabled {
            return Err(Error::Forbidden { code: "url_ingest_disabled", message: "URL ingest is turned off on this server (fetch.enabled = false)".into() });
        }
        let mut session = Session::new(self);
        let pages = match (&req.url, &req.sitemap) {
            (Some(url), None) => {
                let url = parse_url(url)?;
                match &req.crawl {
                    None => {
                        if req.max_pages.is_some() {
                            return Err(Error::invalid("invalid_request", "`max_pages` goes with `sitemap`; a crawl takes `crawl.max_pages`"));
                        }
                        vec![session.page(url).await?]
                    }
                    Some(crawl) => {
                        single_page_fields(&req, "a crawl")?;
                        let max = self.page_cap(crawl.max_pages)?;
                        session.deadline = Some(Instant::now() + self.max_crawl_time);
                        session.crawl(url, max, crawl.same_host).await?
                    }
                }
            }
            (None, Some(sitemap)) => {
                if req.crawl.is_some() {
                    return Err(Error::invalid("invalid_request", "`crawl` goes with `url`; a sitemap takes `max_pages`"));
                }
                single_page_fields(&req, "a sitemap")?;
                let url = parse_url(sitemap)?;
                let max = self.page_cap(req.max_pages)?;
                session.deadline = Some(Instant::now() + self.max_crawl_time);
                session.sitemap(url, max).await?
            }
            _ => return Err(Error::invalid("invalid_request", "give either `url` or `sitemap`, not both")),
        };
        // `id` and `title` were refused above unless this is a single page.
        Ok(pages.into_iter().map(|page| document(page, req.id.clone(), req.title.clone(), &req.metadata)).collect())
    }

    /// The number of pages a crawl or a sitemap may ingest: what was asked for, within the caps.
    fn page_cap(&self, asked: Option<usize>) -> Result<usize> {
        let cap = self.settings.max_pages.min(self.max_documents);
        match asked {
            None => Ok(cap),
            Some(0) => Err(Error::invalid("invalid_request", "`max_pages` must be at least 1")),
            Some(n) if n > cap => Err(Error::limit(
                "too_many_pages",
                format!("one request may ingest at most {cap} pages (fetch.max_pages, ingest.max_documents_per_request); {n} were asked for"),
            )),
            Some(n) => Ok(n),
        }
    }
}

fn single_page_fields(req: &UrlIngest, what: &str) -> Result<()> {
    if req.id.is_some() || req.title.is_some() {
        return Err(Error::invalid("invalid_request", format!("`id` and `title` apply to a single page; {what}'s pages are named by their URLs")));
    }
    Ok(())
}

/// A URL as a client gave it, parsed and checked (`check_url`).
pub(crate) fn parse_url(raw: &str) -> Result<Url> {
    let url = Url::parse(raw.trim()).map_err(|e| Error::invalid("invalid_url", format!("`{raw}` is not a URL: {e}")))?;
    check_url(&url)?;
    Ok(url)
}

/// The checks on a URL itself, before any name is resolved: http or https, no user name or password
/// (they would be sent to whatever the host turns out to be, and they hide the host from people
/// reading the URL), and a host.
pub(crate) fn check_url(url: &Url) -> Result<()> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid("url_not_allowed", format!("refusing to fetch `{url}`: only http and https URLs are fetched, not `{}:`", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid("url_not_allowed", "refusing to fetch a URL with a user name or password in it".to_owned()));
    }
    if url.host().is_none() {
        return Err(Error::invalid("invalid_url", format!("`{url}` has no host")));
    }
    Ok(())
}

/// A page as fetched: its final URL (after redirects, without fragment), its content type, its bytes.
#[derive(Debug)]
struct Page {
    url: Url,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

enum Hop {
    Page(Page),
    Redirect(Url),
}

/// One request's fetching: its clients (one per host, its DNS pinned to the addresses that were
/// checked), the bytes it may still fetch, and a crawl's deadline.
struct Session<'a> {
    f: &'a Fetcher,
    clients: HashMap<String, reqwest::Client>,
    bytes_left: u64,
    deadline: Option<Instant>,
}

impl<'a> Session<'a> {
    fn new(f: &'a Fetcher) -> Session<'a> {
        Session { f, clients: HashMap::new(), bytes_left: f.max_request_bytes, deadline: None }
    }

    /// Fetches `url`, following up to `fetch.max_redirects` redirects, each target checked like the first.
    async fn page(&mut self, url: Url) -> Result<Page> {
        let first = url.clone();
        let mut url = url;
        for _ in 0..=self.f.settings.max_redirects {
            match self.hop(&url).await? {
                Hop::Page(page) => return Ok(page),
                Hop::Redirect(next) => url = next,
            }
        }
        Err(Error::Upstream {
            code: "fetch_failed",
            message: format!("{first} redirects more than {} times (fetch.max_redirects)", self.f.settings.max_redirects),
        })
    }

    /// One request: check the URL, resolve its host and check every address, then connect to exactly
    /// those addresses.
    async fn hop(&mut self, url: &Url) -> Result<Hop> {
        check_url(url)?;
        let mut timeout = Duration::from_millis(self.f.settings.timeout_ms);
        if let Some(end) = self.deadline {
            timeout = timeout.min(end.saturating_duration_since(Instant::now()));
            if timeout.is_zero() {
                return Err(Error::UpstreamTimeout(format!("not fetching {url}: the crawl's time is up (fetch.crawl_timeout_ms)")));
            }
        }
        let deadline = Instant::now() + timeout;
        let client = self.client_for(url, deadline).await?;
        let timed_out = || Error::UpstreamTimeout(format!("no complete answer from {url} within {} ms (fetch.timeout_ms)", timeout.as_millis()));
        let request = client.get(url.clone()).header(ACCEPT, ACCEPT_FORMATS);
        // Only a failure to get an answer counts against the breaker; an answer of any status means
        // the way out works.
        let response = self
            .f
            .outbound
            .attempt(
                async {
                    match tokio::time::timeout_at(deadline, request.send()).await {
                        Ok(Ok(r)) => Ok(r),
                        Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
                        Ok(Err(e)) => Err(Error::Upstream { code: "fetch_failed", message: format!("cannot fetch {url}: {}", root_cause(&e)) }),
                        Err(_) => Err(timed_out()),
                    }
                },
                |r| Some(r.is_err()),
            )
            .await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let next = location.and_then(|l| url.join(l).ok()).filter(|_| matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308));
            return match next {
                Some(mut next) => {
                    next.set_fragment(None);
                    Ok(Hop::Redirect(next))
                }
                None => Err(Error::Upstream { code: "fetch_failed", message: format!("{url} answered {status} without a usable Location") }),
            };
        }
        if !status.is_success() {
            return Err(Error::Upstream { code: "fetch_failed", message: format!("{url} answered {status}") });
        }
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (cap, setting) = if self.bytes_left < self.f.settings.max_bytes {
            (self.bytes_left, "ingest.max_upload_bytes, for all one request fetches")
        } else {
            (self.f.settings.max_bytes, "fetch.max_bytes")
        };
        let too_large = || Error::limit("page_too_large", format!("{url} is larger than {cap} bytes ({setting})"));
        // An announced length over the cap is refused before a byte of the body is read.
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let mut response = response;
        let mut bytes = Vec::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) => break,
                Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
                Ok(Err(e)) => return Err(Error::Upstream { code: "fetch_failed", message: format!("reading {url}: {}", root_cause(&e)) }),
                Err(_) => return Err(timed_out()),
            };
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        self.bytes_left -= bytes.len() as u64;
        let mut url = url.clone();
        url.set_fragment(None);
        Ok(Hop::Page(Page { url, content_type, bytes }))
    }

    /// The client for `url`'s host. A host name is resolved (once per request) and every address it
    /// resolves to is checked before the client is made; the client connects to those addresses only.
    /// An IP address in the URL is checked each time and needs no resolving.
    async fn client_for(&mut self, url: &Url, deadline: Instant) -> Result<reqwest::Client> {
        let host = url.host().ok_or_else(|| Error::invalid("invalid_url", format!("`{url}` has no host")))?;
        let (key, addrs) = match host {
            Host::Ipv4(ip) => (String::new(), vec![IpAddr::V4(ip)]),
            Host::Ipv6(ip) => (String::new(), vec![IpAddr::V6(ip)]),
            Host::Domain(name) => {
                if let Some(c) = self.clients.get(name) {
                    return Ok(c.clone());
                }
                (name.to_owned(), self.resolve(url, name, deadline).await?)
            }
        };
        for ip in &addrs {
            if let Err(denied) = self.f.policy.check(*ip) {
                let why = if key.is_empty() {
                    format!("{denied}")
                } else {
                    // The kind of address, not the address: a client need not learn the internal DNS.
                    format!("host `{key}` resolves to a {} address", denied.reason)
                };
                return Err(Error::invalid(
                    "url_not_allowed",
                    format!("refusing to fetch {url}: {why}; ragd fetches public addresses only, unless fetch.allow lists them"),
                ));
            }
        }
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(self.f.settings.user_agent.clone())
            .connect_timeout(Duration::from_millis(self.f.settings.timeout_ms))
            .pool_max_idle_per_host(2);
        if !key.is_empty() {
            // Port 0: the URL's port (or its scheme's) is used with each address.
            let pinned: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            builder = builder.resolve_to_addrs(&key, &pinned);
        }
        let client = builder.build().map_err(Error::internal)?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    async fn resolve(&self, url: &Url, name: &str, deadline: Instant) -> Result<Vec<IpAddr>> {
        let port = url.port_or_known_default().unwrap_or(80);
        let found = tokio::time::timeout_at(deadline, tokio::net::lookup_host((name, port)))
            .await
            .map_err(|_| Error::UpstreamTimeout(format!("resolving `{name}` took longer than fetch.timeout_ms")))?
            .map_err(|e| Error::Upstream { code: "fetch_failed", message: format!("cannot resolve host `{name}`: {e}") })?;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for a in found {
            if !addrs.contains(&a.ip()) {
                addrs.push(a.ip());
            }
        }
        if addrs.is_empty() {
            return Err(Error::Upstream { code: "fetch_failed", message: format!("host `{name}` has no address") });
        }
        Ok(addrs)
    }

    /// A breadth-first crawl from `start`: up to `max` pages ragd can parse, following the links of
    /// HTML pages (to `start`'s host only when `same_host`), until the crawl's deadline. The start
    /// page must be fetched; a later page that fails is skipped (and logged).
    async fn crawl(&mut self, start: Url, max: usize, same_host: bool) -> Result<Vec<Page>> {
        let mut hosts: HashSet<String> = start.host_str().into_iter().map(str::to_owned).collect();
        let mut seen: HashSet<String> = HashSet::from([start.to_string()]);
        let mut queue = VecDeque::from([start.clone()]);
        let mut pages = Vec::new();
        // Failed and skipped fetches cost time too: a page of dead links must not run the crawl to
        // its deadline one request at a time.
        let mut attempts_left = max.saturating_mul(3).saturating_add(10);
        let mut first = true;
        while let Some(url) = queue.pop_front() {
            if pages.len() >= max || attempts_left == 0 || self.bytes_left == 0 || self.time_up() {
                break;
            }
            attempts_left -= 1;
            let page = match self.page(url.clone()).await {
                Ok(p) => p,
                Err(e) if first => return Err(e),
                Err(e) => {
                    tracing::info!(url = %url, error = %e, "crawl: page skipped");
                    continue;
                }
            };
            if first {
                // The start page's redirect target (http → https, example.com → www.example.com)
                // counts as its host.
                hosts.extend(page.url.host_str().map(str::to_owned));
            } else if same_host && !page.url.host_str().is_some_and(|h| hosts.contains(h)) {
                tracing::info!(url = %url, to = %page.url, "crawl: page skipped (redirected to another host)");
                continue;
            }
            // Two links that redirect to one page make one document.
            if page.url != url && !seen.insert(page.url.to_string()) && !first {
                continue;
            }
            let (page, kind, links) = examine(page).await?;
            match kind {
                Ok(_) => pages.push(page),
                Err(e) if first => return Err(e),
                Err(e) => tracing::info!(url = %page.url, error = %e, "crawl: page skipped"),
            }
            first = false;
            for link in links {
                let allowed_host = !same_host || link.host_str().is_some_and(|h| hosts.contains(h));
                if allowed_host && queue.len() < MAX_QUEUE && seen.insert(link.to_string()) {
                    queue.push_back(link);
                }
            }
        }
        Ok(pages)
    }

    /// The pages a sitemap lists (following a sitemap index to its sitemaps), up to `max`, fetched.
    /// The sitemap itself must be fetched; a page that fails is skipped (and logged).
    async fn sitemap(&mut self, start: Url, max: usize) -> Result<Vec<Page>> {
        let mut sitemaps = VecDeque::from([start.clone()]);
        let mut seen_maps = HashSet::from([start.to_string()]);
        let mut listed: Vec<Url> = Vec::new();
        let mut seen_pages = HashSet::new();
        let mut read = 0;
        while let Some(map_url) = sitemaps.pop_front() {
            if listed.len() >= max || read >= MAX_SITEMAPS || self.time_up() {
                break;
            }
            read += 1;
            let map = match self.page(map_url.clone()).await {
                Ok(m) => m,
                Err(e) if map_url == start => return Err(e),
                Err(e) => {
                    tracing::info!(url = %map_url, error = %e, "sitemap: nested sitemap skipped");
                    continue;
                }
            };
            let base = map.url.clone();
            let entries = match tokio::task::spawn_blocking(move || parse_sitemap(&map.bytes)).await.map_err(Error::internal)? {
                Ok(entries) => entries,
                Err(why) if map_url == start => return Err(Error::Unparseable(format!("{base} is not a sitemap: {why}"))),
                Err(why) => {
                    tracing::info!(url = %base, why = %why, "sitemap: nested sitemap skipped");
                    continue;
                }
            };
            for loc in entries.locations {
                let Ok(mut u) = base.join(&loc) else { continue };
                u.set_fragment(None);
                if entries.index {
                    if seen_maps.insert(u.to_string()) {
                        sitemaps.push_back(u);
                    }
                } else if listed.len() < max && seen_pages.insert(u.to_string()) {
                    listed.push(u);
                }
            }
        }
        if listed.is_empty() {
            return Err(Error::invalid("empty_sitemap", format!("the sitemap {start} lists no pages")));
        }
        let mut pages = Vec::new();
        let mut first_error = None;
        for url in listed {
            if self.time_up() {
                break;
            }
            match self.page(url.clone()).await {
                Ok(p) => pages.push(p),
                Err(e) => {
                    tracing::info!(url = %url, error = %e, "sitemap: page skipped");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (pages.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(pages),
        }
    }

    fn time_up(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// What the parser will make of a page (its format, or why it cannot read it) and, for an HTML page,
/// the http(s) links in it, resolved and without fragments. On a blocking thread: a page may be
/// megabytes.
async fn examine(page: Page) -> Result<(Page, Result<SourceKind>, Vec<Url>)> {
    tokio::task::spawn_blocking(move || {
        let filename = filename_for(&page.url, page.content_type.as_deref());
        let kind = SourceKind::detect(filename.as_deref(), page.content_type.as_deref(), &page.bytes);
        let links = match kind {
            Ok(SourceKind::Html) => page_links(&page.url, &String::from_utf8_lossy(&page.bytes)),
            _ => Vec::new(),
        };
        (page, kind, links)
    })
    .await
    .map_err(Error::internal)
}

/// The links of an HTML page worth crawling: http(s), resolved against the page (or its `<base>`),
/// without fragments, and not to a file type ragd cannot parse.
fn page_links(page: &Url, html: &str) -> Vec<Url> {
    let (base, hrefs) = html_links(html);
    let base = base.and_then(|b| page.join(&b).ok()).unwrap_or_else(|| page.clone());
    hrefs
        .iter()
        .filter_map(|h| base.join(h.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .filter(|u| {
            let last = u.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
            let ext = last.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
            !SKIPPED_EXTENSIONS.contains(&ext.as_str())
        })
        .map(|mut u| {
            u.set_fragment(None);
            u
        })
        .collect()
}

/// The `href` of every `<a>` and `<area>` of an HTML page in document order, and of its first
/// `<base>`. A linear scan of the tags — no tree, no recursion, whatever the nesting — that skips
/// comments and the insides of `<script>` and `<style>`.
pub(crate) fn html_links(html: &str) -> (Option<String>, Vec<String>) {
    // ASCII lowercasing keeps every byte offset, so positions found in `lower` index `html`.
    let lower = html.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut base = None;
    let mut links = Vec::new();
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let at = i + off;
        if lower[at..].starts_with("<!--") {
            i = lower[at + 4..].find("-->").map_or(b.len(), |e| at + 4 + e + 3);
            continue;
        }
        let name_end = at + 1 + b[at + 1..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        let name = &lower[at + 1..name_end];
        if name.is_empty() {
            // An end tag, a doctype, or a `<` in text.
            i = at + 1;
            continue;
        }
        let (attrs, end) = tag_attributes(html, &lower, name_end);
        match name {
            "a" | "area" => links.extend(attrs.into_iter().find(|(n, _)| n == "href").map(|(_, v)| v)),
            "base" if base.is_none() => base = attrs.into_iter().find(|(n, _)| n == "href").map(|(_, v)| v),
            "script" | "style" => {
                let close = format!("</{name}");
                i = lower[end..].find(&close).map_or(b.len(), |e| end + e);
                continue;
            }
            _ => {}
        }
        i = end;
    }
    (base, links)
}

/// The attributes of the tag whose name ends at `from` (names lowercased, values with character
/// references decoded), and the offset just past the tag's `>`.
fn tag_attributes(html: &str, lower: &str, from: usize) -> (Vec<(String, String)>, usize) {
    let b = lower.as_bytes();
    let mut attrs = Vec::new();
    let mut i = from;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        if i >= b.len() {
            return (attrs, b.len());
        }
        if b[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
            i += 1;
        }
        let name = lower[name_start..i].to_owned();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            attrs.push((name, String::new()));
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match b.get(i) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let start = i + 1;
                let end = lower[start..].find(q as char).map_or(b.len(), |e| start + e);
                i = (end + 1).min(b.len());
                &html[start..end]
            }
            _ => {
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                &html[start..i]
            }
        };
        attrs.push((name, decode_references(value)));
    }
}

/// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#NN;` and `&#xNN;` decoded (the ones URLs carry);
/// anything else is left as written.
fn decode_references(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|e| *e <= 10).and_then(|e| {
            let c = match &rest[1..e] {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                r if r.starts_with("#x") || r.starts_with("#X") => u32::from_str_radix(&r[2..], 16).ok().and_then(char::from_u32),
                r if r.starts_with('#') => r[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            c.map(|c| (c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `<loc>` entries of a sitemap, and whether it is a sitemap index (its entries are sitemaps).
#[derive(Debug, PartialEq)]
pub(crate) struct SitemapEntries {
    pub index: bool,
    pub locations: Vec<String>,
}

/// Reads a sitemap: XML (`<urlset>` or `<sitemapindex>`, any namespace prefix) or plain text with
/// one URL per line. quick-xml expands no entities but the five predefined ones and character
/// references, so a sitemap cannot make ragd read files or grow without bound.
pub(crate) fn parse_sitemap(bytes: &[u8]) -> std::result::Result<SitemapEntries, String> {
    use quick_xml::events::Event;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err("it is gzip-compressed; give the uncompressed sitemap".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    if !text.trim_start_matches('\u{feff}').trim_start().starts_with('<') {
        // A text sitemap: every non-empty line a URL.
        let locations: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        if locations.iter().any(|l| Url::parse(l).is_err()) {
            return Err("it is neither XML nor a list of URLs, one per line".into());
        }
        return Ok(SitemapEntries { index: false, locations });
    }
    let mut reader = quick_xml::Reader::from_reader(bytes);
    reader.config_mut().trim_text(true);
    let mut root: Option<bool> = None;
    let mut in_loc = false;
    let mut loc = String::new();
    let mut locations = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.local_name();
                match (root, name.as_ref()) {
                    (None, b"urlset") => root = Some(false),
                    (None, b"sitemapindex") => root = Some(true),
                    (None, other) => return Err(format!("its root element is <{}>, not <urlset> or <sitemapindex>", String::from_utf8_lossy(other))),
                    (Some(_), b"loc") => {
                        in_loc = true;
                        loc.clear();
                    }
                    _ => {}
                }
            }
            Ok(Event::Text(t)) if in_loc => loc.push_str(&t.unescape().map_err(|e| format!("a <loc> cannot be read: {e}"))?),
            Ok(Event::CData(t)) if in_loc => loc.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::End(e)) if in_loc && e.local_name().as_ref() == b"loc" => {
                in_loc = false;
                let l = loc.trim();
                if !l.is_empty() {
                    locations.push(l.to_owned());
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("it is not well-formed XML: {e}")),
            _ => {}
        }
    }
    match root {
        Some(index) => Ok(SitemapEntries { index, locations }),
        None => Err("it has no <urlset> or <sitemapindex>".into()),
    }
}

/// The name the parser is given with a page: the URL's last path segment, only when the content type
/// says little (none, `application/octet-stream`, `text/plain`) — then an extension such as `.md` or
/// `.docx` tells the format. A specific content type (`text/html`, `application/pdf`) is honoured
/// as it is, whatever the URL ends with.
fn filename_for(url: &Url, content_type: Option<&str>) -> Option<String> {
    let essence = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let generic = match essence.as_deref() {
        None | Some("") | Some("application/octet-stream") | Some("binary/octet-stream") | Some("text/plain") => true,
        Some(_) => false,
    };
    if !generic {
        return None;
    }
    let last = url.path_segments().and_then(|mut s| s.next_back()).filter(|s| s.contains('.'))?;
    Some(last.to_owned())
}

/// A page's document id: its final URL, or when that is longer than ids may be, its start and a hash
/// of the whole.
fn default_id(url: &Url) -> String {
    let s = url.as_str();
    if s.len() <= MAX_ID_BYTES {
        return s.to_owned();
    }
    let mut cut = MAX_ID_BYTES - 40;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = ragd_core::ids::content_hash(&[s.as_bytes()]);
    format!("{}#{}", &s[..cut], &hash[..32])
}

fn document(page: Page, id: Option<String>, title: Option<String>, metadata: &Metadata) -> NewDocument {
    let mut metadata = metadata.clone();
    metadata.insert("source_url".into(), Value::String(page.url.to_string()));
    let filename = filename_for(&page.url, page.content_type.as_deref());
    NewDocument {
        id: Some(id.unwrap_or_else(|| default_id(&page.url))),
        title,
        metadata,
        body: DocumentBody::File { filename, content_type: page.content_type, bytes: page.bytes },
    }
}

/// The innermost cause of an error (connection refused, a certificate problem, ...): reqwest's own
/// text only repeats the URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: Error) -> &'static str {
        e.code()
    }

    #[test]
    fn only_http_and_https_urls_without_credentials_are_fetched() {
        for ok in ["http://example.com/", "https://example.com/a?b=c#d", "HTTPS://EXAMPLE.COM", "http://[2606:4700::1]:8080/x", "http://93.184.216.34/"] {
            assert!(parse_url(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("file:///etc/passwd", "url_not_allowed"),
            ("gopher://example.com/", "url_not_allowed"),
            ("ftp://example.com/x", "url_not_allowed"),
            ("data:text/html,hi", "url_not_allowed"),
            ("javascript:alert(1)", "url_not_allowed"),
            ("http://user:pass@example.com/", "url_not_allowed"),
            ("http://user@example.com/", "url_not_allowed"),
            ("https://:secret@example.com/", "url_not_allowed"),
            ("not a url", "invalid_url"),
            ("http://", "invalid_url"),
            ("", "invalid_url"),
        ] {
            let e = parse_url(bad).expect_err(bad);
            assert_eq!(code(e), want, "{bad}");
        }
        let e = parse_url("gopher://example.com/").unwrap_err();
        assert!(e.to_string().contains("only http and https"), "{e}");
    }

    #[test]
    fn numeric_hosts_in_any_spelling_are_ip_addresses_to_check() {
        // The URL parser reads these as IPv4 addresses (as browsers do), so they reach the address
        // check as 127.0.0.1 and never as names.
        for spelled in ["http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://0177.0.0.1/"] {
            let url = parse_url(spelled).unwrap();
            assert_eq!(url.host(), Some(Host::Ipv4("127.0.0.1".parse().unwrap())), "{spelled}");
        }
        let url = parse_url("http://[::ffff:127.0.0.1]/").unwrap();
        let Some(Host::Ipv6(v6)) = url.host() else { panic!("not an IPv6 host") };
        assert!(EgressPolicy::default().check(IpAddr::V6(v6)).is_err());
    }

    fn request(url: &str) -> UrlIngest {
        UrlIngest { url: Some(url.into()), sitemap: None, crawl: None, max_pages: None, id: None, title: None, metadata: Metadata::new() }
    }

    fn fetcher(settings: &Settings) -> Fetcher {
        Fetcher::new(settings, Arc::new(ragd_core::breaker::NoObserver))
    }

    #[tokio::test]
    async fn request_shapes_are_checked_before_anything_is_fetched() {
        let mut s = Settings::default();
        s.fetch.max_pages = 5;
        let f = fetcher(&s);
        let crawl = |n: Option<usize>| Some(CrawlOptions { max_pages: n, same_host: true });
        // Public names that would be fetched if a check let them through: the errors must come first.
        let cases = [
            (UrlIngest { sitemap: Some("https://example.com/s.xml".into()), ..request("https://example.com/") }, "invalid_request"),
            (UrlIngest { max_pages: Some(2), ..request("https://example.com/") }, "invalid_request"),
            (UrlIngest { crawl: crawl(None), id: Some("x".into()), ..request("https://example.com/") }, "invalid_request"),
            (UrlIngest { crawl: crawl(Some(6)), ..request("https://example.com/") }, "too_many_pages"),
            (UrlIngest { crawl: crawl(Some(0)), ..request("https://example.com/") }, "invalid_request"),
            (UrlIngest { url: None, sitemap: Some("https://example.com/s.xml".into()), max_pages: Some(6), ..request("") }, "too_many_pages"),
            (UrlIngest { url: None, sitemap: Some("https://example.com/s.xml".into()), title: Some("t".into()), ..request("") }, "invalid_request"),
        ];
        for (req, want) in cases {
            let shown = format!("{req:?}");
            assert_eq!(f.documents(req).await.unwrap_err().code(), want, "{shown}");
        }
        // ingest.max_documents_per_request caps a crawl too.
        s.ingest.max_documents_per_request = 3;
        let e = fetcher(&s).documents(UrlIngest { crawl: crawl(Some(4)), ..request("https://example.com/") }).await.unwrap_err();
        assert_eq!(e.code(), "too_many_pages");
        assert!(e.to_string().contains("at most 3 pages"), "{e}");
    }

    #[tokio::test]
    async fn url_ingest_can_be_turned_off() {
        let mut s = Settings::default();
        s.fetch.enabled = false;
        let e = fetcher(&s).documents(request("https://example.com/")).await.unwrap_err();
        assert_eq!(e.code(), "url_ingest_disabled");
    }

    #[tokio::test]
    async fn non_public_addresses_are_refused_with_url_not_allowed() {
        let mut s = Settings::default();
        s.fetch.timeout_ms = 2_000;
        let f = fetcher(&s);
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://[::ffff:192.168.0.1]/",
            "http://0.0.0.0/",
            "http://localhost:9/",
        ] {
            let e = f.documents(request(url)).await.expect_err(url);
            assert_eq!(e.code(), "url_not_allowed", "{url}: {e}");
            assert!(e.to_string().contains("refusing to fetch"), "{e}");
        }
    }

    #[test]
    fn links_are_found_by_a_linear_tag_scan() {
        let html = r#"<!doctype html><html><head><base href="/docs/"><title>x</title>
            <script>var s = "<a href='/not-a-link'>";</script><style>a[href="/nor-this"]{}</style></head>
            <body><!-- <a href="/commented"> --><A HREF=one.html>One</A> <a class="x" href="two?a=1&amp;b=2#frag">Two</a>
            <a href='https://other.example/three'>3</a><area href="/four"><a name="anchor">no href</a>
            <a href = "five" >5</a><a href="mailto:x@example.com">m</a><a href="/logo.png">img</a></body></html>"#;
        let (base, links) = html_links(html);
        assert_eq!(base.as_deref(), Some("/docs/"));
        assert_eq!(links, vec!["one.html", "two?a=1&b=2#frag", "https://other.example/three", "/four", "five", "mailto:x@example.com", "/logo.png"]);
        let page = Url::parse("https://site.example/index.html").unwrap();
        let resolved: Vec<String> = page_links(&page, html).iter().map(Url::to_string).collect();
        assert_eq!(
            resolved,
            vec![
                "https://site.example/docs/one.html",
                "https://site.example/docs/two?a=1&b=2",
                "https://other.example/three",
                "https://site.example/four",
                "https://site.example/docs/five",
            ]
        );
        // Unclosed tags, quotes and comments end the scan instead of looping or panicking.
        for broken in ["<a href=\"x", "<a href=", "<!-- open", "<script>never closed", "<", "<a", "é<a href=é>é</a>"] {
            let _ = html_links(broken);
        }
        assert_eq!(html_links("é<a href=é>é</a>").1, vec!["é"]);
    }

    #[test]
    fn sitemaps_in_xml_and_text_are_read() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
              <url><loc>https://site.example/a</loc><lastmod>2024-01-01</lastmod></url>
              <url><loc> https://site.example/b?x=1&amp;y=2 </loc></url>
              <url><loc><![CDATA[https://site.example/c]]></loc></url>
            </urlset>"#;
        assert_eq!(
            parse_sitemap(xml).unwrap(),
            SitemapEntries { index: false, locations: vec!["https://site.example/a".into(), "https://site.example/b?x=1&y=2".into(), "https://site.example/c".into()] }
        );
        let index = br#"<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9"><sm:sitemap><sm:loc>https://site.example/s1.xml</sm:loc></sm:sitemap></sm:sitemapindex>"#;
        assert_eq!(parse_sitemap(index).unwrap(), SitemapEntries { index: true, locations: vec!["https://site.example/s1.xml".into()] });
        assert_eq!(parse_sitemap(b"https://a.example/1\n\nhttps://a.example/2\n").unwrap().locations.len(), 2);
        for bad in [&b"<html><body>no</body></html>"[..], b"\x1f\x8b\x08\x00", b"hello world", b"<urlset><url><loc>x</url>"] {
            assert!(parse_sitemap(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // An entity the document declares is not expanded (no billion laughs, no external files).
        let entity = br#"<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY x "https://evil.example/">]><urlset><url><loc>&x;</loc></url></urlset>"#;
        assert!(parse_sitemap(entity).is_err());
    }

    #[test]
    fn a_specific_content_type_wins_over_the_url_extension() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(filename_for(&u("https://x.example/report.pdf"), Some("text/html; charset=utf-8")), None);
        assert_eq!(filename_for(&u("https://x.example/README.md"), Some("text/plain; charset=utf-8")).as_deref(), Some("README.md"));
        assert_eq!(filename_for(&u("https://x.example/a.docx"), Some("application/octet-stream")).as_deref(), Some("a.docx"));
        assert_eq!(filename_for(&u("https://x.example/a.docx"), None).as_deref(), Some("a.docx"));
        assert_eq!(filename_for(&u("https://x.example/dir/"), None), None);
        let long = u(&format!("https://x.example/{}", "a".repeat(600)));
        let id = default_id(&long);
        assert!(id.len() <= MAX_ID_BYTES, "{}", id.len());
        assert_ne!(default_id(&u(&format!("https://x.example/{}", "a".repeat(601)))), id, "long URLs keep distinct ids");
        assert_eq!(default_id(&u("https://x.example/p?q=1")), "https://x.example/p?q=1");
    }

    #[test]
    fn character_references_in_links_are_decoded() {
        assert_eq!(decode_references("a&amp;b&#38;c&#x26;d&lt;&unknown;&"), "a&b&c&d<&unknown;&");
        assert_eq!(decode_references("no refs"), "no refs");
    }
}
