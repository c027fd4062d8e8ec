//! JWT bearer tokens from an identity provider. Each key is pinned to one algorithm (a token whose
//! header names another is refused before any signature check, which closes `alg: none` and the
//! HS256-signed-with-the-RSA-public-key confusion); `exp` is always required; `iss` and `aud` when
//! configured. Keys come from the configuration and/or a JWKS URL: fetched keys are cached, an
//! unknown `kid` causes one refresh, and refreshes are spaced by a cooldown so a flood of made-up
//! `kid`s cannot turn ragd into a load generator against the identity provider. Fetches go through
//! the outbound resilience stack (`resilience.jwks`: breaker, retry, cap, timeout); while its breaker
//! is open the keys fetched before keep verifying tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use ragd_core::auth::{Credential, Principal, Role, validate_tenant};
use ragd_core::breaker::{BreakerObserver, BreakerStatus};
use ragd_core::resilience::{Outbound, ResilienceSettings};
use ragd_core::settings::{JwtAlgorithm, JwtSettings};
use ragd_core::{Error, Result};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// Longest wait for the JWKS endpoint.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Jwks {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// Why the last fetch failed (`None` after a success), for readiness.
    last_error: Option<String>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    configured: Vec<Key>,
    jwks: RwLock<Jwks>,
    refresh: Mutex<()>,
    http: reqwest::Client,
    outbound: Outbound,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Error {
    Error::unauthorized(code, message)
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

impl JwtVerifier {
    /// Builds the verifier; a key that cannot be read is a configuration error reported at start.
    pub fn new(settings: JwtSettings, resilience: &ResilienceSettings, observer: Arc<dyn BreakerObserver>) -> std::result::Result<JwtVerifier, String> {
        let mut configured = Vec::new();
        for (i, k) in settings.keys.iter().enumerate() {
            let alg = algorithm(k.algorithm);
            let key = match k.algorithm {
                JwtAlgorithm::HS256 => DecodingKey::from_secret(k.secret.as_ref().map(|s| s.expose().as_bytes()).unwrap_or_default()),
                JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                    let pem = match (&k.public_key_pem, &k.public_key_file) {
                        (Some(p), _) => p.clone().into_bytes(),
                        (None, Some(f)) => std::fs::read(f).map_err(|e| format!("auth.jwt.keys[{i}]: reading {}: {e}", f.display()))?,
                        (None, None) => return Err(format!("auth.jwt.keys[{i}]: no public key")),
                    };
                    let parsed = if k.algorithm == JwtAlgorithm::RS256 { DecodingKey::from_rsa_pem(&pem) } else { DecodingKey::from_ec_pem(&pem) };
                    parsed.map_err(|e| format!("auth.jwt.keys[{i}]: not a {:?} public key: {e}", k.algorithm))?
                }
            };
            configured.push(Key { kid: k.kid.clone(), algorithm: alg, key });
        }
        // The per-attempt timeout is the outbound stack's (JWKS_TIMEOUT), around send and body.
        let http = reqwest::Client::builder().build().map_err(|e| e.to_string())?;
        let outbound = Outbound::new("jwks", "jwks", resilience, JWKS_TIMEOUT, observer);
        Ok(JwtVerifier { settings, configured, jwks: RwLock::new(Jwks::default()), refresh: Mutex::new(()), http, outbound })
    }

    /// Fetches the JWKS at start so the first requests do not wait for it (failure is logged; the
    /// first token will try again).
    pub async fn warm(&self) {
        if self.settings.jwks_url.is_some() {
            let _ = self.refresh_jwks(None).await;
        }
    }

    /// `None` without a JWKS URL; else whether the last fetch succeeded (and why not), with the
    /// fetch's breaker.
    pub async fn jwks_health(&self) -> Option<(std::result::Result<(), String>, BreakerStatus)> {
        self.settings.jwks_url.as_ref()?;
        let jwks = self.jwks.read().await;
        let last = match (&jwks.last_error, jwks.fetched_at) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(_)) => Ok(()),
            (None, None) => Err("not fetched yet".into()),
        };
        Some((last, self.outbound.breaker().status()))
    }

    /// Verifies a token and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        let header = header_of(token)?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        let (alg, key) = self.key_for(kid.as_deref()).await?;
        if alg_name != format!("{alg:?}") {
            return Err(refuse("token_algorithm_not_allowed", format!("tokens for this key must be signed with {alg:?}, not `{alg_name}`")));
        }
        let mut v = Validation::new(alg);
        v.leeway = self.settings.leeway_secs;
        v.validate_nbf = true;
        v.validate_exp = true;
        let mut required = vec!["exp"];
        match &self.settings.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => refuse("token_expired", "the token has expired"),
            ErrorKind::ImmatureSignature => refuse("token_not_yet_valid", "the token is not valid yet (nbf)"),
            ErrorKind::InvalidAudience => refuse("token_audience_invalid", "the token is not meant for this service (aud)"),
            ErrorKind::InvalidIssuer => refuse("token_issuer_invalid", "the token comes from an issuer this service does not trust (iss)"),
            ErrorKind::InvalidSignature => refuse("token_signature_invalid", "the token's signature does not verify"),
            ErrorKind::InvalidAlgorithm => refuse("token_algorithm_not_allowed", "the token's algorithm is not the one pinned for its key"),
            ErrorKind::MissingRequiredClaim(c) => refuse("token_claim_missing", format!("the token has no `{c}` claim")),
            _ => refuse("invalid_token", "the bearer token is not a valid JWT"),
        })?;
        self.principal(&data.claims)
    }

    /// The key a token's `kid` names: a configured one, else a JWKS one (refreshing once if unknown).
    async fn key_for(&self, kid: Option<&str>) -> Result<(Algorithm, DecodingKey)> {
        if let Some(k) = self.configured.iter().find(|k| k.kid.as_deref() == kid) {
            return Ok((k.algorithm, k.key.clone()));
        }
        let unknown = || refuse("token_key_unknown", "the token's key (kid) is not one this service knows");
        let (Some(kid), Some(_)) = (kid, &self.settings.jwks_url) else { return Err(unknown()) };
        let stale = {
            let jwks = self.jwks.read().await;
            if let Some((alg, key)) = jwks.keys.get(kid) {
                let fresh = jwks.fetched_at.is_some_and(|t| t.elapsed() < Duration::from_secs(self.settings.jwks_cache_secs));
                if fresh {
                    return Ok((*alg, key.clone()));
                }
                Some((*alg, key.clone()))
            } else {
                None
            }
        };
        self.refresh_jwks(Some(kid)).await;
        let jwks = self.jwks.read().await;
        if let Some((alg, key)) = jwks.keys.get(kid) {
            return Ok((*alg, key.clone()));
        }
        // The provider answered within the cache's lifetime without this key: it was removed. A
        // stale key verifies only while the provider cannot be reached (its refresh failed).
        let answered = jwks.fetched_at.is_some_and(|t| t.elapsed() < Duration::from_secs(self.settings.jwks_cache_secs));
        if answered { Err(unknown()) } else { stale.ok_or_else(unknown) }
    }

    /// Fetches the JWKS unless another task just did, or the cooldown since the last attempt has
    /// not passed.
    async fn refresh_jwks(&self, wanted: Option<&str>) {
        let Some(url) = &self.settings.jwks_url else { return };
        let _one_at_a_time = self.refresh.lock().await;
        {
            let jwks = self.jwks.read().await;
            if wanted.is_some_and(|kid| jwks.keys.contains_key(kid))
                && jwks.fetched_at.is_some_and(|t| t.elapsed() < Duration::from_secs(self.settings.jwks_cache_secs))
            {
                return;
            }
            if jwks.attempted_at.is_some_and(|t| t.elapsed() < Duration::from_millis(self.settings.jwks_cooldown_ms)) {
                return;
            }
        }
        self.jwks.write().await.attempted_at = Some(Instant::now());
        match self.outbound.call(|| self.fetch(url)).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched the JWKS");
                let mut jwks = self.jwks.write().await;
                jwks.keys = keys;
                jwks.fetched_at = Some(Instant::now());
                jwks.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch the JWKS; keeping the keys fetched before");
                self.jwks.write().await.last_error = Some(e.to_string());
            }
        }
    }

    /// One attempt: an unreachable or failing provider is `Unavailable` (retried); a document that
    /// is not a JWKS is `Internal` (not retried; both count against the breaker).
    async fn fetch(&self, url: &str) -> Result<HashMap<String, (Algorithm, DecodingKey)>> {
        let unavailable = |e: reqwest::Error| Error::unavailable("jwks", format!("fetching the JWKS: {e}"));
        let response = self.http.get(url).send().await.and_then(|r| r.error_for_status()).map_err(unavailable)?;
        let body: Value = response.json().await.map_err(|e| Error::internal(format!("the JWKS is not JSON: {e}")))?;
        let mut keys = HashMap::new();
        let listed = body.get("keys").and_then(Value::as_array).ok_or_else(|| Error::internal("the JWKS has no `keys` array"))?;
        for raw in listed {
            // Keys of kinds ragd does not use are skipped, not fatal.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else { continue };
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let Some(alg) = self.jwk_algorithm(&jwk) else { continue };
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        Ok(keys)
    }

    /// The algorithm a JWKS key is pinned to: its own `alg` if allowed, else the allowed one its type implies.
    fn jwk_algorithm(&self, jwk: &Jwk) -> Option<Algorithm> {
        let allowed: Vec<Algorithm> = self.settings.jwks_algorithms.iter().map(|a| algorithm(*a)).collect();
        let implied = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(_) => return None,
            None => implied,
        };
        (alg == implied && allowed.contains(&alg)).then_some(alg)
    }

    fn principal(&self, claims: &Value) -> Result<Principal> {
        let s = &self.settings;
        let bad = |m: String| refuse("token_claims_invalid", m);
        let tenant = match claims.get(&s.tenant_claim) {
            Some(Value::String(t)) => t.clone(),
            None => s.default_tenant.clone().ok_or_else(|| bad(format!("the token has no `{}` claim (the tenant)", s.tenant_claim)))?,
            Some(_) => return Err(bad(format!("the `{}` claim must be a string", s.tenant_claim))),
        };
        validate_tenant(&tenant).map_err(|_| bad(format!("`{tenant}` is not a valid tenant")))?;
        let names: Vec<&str> = match claims.get(&s.role_claim) {
            Some(Value::String(r)) => vec![r.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mapped = names.iter().filter_map(|n| if s.role_map.is_empty() { Role::parse(n) } else { s.role_map.get(*n).copied() }).max();
        let role = mapped.or(s.default_role).ok_or_else(|| bad(format!("the token's `{}` claim grants no ragd role", s.role_claim)))?;
        let collections = match claims.get(&s.collections_claim) {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            Some(_) => return Err(bad(format!("the `{}` claim must be a list of collection names", s.collections_claim))),
        };
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("-");
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or(&tenant);
        Ok(Principal { id: format!("jwt:{iss}:{sub}"), credential: Credential::Jwt, tenant, role, collections })
    }
}

/// The token's header as JSON, read before anything else so `alg: none` gets its own answer.
fn header_of(token: &str) -> Result<Value> {
    let malformed = || refuse("invalid_token", "the bearer token is not a valid JWT");
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(malformed()) };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).map_err(|_| malformed())?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or_else(malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(refuse("token_algorithm_not_allowed", "unsigned tokens (alg: none) are never accepted"));
    }
    Ok(header)
}
