//! `/api/v1/keys`: an admin creates, lists and revokes the API keys and service tokens of its own
//! tenant (within its own collection scope, when it has one). A new key's secret is in the creation response and nowhere else.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use ragd_core::Error;
use ragd_core::auth::{KeyKind, KeyRecord, Principal, Role, generate_key};
use ragd_core::types::now_rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    pub role: Role,
    /// Defaults to the caller's tenant, which is the only one it may name.
    pub tenant: Option<String>,
    /// The collections the key may use (default: all of the tenant's).
    pub collections: Option<Vec<String>>,
    pub name: Option<String>,
    /// `api_key` (default) or `service_token`.
    pub kind: Option<KeyKind>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The secret: shown this once.
    pub key: String,
    #[serde(flatten)]
    pub record: KeyRecord,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyRecord>,
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 400), (status = 401), (status = 403)))]
pub async fn create(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiJson(req): ApiJson<NewKeyRequest>) -> ApiResult<Response> {
    p.require(Role::Admin)?;
    let tenant = req.tenant.unwrap_or_else(|| p.tenant.clone());
    if tenant != p.tenant {
        return Err(Error::Forbidden { code: "other_tenant", message: "an admin creates keys for its own tenant only".into() }.into());
    }
    // A key never gets more than its creator has.
    if let Some(scope) = &p.collections {
        let within = req.collections.as_ref().is_some_and(|c| c.iter().all(|n| scope.contains(n)));
        if !within {
            return Err(Error::Forbidden { code: "collection_not_allowed", message: "the new key's collections must be among the caller's".into() }.into());
        }
    }
    let kind = req.kind.unwrap_or(KeyKind::ApiKey);
    let new = generate_key(kind, &tenant, req.role, req.collections, req.name, now_rfc3339())?;
    st.gateway.keys().insert(new.record.clone()).await?;
    tracing::info!(key = %new.record.id, tenant = %tenant, role = new.record.role.as_str(), by = %p.id, "key created");
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key: new.secret, record: new.record.public() })).into_response())
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", responses((status = 200, body = KeyList)))]
pub async fn list(State(st): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<axum::Json<KeyList>> {
    p.require(Role::Admin)?;
    let keys = st.gateway.keys().list(Some(&p.tenant)).await?.iter().filter(|k| within_scope(&p, k)).map(KeyRecord::public).collect();
    Ok(axum::Json(KeyList { keys }))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", responses((status = 204), (status = 404)))]
pub async fn revoke(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(id): ApiPath<String>) -> ApiResult<StatusCode> {
    p.require(Role::Admin)?;
    let not_found = || Error::not_found("key_not_found", format!("key `{id}` does not exist"));
    // Another tenant's key is as absent as a missing one.
    match st.gateway.keys().get(&id).await? {
        Some(k) if k.tenant == p.tenant && within_scope(&p, &k) => {}
        _ => return Err(not_found().into()),
    }
    st.gateway.keys().revoke(&id, now_rfc3339()).await?;
    tracing::info!(key = %id, by = %p.id, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Whether an admin may see and revoke a key: one scoped to some collections manages only keys
/// scoped within those (never an unscoped key, which reaches every collection of the tenant).
fn within_scope(p: &Principal, k: &KeyRecord) -> bool {
    match (&p.collections, &k.collections) {
        (None, _) => true,
        (Some(scope), Some(theirs)) => theirs.iter().all(|c| scope.contains(c)),
        (Some(_), None) => false,
    }
}
