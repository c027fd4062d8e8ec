//! The web dashboard: a few static files compiled into the binary (no CDN, no build step), served at
//! `/` and `/ui/*`. The page talks to the same `/api/v1` routes as any client, with the API key the
//! user signs in with (kept in the tab's session storage, never in a URL).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::error_response;

const INDEX: &str = include_str!("../ui/index.html");

/// name, content type, content
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../ui/app.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../ui/favicon.svg")),
];

/// Only this origin's scripts, styles and connections; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    // Revalidated each time: the files change with the binary.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => error_response(StatusCode::NOT_FOUND, "route_not_found", "no such file in the web UI"),
    }
}
