//! Connecting to the control plane: each `--server` URL in turn, with the bearer
//! token and the user's name on every call.

use std::path::PathBuf;
use std::time::Duration;

use graylane_proto::v1::admin_client::AdminClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::CliError;
use crate::api::USER_METADATA;

/// How to reach the control plane, as [`resolve`](super::config::resolve) decided
/// from the flags, the environment and the config file; not yet connected.
#[derive(Clone, Debug)]
pub(crate) struct Connect {
    pub(crate) servers: String,
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificates (PEM) for `https://` servers.
    pub(crate) ca_bundle: Option<PathBuf>,
    /// `-n NAMESPACE`, when given.
    pub(crate) namespace: Option<String>,
    /// The context's `namespace`, when it has one.
    pub(crate) context_namespace: Option<String>,
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
    /// The namespace a command means, as kubectl: `-n`, else the context's, else
    /// `default`.
    pub(crate) fn namespace(&self) -> &str {
        self.namespace_filter()
            .unwrap_or(graylane_routing::DEFAULT_NAMESPACE)
    }

    /// The namespace a listing is limited to: `-n`, else the context's; `None` lists
    /// every namespace.
    pub(crate) fn namespace_filter(&self) -> Option<&str> {
        self.namespace
            .as_deref()
            .or(self.context_namespace.as_deref())
    }

    fn credentials(&self) -> Result<Credentials, CliError> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::usage(format!("token file {}: {e}", path.display())))?;
                let value = format!("Bearer {}", text.trim()).parse().map_err(|_| {
                    CliError::usage(format!(
                        "token file {}: the token has characters a header cannot carry",
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

    /// TLS for `https://` servers: TLS 1.2+ (rustls) trusting only `ca_bundle`. An
    /// `https://` URL without one is refused, never sent in plaintext.
    fn tls(&self) -> Result<ClientTlsConfig, CliError> {
        let path = self.ca_bundle.as_ref().ok_or_else(|| {
            CliError::usage(
                "an https:// --server needs --ca-bundle PEM (or GRAYLANE_CA_BUNDLE, or a \
                 context's caBundle): the CLI trusts no CA by default and never falls back \
                 to plaintext",
            )
        })?;
        let pem = std::fs::read(path)
            .map_err(|e| CliError::usage(format!("--ca-bundle {}: {e}", path.display())))?;
        Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
    }

    /// Connects to the first server that answers.
    pub(crate) async fn client(&self) -> Result<Client, CliError> {
        let credentials = self.credentials()?;
        let mut failures = Vec::new();
        // Servers that answered, but not as graylane-control's gRPC API.
        let mut foreign = Vec::new();
        // A replica that answered but is not ready (e.g. cut off from etcd): used only
        // when no other one is ready.
        let mut unready = None;
        // `localhost:15010` is what people type; gRPC without TLS is `http://`. Every
        // URL is read before any is dialled: a typo is a usage error, whichever place.
        let urls = graylane_proto::control_plane_urls(&self.servers)
            .map_err(|e| CliError::usage(format!("--server {e}")))?;
        for graylane_proto::GrpcUrl { url, tls } in urls {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| CliError::usage(format!("--server {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60));
            if tls {
                endpoint = endpoint
                    .tls_config(self.tls()?)
                    .map_err(|e| CliError::usage(format!("--server {url:?}: {e}")))?;
            }
            let channel = match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    failures.push(format!("{url}: {}", source_chain(&e)));
                    continue;
                }
            };
            let mut client = AdminClient::with_interceptor(channel, credentials.clone())
                .max_decoding_message_size(crate::api::MAX_MESSAGE)
                .max_encoding_message_size(crate::api::MAX_MESSAGE);
            match probe(&mut client).await {
                Ok(()) => return Ok(client),
                Err(Probe::NotReady) => {
                    unready.get_or_insert(client);
                }
                Err(Probe::Foreign(why)) => foreign.push(format!("{url}: {why}")),
                Err(Probe::Unavailable(why)) => failures.push(format!("{url}: {why}")),
            }
        }
        // No replica is ready: the first that answered still serves what it can, and
        // reports its store's failure on the calls that need it.
        if let Some(client) = unready {
            return Ok(client);
        }
        if !foreign.is_empty() {
            return Err(CliError::unavailable(format!(
                "this is not graylane-control's gRPC port (--server names its --grpc-addr, \
                 default 127.0.0.1:15010): {}",
                foreign.join("; ")
            )));
        }
        Err(CliError::unavailable(format!(
            "cannot reach the control plane ({})",
            failures.join("; ")
        )))
    }
}

/// How long the probe waits for a server's Version answer.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// Why a connected server cannot be used.
enum Probe {
    /// It answers, but not as graylane-control's gRPC API.
    Foreign(String),
    /// It is graylane-control, or may be, and cannot answer now.
    Unavailable(String),
    /// It is graylane-control and answers, but says it is not ready (its store is
    /// unavailable, say).
    NotReady,
}

/// One cheap call before the real one, so that a wrong port (the control plane's HTTP
/// port, a sidecar's, anything else) is named as such rather than surfacing as a
/// transport error from the middle of hyper. An auth refusal proves it is graylane:
/// the real call then reports it with its hint.
async fn probe(client: &mut Client) -> Result<(), Probe> {
    use tonic::Code;
    let call = client.version(graylane_proto::v1::VersionRequest {});
    // A replica answers Version within its 3 s wait on the store (`READY_WAIT`): one
    // silent past 5 s is hung, and the next --server is asked.
    let status = match tokio::time::timeout(PROBE_WAIT, call).await {
        Ok(Ok(answer)) => {
            return if answer.into_inner().not_ready.is_empty() {
                Ok(())
            } else {
                Err(Probe::NotReady)
            };
        }
        Ok(Err(status)) => status,
        Err(_) => {
            let why = format!("no answer within {}s", PROBE_WAIT.as_secs());
            return Err(Probe::Unavailable(why));
        }
    };
    // A gRPC server always sends `grpc-status`; without one, tonic makes a status up
    // with one of these messages (from the HTTP status, a body that is not gRPC
    // framing, or a dropped connection), which graylane-control never sends itself.
    let message = status.message();
    let made_up = message == "transport error"
        || message.starts_with("grpc-status header missing")
        || message.starts_with("protocol error:");
    if made_up {
        let why = if message == "transport error" {
            "it dropped the connection on a gRPC call (an HTTP/1 server?)".to_owned()
        } else {
            first_line(message)
        };
        return Err(Probe::Foreign(why));
    }
    // A graylane sidecar's listener answers a gRPC call it cannot route in gRPC's
    // form, marked as its own.
    if status.metadata().contains_key("graylane-error") {
        let why = format!("a graylane sidecar answered: {}", first_line(message));
        return Err(Probe::Foreign(why));
    }
    match status.code() {
        // UNIMPLEMENTED is a real gRPC server: a graylane-control older than the
        // Version call still serves every other call, so it is let through (a call
        // it lacks is reported by `CliError::from`).
        Code::Ok | Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => Ok(()),
        _ => Err(Probe::Unavailable(status.message().into())),
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_owned()
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
