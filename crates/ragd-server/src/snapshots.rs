//! `/api/v1/snapshots`: the operator (an admin of the default tenant whose key is not limited to some
//! collections) takes a consistent snapshot of the whole data folder while the server runs, lists
//! snapshots, downloads one as a tar file and removes it. `ragd snapshot restore` unpacks one into a
//! new data folder. Making one runs in the background: `POST` answers 202 at once.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use ragd_core::Error;
use ragd_core::auth::{DEFAULT_TENANT, Principal, Role};
use ragd_core::snapshot::SnapshotStatus;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::ApiPath;

#[derive(Serialize, utoipa::ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotStatus>,
}

/// A snapshot holds every tenant's data and the keys: only the operator may make or read one.
fn require_operator(p: &Principal) -> Result<(), Error> {
    p.require(Role::Admin)?;
    if p.tenant != DEFAULT_TENANT || p.collections.is_some() {
        return Err(Error::Forbidden {
            code: "operator_only",
            message: "snapshots hold every tenant's data: only an admin of the default tenant with access to every collection may use them".into(),
        });
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/snapshots", tag = "snapshots",
    responses((status = 202, body = SnapshotStatus), (status = 401), (status = 403)))]
pub async fn create(State(st): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<Response> {
    require_operator(&p)?;
    let status = st.engine.start_snapshot(st.gateway.keys().clone())?;
    tracing::info!(snapshot = %status.name, by = %p.id, "snapshot started");
    Ok((StatusCode::ACCEPTED, axum::Json(status)).into_response())
}

#[utoipa::path(get, path = "/api/v1/snapshots", tag = "snapshots", responses((status = 200, body = SnapshotList)))]
pub async fn list(State(st): State<AppState>, Extension(p): Extension<Principal>) -> ApiResult<axum::Json<SnapshotList>> {
    require_operator(&p)?;
    Ok(axum::Json(SnapshotList { snapshots: st.engine.snapshots().await? }))
}

/// The archive, streamed (`application/x-tar`).
#[utoipa::path(get, path = "/api/v1/snapshots/{name}", tag = "snapshots",
    responses((status = 200, content_type = "application/x-tar"), (status = 404), (status = 409)))]
pub async fn download(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(name): ApiPath<String>) -> ApiResult<Response> {
    require_operator(&p)?;
    let path = st.engine.snapshot_file(&name)?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| Error::internal(format!("opening {}: {e}", path.display())))?;
    let len = file.metadata().await.map_err(Error::internal)?.len();
    // 256 KiB reads, handed to the connection as they come.
    let chunks = futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed();
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.tar\"")),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/v1/snapshots/{name}", tag = "snapshots", responses((status = 204), (status = 404), (status = 409)))]
pub async fn delete(State(st): State<AppState>, Extension(p): Extension<Principal>, ApiPath(name): ApiPath<String>) -> ApiResult<StatusCode> {
    require_operator(&p)?;
    st.engine.delete_snapshot(&name).await?;
    tracing::info!(snapshot = %name, by = %p.id, "snapshot deleted");
    Ok(StatusCode::NO_CONTENT)
}
