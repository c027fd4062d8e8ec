//! The `/api/v1` handlers. Each one adapts a request to an `Engine` call and its result to a response;
//! no business rule lives here.

use std::time::Duration;

use axum::Extension;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ragd_core::engine::{CollectionInfo, DocumentBody, NewCollection, NewDocument, SearchRequest, SearchResponse};
use ragd_core::auth::{Credential, Principal, Role, public_name, tenant_owns};
use ragd_core::types::{ChunkHit, CollectionRecord, DocumentRecord, JobRecord, Metadata};
use ragd_core::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody, error_response};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Longest a `wait=true` upload is held before it answers 202 with the job as it stands.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The stored name of a collection the principal may use with `role`: another tenant's collection,
/// or one outside the principal's scope, is as absent as one that does not exist (404).
///
/// The stored record's tenant is compared with the caller's: a name the caller typed never reaches
/// another tenant's collection, whatever it looks like (`t1.docs` from the default tenant is refused
/// as a name, and would not match the record's tenant anyway).
pub(crate) async fn visible(st: &AppState, p: &Principal, name: &str, role: Role) -> Result<CollectionRecord, ApiError> {
    p.require(role)?;
    // Only public names are looked up: a stored name (`tenant.name`) is not a collection name.
    ragd_core::engine::validate_collection_name(name)?;
    if !p.allows(name) {
        return Err(Error::collection_not_found(name).into());
    }
    match st.engine.collection(&p.storage_name(name)).await {
        Ok(c) if c.tenant == p.tenant => Ok(c),
        Ok(_) => Err(Error::collection_not_found(name).into()),
        Err(Error::NotFound { .. }) => Err(Error::collection_not_found(name).into()),
        Err(e) => Err(e.into()),
    }
}

/// A collection as its tenant knows it (the stored name has the tenant in front).
pub(crate) fn public_info(mut info: CollectionInfo) -> CollectionInfo {
    info.record.name = public_name(&info.record.tenant, &info.record.name).to_owned();
    info
}

fn public_job(mut job: JobRecord, p: &Principal) -> JobRecord {
    job.collection = public_name(&p.tenant, &job.collection).to_owned();
    job
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CollectionList {
    pub collections: Vec<CollectionInfo>,
}

#[utoipa::path(post, path = "/api/v1/collections", request_body = NewCollection, tag = "collections",
    responses((status = 201, body = CollectionInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_collection(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiJson(req): ApiJson<NewCollection>) -> ApiResult<Response> {
    p.require(Role::Admin)?;
    if !p.allows(&req.name) {
        return Err(Error::Forbidden { code: "collection_not_allowed", message: format!("this caller may not use a collection named `{}`", req.name) }.into());
    }
    let info = public_info(st.engine.create_collection(req, &p.tenant).await?);
    let location = format!("/api/v1/collections/{}", info.record.name);
    let mut response = (StatusCode::CREATED, axum::Json(info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/collections", tag = "collections", responses((status = 200, body = CollectionList)))]
pub async fn list_collections(State(st): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<axum::Json<CollectionList>> {
    p.require(Role::Read)?;
    let mut collections = Vec::new();
    for c in st.engine.list_collections().await? {
        if c.tenant == p.tenant && p.allows(public_name(&c.tenant, &c.name)) {
            collections.push(public_info(st.engine.collection_info(&c.name).await?));
        }
    }
    Ok(axum::Json(CollectionList { collections }))
}

#[utoipa::path(get, path = "/api/v1/collections/{name}", tag = "collections",
    responses((status = 200, body = CollectionInfo), (status = 404, body = ErrorBody)))]
pub async fn get_collection(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(name): ApiPath<String>) -> ApiResult<axum::Json<CollectionInfo>> {
    let c = visible(&st, &p, &name, Role::Read).await?;
    Ok(axum::Json(public_info(st.engine.collection_info(&c.name).await?)))
}

#[utoipa::path(delete, path = "/api/v1/collections/{name}", tag = "collections",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_collection(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(name): ApiPath<String>) -> ApiResult<StatusCode> {
    let c = visible(&st, &p, &name, Role::Admin).await?;
    st.engine.delete_collection(&c.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One document in a JSON upload.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonDocument {
    /// Defaults to a hash of the content, so re-sending the same text is a no-op.
    pub id: Option<String>,
    pub title: Option<String>,
    pub text: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonDocuments {
    pub documents: Vec<JsonDocument>,
}

// For the OpenAPI document only: one `application/json` entry, `oneOf` the three forms (listed as
// three entries, each replaced the one before). The handler tells the forms apart itself
// (`json_documents`).
/// A JSON upload: one document, a list of documents, or pages for ragd to fetch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum JsonBody {
    Document(JsonDocument),
    Documents(JsonDocuments),
    Urls(crate::fetch::UrlIngest),
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AddQuery {
    /// Answer only when the job has finished (200 with the job), or after `timeout_ms` (202).
    #[serde(default)]
    pub wait: bool,
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub job_id: String,
    pub status: String,
    pub documents: Vec<AcceptedDocument>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AcceptedDocument {
    pub id: String,
}

#[utoipa::path(post, path = "/api/v1/collections/{name}/documents", tag = "documents",
    params(AddQuery, ("Idempotency-Key" = Option<String>, Header, description = "Replays return the first job")),
    request_body(content(
        (JsonBody = "application/json"),
        (String = "multipart/form-data")
    ), description = "JSON documents, or multipart `file` parts (txt, md, html, pdf, docx, pptx, xlsx, ods, odt, epub, eml, csv, tsv, json, jsonl, png, jpeg, tiff) with an optional `metadata` part (a JSON object) and, with one file, `id` and `title` parts, \
        or pages ragd fetches: `{\"url\"}` (one page; optional `id`, `title`, `metadata`), `{\"url\", \"crawl\": {\"max_pages\", \"same_host\"}}` (links followed breadth first) \
        or `{\"sitemap\", \"max_pages\"?}`. Each page becomes a document parsed by its content type, id = its final URL, `source_url` in its metadata. \
        Every hop's address must be public unless `fetch.allow` lists it (400 `url_not_allowed`, before any connection); 502 `fetch_failed`, 504 `fetch_timeout`, 422 `page_too_large`."),
    responses((status = 202, body = Accepted), (status = 200, body = JobRecord, description = "with wait=true, the finished job"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody, description = "URL ingest is turned off (`url_ingest_disabled`)"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "a page could not be fetched (`fetch_failed`)"),
        (status = 504, body = ErrorBody, description = "a page did not arrive within fetch.timeout_ms (`fetch_timeout`)")))]
pub async fn add_documents(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<AddQuery>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    // An announced oversized body was refused by the gateway before it was read.
    let limit = st.engine.settings().ingest.max_upload_bytes;
    let key = idempotency_key(&headers)?;
    // Fail fast on an unknown collection, before reading the body.
    let name = visible(&st, &p, &name, Role::Write).await?.name;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let max_docs = st.engine.settings().ingest.max_documents_per_request;
    let docs = if content_type.starts_with("application/json") {
        match json_documents(req, limit, max_docs).await? {
            JsonUpload::Documents(docs) => docs,
            // Fetched here, before the job is stored: a page that cannot be had is this request's error.
            JsonUpload::Urls(u) => st.fetcher.as_ref().ok_or_else(|| Error::internal("URL ingest on a listener without a fetcher"))?.documents(u).await?,
        }
    } else if content_type.starts_with("multipart/form-data") {
        multipart_documents(req, max_docs).await?
    } else {
        return Err(Error::UnsupportedMediaType("send application/json documents or multipart/form-data files".into()).into());
    };
    let job = st.engine.submit(&name, docs, key).await?;
    if q.wait {
        let timeout = q.timeout_ms.map(Duration::from_millis).unwrap_or(MAX_WAIT).min(MAX_WAIT);
        let job = st.engine.wait_job(&job.id, timeout).await?;
        if job.status.is_finished() {
            return Ok((StatusCode::OK, axum::Json(public_job(job, &p))).into_response());
        }
        return Ok(accepted(&job));
    }
    Ok(accepted(&job))
}

fn accepted(job: &JobRecord) -> Response {
    let body = Accepted {
        job_id: job.id.clone(),
        status: job.status.as_str().to_owned(),
        documents: job.documents.iter().map(|d| AcceptedDocument { id: d.id.clone() }).collect(),
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
        ApiError(Error::invalid("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters"))
    })?;
    Ok(Some(key.to_owned()))
}

/// A JSON upload: documents, or the pages a URL ingest request names (`fetch.rs`).
enum JsonUpload {
    Documents(Vec<NewDocument>),
    Urls(crate::fetch::UrlIngest),
}

async fn json_documents(req: Request, limit: u64, max_docs: usize) -> Result<JsonUpload, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), limit as usize)
        .await
        .map_err(|_| Error::TooLarge(format!("the body is larger than the limit (ingest.max_upload_bytes = {limit})")))?;
    // Decoding tens of MiB of JSON is CPU work: off the async threads.
    let upload = tokio::task::spawn_blocking(move || -> Result<JsonUpload, Error> {
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::invalid("invalid_json", format!("malformed JSON: {e}")))?;
        drop(bytes);
        if crate::fetch::is_url_ingest(&value) {
            let urls = serde_json::from_value(value).map_err(|e| Error::invalid("invalid_request", e.to_string()))?;
            return Ok(JsonUpload::Urls(urls));
        }
        if let Some(list) = value.get("documents").and_then(Value::as_array) {
            // Counted before the documents are decoded or parsed.
            ragd_core::engine::check_document_count(list.len(), max_docs)?;
        }
        if value.get("documents").is_some() {
            serde_json::from_value::<JsonDocuments>(value).map(|d| d.documents)
        } else {
            serde_json::from_value::<JsonDocument>(value).map(|d| vec![d])
        }
        .map(|docs| {
            let docs = docs.into_iter().map(|d| NewDocument { id: d.id, title: d.title, metadata: d.metadata, body: DocumentBody::Text(d.text) });
            JsonUpload::Documents(docs.collect())
        })
        .map_err(|e| Error::invalid("invalid_request", e.to_string()))
    })
    .await
    .map_err(Error::internal)??;
    Ok(upload)
}

async fn multipart_documents(req: Request, max_docs: usize) -> Result<Vec<NewDocument>, ApiError> {
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| Error::invalid("invalid_multipart", e.body_text()))?;
    let mut files = Vec::new();
    let (mut id, mut title, mut metadata) = (None, None, Metadata::new());
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "file" | "files" | "file[]" => {
                ragd_core::engine::check_document_count(files.len() + 1, max_docs)?;
                let filename = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                let bytes = field.bytes().await.map_err(multipart_error)?;
                files.push((filename, content_type, bytes.to_vec()));
            }
            "id" => id = Some(field.text().await.map_err(multipart_error)?),
            "title" => title = Some(field.text().await.map_err(multipart_error)?),
            "metadata" => {
                let text = field.text().await.map_err(multipart_error)?;
                metadata = serde_json::from_str(&text)
                    .map_err(|e| Error::invalid("invalid_request", format!("`metadata` must be a JSON object: {e}")))?;
            }
            other => return Err(Error::invalid("invalid_multipart", format!("unexpected form field `{other}`; use `file`, `id`, `title`, `metadata`")).into()),
        }
    }
    if files.is_empty() {
        return Err(Error::invalid("invalid_multipart", "no `file` part in the form").into());
    }
    if files.len() > 1 && (id.is_some() || title.is_some()) {
        return Err(Error::invalid("invalid_multipart", "`id` and `title` apply to a single file; file names are the ids of several").into());
    }
    Ok(files
        .into_iter()
        .map(|(filename, content_type, bytes)| NewDocument {
            id: id.clone(),
            title: title.clone(),
            metadata: metadata.clone(),
            body: DocumentBody::File { filename, content_type, bytes },
        })
        .collect())
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(Error::TooLarge("the upload is larger than the limit (ingest.max_upload_bytes)".into()))
    } else {
        ApiError(Error::invalid("invalid_multipart", e.body_text()))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentRecord>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/collections/{name}/documents", tag = "documents", params(ListQuery),
    responses((status = 200, body = DocumentList), (status = 404, body = ErrorBody)))]
pub async fn list_documents(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<DocumentList>> {
    let name = visible(&st, &p, &name, Role::Read).await?.name;
    let (documents, next_cursor) = st.engine.list_documents(&name, q.cursor.as_deref(), q.limit.unwrap_or(100)).await?;
    Ok(axum::Json(DocumentList { documents, next_cursor }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    #[serde(flatten)]
    pub document: DocumentRecord,
    /// Chunks the vector store holds for this document right now (equals `chunks` when all is well).
    pub indexed_chunks: u64,
}

#[utoipa::path(get, path = "/api/v1/collections/{name}/documents/{id}", tag = "documents",
    responses((status = 200, body = DocumentView), (status = 404, body = ErrorBody)))]
pub async fn get_document(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<axum::Json<DocumentView>> {
    let name = visible(&st, &p, &name, Role::Read).await?.name;
    let document = st.engine.document(&name, &id).await?;
    let indexed_chunks = st.engine.store().count(&name, Some(&id)).await?;
    Ok(axum::Json(DocumentView { document, indexed_chunks }))
}

#[utoipa::path(delete, path = "/api/v1/collections/{name}/documents/{id}", tag = "documents",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_document(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = visible(&st, &p, &name, Role::Write).await?.name;
    st.engine.delete_document(&name, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", responses((status = 200, body = JobRecord), (status = 404, body = ErrorBody)))]
pub async fn get_job(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(id): ApiPath<String>) -> ApiResult<axum::Json<JobRecord>> {
    p.require(Role::Read)?;
    let job = st.engine.job(&id).await?;
    // A job is visible to whoever may read its collection; to anyone else it does not exist.
    let owner = st.engine.collection(&job.collection).await.ok();
    let visible = owner.is_some_and(|c| c.tenant == p.tenant && p.allows(public_name(&c.tenant, &c.name)));
    if !visible {
        return Err(Error::job_not_found(&id).into());
    }
    Ok(axum::Json(public_job(job, &p)))
}

#[utoipa::path(post, path = "/api/v1/collections/{name}/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn search(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> ApiResult<axum::Json<SearchResponse>> {
    let name = visible(&st, &p, &name, Role::Read).await?.name;
    Ok(axum::Json(st.engine.search(&name, req).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ChunksQuery {
    /// First chunk index (default 0).
    pub from: Option<u32>,
    /// At most this many chunks (default 50, at most 200).
    pub limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChunkList {
    /// In document order; `score` is 0.
    pub chunks: Vec<ChunkHit>,
    /// The document's number of chunks.
    pub total: u32,
}

/// A document's chunks in order, so a cited passage can be read among its neighbours.
#[utoipa::path(get, path = "/api/v1/collections/{name}/documents/{id}/chunks", tag = "documents", params(ChunksQuery),
    responses((status = 200, body = ChunkList), (status = 404, body = ErrorBody)))]
pub async fn document_chunks(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ChunksQuery>,
) -> ApiResult<axum::Json<ChunkList>> {
    let name = visible(&st, &p, &name, Role::Read).await?.name;
    let (chunks, total) = st.engine.document_chunks(&name, &id, q.from.unwrap_or(0), q.limit.unwrap_or(50)).await?;
    Ok(axum::Json(ChunkList { chunks, total }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct JobsQuery {
    /// Only this collection's jobs.
    pub collection: Option<String>,
    /// At most this many (default 20, at most 100).
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobRecord>,
}

/// The caller's tenant's most recent jobs (within its collection scope).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobsQuery), responses((status = 200, body = JobList)))]
pub async fn list_jobs(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiQuery(q): ApiQuery<JobsQuery>) -> ApiResult<axum::Json<JobList>> {
    p.require(Role::Read)?;
    let only = q.collection.map(|c| p.storage_name(&c));
    let scope = p.clone();
    let keep = Box::new(move |stored: &str| {
        tenant_owns(&scope.tenant, stored) && scope.allows(public_name(&scope.tenant, stored)) && only.as_deref().is_none_or(|o| o == stored)
    });
    let jobs = st.engine.recent_jobs(q.limit.unwrap_or(20), keep).await?;
    Ok(axum::Json(JobList { jobs: jobs.into_iter().map(|j| public_job(j, &p)).collect() }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Allowance {
    pub limit: u32,
    pub period_s: u64,
    /// Requests that would conform right now.
    pub remaining: u32,
    /// Seconds until the allowance is whole again.
    pub reset_s: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// Key id, `jwt:<iss>:<sub>`, or `local` when authentication is off.
    pub id: String,
    /// `none` (authentication off), `api_key`, `service_token` or `jwt`.
    pub credential: &'static str,
    pub tenant: String,
    pub role: Role,
    /// `null`: every collection of the tenant.
    pub collections: Option<Vec<String>>,
    pub auth_enabled: bool,
    /// By route class (`query`, `ingest`, `admin`); `null` when rate limits do not apply to this caller.
    #[schema(value_type = Option<Object>)]
    pub rate_limits: Option<std::collections::BTreeMap<&'static str, Allowance>>,
}

/// Who the caller is and what is left of its rate limits. Never rate-limited itself.
#[utoipa::path(get, path = "/api/v1/me", tag = "keys", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(st): State<AppState>, Extension(p): Extension<Principal>) -> axum::Json<Me> {
    let rate_limits = st.gateway.allowance(&p).await.map(|classes| {
        classes
            .into_iter()
            .map(|(class, quota, d)| {
                let a = Allowance { limit: d.limit, period_s: quota.period.as_secs(), remaining: d.remaining, reset_s: crate::gateway::ceil_secs(d.reset) };
                (class, a)
            })
            .collect()
    });
    let credential = match p.credential {
        Credential::None => "none",
        Credential::ApiKey => "api_key",
        Credential::ServiceToken => "service_token",
        Credential::Jwt => "jwt",
    };
    axum::Json(Me { id: p.id, credential, tenant: p.tenant, role: p.role, collections: p.collections, auth_enabled: st.gateway.auth_enabled(), rate_limits })
}

pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "route_not_found", "no such route; see /api/v1/openapi.json")
}

pub async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
}
