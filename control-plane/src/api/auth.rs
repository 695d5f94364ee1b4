//! `--token-file`: bearer tokens with a role, checked before any handler runs.
//!
//! File format: one `role:token` per line (`admin` may change rules, `sidecar` may
//! subscribe); blank lines and `#` comments are skipped.

use std::sync::Arc;

use tonic::Status;
use tonic::service::Interceptor;

/// What a token may do. `Admin` may also subscribe (for debugging with a client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Sidecar,
}

/// The accepted tokens; `None` in `Auth` means the server runs without tokens.
#[derive(Debug)]
pub struct Tokens(Vec<(Role, String)>);

impl Tokens {
    /// Parses a token file; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (role, token) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected role:token", i + 1))?;
            let role = match role.trim() {
                "admin" => Role::Admin,
                "sidecar" => Role::Sidecar,
                other => {
                    return Err(format!(
                        "line {}: unknown role {other:?} (admin or sidecar)",
                        i + 1
                    ));
                }
            };
            let token = token.trim();
            if token.len() < 16 {
                return Err(format!("line {}: token shorter than 16 characters", i + 1));
            }
            tokens.push((role, token.to_string()));
        }
        if tokens.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Self(tokens))
    }

    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        // Compare every token in full so timing does not reveal a matching prefix.
        let mut found = None;
        for (role, token) in &self.0 {
            if constant_time_eq(token.as_bytes(), presented) {
                found = Some(*role);
            }
        }
        found
    }
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
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let presented = header
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .ok_or_else(|| {
                Status::unauthenticated("missing bearer token (authorization: Bearer <token>)")
            })?;
        match (tokens.role_of(presented), self.need) {
            (None, _) => Err(Status::unauthenticated("invalid token")),
            (Some(Role::Sidecar), Role::Admin) => Err(Status::permission_denied(
                "a sidecar token may not call the admin API",
            )),
            (Some(_), _) => Ok(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_rejects_bad_lines() {
        let tokens = Tokens::parse(
            "# comment\nadmin:aaaaaaaaaaaaaaaaaaaa\n\nsidecar: bbbbbbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(tokens.role_of(b"aaaaaaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(tokens.role_of(b"bbbbbbbbbbbbbbbbbbbb"), Some(Role::Sidecar));
        assert_eq!(tokens.role_of(b"bbbbbbbbbbbbbbbbbbb"), None);
        assert!(
            Tokens::parse("root:aaaaaaaaaaaaaaaaaaaa")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            Tokens::parse("admin:short")
                .unwrap_err()
                .contains("shorter")
        );
        assert!(Tokens::parse("\n# only a comment\n").is_err());
    }

    fn call(auth: &mut Auth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = tonic::Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn sidecar_token_is_denied_admin_calls() {
        let tokens = Arc::new(
            Tokens::parse("admin:aaaaaaaaaaaaaaaaaaaa\nsidecar:bbbbbbbbbbbbbbbbbbbb").unwrap(),
        );
        let mut admin = Auth::new(Some(Arc::clone(&tokens)), Role::Admin);
        let mut discovery = Auth::new(Some(tokens), Role::Sidecar);
        assert_eq!(call(&mut admin, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&mut admin, Some("Bearer nope")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut admin, Some("Bearer bbbbbbbbbbbbbbbbbbbb")),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            call(&mut admin, Some("Bearer aaaaaaaaaaaaaaaaaaaa")),
            Ok(())
        );
        assert_eq!(
            call(&mut discovery, Some("Bearer bbbbbbbbbbbbbbbbbbbb")),
            Ok(())
        );
        assert_eq!(
            call(&mut discovery, Some("Bearer aaaaaaaaaaaaaaaaaaaa")),
            Ok(())
        );
    }
}
