//! The control plane as etcd's only client over TLS: a real etcd (Debian's) with a
//! server certificate and `--client-cert-auth`; certificates made here with the
//! `openssl` command. The right client certificate applies and serves rules; none, or
//! one from another CA, leaves the control plane unready saying etcd TLS failed; flags
//! that cannot work are refused at start, naming the flag.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use graylane_tests::{ControlPlane, Proc, bin, eventually, http_get, write_file};

/// A CA and the certificates it signed, as PEM files in one directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A fresh CA (ECDSA P-256) named `name`.
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.openssl_req(
            "ca",
            &format!("{name} CA"),
            "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
            false,
        );
        pki
    }

    /// A server certificate for 127.0.0.1 (etcd's client URL). Also for clients:
    /// etcd's own gRPC gateway dials etcd with it, and `--client-cert-auth` checks it.
    fn server(&self) -> (String, String) {
        self.leaf(
            "server",
            "etcd",
            "serverAuth,clientAuth",
            "subjectAltName = IP:127.0.0.1\n",
        )
    }

    /// A client certificate (what graylane-control shows etcd).
    fn client(&self, name: &str) -> (String, String) {
        self.leaf(name, "graylane-control", "clientAuth", "")
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    fn leaf(&self, name: &str, cn: &str, usage: &str, extra: &str) -> (String, String) {
        self.openssl_req(
            name,
            cn,
            &format!(
                "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = {usage}\nauthorityKeyIdentifier = keyid\n{extra}"
            ),
            true,
        );
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }

    /// `openssl req -x509` with exactly the extensions given (a config of our own, so
    /// the system's default `v3_ca` section cannot make a leaf a CA).
    fn openssl_req(&self, name: &str, cn: &str, extensions: &str, signed_by_ca: bool) {
        let config = write_file(
            &self.dir,
            &format!("{name}.cnf"),
            &format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {cn}\n[ext]\n{extensions}"
            ),
        );
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-config", &config, "-extensions", "ext"])
            .args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-days", "1"])
            .arg("-keyout")
            .arg(self.dir.join(format!("{name}-key.pem")))
            .arg("-out")
            .arg(self.dir.join(format!("{name}.pem")));
        if signed_by_ca {
            cmd.arg("-CA")
                .arg(self.dir.join("ca.pem"))
                .arg("-CAkey")
                .arg(self.dir.join("ca-key.pem"));
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run openssl");
        assert!(out.status.success(), "openssl: {out:?}");
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

/// A one-member etcd serving clients over TLS only, checking client certificates
/// against `pki`'s CA; `/health` on a plaintext metrics URL (as in the manifests).
struct TlsEtcd {
    _proc: Proc,
    client: SocketAddr,
}

/// A loopback port that was free a moment ago (etcd cannot bind port 0 and report it).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

impl TlsEtcd {
    fn start(dir: &Path, pki: &Pki) -> TlsEtcd {
        let (cert, key) = pki.server();
        Self::start_with(dir, &pki.ca(), &cert, &key)
    }

    /// With these PEM files: the CA clients must chain to, the server's certificate
    /// and key.
    fn start_with(dir: &Path, ca: &str, cert: &str, key: &str) -> TlsEtcd {
        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "tls0"])
            .arg("--data-dir")
            .arg(dir.join("etcd-tls.data"))
            .args(["--listen-client-urls", &format!("https://{client}")])
            .args(["--advertise-client-urls", &format!("https://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("tls0=http://{peer}")])
            .args(["--listen-metrics-urls", &format!("http://{metrics}")])
            .args(["--cert-file", cert, "--key-file", key])
            .args(["--client-cert-auth", "--trusted-ca-file", ca])
            .args(["--logger", "zap", "--log-level", "warn"]);
        let proc = Proc::spawn("etcd-tls", cmd, dir.join("etcd-tls.log"));
        eventually(Duration::from_secs(30), "etcd (TLS) to be healthy", || {
            let (status, body) = http_get(metrics, "/health");
            (status == 200 && body.contains("true")).then_some(())
        });
        TlsEtcd {
            _proc: proc,
            client,
        }
    }

    fn store(&self) -> String {
        format!("etcd+https://{}", self.client)
    }
}

const LANE: &str = "apiVersion: graylane.io/v1\nkind: Lane\nmetadata:\n  name: gray\nspec:\n  tag: gray\n  selector: {version: v2}\n  fallback: [base]\n";

/// `/ready`'s answer once it names every one of `words` as the cause; it must never
/// be ready meanwhile (the first calls may fail in other ways before the handshake).
fn unready_naming(cp: &ControlPlane, words: &[&str]) -> String {
    eventually(
        Duration::from_secs(15),
        &format!("/ready to name {words:?}"),
        || {
            let (status, body) = http_get(cp.http, "/ready");
            assert_ne!(status, 200, "ready without a usable etcd: {body}");
            words.iter().all(|w| body.contains(w)).then_some(body)
        },
    )
}

#[test]
fn with_the_right_client_certificate_rules_are_applied_and_served_over_etcd_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "etcd");
    let etcd = TlsEtcd::start(dir.path(), &pki);
    let (cert, key) = pki.client("control");
    let flags = [
        "--etcd-ca",
        &pki.ca(),
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ];
    let a = ControlPlane::start_store_unready(dir.path(), &etcd.store(), &flags);
    a.wait_ready();
    let file = write_file(dir.path(), "gray.yaml", LANE);
    a.cli(&["rules", "apply", "-f", &file]).assert_ok();
    // A second replica reads them back from etcd (nothing but etcd is shared).
    let b = ControlPlane::start_store_unready(dir.path(), &etcd.store(), &flags);
    b.wait_ready();
    let rules = b.cli(&["rules", "get", "-o", "json"]).json();
    assert_eq!(rules["revision"].as_u64(), Some(1), "{rules}");
    assert!(rules.to_string().contains("gray"), "{rules}");
    // And etcd speaks nothing but TLS on that port: plaintext gets no ready store.
    let plain =
        ControlPlane::start_store_unready(dir.path(), &format!("etcd://{}", etcd.client), &[]);
    unready_naming(&plain, &["etcd"]);
}

#[test]
fn no_client_certificate_or_one_from_another_ca_leaves_it_unready_naming_etcd_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "etcd");
    let other = Pki::new(dir.path(), "other");
    let etcd = TlsEtcd::start(dir.path(), &pki);
    let (foreign_cert, foreign_key) = other.client("foreign");
    let (cert, key) = pki.client("control");
    let (ca, other_ca) = (pki.ca(), other.ca());
    let cases: [(&str, Vec<&str>); 3] = [
        ("no client certificate", vec!["--etcd-ca", &ca]),
        (
            "a client certificate from another CA",
            vec![
                "--etcd-ca",
                &ca,
                "--etcd-cert",
                &foreign_cert,
                "--etcd-key",
                &foreign_key,
            ],
        ),
        (
            "etcd's certificate checked against another CA",
            vec![
                "--etcd-ca",
                &other_ca,
                "--etcd-cert",
                &cert,
                "--etcd-key",
                &key,
            ],
        ),
    ];
    let started: Vec<(&str, ControlPlane)> = cases
        .iter()
        .map(|(case, flags)| {
            let cp = ControlPlane::start_store_unready(dir.path(), &etcd.store(), flags);
            (*case, cp)
        })
        .collect();
    for (case, cp) in &started {
        // Our side rejects etcd's certificate during the handshake: said exactly. etcd
        // rejecting ours (TLS 1.3: after our side of the handshake) reaches us as a
        // closed connection, which the message explains.
        let reason = match *case {
            "etcd's certificate checked against another CA" => {
                unready_naming(cp, &["etcd TLS", "UnknownIssuer", "--etcd-ca"])
            }
            _ => unready_naming(cp, &["etcd", "TLS", "client certificate", "--etcd-cert"]),
        };
        eprintln!("{case}: {reason}");
        let file = write_file(dir.path(), "gray.yaml", LANE);
        let apply = cp.cli(&["rules", "apply", "-f", &file]);
        assert_ne!(apply.code, 0, "{case}: {apply:?}");
    }
}

/// A child killed on drop, so a start that is not refused cannot outlive the test.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs graylane-control with `args`, expecting it to exit at start: (code, output).
fn refused(dir: &Path, n: usize, args: &[&str]) -> (i32, String) {
    let log = dir.join(format!("refused-{n}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin("graylane-control"))
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let status = eventually(Duration::from_secs(10), "graylane-control to exit", || {
        child.0.try_wait().unwrap()
    });
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(log).unwrap(),
    )
}

#[test]
fn flags_that_cannot_work_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "etcd");
    let other = Pki::new(dir.path(), "other");
    let (cert, key) = pki.client("control");
    let (_, other_key) = other.client("foreign");
    let not_pem = write_file(dir.path(), "not.pem", "hello\n");
    let ca = pki.ca();
    let https = "etcd+https://127.0.0.1:2379";
    let cases: [(Vec<&str>, &str); 7] = [
        (vec!["--store", https], "--etcd-ca"),
        (vec!["--store", https, "--etcd-ca", &not_pem], "--etcd-ca"),
        (
            vec!["--store", "memory:", "--etcd-ca", &ca],
            "--etcd-ca/--etcd-cert/--etcd-key are for --store etcd+https://",
        ),
        (
            vec!["--store", "etcd://https://127.0.0.1:2379"],
            "etcd+https://",
        ),
        (
            vec!["--store", https, "--etcd-ca", &ca, "--etcd-cert", &cert],
            "--etcd-key",
        ),
        (
            vec!["--store", https, "--etcd-ca", &ca, "--etcd-key", &key],
            "--etcd-cert",
        ),
        (
            vec![
                "--store",
                https,
                "--etcd-ca",
                &ca,
                "--etcd-cert",
                &cert,
                "--etcd-key",
                &other_key,
            ],
            "--etcd-cert/--etcd-key: the key is not the certificate's",
        ),
    ];
    for (n, (args, expected)) in cases.into_iter().enumerate() {
        let (code, output) = refused(dir.path(), n, &args);
        assert_ne!(code, 0, "{args:?}: {output}");
        assert!(output.contains(expected), "{args:?}: {output}");
    }
}

/// The value of `key` in Secret `name` of `graylane install`'s output. Install writes
/// every value as a YAML double-quoted scalar whose escapes (`\"`, `\\`, `\uXXXX`)
/// are JSON's, so a JSON parser reads it back exactly.
fn install_secret(install: &str, name: &str, key: &str) -> String {
    let doc = install
        .split("\n---\n")
        .find(|d| d.contains("kind: Secret") && d.contains(&format!("  name: {name}\n")))
        .unwrap_or_else(|| panic!("no Secret {name}"));
    let value = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {name}"));
    serde_json::from_str(value).unwrap()
}

/// What `graylane install` renders works: etcd with its server certificate and
/// `--client-cert-auth`, graylane-control with its client certificate, applies and
/// serves rules; a certificate from the mesh CA (which every sidecar can get) is
/// refused by etcd, which is why etcd has a CA of its own.
#[test]
fn installs_etcd_certificates_work_and_the_mesh_ca_gets_no_etcd_access() {
    let dir = tempfile::tempdir().unwrap();
    let install = graylane_tests::cli(&["install", "--no-sample-app"]);
    install.assert_ok();
    let file = |name: &str, secret: &str, key: &str| {
        write_file(
            dir.path(),
            name,
            &install_secret(&install.stdout, secret, key),
        )
    };
    let etcd = TlsEtcd::start_with(
        dir.path(),
        &file("etcd-ca.pem", "graylane-etcd-server", "ca.crt"),
        &file("etcd.pem", "graylane-etcd-server", "tls.crt"),
        &file("etcd-key.pem", "graylane-etcd-server", "tls.key"),
    );
    let ca = file("client-ca.pem", "graylane-etcd-client", "ca.crt");
    let cert = file("client.pem", "graylane-etcd-client", "tls.crt");
    let key = file("client-key.pem", "graylane-etcd-client", "tls.key");
    let flags = ["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key];
    let cp = ControlPlane::start_store_unready(dir.path(), &etcd.store(), &flags);
    cp.wait_ready();
    let rules = write_file(dir.path(), "gray.yaml", LANE);
    cp.cli(&["rules", "apply", "-f", &rules]).assert_ok();

    // A workload's certificate from the mesh CA (its key made into a CA here).
    let mesh = Pki {
        dir: dir.path().join("mesh"),
    };
    std::fs::create_dir_all(&mesh.dir).unwrap();
    write_file(
        &mesh.dir,
        "ca.pem",
        &install_secret(&install.stdout, "graylane-ca", "ca.pem"),
    );
    write_file(
        &mesh.dir,
        "ca-key.pem",
        &install_secret(&install.stdout, "graylane-ca", "ca-key.pem"),
    );
    let (mesh_cert, mesh_key) = mesh.client("workload");
    let flags = [
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &mesh_cert,
        "--etcd-key",
        &mesh_key,
    ];
    let intruder = ControlPlane::start_store_unready(dir.path(), &etcd.store(), &flags);
    unready_naming(&intruder, &["etcd", "TLS", "client certificate"]);
}
