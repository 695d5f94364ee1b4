//! `handshakes`: new mutual-TLS connections, one request each, against a TLS listener
//! (a graylane sidecar's inbound in mTLS mode, Envoy's TLS listener), for
//! `bench/proxy/mtls.sh`. The run reads the server's CPU-seconds around it.
//!
//! ```text
//!  --concurrency tasks, one thread ─► TCP connect ─► TLS 1.3 handshake, full (no
//!     resumption), client certificate, ALPN http/1.1 ─► GET / (Connection: close)
//!     ─► response read to the server's close ─► next connection
//! ```
//!
//! The server's certificate must chain to `--ca`; its name is not checked (mesh
//! certificates carry only a URI SAN), but with `--peer-identity URI` the leaf must
//! contain that URI (a byte search in its DER: the bench's stand-in for the SAN check,
//! which costs next to nothing beside the signatures). A request counts when the
//! response's status line is `HTTP/1.1 200`. Stops after `--connections` or
//! `--duration` seconds, whichever comes first. `--plaintext`: the same without TLS (new
//! TCP connections, the baseline; `--ca`, `--cert` and `--key` are then not read).
//! Prints one line:
//! `count= errors= wall_s= per_s= first_error=`.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// New mTLS connections, one request each; prints the count and the rate.
#[derive(Parser, Debug)]
struct Args {
    /// The TLS listener, IP:PORT.
    #[arg(long)]
    addr: SocketAddr,
    /// CA certificate(s) (PEM) the server's certificate must chain to.
    #[arg(long, required_unless_present = "plaintext")]
    ca: Option<PathBuf>,
    /// Client certificate chain (PEM), leaf first.
    #[arg(long, required_unless_present = "plaintext")]
    cert: Option<PathBuf>,
    /// Client private key (PEM: PKCS#8 or SEC1).
    #[arg(long, required_unless_present = "plaintext")]
    key: Option<PathBuf>,
    /// No TLS: new plaintext TCP connections, one request each.
    #[arg(long)]
    plaintext: bool,
    /// The URI the server's leaf certificate must carry (e.g. its SPIFFE id).
    #[arg(long)]
    peer_identity: Option<String>,
    /// SNI sent (graylane's inbound takes mesh mTLS for `<sa>.<ns>.identity.graylane.internal`).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Host header of the request.
    #[arg(long, default_value = "up")]
    host: String,
    /// ALPN protocol offered (the request is HTTP/1.1 either way).
    #[arg(long, default_value = "http/1.1")]
    alpn: String,
    /// Connections open at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Stop after this many connections (counting failures).
    #[arg(long, default_value_t = u64::MAX)]
    connections: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// One connection (connect to response end) taking longer is an error.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

/// WebPKI's chain check against `--ca`, without the DNS/IP name check; then the URI.
#[derive(Debug)]
struct MeshVerifier {
    inner: Arc<WebPkiServerVerifier>,
    identity: Option<Vec<u8>>,
}

impl ServerCertVerifier for MeshVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if let Some(want) = &self.identity {
            let der = end_entity.as_ref();
            if !der.windows(want.len()).any(|w| w == want.as_slice()) {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.concurrency > 0 && args.duration > 0 && args.timeout > 0,
        "--concurrency, --duration and --timeout must be positive"
    );
    let config = if args.plaintext {
        None
    } else {
        Some(Arc::new(client_config(&args)?))
    };
    // One thread: the run pins it to the load generator's core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run(args, config))
}

fn client_config(args: &Args) -> anyhow::Result<ClientConfig> {
    let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
        bail!("--ca, --cert and --key are required without --plaintext");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("--ca {}", ca.display()))?
    {
        roots.add(cert.context("--ca: a PEM certificate")?)?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("server verifier")?;
    let verifier = MeshVerifier {
        inner,
        identity: args.peer_identity.as_ref().map(|s| s.as_bytes().to_vec()),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .context("--cert: PEM certificates")?;
    ensure!(!chain.is_empty(), "--cert: no certificate");
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("--key {}", key.display()))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .context("client certificate and key")?;
    config.alpn_protocols = vec![args.alpn.as_bytes().to_vec()];
    // Every connection a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

struct Counters {
    started: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
}

async fn run(args: Args, config: Option<Arc<ClientConfig>>) -> anyhow::Result<()> {
    // The default provider of the process, for anything that asks for one.
    let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let args = Arc::new(args);
    let counters = Arc::new(Counters {
        started: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (args, config, counters, first_error) = (
            args.clone(),
            config.clone(),
            counters.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let connector = config.map(TlsConnector::from);
            let request = format!(
                "GET / HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
                args.host
            );
            while Instant::now() < deadline
                && counters.started.fetch_add(1, Ordering::Relaxed) < args.connections
            {
                let attempt = one(
                    connector.as_ref(),
                    &args.server_name,
                    args.addr,
                    request.as_bytes(),
                );
                let result = tokio::time::timeout(Duration::from_secs(args.timeout), attempt)
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                match result {
                    Ok(()) => counters.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| format!("{e:#}"));
                        counters.errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        task.await.context("connection task")?;
    }
    let wall = t0.elapsed().as_secs_f64();
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let first = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| "-".into());
    println!(
        "count={ok} errors={errors} wall_s={wall:.3} per_s={:.1} first_error={}",
        ok as f64 / wall,
        first.replace(' ', "_")
    );
    Ok(())
}

/// One connection: handshake (unless plaintext), one request, the response to the
/// server's close.
async fn one(
    connector: Option<&TlsConnector>,
    server_name: &str,
    addr: SocketAddr,
    request: &[u8],
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    match connector {
        Some(connector) => {
            let name = ServerName::try_from(server_name.to_owned()).context("--server-name")?;
            let tls = connector.connect(name, tcp).await.context("handshake")?;
            exchange(tls, request).await
        }
        None => exchange(tcp, request).await,
    }
}

async fn exchange<S>(mut stream: S, request: &[u8]) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await.context("write")?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify: the response is what counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("read"),
        }
    }
    if !response.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&response[..response.len().min(40)]).into_owned();
        bail!("response {head:?}");
    }
    Ok(())
}
