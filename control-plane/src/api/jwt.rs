//! `--k8s-jwks`: Kubernetes projected service-account tokens as bearer tokens.
//!
//! The keys come from a JWKS file (what the API server serves at `/openid/v1/jwks`).
//! A token is accepted when it is signed (RS256 or ES256) by one of them, is within
//! `nbf`..`exp`, names the audience `graylane`, and its `sub` is a service account
//! (`system:serviceaccount:<namespace>:<name>`), which becomes its identity.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::identity::ServiceAccount;

/// The audience a projected token must be minted for (injection requests it).
pub(crate) const AUDIENCE: &str = "graylane";
/// Clock skew tolerated on `exp` and `nbf` between the API server and this replica.
const LEEWAY_SECS: u64 = 30;

/// The issuer keys a service-account token may be signed with.
pub struct Jwks {
    /// (key id, the one algorithm the key is used with, the key)
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl Jwks {
    /// Parses a JWKS document. RSA and P-256 keys are kept; other kinds are skipped
    /// (none of them could sign an accepted token). Fails when no key is left.
    pub fn parse(json: &str) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => {
                    tracing::warn!(index = i, kid = ?jwk.common.key_id, "--k8s-jwks: skipping a key that is neither RSA nor P-256");
                    continue;
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("key {i} ({:?}): {e}", jwk.common.key_id))?;
            keys.push((jwk.common.key_id.clone(), alg, key));
        }
        if keys.is_empty() {
            return Err("no RSA or P-256 key in the JWKS".into());
        }
        Ok(Self { keys })
    }

    /// The service account a valid token was issued to; the error says why not.
    pub fn verify(&self, token: &str) -> Result<ServiceAccount, String> {
        // `alg: none` and HMAC algorithms fail here or below: only RS256 and ES256
        // are ever accepted, each only with a key of its own kind.
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(format!(
                "algorithm {:?} (RS256 or ES256 accepted)",
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        });
        let mut last = format!("no {:?} key with id {:?}", header.alg, header.kid);
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return service_account_of(&data.claims.sub),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}

/// `system:serviceaccount:<namespace>:<name>` → the service account.
fn service_account_of(sub: &str) -> Result<ServiceAccount, String> {
    let rest = sub
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| format!("sub {sub:?} is not a service account"))?;
    let (namespace, name) = rest
        .split_once(':')
        .ok_or_else(|| format!("sub {sub:?} is not a service account"))?;
    ServiceAccount::new(namespace, name).map_err(|e| format!("sub {sub:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::{Jwks, service_account_of};

    #[test]
    fn sub_must_name_a_service_account() {
        let sa = service_account_of("system:serviceaccount:shop:orders").unwrap();
        assert_eq!((sa.namespace(), sa.name()), ("shop", "orders"));
        assert!(service_account_of("system:node:worker-1").is_err());
        assert!(service_account_of("system:serviceaccount:shop").is_err());
        assert!(service_account_of("system:serviceaccount:Shop:orders").is_err());
    }

    #[test]
    fn a_jwks_without_usable_keys_is_refused() {
        assert!(Jwks::parse("{}").is_err());
        assert!(Jwks::parse(r#"{"keys":[]}"#).is_err());
        let hmac = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(Jwks::parse(hmac).unwrap_err().contains("no RSA or P-256"));
    }
}
