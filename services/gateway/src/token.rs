//! Bearer-token identity: who a request says it is, proven by a signed JWT.
//!
//! A [`TokenVerifier`] checks a token and returns its [`Claims`]; it does not decide what the
//! caller may do (that is `auth.rs`, the one authorization point). Two kinds of verifier:
//!
//! - **HS256** with a shared secret: the embedded hub and development. `hub token` mints such
//!   tokens with [`mint_hs256`].
//! - **RS256** with the public keys of a JWKS document (an identity provider such as Keycloak):
//!   production. The hub never holds the private key and never mints RS256 tokens.
//!
//! A verifier accepts exactly one algorithm: an HS256 token never passes an RS256 verifier and
//! the other way round (a public key is never used as an HMAC secret), and `alg: none` is
//! refused. `exp` and `iat` are required and checked with at most [`LEEWAY_SECS`] of clock skew;
//! `sub` and `institution` must be non-empty and `role` one of [`Role::ALL`]. Audience and
//! issuer are not checked (yet): a hub trusts every token its key or secret verifies.
//!
//! Every [`TokenError`] reads as a reason the client can act on, and names the offending value
//! where that is safe (never a secret, never a whole token).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// Largest JWKS document fetched from a URL.
const JWKS_MAX_BYTES: usize = 1 << 20;

/// How long a JWKS fetch may take, connection and body together.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a caller is, as far as the hub's policies are concerned (defined with the policy).
pub use hub_policies::Role;

impl From<hub_policies::UnknownRole> for TokenError {
    fn from(e: hub_policies::UnknownRole) -> TokenError {
        TokenError::UnknownRole(e.0)
    }
}

/// The valid roles, comma-separated, for error messages.
fn valid_roles() -> String {
    Role::ALL
        .iter()
        .map(Role::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a verified token says about its bearer.
///
/// - `sub`: who the caller is, as the issuer knows them (a user name or an identity provider's
///   user id). For role [`Role::Patient`] it is the patient's **regional patient id**, the keyed
///   hash the hub uses for that patient everywhere, and never a national identification number.
/// - `role`: one of [`Role::ALL`].
/// - `institution`: the institution the caller acts for. For a patient, it is the institution
///   that issued the login (any registered institution id), not a statement that the patient's
///   records live there.
/// - `exp`, `iat`: expiry and issue time, seconds since 1970-01-01 UTC; both required.
/// - `name`: an optional display name, for audit lines and user interfaces only (never used to
///   decide anything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub institution: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Claims {
    /// Claims issued now and valid for `ttl`, without a display name.
    pub fn new(
        sub: impl Into<String>,
        role: Role,
        institution: impl Into<String>,
        ttl: chrono::Duration,
    ) -> Claims {
        let iat = chrono::Utc::now().timestamp();
        Claims {
            sub: sub.into(),
            role,
            institution: institution.into(),
            exp: iat.saturating_add(ttl.num_seconds()),
            iat,
            name: None,
        }
    }
}

/// Why a token was refused, or why a verifier could not be built. The Display text is meant for
/// the client (in a 401 problem document) and the operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired at {}", timestamp(*at))]
    Expired { at: i64 },
    #[error(
        "token issued in the future, at {} (check the issuer's clock)",
        timestamp(*iat)
    )]
    IssuedInFuture { iat: i64 },
    #[error("token not valid before {}", timestamp(*nbf))]
    NotYetValid { nbf: i64 },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unknown role '{0}' (expected one of {roles})", roles = valid_roles())]
    UnknownRole(String),
    #[error("missing claim '{0}'")]
    MissingClaim(&'static str),
    #[error("claim '{claim}' must be {expected}")]
    InvalidClaim {
        claim: &'static str,
        expected: &'static str,
    },
    #[error("no key with kid '{0}' in the JWKS")]
    UnknownKid(String),
    #[error("token names no key (kid) and the JWKS holds {0} keys")]
    MissingKid(usize),
    #[error("token algorithm {got} is not accepted by this hub (expects {expected})")]
    AlgorithmNotAccepted { got: String, expected: &'static str },
    #[error("JWKS could not be read: {0}")]
    Jwks(String),
    #[error("token could not be signed: {0}")]
    Signing(String),
}

fn timestamp(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{secs} (seconds since 1970)"),
    }
}

/// One verification key, with the `kid` it is published under (RS256) or none (HS256).
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

/// Checks bearer tokens against one algorithm and its key(s). Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    algorithm: Algorithm,
    keys: Vec<Key>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        let kids: Vec<&str> = self.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        f.debug_struct("TokenVerifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.len())
            .field("kids", &kids)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier of HS256 tokens signed with `secret` (the embedded hub, development).
    pub fn hs256(secret: &[u8]) -> TokenVerifier {
        TokenVerifier {
            algorithm: Algorithm::HS256,
            keys: vec![Key {
                kid: None,
                key: DecodingKey::from_secret(secret),
            }],
        }
    }

    /// A verifier of RS256 tokens signed by any RSA signing key of a JWKS document (RFC 7517,
    /// `{"keys": [...]}`). A token's `kid` picks the key; a token without a `kid` is accepted
    /// only when the document holds exactly one usable key. Keys that are not RSA, are marked
    /// for encryption (`"use": "enc"`) or for another algorithm are skipped, so an identity
    /// provider's full JWKS can be given as it is.
    pub fn rs256_from_jwks_json(json: &str) -> Result<TokenVerifier, TokenError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let set: RawSet = serde_json::from_str(json).map_err(|e| {
            TokenError::Jwks(format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))
        })?;
        let total = set.keys.len();
        let mut keys = Vec::new();
        for raw in set.keys {
            // A key this library cannot parse (a kind it does not know) is not one we could use.
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                continue;
            };
            if !usable_rs256_key(&jwk) {
                continue;
            }
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
                TokenError::Jwks(format!(
                    "key {} is not a valid RSA public key: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                ))
            })?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key,
            });
        }
        if keys.is_empty() {
            return Err(TokenError::Jwks(format!(
                "none of its {total} keys is an RSA signing key for RS256 \
                 (kty RSA, use sig or absent, alg RS256 or absent)"
            )));
        }
        let mut seen = HashSet::new();
        for kid in keys.iter().filter_map(|k| k.kid.as_deref()) {
            if !seen.insert(kid) {
                return Err(TokenError::Jwks(format!("two keys share kid '{kid}'")));
            }
        }
        Ok(TokenVerifier {
            algorithm: Algorithm::RS256,
            keys,
        })
    }

    /// [`TokenVerifier::rs256_from_jwks_json`] on the contents of a file.
    pub fn rs256_from_jwks_file(path: &Path) -> Result<TokenVerifier, TokenError> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Jwks(format!("cannot read {}: {e}", path.display())))?;
        TokenVerifier::rs256_from_jwks_json(&json)
            .map_err(|e| in_context(e, &path.display().to_string()))
    }

    /// [`TokenVerifier::rs256_from_jwks_json`] on a document fetched once with `GET url`.
    ///
    /// Only `http://` URLs: the hub carries no TLS client (it would add a TLS stack to the build
    /// for this one request). Inside a cluster, point it at the identity provider's in-cluster
    /// `http://` JWKS endpoint; anywhere else, save the JWKS to a file and use
    /// [`TokenVerifier::rs256_from_jwks_file`]. The keys are read once: after the provider rotates
    /// its keys, restart the hub. The fetch gives up after 10 s and refuses bodies over 1 MiB;
    /// redirects are not followed.
    pub async fn rs256_from_jwks_url(url: &str) -> Result<TokenVerifier, TokenError> {
        use http_body_util::BodyExt;

        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| TokenError::Jwks(format!("{url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(TokenError::Jwks(format!(
                    "{url}: https URLs are not fetched (this hub has no TLS client); use the \
                     identity provider's http:// endpoint inside the cluster, or save the JWKS \
                     to a file and give its path"
                )));
            }
            _ => {
                return Err(TokenError::Jwks(format!("{url:?} is not an http:// URL")));
            }
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let request = hyper::Request::get(uri)
            .header(hyper::header::ACCEPT, "application/json")
            .body(http_body_util::Empty::new())
            .map_err(|e| TokenError::Jwks(format!("{url}: cannot build the request: {e}")))?;
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| TokenError::Jwks(format!("GET {url} failed: {e}")))?;
            let status = response.status();
            if !status.is_success() {
                return Err(TokenError::Jwks(format!("GET {url} answered {status}")));
            }
            let body = http_body_util::Limited::new(response.into_body(), JWKS_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    TokenError::Jwks(format!(
                        "GET {url}: reading the body failed (at most {JWKS_MAX_BYTES} bytes): {e}"
                    ))
                })?
                .to_bytes();
            String::from_utf8(body.to_vec())
                .map_err(|_| TokenError::Jwks(format!("GET {url}: the body is not UTF-8")))
        };
        let json = tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| {
                TokenError::Jwks(format!(
                    "GET {url} did not finish within {} s",
                    JWKS_FETCH_TIMEOUT.as_secs()
                ))
            })??;
        TokenVerifier::rs256_from_jwks_json(&json).map_err(|e| in_context(e, url))
    }

    /// The algorithm this verifier accepts, as written in a token header (`HS256`, `RS256`).
    pub fn algorithm_name(&self) -> &'static str {
        algorithm_name(self.algorithm)
    }

    /// Verifies `token` (the compact JWT, without `Bearer `) and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, chrono::Utc::now().timestamp())
    }

    /// [`TokenVerifier::verify`] with an explicit clock (seconds since 1970).
    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let header = peek_header(token)?;
        let expected = algorithm_name(self.algorithm);
        if header.alg != expected {
            return Err(TokenError::AlgorithmNotAccepted {
                got: header.alg,
                expected,
            });
        }
        let key = self.key_for(header.kid.as_deref())?;

        // The signature and the algorithm are checked by the library; every claim is checked
        // below, so that each refusal can say what is wrong.
        let mut validation = Validation::new(self.algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| from_library(e, expected))?;
        check_claims(&data.claims, now)
    }

    fn key_for(&self, kid: Option<&str>) -> Result<&DecodingKey, TokenError> {
        if self.algorithm == Algorithm::HS256 {
            // One secret; a kid in an HS256 token names nothing.
            return self
                .keys
                .first()
                .map(|k| &k.key)
                .ok_or_else(|| TokenError::Jwks("no key".into()));
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| &k.key)
                .ok_or_else(|| TokenError::UnknownKid(kid.to_owned())),
            None => match self.keys.as_slice() {
                [only] => Ok(&only.key),
                keys => Err(TokenError::MissingKid(keys.len())),
            },
        }
    }
}

/// Signs `claims` as an HS256 token (what `hub token` prints). Refuses claims a verifier would
/// refuse for their content (empty `sub` or `institution`), and an empty secret.
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String, TokenError> {
    if secret.is_empty() {
        return Err(TokenError::Signing("the secret is empty".into()));
    }
    if claims.sub.is_empty() {
        return Err(TokenError::MissingClaim("sub"));
    }
    if claims.institution.is_empty() {
        return Err(TokenError::MissingClaim("institution"));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        // The verifiers above are built for these two only.
        _ => "an unsupported algorithm",
    }
}

fn usable_rs256_key(jwk: &Jwk) -> bool {
    matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
        && matches!(
            jwk.common.public_key_use,
            None | Some(PublicKeyUse::Signature)
        )
        && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
}

/// Prefixes a JWKS error with where the document came from.
fn in_context(e: TokenError, source: &str) -> TokenError {
    match e {
        TokenError::Jwks(why) => TokenError::Jwks(format!("{source}: {why}")),
        other => other,
    }
}

struct PeekedHeader {
    alg: String,
    kid: Option<String>,
}

/// Reads the header without trusting it, to pick the key and refuse a foreign algorithm (`none`
/// included) with its name before any signature work.
fn peek_header(token: &str) -> Result<PeekedHeader, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Malformed("the token is empty".into()));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(TokenError::Malformed(format!(
            "expected three base64url parts separated by '.', found {}",
            parts.len()
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(parts[0])
        .map_err(|_| TokenError::Malformed("the header is not base64url".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("the header is not a JSON object".into()))?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => {
            return Err(TokenError::Malformed(
                "the header's 'alg' is not a string".into(),
            ));
        }
        None => return Err(TokenError::Malformed("the header has no 'alg'".into())),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => {
            return Err(TokenError::Malformed(
                "the header's 'kid' is not a string".into(),
            ));
        }
    };
    Ok(PeekedHeader { alg, kid })
}

fn from_library(e: jsonwebtoken::errors::Error, expected: &'static str) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::AlgorithmNotAccepted {
                got: "(as named in the header)".into(),
                expected,
            }
        }
        ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url".into()),
        ErrorKind::Json(_) => TokenError::Malformed("the payload is not a JSON object".into()),
        ErrorKind::Utf8(_) => TokenError::Malformed("the payload is not UTF-8".into()),
        ErrorKind::InvalidToken => TokenError::Malformed("not a compact JWT".into()),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            // The key came from our configuration, but the token chose to use it: say only that
            // it did not verify.
            TokenError::BadSignature
        }
        other => TokenError::Malformed(format!("{other:?}")),
    }
}

/// A numeric date claim (RFC 7519 NumericDate: seconds, possibly fractional).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.trunc() as i64)
            })
            .map(Some)
            .ok_or(TokenError::InvalidClaim {
                claim: name,
                expected: "a number of seconds since 1970",
            }),
        Some(_) => Err(TokenError::InvalidClaim {
            claim: name,
            expected: "a number of seconds since 1970",
        }),
    }
}

/// A string claim that must be present and non-empty.
fn required_string(claims: &Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Err(TokenError::MissingClaim(name)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(TokenError::MissingClaim(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(TokenError::InvalidClaim {
            claim: name,
            expected: "a string",
        }),
    }
}

fn check_claims(claims: &Map<String, Value>, now: i64) -> Result<Claims, TokenError> {
    let exp = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired { at: exp });
    }
    let iat = numeric_date(claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::IssuedInFuture { iat });
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(TokenError::NotYetValid { nbf });
    }
    let sub = required_string(claims, "sub")?;
    let role: Role = required_string(claims, "role")?.parse()?;
    let institution = required_string(claims, "institution")?;
    let name = match claims.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "name",
                expected: "a string",
            });
        }
    };
    Ok(Claims {
        sub,
        role,
        institution,
        exp,
        iat,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

    fn claims() -> Claims {
        Claims::new(
            "alice",
            Role::Radiologist,
            "hosp-a",
            chrono::Duration::hours(1),
        )
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
    }

    /// Signs an arbitrary payload with HS256 (to build tokens `mint_hs256` would refuse).
    fn sign_raw_hs256(payload: &Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            payload,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign")
    }

    #[test]
    fn an_hs256_token_round_trips() {
        let mut c = claims();
        c.name = Some("Dr Alice".into());
        let token = mint_hs256(SECRET, &c).expect("mint");
        let back = TokenVerifier::hs256(SECRET).verify(&token).expect("verify");
        assert_eq!(back, c);
        // Without a name the claim is left out, and comes back as None.
        let token = mint_hs256(SECRET, &claims()).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("utf8");
        assert!(!json.contains("name"), "{json}");
        assert!(json.contains("\"role\":\"radiologist\""), "{json}");
        assert_eq!(
            TokenVerifier::hs256(SECRET)
                .verify(&token)
                .expect("verify")
                .name,
            None
        );
    }

    #[test]
    fn an_expired_token_is_refused_naming_its_expiry() {
        let exp = 1_795_514_400; // 2026-11-24T10:00:00Z
        let c = Claims {
            exp,
            iat: exp - 3600,
            ..claims()
        };
        let token = mint_hs256(SECRET, &c).expect("mint");
        let v = TokenVerifier::hs256(SECRET);
        let err = v.verify_at(&token, exp + 31).expect_err("expired");
        assert_eq!(err, TokenError::Expired { at: exp });
        assert_eq!(err.to_string(), "token expired at 2026-11-24T10:00:00Z");
        // Within the leeway it still passes.
        assert!(v.verify_at(&token, exp + 30).is_ok());
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let now = 1_800_000_000;
        let c = Claims {
            iat: now + 120,
            exp: now + 3600,
            ..claims()
        };
        let token = mint_hs256(SECRET, &c).expect("mint");
        let v = TokenVerifier::hs256(SECRET);
        let err = v.verify_at(&token, now).expect_err("future iat");
        assert_eq!(err, TokenError::IssuedInFuture { iat: now + 120 });
        assert!(v.verify_at(&token, now + 90).is_ok());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = mint_hs256(SECRET, &claims()).expect("mint");
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        payload["role"] = Value::String("hub_admin".into());
        let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
        let err = TokenVerifier::hs256(SECRET)
            .verify(&forged)
            .expect_err("tampered");
        assert_eq!(err, TokenError::BadSignature);
        assert_eq!(err.to_string(), "token signature does not verify");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = mint_hs256(b"another-secret-of-at-least-32-bytes!", &claims()).expect("mint");
        let err = TokenVerifier::hs256(SECRET)
            .verify(&token)
            .expect_err("wrong secret");
        assert_eq!(err, TokenError::BadSignature);
    }

    #[test]
    fn an_alg_none_token_is_refused() {
        let header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
        let payload = b64(&serde_json::to_value(claims()).expect("claims"));
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            let err = TokenVerifier::hs256(SECRET)
                .verify(&token)
                .expect_err("alg none");
            assert_eq!(
                err.to_string(),
                "token algorithm none is not accepted by this hub (expects HS256)"
            );
        }
    }

    #[test]
    fn malformed_tokens_say_why() {
        let v = TokenVerifier::hs256(SECRET);
        for (token, why) in [
            ("", "empty"),
            ("abc", "three base64url parts"),
            ("a.b.c.d", "three base64url parts"),
            ("!!!.e30.", "header is not base64url"),
            ("e30.e30.", "header has no 'alg'"),
        ] {
            let msg = v.verify(token).expect_err(token).to_string();
            assert!(
                msg.starts_with("malformed token: ") && msg.contains(why),
                "{token}: {msg}"
            );
        }
        // A payload that is not JSON, correctly signed.
        let header = b64(&serde_json::json!({"alg": "HS256"}));
        let payload = URL_SAFE_NO_PAD.encode(b"not json");
        let message = format!("{header}.{payload}");
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .expect("sign");
        let msg = v
            .verify(&format!("{message}.{sig}"))
            .expect_err("payload")
            .to_string();
        assert!(msg.starts_with("malformed token: "), "{msg}");
    }

    #[test]
    fn an_unknown_role_is_refused_naming_it() {
        let mut payload = serde_json::to_value(claims()).expect("claims");
        payload["role"] = Value::String("janitor".into());
        let err = TokenVerifier::hs256(SECRET)
            .verify(&sign_raw_hs256(&payload))
            .expect_err("role");
        assert_eq!(err, TokenError::UnknownRole("janitor".into()));
        let msg = err.to_string();
        assert!(
            msg.starts_with("unknown role 'janitor' (expected one of "),
            "{msg}"
        );
        for role in Role::ALL {
            assert!(msg.contains(role.as_str()), "{msg}");
        }
    }

    #[test]
    fn roles_parse_display_and_serialize_alike() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().expect("parse"), role);
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(
                serde_json::to_value(role).expect("ser"),
                Value::String(role.as_str().into())
            );
        }
        let msg = "Radiologist".parse::<Role>().expect_err("case").to_string();
        assert!(
            msg.contains("'Radiologist'") && msg.contains("hospital_admin, radiologist"),
            "{msg}"
        );
    }

    #[test]
    fn missing_or_empty_required_claims_are_refused_by_name() {
        let v = TokenVerifier::hs256(SECRET);
        for claim in ["institution", "sub", "role", "exp", "iat"] {
            let mut payload = serde_json::to_value(claims()).expect("claims");
            payload.as_object_mut().expect("object").remove(claim);
            let err = v.verify(&sign_raw_hs256(&payload)).expect_err(claim);
            assert_eq!(err.to_string(), format!("missing claim '{claim}'"));
        }
        let mut payload = serde_json::to_value(claims()).expect("claims");
        payload["institution"] = Value::String(String::new());
        let err = v.verify(&sign_raw_hs256(&payload)).expect_err("empty");
        assert_eq!(err, TokenError::MissingClaim("institution"));
        payload["institution"] = Value::from(7);
        let err = v.verify(&sign_raw_hs256(&payload)).expect_err("number");
        assert_eq!(err.to_string(), "claim 'institution' must be a string");
        // mint refuses what verify would refuse.
        let mut c = claims();
        c.institution.clear();
        assert_eq!(
            mint_hs256(SECRET, &c),
            Err(TokenError::MissingClaim("institution"))
        );
        assert!(mint_hs256(b"", &claims()).is_err());
    }

    /// An RSA key pair for the RS256 tests, and its public half as a JWK.
    struct RsaTestKey {
        encoding: EncodingKey,
        jwk: Value,
    }

    fn rsa_key(kid: Option<&str>) -> RsaTestKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private =
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("generate an RSA key");
        let der = private.to_pkcs1_der().expect("pkcs1 der");
        let mut jwk = serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        });
        if let Some(kid) = kid {
            jwk["kid"] = Value::String(kid.into());
        }
        RsaTestKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        }
    }

    fn sign_rs256(key: &RsaTestKey, kid: Option<&str>, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign RS256")
    }

    #[test]
    fn rs256_tokens_verify_against_a_jwks_by_kid() {
        let k1 = rsa_key(Some("k1"));
        let k2 = rsa_key(Some("k2"));
        // An encryption key and an EC key beside them are skipped, as in a real provider's JWKS.
        let enc = serde_json::json!({"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "e1",
            "n": k1.jwk["n"], "e": k1.jwk["e"]});
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let jwks = serde_json::json!({"keys": [enc, k1.jwk, ec, k2.jwk]}).to_string();
        let v = TokenVerifier::rs256_from_jwks_json(&jwks).expect("jwks");
        assert_eq!(v.algorithm_name(), "RS256");

        let c = claims();
        assert_eq!(v.verify(&sign_rs256(&k1, Some("k1"), &c)).expect("k1"), c);
        assert_eq!(v.verify(&sign_rs256(&k2, Some("k2"), &c)).expect("k2"), c);
        // Signed by k1 but claiming k2: the signature does not verify.
        assert_eq!(
            v.verify(&sign_rs256(&k1, Some("k2"), &c)),
            Err(TokenError::BadSignature)
        );
        let err = v.verify(&sign_rs256(&k1, Some("k9"), &c)).expect_err("kid");
        assert_eq!(err.to_string(), "no key with kid 'k9' in the JWKS");
        // Two keys and no kid: ambiguous.
        assert_eq!(
            v.verify(&sign_rs256(&k1, None, &c)),
            Err(TokenError::MissingKid(2))
        );
        // Claims are checked as for HS256.
        let expired = Claims {
            exp: 1_000_000,
            iat: 999_000,
            ..claims()
        };
        assert_eq!(
            v.verify(&sign_rs256(&k1, Some("k1"), &expired)),
            Err(TokenError::Expired { at: 1_000_000 })
        );

        // A JWKS of one key without a kid accepts a token without a kid, from a file too.
        let single = rsa_key(None);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::json!({"keys": [single.jwk]}).to_string())
            .expect("write");
        let v = TokenVerifier::rs256_from_jwks_file(&path).expect("file");
        assert_eq!(v.verify(&sign_rs256(&single, None, &c)).expect("no kid"), c);
    }

    #[test]
    fn algorithms_never_cross_between_verifiers() {
        let key = rsa_key(Some("k1"));
        let jwks = serde_json::json!({"keys": [key.jwk]}).to_string();
        let rs = TokenVerifier::rs256_from_jwks_json(&jwks).expect("jwks");
        let hs = TokenVerifier::hs256(SECRET);

        let hs_token = mint_hs256(SECRET, &claims()).expect("mint");
        let err = rs.verify(&hs_token).expect_err("HS256 at an RS256 hub");
        assert_eq!(
            err.to_string(),
            "token algorithm HS256 is not accepted by this hub (expects RS256)"
        );
        let rs_token = sign_rs256(&key, Some("k1"), &claims());
        let err = hs.verify(&rs_token).expect_err("RS256 at an HS256 hub");
        assert_eq!(
            err.to_string(),
            "token algorithm RS256 is not accepted by this hub (expects HS256)"
        );
        // The classic confusion: an HS256 token whose HMAC key is the RSA public key's text.
        let public_as_secret = jwks.as_bytes();
        let forged = mint_hs256(public_as_secret, &claims()).expect("mint");
        assert!(matches!(
            rs.verify(&forged),
            Err(TokenError::AlgorithmNotAccepted { .. })
        ));
    }

    #[test]
    fn bad_jwks_documents_are_refused_with_a_reason() {
        for (doc, why) in [
            ("not json", "not a JWKS document"),
            ("{\"keys\": []}", "none of its 0 keys"),
            (
                "{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
                "none of its 1 keys",
            ),
        ] {
            let msg = TokenVerifier::rs256_from_jwks_json(doc)
                .expect_err(doc)
                .to_string();
            assert!(
                msg.starts_with("JWKS could not be read: ") && msg.contains(why),
                "{msg}"
            );
        }
        let msg = TokenVerifier::rs256_from_jwks_file(Path::new("/no/such/jwks.json"))
            .expect_err("missing file")
            .to_string();
        assert!(msg.contains("/no/such/jwks.json"), "{msg}");
    }

    #[tokio::test]
    async fn a_jwks_is_fetched_from_an_http_url() {
        let key = rsa_key(Some("k1"));
        let jwks = serde_json::json!({"keys": [key.jwk]}).to_string();
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(move || {
                    let jwks = jwks.clone();
                    async move { ([(hyper::header::CONTENT_TYPE, "application/json")], jwks) }
                }),
            )
            .route(
                "/broken",
                axum::routing::get(|| async { (hyper::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let v = TokenVerifier::rs256_from_jwks_url(&format!("http://{addr}/jwks.json"))
            .await
            .expect("fetch");
        let c = claims();
        assert_eq!(
            v.verify(&sign_rs256(&key, Some("k1"), &c)).expect("verify"),
            c
        );

        let msg = TokenVerifier::rs256_from_jwks_url(&format!("http://{addr}/broken"))
            .await
            .expect_err("500")
            .to_string();
        assert!(msg.contains("500") && msg.contains("/broken"), "{msg}");
        let msg = TokenVerifier::rs256_from_jwks_url("https://idp.example/jwks.json")
            .await
            .expect_err("https")
            .to_string();
        assert!(msg.contains("https URLs are not fetched"), "{msg}");
        server.abort();
    }
}
