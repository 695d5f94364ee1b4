//! Connecting to the control plane: each `--server` URL in turn, with the bearer
//! token and the user's name on every call.

use std::path::PathBuf;
use std::time::Duration;

use graylane_proto::v1::admin_client::AdminClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::CliError;
use crate::api::USER_METADATA;

/// How to reach the control plane (flags, not yet connected).
#[derive(Clone, Debug)]
pub(crate) struct Connect {
    pub(crate) servers: String,
    pub(crate) token_file: Option<PathBuf>,
}

type Inner = AdminClient<InterceptedService<Channel, Credentials>>;

/// A connected admin client.
pub type Client = Inner;

/// Adds `authorization` and `x-graylane-user` to every call.
#[derive(Clone)]
pub struct Credentials {
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    user: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        if let Some(user) = &self.user {
            request.metadata_mut().insert(USER_METADATA, user.clone());
        }
        Ok(request)
    }
}

/// `user@host` for history, from the environment (best effort).
fn user() -> Option<MetadataValue<tonic::metadata::Ascii>> {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{name}@{}", host.trim()).parse().ok()
}

impl Connect {
    fn credentials(&self) -> Result<Credentials, CliError> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::usage(format!("--token-file {}: {e}", path.display()))
                })?;
                let value = format!("Bearer {}", text.trim()).parse().map_err(|_| {
                    CliError::usage(format!(
                        "--token-file {}: the token has characters a header cannot carry",
                        path.display()
                    ))
                })?;
                Some(value)
            }
            None => None,
        };
        Ok(Credentials {
            token,
            user: user(),
        })
    }

    /// Connects to the first server that answers.
    pub(crate) async fn client(&self) -> Result<Client, CliError> {
        let credentials = self.credentials()?;
        let mut failures = Vec::new();
        for url in self
            .servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let endpoint = Endpoint::from_shared(url.to_string())
                .map_err(|e| CliError::usage(format!("--server {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60));
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(AdminClient::with_interceptor(channel, credentials)
                        .max_decoding_message_size(64 * 1024 * 1024)
                        .max_encoding_message_size(64 * 1024 * 1024));
                }
                Err(e) => failures.push(format!("{url}: {}", source_chain(&e))),
            }
        }
        if failures.is_empty() {
            return Err(CliError::usage("--server: no URL given"));
        }
        Err(CliError::unavailable(format!(
            "cannot reach the control plane ({})",
            failures.join("; ")
        )))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // hyper and tonic wrap errors in layers that repeat the inner message.
        let inner = s.to_string();
        if !text.contains(&inner) {
            text = format!("{text}: {inner}");
        }
        source = s.source();
    }
    text
}
