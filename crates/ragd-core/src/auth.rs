//! Who is calling: principals, roles, tenants, and the API keys and service tokens that stand for them.
//! Keys are stored only as SHA-256 digests (a key carries 256 random bits, so a slow hash would add
//! nothing) and compared in constant time. The HTTP edge turns headers into a `Principal`; everything
//! past it asks the principal what it may do.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The tenant of everything while authentication (and with it tenancy) is off, and of collections
/// made before it was turned on. Its collections are stored under their plain names.
pub const DEFAULT_TENANT: &str = "default";

/// What a principal may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// search, query, list and read collections, documents and jobs.
    Read,
    /// + add and delete documents.
    Write,
    /// + create and delete collections, manage keys, read the service status.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Authentication is off: the single local user.
    None,
    ApiKey,
    ServiceToken,
    Jwt,
}

/// A caller, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Stable per caller (key id, `jwt:<iss>:<sub>`): the rate-limit bucket and the log field.
    pub id: String,
    pub credential: Credential,
    pub tenant: String,
    pub role: Role,
    /// `None`: every collection of the tenant.
    pub collections: Option<Vec<String>>,
}

impl Principal {
    /// The local user while authentication is off: admin of the default tenant.
    pub fn local() -> Principal {
        Principal { id: "local".into(), credential: Credential::None, tenant: DEFAULT_TENANT.into(), role: Role::Admin, collections: None }
    }

    /// `Forbidden` unless the principal's role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(Error::Forbidden {
                code: "insufficient_role",
                message: format!("this needs the `{}` role; the caller has `{}`", needed.as_str(), self.role.as_str()),
            })
        }
    }

    /// Whether the principal's scope includes the collection (by its public name).
    pub fn allows(&self, collection: &str) -> bool {
        self.collections.as_ref().is_none_or(|c| c.iter().any(|n| n == collection))
    }

    /// The name a collection of this principal's tenant is stored under.
    pub fn storage_name(&self, collection: &str) -> String {
        storage_name(&self.tenant, collection)
    }
}

/// Collections are stored under `<tenant>.<name>` (`.` is in neither), so two tenants may each have a
/// `docs` and neither learns of the other's; the default tenant's keep their plain names.
pub fn storage_name(tenant: &str, collection: &str) -> String {
    if tenant == DEFAULT_TENANT { collection.to_owned() } else { format!("{tenant}.{collection}") }
}

/// Whether a stored collection name belongs to `tenant`.
pub fn tenant_owns(tenant: &str, stored: &str) -> bool {
    if tenant == DEFAULT_TENANT {
        return !stored.contains('.');
    }
    stored.strip_prefix(tenant).is_some_and(|s| s.starts_with('.'))
}

/// The name a client knows a stored collection by.
pub fn public_name<'a>(tenant: &str, stored: &'a str) -> &'a str {
    if tenant == DEFAULT_TENANT {
        return stored;
    }
    stored.strip_prefix(tenant).and_then(|s| s.strip_prefix('.')).unwrap_or(stored)
}

/// The name a message shows for a collection, stored or public: the public name (what follows
/// the tenant), so an error never tells a client how collections are stored.
pub fn shown_name(stored: &str) -> &str {
    stored.rsplit('.').next().unwrap_or(stored)
}

pub fn validate_tenant(tenant: &str) -> Result<()> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && tenant.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("invalid_tenant", "tenants are 1-64 characters: lowercase letters, digits, `-` and `_`, starting with a letter or digit"))
    }
}

/// API key (`Authorization: Bearer`) or service token (`X-Service-Token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    ApiKey,
    ServiceToken,
}

impl KeyKind {
    fn tag(self) -> &'static str {
        match self {
            KeyKind::ApiKey => "k",
            KeyKind::ServiceToken => "s",
        }
    }
}

/// A stored key: everything but the secret, which exists only in the caller's hands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRecord {
    pub id: String,
    pub kind: KeyKind,
    pub name: Option<String>,
    pub tenant: String,
    pub role: Role,
    /// `None`: every collection of the tenant.
    pub collections: Option<Vec<String>>,
    /// SHA-256 of the whole key, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub digest: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    /// The same record without its digest, for listings.
    pub fn public(&self) -> KeyRecord {
        KeyRecord { digest: String::new(), ..self.clone() }
    }
}

/// A new key: the record to store and the secret to show once.
pub struct NewKey {
    pub record: KeyRecord,
    pub secret: String,
}

/// Makes a key `ragd_<k|s>_<id>_<64 hex>`; the id (12 hex) finds the record, the digest proves it.
pub fn generate_key(kind: KeyKind, tenant: &str, role: Role, collections: Option<Vec<String>>, name: Option<String>, now: String) -> Result<NewKey> {
    validate_tenant(tenant)?;
    if let Some(c) = &collections {
        if c.is_empty() {
            return Err(Error::invalid("invalid_request", "`collections` must name at least one collection (omit it for all)"));
        }
    }
    let id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..6]);
    // 256 random bits from the operating system's generator.
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| Error::internal(format!("no randomness from the operating system: {e}")))?;
    let secret = format!("ragd_{}_{id}_{}", kind.tag(), hex::encode(random));
    let record = KeyRecord { id, kind, name, tenant: tenant.to_owned(), role, collections, digest: digest(&secret), created_at: now, revoked_at: None };
    Ok(NewKey { record, secret })
}

/// The kind and id a presented key claims, if it has the shape of a ragd key.
pub fn parse_key(presented: &str) -> Option<(KeyKind, &str)> {
    let rest = presented.strip_prefix("ragd_")?;
    let (tag, rest) = rest.split_once('_')?;
    let (id, secret) = rest.split_once('_')?;
    let kind = match tag {
        "k" => KeyKind::ApiKey,
        "s" => KeyKind::ServiceToken,
        _ => return None,
    };
    (id.len() == 12 && secret.len() == 64).then_some((kind, id))
}

pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Where keys live. The embedded default is a file in the data folder that the CLI and a running
/// server can both change; a cluster keeps them in shared storage.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert(&self, record: KeyRecord) -> Result<()>;
    /// The record with this id, revoked or not, as of now (a revocation is seen by the next call).
    async fn get(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// All keys, or one tenant's.
    async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Marks the key revoked; `false` when there is no such key.
    async fn revoke(&self, id: &str, now: String) -> Result<bool>;
    /// Copies the keys into the file `dest` for a snapshot (see `snapshot`); stores that live outside
    /// the data folder copy nothing.
    async fn backup(&self, _dest: &std::path::Path) -> Result<()> {
        Ok(())
    }
}

/// Checks a presented key against the store: the record when the key is genuine, live and of the
/// expected kind; otherwise `Unauthorized` with a code that tells nothing about other keys.
pub async fn verify_key(store: &dyn KeyStore, presented: &str, expected: KeyKind) -> Result<KeyRecord> {
    let (code, what) = match expected {
        KeyKind::ApiKey => ("invalid_api_key", "API key"),
        KeyKind::ServiceToken => ("invalid_service_token", "service token"),
    };
    let refuse = || Error::Unauthorized { code, message: format!("the {what} is not valid") };
    let Some((kind, id)) = parse_key(presented) else { return Err(refuse()) };
    if kind != expected {
        return Err(refuse());
    }
    let Some(record) = store.get(id).await? else { return Err(refuse()) };
    if record.kind != expected || !constant_time_eq(digest(presented).as_bytes(), record.digest.as_bytes()) {
        return Err(refuse());
    }
    if record.revoked_at.is_some() {
        let code = match expected {
            KeyKind::ApiKey => "api_key_revoked",
            KeyKind::ServiceToken => "service_token_revoked",
        };
        return Err(Error::Unauthorized { code, message: format!("this {what} was revoked") });
    }
    Ok(record)
}

impl From<&KeyRecord> for Principal {
    fn from(k: &KeyRecord) -> Principal {
        Principal {
            id: format!("key:{}", k.id),
            credential: match k.kind {
                KeyKind::ApiKey => Credential::ApiKey,
                KeyKind::ServiceToken => Credential::ServiceToken,
            },
            tenant: k.tenant.clone(),
            role: k.role,
            collections: k.collections.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_parse_back() {
        let k = generate_key(KeyKind::ServiceToken, "acme", Role::Write, None, None, "now".into()).unwrap();
        assert!(k.secret.starts_with("ragd_s_"));
        assert_eq!(parse_key(&k.secret), Some((KeyKind::ServiceToken, k.record.id.as_str())));
        assert_eq!(k.record.digest, digest(&k.secret));
        assert_eq!(parse_key("ragd_k_short_x"), None);
        assert_eq!(parse_key("eyJhbGciOi.x.y"), None);
    }

    #[test]
    fn storage_names_round_trip_and_the_default_tenant_keeps_plain_names() {
        assert_eq!(storage_name(DEFAULT_TENANT, "docs"), "docs");
        assert_eq!(storage_name("acme", "docs"), "acme.docs");
        assert_eq!(public_name("acme", "acme.docs"), "docs");
        assert_eq!(public_name(DEFAULT_TENANT, "docs"), "docs");
        assert_eq!(shown_name("acme.docs"), "docs");
        assert_eq!(shown_name("docs"), "docs");
    }

    #[test]
    fn roles_include_the_lower_ones() {
        let p = Principal { role: Role::Write, ..Principal::local() };
        assert!(p.require(Role::Read).is_ok());
        assert!(p.require(Role::Write).is_ok());
        assert_eq!(p.require(Role::Admin).unwrap_err().code(), "insufficient_role");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
