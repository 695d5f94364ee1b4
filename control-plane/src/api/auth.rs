//! Who is calling: `--token-file` bearer tokens and, with `--k8s-jwks`, Kubernetes
//! service-account tokens, checked before any handler runs. The interceptor leaves
//! its decision in the request's extensions as a [`Principal`] for the handlers.
//!
//! Token file: one line per token, blank lines and `#` comments skipped:
//! - `admin:TOKEN`: may change rules (and subscribe, for debugging);
//! - `viewer:TOKEN`: may read through the admin API (gRPC and HTTP), never write or
//!   subscribe;
//! - `sidecar:TOKEN`: may subscribe, unbound (gets the identity it asks for);
//! - `sidecar:TOKEN:NAMESPACE/SERVICE-ACCOUNT`: may subscribe as exactly that identity.

use std::sync::Arc;

use tonic::Status;
use tonic::service::Interceptor;

use super::identity::ServiceAccount;
use super::jwt::Jwks;

/// What a credential may do. `Admin` may also subscribe (for debugging with a client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    /// Reads only: every admin read, no write, no discovery stream.
    Viewer,
    Sidecar,
}

impl Role {
    /// As written in the token file and recorded in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Viewer => "viewer",
            Self::Sidecar => "sidecar",
        }
    }
}

/// What the interceptor decided about a call, in its extensions for the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// The one identity this credential may have; `None`: whatever it asks for (an
    /// unbound token, an admin, or a server without credentials).
    pub bound: Option<ServiceAccount>,
    /// A credential was presented (false: a server without credentials, where anyone
    /// may do anything, a workload identity included).
    pub presented: bool,
}

impl Principal {
    /// The principal of a server without credentials (loopback only): may do anything.
    pub(crate) fn anyone() -> Self {
        Self {
            role: Role::Admin,
            bound: None,
            presented: false,
        }
    }
}

/// The accepted credentials; `None` in `Auth` means the server runs without any.
#[derive(Default)]
pub struct Tokens {
    lines: Vec<(Role, String, Option<ServiceAccount>)>,
    jwks: Option<Jwks>,
}

impl std::fmt::Debug for Tokens {
    // Never print a token: only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("lines", &self.lines.len())
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl Tokens {
    /// The credentials of `--token-file` and `--k8s-jwks`, read and checked; `None`
    /// when neither is given (every call accepted). The error names the flag.
    pub fn load(
        token_file: Option<&std::path::Path>,
        jwks: Option<&std::path::Path>,
    ) -> Result<Option<Self>, String> {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let mut tokens = match token_file {
            Some(path) => Self::parse(&read("--token-file", path)?)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?,
            None => Self::default(),
        };
        if let Some(path) = jwks {
            let keys = Jwks::parse(&read("--k8s-jwks", path)?)
                .map_err(|e| format!("--k8s-jwks {}: {e}", path.display()))?;
            tokens = tokens.with_jwks(keys);
        }
        if tokens.has_unbound_sidecar() {
            tracing::warn!(
                "--token-file has unbound sidecar tokens (sidecar:TOKEN): their holders get any identity they ask for; bind them (sidecar:TOKEN:NAMESPACE/SERVICE-ACCOUNT) outside local runs"
            );
        }
        Ok((token_file.is_some() || jwks.is_some()).then_some(tokens))
    }

    /// Parses a token file; the error names the line. A token on two lines is
    /// refused: which role it carries would depend on the order of the lines.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines: Vec<(Role, String, Option<ServiceAccount>)> = Vec::new();
        let mut first_line = std::collections::HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            if let Some(first) = first_line.insert(parsed.1.clone(), i + 1) {
                return Err(format!(
                    "line {}: the token of line {first} again; give each token one line",
                    i + 1
                ));
            }
            lines.push(parsed);
        }
        if lines.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Self { lines, jwks: None })
    }

    /// Also accept service-account tokens signed by one of `jwks`' keys.
    pub fn with_jwks(mut self, jwks: Jwks) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Whether some `sidecar:` line lets its holder pick any identity.
    pub fn has_unbound_sidecar(&self) -> bool {
        self.lines
            .iter()
            .any(|(role, _, bound)| *role == Role::Sidecar && bound.is_none())
    }

    /// Who `presented` (a bearer token, without `Bearer `) is; UNAUTHENTICATED when
    /// no credential matches.
    pub(crate) fn principal_of(&self, presented: &[u8]) -> Result<Principal, Status> {
        // Compare every token in full so timing does not reveal a matching prefix.
        let mut found = None;
        for (role, token, bound) in &self.lines {
            if constant_time_eq(token.as_bytes(), presented) {
                found = Some(Principal {
                    role: *role,
                    bound: bound.clone(),
                    presented: true,
                });
            }
        }
        if let Some(principal) = found {
            return Ok(principal);
        }
        match (&self.jwks, std::str::from_utf8(presented)) {
            // A JWT is three base64url parts; its header always starts `{"` → `eyJ`.
            (Some(jwks), Ok(token))
                if token.starts_with("eyJ") && token.split('.').count() == 3 =>
            {
                let account = jwks.verify(token).map_err(|why| {
                    Status::unauthenticated(format!("service-account token refused: {why}"))
                })?;
                // Never admin: a pod's token only ever speaks for that pod.
                Ok(Principal {
                    role: Role::Sidecar,
                    bound: Some(account),
                    presented: true,
                })
            }
            _ => Err(Status::unauthenticated("invalid token")),
        }
    }
}

/// One `role:token[:namespace/service-account]` line.
fn parse_line(line: &str) -> Result<(Role, String, Option<ServiceAccount>), String> {
    let (role, rest) = line
        .split_once(':')
        .ok_or("expected role:token or sidecar:token:namespace/service-account")?;
    let role = match role.trim() {
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        "sidecar" => Role::Sidecar,
        other => return Err(format!("unknown role {other:?} (admin, viewer or sidecar)")),
    };
    // A binding is the last `:`-field and holds a `/`; a token may contain `:` itself.
    let (token, bound) = match rest.rsplit_once(':') {
        Some((token, binding)) if binding.contains('/') => {
            let (ns, sa) = binding.trim().split_once('/').unwrap_or_default();
            let account = ServiceAccount::new(ns, sa)
                .map_err(|e| format!("binding {:?}: {e}", binding.trim()))?;
            if role != Role::Sidecar {
                return Err(format!(
                    "{} tokens cannot be bound to an identity (only sidecar tokens)",
                    role.as_str()
                ));
            }
            (token, Some(account))
        }
        _ => (rest, None),
    };
    let token = token.trim();
    if token.len() < 16 {
        return Err("token shorter than 16 characters".into());
    }
    Ok((role, token.to_string(), bound))
}

/// The token of an `Authorization: Bearer <token>` value, gRPC's and HTTP's alike. The
/// scheme is matched in any case (RFC 9110 §11.1): `BEARER x` is the same credential.
pub(crate) fn bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = header.get(..SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| &header[SCHEME.len()..])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tonic interceptor requiring `need` (admin calls) or any role (discovery).
#[derive(Clone)]
pub struct Auth {
    tokens: Option<Arc<Tokens>>,
    need: Role,
}

impl Auth {
    pub fn new(tokens: Option<Arc<Tokens>>, need: Role) -> Self {
        Self { tokens, need }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let principal = match &self.tokens {
            // No credentials configured (loopback only): anyone may do anything.
            None => Principal::anyone(),
            Some(tokens) => {
                let header = request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.as_bytes());
                let presented = header.and_then(bearer).ok_or_else(|| {
                    Status::unauthenticated("missing bearer token (authorization: Bearer <token>)")
                })?;
                tokens.principal_of(presented)?
            }
        };
        // The admin service lets viewers in and refuses their writes itself (it knows
        // which calls write); a viewer never gets a stream, nor a certificate.
        match (self.need, principal.role) {
            (Role::Admin, Role::Sidecar) => {
                return Err(Status::permission_denied(
                    "a sidecar token may not call the admin API",
                ));
            }
            (Role::Sidecar, Role::Viewer) => {
                return Err(Status::permission_denied(
                    "a viewer token may only read the admin API",
                ));
            }
            _ => {}
        }
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

#[cfg(test)]
mod tests;
