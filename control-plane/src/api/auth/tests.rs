use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use tonic::service::Interceptor;

use super::{Auth, Principal, Role, Tokens};
use crate::api::identity::ServiceAccount;
use crate::api::jwt::Jwks;

const ADMIN: &str = "aaaaaaaaaaaaaaaaaaaa";
const SIDECAR: &str = "bbbbbbbbbbbbbbbbbbbb";
const BOUND: &str = "cccccccccccccccccccc";

fn call(auth: &mut Auth, header: Option<&str>) -> Result<Principal, tonic::Code> {
    let mut request = tonic::Request::new(());
    if let Some(h) = header {
        request
            .metadata_mut()
            .insert("authorization", h.parse().unwrap());
    }
    auth.call(request)
        .map(|r| r.extensions().get::<Principal>().cloned().unwrap())
        .map_err(|s| s.code())
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[test]
fn parses_roles_and_bindings_and_rejects_bad_lines() {
    let tokens = Tokens::parse(&format!(
        "# comment\nadmin:{ADMIN}\n\nsidecar: {SIDECAR}\nsidecar:{BOUND}:shop/orders\n"
    ))
    .unwrap();
    assert!(tokens.has_unbound_sidecar());
    let of = |t: &str| tokens.principal_of(t.as_bytes()).map_err(|s| s.code());
    assert_eq!(of(ADMIN).unwrap().role, Role::Admin);
    assert_eq!(of(SIDECAR).unwrap().bound, None);
    let bound = of(BOUND).unwrap();
    assert_eq!(bound.role, Role::Sidecar);
    assert_eq!(
        bound.bound,
        Some(ServiceAccount::new("shop", "orders").unwrap())
    );
    assert_eq!(of(&SIDECAR[1..]), Err(tonic::Code::Unauthenticated));

    let err = |text: &str| Tokens::parse(text).unwrap_err();
    assert!(err(&format!("root:{ADMIN}")).contains("line 1"));
    assert!(err("admin:short").contains("shorter"));
    assert!(err("\n# only a comment\n").contains("no tokens"));
    let typo = err(&format!("admin:{ADMIN}\nsidecar:{BOUND}:Shop/orders"));
    assert!(
        typo.contains("line 2") && typo.contains("Shop/orders"),
        "{typo}"
    );
    assert!(err(&format!("sidecar:{BOUND}:shop/")).contains("line 1"));
    assert!(err(&format!("admin:{ADMIN}:shop/orders")).contains("admin"));
    let only_bound = Tokens::parse(&format!("sidecar:{BOUND}:shop/orders")).unwrap();
    assert!(!only_bound.has_unbound_sidecar());
}

#[test]
fn sidecar_token_is_denied_admin_calls() {
    let tokens = Arc::new(Tokens::parse(&format!("admin:{ADMIN}\nsidecar:{SIDECAR}")).unwrap());
    let mut admin = Auth::new(Some(Arc::clone(&tokens)), Role::Admin);
    let mut discovery = Auth::new(Some(tokens), Role::Sidecar);
    assert_eq!(call(&mut admin, None), Err(tonic::Code::Unauthenticated));
    assert_eq!(
        call(&mut admin, Some("Bearer nope")),
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        call(&mut admin, bearer(SIDECAR).as_deref()),
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        call(&mut admin, bearer(ADMIN).as_deref()).unwrap().role,
        Role::Admin
    );
    assert_eq!(
        call(&mut discovery, bearer(SIDECAR).as_deref())
            .unwrap()
            .role,
        Role::Sidecar
    );
    assert!(call(&mut discovery, bearer(ADMIN).as_deref()).is_ok());
}

#[test]
fn a_viewer_reaches_the_admin_service_but_never_a_stream() {
    const VIEWER: &str = "dddddddddddddddddddd";
    let tokens = Arc::new(Tokens::parse(&format!("admin:{ADMIN}\nviewer:{VIEWER}")).unwrap());
    let mut admin = Auth::new(Some(Arc::clone(&tokens)), Role::Admin);
    let mut discovery = Auth::new(Some(tokens), Role::Sidecar);
    // The admin service refuses a viewer's writes itself (it knows which calls write).
    assert_eq!(
        call(&mut admin, bearer(VIEWER).as_deref()).unwrap().role,
        Role::Viewer
    );
    assert_eq!(
        call(&mut discovery, bearer(VIEWER).as_deref()),
        Err(tonic::Code::PermissionDenied)
    );
    let err = Tokens::parse(&format!("viewer:{VIEWER}:shop/orders")).unwrap_err();
    assert!(err.contains("viewer tokens cannot be bound"), "{err}");
}

#[test]
fn without_credentials_everyone_is_an_unbound_admin() {
    let mut auth = Auth::new(None, Role::Admin);
    assert_eq!(
        call(&mut auth, None),
        Ok(Principal {
            role: Role::Admin,
            bound: None,
            presented: false,
        })
    );
}

/// A P-256 key, its JWKS (kid `k1`) and a signer.
fn es256_issuer() -> (EncodingKey, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","x":"{}","y":"{}"}}]}}"#,
        b64(&raw[1..33]),
        b64(&raw[33..65])
    );
    (EncodingKey::from_ec_der(&key.serialize_der()), jwks)
}

fn jwt(key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[test]
fn a_service_account_token_is_a_bound_sidecar_and_never_admin() {
    let (key, jwks) = es256_issuer();
    let tokens = Arc::new(Tokens::default().with_jwks(Jwks::parse(&jwks).unwrap()));
    let mut discovery = Auth::new(Some(Arc::clone(&tokens)), Role::Sidecar);
    let mut admin = Auth::new(Some(tokens), Role::Admin);
    let claims = |sub: &str, aud: &str, exp: i64, nbf: i64| serde_json::json!({"sub": sub, "aud": [aud], "exp": exp, "nbf": nbf, "iat": now()});
    let good = jwt(
        &key,
        &claims(
            "system:serviceaccount:shop:orders",
            "graylane",
            now() + 600,
            now() - 10,
        ),
    );
    let principal = call(&mut discovery, bearer(&good).as_deref()).unwrap();
    assert_eq!(
        principal,
        Principal {
            role: Role::Sidecar,
            bound: Some(ServiceAccount::new("shop", "orders").unwrap()),
            presented: true,
        }
    );
    assert_eq!(
        call(&mut admin, bearer(&good).as_deref()),
        Err(tonic::Code::PermissionDenied)
    );
    let sa = "system:serviceaccount:shop:orders";
    for bad in [
        claims(sa, "graylane", now() - 600, now() - 1200),
        claims(sa, "graylane", now() + 1200, now() + 600),
        claims(sa, "kubernetes", now() + 600, now() - 10),
        claims("system:node:n1", "graylane", now() + 600, now() - 10),
    ] {
        let token = jwt(&key, &bad);
        assert_eq!(
            call(&mut discovery, bearer(&token).as_deref()),
            Err(tonic::Code::Unauthenticated),
            "{bad}"
        );
    }
    let (other, _) = es256_issuer();
    let forged = jwt(&other, &claims(sa, "graylane", now() + 600, now() - 10));
    assert_eq!(
        call(&mut discovery, bearer(&forged).as_deref()),
        Err(tonic::Code::Unauthenticated)
    );
    // `alg: none`: the good token's claims without a signature.
    let payload = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
    assert_eq!(
        call(&mut discovery, bearer(&none).as_deref()),
        Err(tonic::Code::Unauthenticated)
    );
}

#[test]
fn the_bearer_scheme_is_read_in_any_case() {
    for header in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR tok"] {
        assert_eq!(
            super::bearer(header.as_bytes()),
            Some(&b"tok"[..]),
            "{header}"
        );
    }
    for header in ["Basic tok", "Bearertok", "Bearer", "", "Token tok"] {
        assert_eq!(super::bearer(header.as_bytes()), None, "{header}");
    }
}

#[test]
fn a_token_on_two_lines_is_refused_naming_both() {
    let twice = format!("viewer:{ADMIN}\n# the same one\nadmin:{ADMIN}\n");
    let e = Tokens::parse(&twice).unwrap_err();
    assert!(e.contains("line 3") && e.contains("line 1"), "{e}");
}
