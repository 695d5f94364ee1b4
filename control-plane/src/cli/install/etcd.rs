//! The certificates of etcd's client port: a server certificate for the etcd
//! Service's names and one client certificate, graylane-control's, both from a CA of
//! their own.
//!
//! Not the mesh CA: that one signs a certificate for every sidecar that asks, and
//! etcd's `--client-cert-auth` accepts any certificate its CA signed, so every
//! workload in the mesh could then read and write the rules. This CA's key is used
//! here and thrown away: nothing in the cluster can mint another etcd client
//! certificate. Rotating them is running install again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The etcd StatefulSet's members (`etcd.yaml`: `replicas: 3`).
const MEMBERS: usize = 3;
/// The headless Service's domain; members are `graylane-etcd-N.` under it.
const DOMAIN: &str = "graylane-etcd.graylane-system.svc";
/// Like the mesh root: there is no rotation but rerunning install.
pub(super) const LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clocks a little behind ours still accept a certificate made just now.
const BACKDATE: Duration = Duration::from_secs(60);

/// PEM text of the CA certificate and the two certificates with their keys.
pub(super) struct EtcdPki {
    pub(super) ca: String,
    pub(super) server_cert: String,
    pub(super) server_key: String,
    pub(super) client_cert: String,
    pub(super) client_key: String,
}

/// The names etcd's server certificate carries: each member under the Service (short
/// and with `cluster.local`), a wildcard for members added later, and loopback for an
/// operator's `etcdctl` inside the pod.
pub(super) fn server_names() -> Vec<String> {
    let mut names: Vec<String> = (0..MEMBERS)
        .flat_map(|i| {
            [
                format!("graylane-etcd-{i}.{DOMAIN}"),
                format!("graylane-etcd-{i}.{DOMAIN}.cluster.local"),
            ]
        })
        .collect();
    names.extend([
        format!("*.{DOMAIN}"),
        format!("*.{DOMAIN}.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]);
    names
}

/// A fresh CA, etcd's server certificate and graylane-control's client certificate
/// (ECDSA P-256).
pub(super) fn generate() -> Result<EtcdPki, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "graylane etcd CA");
    set_validity(&mut ca_params);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf = |names: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        set_validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    // Client use too: etcd's own gRPC gateway dials etcd with the server
    // certificate, and --client-cert-auth checks that one as well.
    let (server_cert, server_key) = leaf(
        server_names(),
        "graylane-etcd",
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_cert, client_key) = leaf(
        Vec::new(),
        "graylane-control",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    Ok(EtcdPki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    })
}

/// Valid from `BACKDATE` ago for `LIFETIME` (rcgen does not re-export its `time`
/// crate, so the epoch is built from its own date helper). Also the webhook's: left
/// unset, rcgen makes a certificate valid until the year 4096.
pub(super) fn set_validity(params: &mut CertificateParams) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + LIFETIME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_is_named_and_the_wildcard_is_one_label_deep() {
        let names = server_names();
        for i in 0..MEMBERS {
            assert!(names.contains(&format!("graylane-etcd-{i}.{DOMAIN}")));
        }
        assert!(names.contains(&"*.graylane-etcd.graylane-system.svc".to_string()));
        let pki = generate().unwrap();
        assert_ne!(pki.server_key, pki.client_key);
        for pem in [&pki.ca, &pki.server_cert, &pki.client_cert] {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
    }
}
