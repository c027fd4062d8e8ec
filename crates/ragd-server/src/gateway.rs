//! The edge of the service, in DESIGN.md's order: request id → CORS → body limit → authentication →
//! rate limit → (load shedding) → timeout → handler. Request ids, CORS and security headers are
//! layers around the whole router (`lib.rs`); `gate` is the rest, one middleware on matched routes so
//! it knows each route's template and class. A request refused by authentication never reaches the
//! limiter, so it uses no quota.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ragd_core::Error;
use ragd_core::auth::{Credential, KeyKind, KeyStore, Principal, verify_key};
use ragd_core::metrics::Metrics;
use ragd_core::ratelimit::{Decision, Quota, RateLimiter};
use ragd_core::settings::{CorsSettings, Settings};
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;
use crate::error::{ApiError, error_response};
use crate::jwt::JwtVerifier;

/// Query parameters that carry credentials elsewhere; ragd refuses them rather than ignore them, so
/// a token pasted into a URL (and so into logs and browser history) is noticed at once.
const CREDENTIAL_PARAMS: &[&str] = &["access_token", "api_key", "apikey", "token", "jwt", "service_token"];

pub const SERVICE_TOKEN: HeaderName = HeaderName::from_static("x-service-token");

/// What a route is, for limits: open routes (health, OpenAPI, the web UI's files) skip
/// authentication and limits; `Identity` (`/api/v1/me`) is authenticated but not limited, so a
/// caller can always see its own allowance, even once it is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Open,
    Identity,
    Query,
    Ingest,
    Admin,
}

impl RouteClass {
    pub fn of(method: &Method, template: &str) -> RouteClass {
        match (method, template) {
            (_, "/health/live" | "/health/ready" | "/metrics" | "/api/v1/openapi.json" | "/" | "/ui/{*file}") => RouteClass::Open,
            (_, "/api/v1/me") => RouteClass::Identity,
            (&Method::POST, "/api/v1/collections/{name}/documents") | (&Method::DELETE, "/api/v1/collections/{name}/documents/{id}") => {
                RouteClass::Ingest
            }
            (&Method::POST, "/api/v1/collections") | (&Method::DELETE, "/api/v1/collections/{name}") | (_, "/api/v1/status") => RouteClass::Admin,
            (_, t) if t.starts_with("/api/v1/keys") || t.starts_with("/api/v1/snapshots") => RouteClass::Admin,
            _ => RouteClass::Query,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Open => "open",
            RouteClass::Identity => "identity",
            RouteClass::Query => "query",
            RouteClass::Ingest => "ingest",
            RouteClass::Admin => "admin",
        }
    }
}

/// Routes whose work is heavy (embedding, generation): capped in number at once.
fn is_shed(template: &str) -> bool {
    matches!(template, "/api/v1/collections/{name}/search" | "/api/v1/collections/{name}/query" | "/v1/chat/completions")
}

pub struct Gateway {
    auth_enabled: bool,
    keys: Arc<dyn KeyStore>,
    jwt: Option<JwtVerifier>,
    limiter: Arc<dyn RateLimiter>,
    /// query, ingest, admin; `None` when limits are off.
    quotas: Option<[Quota; 3]>,
    queries: Arc<Semaphore>,
    json_limit: u64,
    upload_limit: u64,
    timeouts: [Duration; 3],
    body_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// The shared limiter's service (Redis), when the limiter has one: `None` for the in-process one.
    pub async fn limiter_ready(&self) -> Option<Result<(), String>> {
        self.limiter.ready().await
    }

    pub fn new(settings: &Settings, keys: Arc<dyn KeyStore>, limiter: Arc<dyn RateLimiter>, metrics: Arc<Metrics>) -> Result<Gateway, String> {
        let observer: Arc<dyn ragd_core::breaker::BreakerObserver> = metrics.clone();
        let jwt = settings.auth.jwt.clone().map(|j| JwtVerifier::new(j, &settings.resilience.jwks, observer)).transpose()?;
        let r = &settings.rate_limit;
        let l = &settings.limits;
        Ok(Gateway {
            auth_enabled: settings.auth.enabled,
            keys,
            jwt,
            limiter,
            quotas: (r.enabled && settings.auth.enabled).then(|| [r.query.quota(), r.ingest.quota(), r.admin.quota()]),
            queries: Arc::new(Semaphore::new(l.max_concurrent_queries)),
            json_limit: l.json_body_bytes,
            upload_limit: settings.ingest.max_upload_bytes,
            timeouts: [l.query_timeout_ms, l.ingest_timeout_ms, l.admin_timeout_ms].map(Duration::from_millis),
            body_timeout: Duration::from_millis(l.body_read_timeout_ms),
            metrics,
        })
    }

    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled
    }

    /// `None` without a JWKS URL; else whether the last JWKS fetch succeeded, with its breaker.
    pub async fn jwks_health(&self) -> Option<(std::result::Result<(), String>, ragd_core::breaker::BreakerStatus)> {
        match &self.jwt {
            Some(j) => j.jwks_health().await,
            None => None,
        }
    }

    /// Fetches a JWKS ahead of the first request (when one is configured).
    pub async fn warm(&self) {
        if let Some(j) = &self.jwt {
            j.warm().await;
        }
    }

    fn slot(class: RouteClass) -> usize {
        match class {
            RouteClass::Query | RouteClass::Open => 0,
            RouteClass::Ingest => 1,
            RouteClass::Admin | RouteClass::Identity => 2,
        }
    }

    /// The caller's allowance in each limited route class, without using any of it; `None` when
    /// rate limits are off (or authentication is, which leaves nobody to limit).
    pub async fn allowance(&self, p: &Principal) -> Option<Vec<(&'static str, Quota, Decision)>> {
        let quotas = self.quotas.as_ref().filter(|_| p.credential != Credential::None)?;
        let mut out = Vec::new();
        for class in [RouteClass::Query, RouteClass::Ingest, RouteClass::Admin] {
            let quota = quotas[Gateway::slot(class)];
            let d = self.limiter.peek(&limit_key(p, class), &quota).await;
            out.push((class.as_str(), quota, d));
        }
        Some(out)
    }

    /// The principal the request's credentials prove, or why they prove nothing.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        if !self.auth_enabled {
            return Ok(Principal::local());
        }
        fn text(v: &HeaderValue) -> Result<&str, Error> {
            v.to_str().map(str::trim).map_err(|_| Error::unauthorized("invalid_authorization", "credentials must be visible ASCII"))
        }
        match (headers.get(header::AUTHORIZATION), headers.get(&SERVICE_TOKEN)) {
            (Some(_), Some(_)) => Err(Error::unauthorized("ambiguous_credentials", "send Authorization or X-Service-Token, not both")),
            (None, Some(v)) => Ok(Principal::from(&verify_key(self.keys.as_ref(), text(v)?, KeyKind::ServiceToken).await?)),
            (Some(v), None) => {
                let v = text(v)?;
                let token = v
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim())
                    .ok_or_else(|| Error::unauthorized("invalid_authorization", "use `Authorization: Bearer <API key or JWT>`"))?;
                if token.starts_with("ragd_") {
                    Ok(Principal::from(&verify_key(self.keys.as_ref(), token, KeyKind::ApiKey).await?))
                } else if let Some(jwt) = &self.jwt {
                    jwt.verify(token).await
                } else {
                    Err(Error::unauthorized("invalid_api_key", "the API key is not valid"))
                }
            }
            (None, None) => Err(Error::unauthorized(
                "missing_credentials",
                "this route needs `Authorization: Bearer <API key or JWT>` or `X-Service-Token`",
            )),
        }
    }
}

/// Body limit → credentials → rate limit → shedding → timeout, then the handler.
pub async fn gate(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let gw = st.gateway.clone();
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let class = RouteClass::of(req.method(), &template);
    if class == RouteClass::Open {
        return next.run(req).await;
    }

    // Body limit: an announced oversized body is refused before a byte of it is read (and before
    // authentication, which would otherwise make an unauthenticated client wait for its upload).
    let is_upload = req.method() == Method::POST && template == "/api/v1/collections/{name}/documents";
    let limit = if is_upload { gw.upload_limit } else { gw.json_limit };
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        let key = if is_upload { "ingest.max_upload_bytes" } else { "limits.json_body_bytes" };
        return ApiError(Error::TooLarge(format!("the body is {} bytes; the limit ({key}) is {limit}", announced.unwrap_or(0)))).into_response();
    }

    if let Some(q) = req.uri().query() {
        // Names are compared as the query parser will read them: percent-decoded (`access%5Ftoken`).
        let named = q
            .split('&')
            .filter_map(|kv| kv.split('=').next())
            .map(percent_decoded)
            .any(|k| CREDENTIAL_PARAMS.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(&k)));
        if named {
            return ApiError(Error::invalid("credentials_in_query", "credentials are never accepted in the query string; send them in the Authorization or X-Service-Token header"))
                .into_response();
        }
    }

    let principal = match gw.authenticate(req.headers()).await {
        Ok(p) => p,
        Err(e) => return ApiError(e).into_response(),
    };

    let mut decision = None;
    let limited = class != RouteClass::Identity && principal.credential != Credential::None;
    if let (Some(quotas), true) = (&gw.quotas, limited) {
        let quota = &quotas[Gateway::slot(class)];
        let d = gw.limiter.check(&limit_key(&principal, class), quota).await;
        gw.metrics.count_ratelimit(class.as_str(), d.allowed);
        if !d.allowed {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("over the limit of {} {} requests per {} s for this caller; retry after the Retry-After delay", d.limit, class.as_str(), quota.period.as_secs()),
            );
            set_limit_headers(response.headers_mut(), &d);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ceil_secs(d.retry_after).max(1)));
            return response;
        }
        decision = Some(d);
    }
    req.extensions_mut().insert(principal);

    // The body is read whole (within `limits.body_read_timeout_ms`) before a query slot is taken
    // and before the handler's own timeout starts: a client that sends its body slowly holds
    // only its own connection, never shared capacity. Uploads read theirs in the handler.
    let req = if is_upload {
        req
    } else {
        match read_body(req, limit, gw.body_timeout).await {
            Ok(r) => r,
            Err(mut r) => {
                if r.status() == StatusCode::REQUEST_TIMEOUT {
                    gw.metrics.count_shed("body_timeout");
                }
                with_limits(&mut r, decision.as_ref());
                return r;
            }
        }
    };

    let permit = if is_shed(&template) {
        match gw.queries.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                gw.metrics.count_shed("overloaded");
                let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many searches and questions at once (limits.max_concurrent_queries); retry shortly");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
                with_limits(&mut r, decision.as_ref());
                return r;
            }
        }
    } else {
        None
    };

    let timeout = gw.timeouts[Gateway::slot(class)];
    let mut response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            gw.metrics.count_shed("timeout");
            let mut r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!("the request took longer than its limit ({} ms for {} routes)", timeout.as_millis(), class.as_str()),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            r
        }
    };
    with_limits(&mut response, decision.as_ref());
    // A streamed answer holds its slot until the stream ends, not just until its head is sent.
    if let Some(permit) = permit {
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        });
        response = Response::from_parts(parts, Body::from_stream(stream));
    }
    response
}

/// The request with its body read into memory: at most `limit` bytes within `timeout`, else the
/// response to send instead (413 `payload_too_large`, 408 `body_timeout`, 400 `invalid_body`).
async fn read_body(req: Request, limit: u64, timeout: Duration) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let read = async move {
        let mut stream = body.into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| error_response(StatusCode::BAD_REQUEST, "invalid_body", "the request body could not be read"))?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(ApiError(Error::TooLarge(format!("the body is larger than the limit (limits.json_body_bytes = {limit})"))).into_response());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(response)) => Err(response),
        Err(_) => {
            let mut r = error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within {} ms (limits.body_read_timeout_ms)", timeout.as_millis()),
            );
            // The rest of the body was not read: the connection cannot carry another request.
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

/// A query-string component as form decoding reads it: `%XX` escapes decoded, `+` a space.
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// One bucket per caller and route class.
fn limit_key(p: &Principal, class: RouteClass) -> String {
    format!("{}|{}", p.id, class.as_str())
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn with_limits(response: &mut Response, d: Option<&Decision>) {
    if let Some(d) = d {
        set_limit_headers(response.headers_mut(), d);
    }
}

fn set_limit_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(ceil_secs(d.reset)));
}

/// Headers on every response: no MIME sniffing, no framing by other sites, no referrer, no caching
/// of API data; HSTS when ragd serves HTTPS itself.
pub fn secure(r: &mut Response, tls: bool) {
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.entry("content-security-policy").or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
}

/// CORS from the allow-list; `None` (no cross-origin access) when the list is empty.
pub fn cors(c: &CorsSettings) -> Option<CorsLayer> {
    if c.allowed_origins.is_empty() {
        return None;
    }
    let origin = if c.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(c.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
            SERVICE_TOKEN,
        ])
        .expose_headers([
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            header::RETRY_AFTER,
            header::LOCATION,
            HeaderName::from_static("x-request-id"),
        ])
        .allow_credentials(c.allow_credentials)
        .max_age(Duration::from_secs(c.max_age_secs));
    Some(layer)
}

#[cfg(test)]
mod tests {
    use super::percent_decoded;

    #[test]
    fn query_names_are_compared_decoded() {
        assert_eq!(percent_decoded("access%5Ftoken"), b"access_token");
        assert_eq!(percent_decoded("api%5fkey"), b"api_key");
        assert_eq!(percent_decoded("a+b%"), b"a b%");
        assert_eq!(percent_decoded("%zz%4"), b"%zz%4");
    }
}
