//! The webhook's own CA and serving certificate: what the Secret holds, read back (`parse`), what
//! to do next (`next_step`, pure), and how a new CA or serving certificate is made (`Material`).
//!
//! Rotation never fails a request: a new CA is first added to the bundle (the API server then
//! trusts both), the bundle is published to the webhook configuration, and only then is a serving
//! certificate signed by the new CA. An old CA leaves the bundle once it has expired.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _,
};
use std::collections::BTreeSet;
use std::time::Duration;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// A certificate's validity starts this long before it is made (clocks differ between nodes).
pub const BACKDATE: Duration = Duration::from_secs(300);
/// Certificates in the bundle, at most (the newest CA, and those it replaced that have not expired).
pub const MAX_CAS: usize = 4;

/// How long certificates are valid. Each is renewed when a third of its life is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: Duration,
    pub serving: Duration,
}

impl Lifetimes {
    /// How long a bundle must have been published before a certificate from its newest CA is
    /// served: every API server's informer has seen it by then (a tenth of the serving
    /// certificate's life, 1 s to 60 s).
    pub fn publish_margin(&self) -> i64 {
        secs((self.serving / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}

/// What the webhook configuration carries, as the keeper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publication {
    /// No configuration to keep.
    Unkept,
    /// It does not carry the stored bundle.
    Missing,
    /// It has carried the stored bundle since (Unix seconds; as first seen by this replica).
    Since(i64),
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            ca: Duration::from_secs(365 * 24 * 3600),
            serving: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// The Secret's four keys, PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// The CAs the API server is to trust, newest first.
    pub ca_bundle: String,
    /// The newest CA's key.
    pub ca_key: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log.
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

/// What a certificate says, as far as renewal goes (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub not_before: i64,
    pub not_after: i64,
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub hosts: BTreeSet<String>,
    pem: String,
}

/// The Secret read back: the bundle's CAs (newest first) and the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub cas: Vec<Cert>,
    pub serving: Cert,
}

/// The next thing to do about the certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing stored, or nothing usable: a new CA and serving certificate.
    Create,
    /// The webhook configuration does not carry the bundle yet.
    Publish,
    /// The newest CA is a third from its end (or longer-lived than allowed): add a new one.
    AddCa,
    /// The serving certificate is near its end, for other hosts, or not from the newest CA
    /// (which the API server already trusts).
    Reissue,
    /// A CA in the bundle has expired.
    Prune,
    Rest,
}

/// Reads the Secret's PEM back; an error says what is wrong (never echoing key material).
pub fn parse(m: &Material) -> Result<Parsed, String> {
    let cas = certs(&m.ca_bundle, "ca.crt")?;
    if cas.is_empty() {
        return Err("ca.crt holds no certificate".into());
    }
    let serving = certs(&m.tls_crt, "tls.crt")?
        .into_iter()
        .next()
        .ok_or("tls.crt holds no certificate")?;
    let ca_key = KeyPair::from_pem(&m.ca_key).map_err(|_| "ca.key is not a private key")?;
    if spki(&cas[0].pem)? != ca_key.subject_public_key_info() {
        return Err("ca.key is not the key of the newest CA in ca.crt".into());
    }
    let tls_key = KeyPair::from_pem(&m.tls_key).map_err(|_| "tls.key is not a private key")?;
    if spki(&serving.pem)? != tls_key.subject_public_key_info() {
        return Err("tls.key is not the key of tls.crt".into());
    }
    Ok(Parsed { cas, serving })
}

fn certs(pem: &str, what: &str) -> Result<Vec<Cert>, String> {
    let mut out = vec![];
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| format!("{what} is not PEM"))?;
        let x = block
            .parse_x509()
            .map_err(|_| format!("{what} holds something that is not a certificate"))?;
        let mut hosts = BTreeSet::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => {
                        hosts.insert(d.to_string());
                    }
                    GeneralName::IPAddress(ip) => {
                        if let Some(ip) = ip_text(ip) {
                            hosts.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push(Cert {
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            subject: x.subject().as_raw().to_vec(),
            issuer: x.issuer().as_raw().to_vec(),
            hosts,
            pem: pem_of(&block.contents),
        });
        if out.len() > MAX_CAS {
            return Err(format!("{what} holds more than {MAX_CAS} certificates"));
        }
    }
    Ok(out)
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::IpAddr::from(b).to_string()),
        _ => None,
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn spki(pem: &str) -> Result<Vec<u8>, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| "a certificate is not PEM")?;
    let x = block.parse_x509().map_err(|_| "not a certificate")?;
    Ok(x.public_key().raw.to_vec())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Whether a certificate made for `lifetime` needs replacing at `now`: a third of its life left,
/// or valid for longer than `lifetime` allows (the flag was lowered).
fn due(c: &Cert, now: i64, lifetime: Duration) -> bool {
    let left = c.not_after.saturating_sub(now);
    left < secs(lifetime) / 3 || left > secs(lifetime).saturating_add(secs(BACKDATE))
}

/// Whether the API servers trust the stored bundle: it has been published for the margin (or
/// there is no configuration to keep).
pub fn trusted(published: Publication, now: i64, l: &Lifetimes) -> bool {
    match published {
        Publication::Since(t) => now.saturating_sub(t) >= l.publish_margin(),
        Publication::Unkept => true,
        Publication::Missing => false,
    }
}

/// What to do next, given what the Secret holds (`None`: no Secret; `Some(Err)`: unusable), what
/// the webhook configuration carries, and the hosts the serving certificate must name. A serving
/// certificate is only (re)issued from a CA the configuration has carried for the publish margin.
pub fn next_step(
    now: i64,
    stored: Option<&Result<Parsed, String>>,
    published: Publication,
    hosts: &BTreeSet<String>,
    l: &Lifetimes,
) -> Step {
    let p = match stored {
        None | Some(Err(_)) => return Step::Create,
        Some(Ok(p)) => p,
    };
    if published == Publication::Missing {
        return Step::Publish;
    }
    let newest = &p.cas[0];
    if due(newest, now, l.ca) {
        return Step::AddCa;
    }
    let s = &p.serving;
    let trusted = trusted(published, now, l);
    let stale = s.issuer != newest.subject
        || &s.hosts != hosts
        || due(s, now, l.serving)
        || s.not_after <= now;
    if stale {
        return if trusted { Step::Reissue } else { Step::Rest };
    }
    if p.cas.iter().any(|c| c.not_after <= now) {
        return Step::Prune;
    }
    Step::Rest
}

/// The Secret's next content for `step` (`None` for Publish and Rest, which write no Secret).
/// `stored` is what the Secret held, even unusable: Create keeps the CAs of its bundle that still
/// read and have not expired, so replicas serving a certificate from them stay trusted.
pub fn renew(
    step: Step,
    now: i64,
    stored: Option<&Material>,
    parsed: Option<&Parsed>,
    hosts: &BTreeSet<String>,
    l: &Lifetimes,
) -> Result<Option<Material>, String> {
    let live = |c: &&Cert| c.not_after > now;
    let next = match (step, stored, parsed) {
        (Step::Publish | Step::Rest, _, _) => return Ok(None),
        (Step::AddCa, Some(m), Some(p)) => {
            let (ca, ca_key) = new_ca(now, l.ca)?;
            let kept: Vec<&str> = p
                .cas
                .iter()
                .filter(live)
                .take(MAX_CAS - 1)
                .map(|c| c.pem.as_str())
                .collect();
            Material {
                ca_bundle: format!("{ca}{}", kept.concat()),
                ca_key,
                ..m.clone()
            }
        }
        (Step::Reissue, Some(m), Some(p)) => {
            let (tls_crt, tls_key) = issue(&p.cas[0], &m.ca_key, hosts, now, l.serving)?;
            Material {
                tls_crt,
                tls_key,
                ..m.clone()
            }
        }
        (Step::Prune, Some(m), Some(p)) => Material {
            ca_bundle: p.cas.iter().filter(live).map(|c| c.pem.as_str()).collect(),
            ..m.clone()
        },
        (_, stored, _) => created(now, hosts, l, stored.map(|m| m.ca_bundle.as_str()))?,
    };
    Ok(Some(next))
}

fn created(
    now: i64,
    hosts: &BTreeSet<String>,
    l: &Lifetimes,
    salvage: Option<&str>,
) -> Result<Material, String> {
    let (ca_pem, ca_key) = new_ca(now, l.ca)?;
    let ca = certs(&ca_pem, "the new CA")?
        .into_iter()
        .next()
        .ok_or("the new CA did not read back")?;
    let (tls_crt, tls_key) = issue(&ca, &ca_key, hosts, now, l.serving)?;
    let kept: String = salvage
        .map(|pem| readable(pem, now))
        .unwrap_or_default()
        .into_iter()
        .take(MAX_CAS - 1)
        .map(|c| c.pem)
        .collect();
    Ok(Material {
        ca_bundle: format!("{ca_pem}{kept}"),
        ca_key,
        tls_crt,
        tls_key,
    })
}

/// The certificates of a PEM text that read and have not expired, skipping the rest.
fn readable(pem: &str, now: i64) -> Vec<Cert> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|block| certs(block.trim_start(), "ca.crt").ok())
        .flatten()
        .filter(|c| c.not_after > now)
        .collect()
}

/// A new CA valid from `now` (backdated) for `lifetime`: (certificate PEM, key PEM).
pub fn new_ca(now: i64, lifetime: Duration) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| format!("generating the CA key: {e}"))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Each CA has its own name: the serving certificate's issuer names which one signed it.
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "managed-secrets webhook CA {now}-{:08x}",
            rand::random::<u32>()
        ),
    );
    validity(&mut params, now, secs(lifetime))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("signing the CA: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `hosts` (DNS names or IP addresses) signed by the CA, valid for
/// `lifetime` but never past the CA's own end: (certificate PEM, key PEM).
pub fn issue(
    ca: &Cert,
    ca_key: &str,
    hosts: &BTreeSet<String>,
    now: i64,
    lifetime: Duration,
) -> Result<(String, String), String> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(|_| "ca.key is not a private key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.pem, ca_key)
        .map_err(|e| format!("reading the CA certificate: {e}"))?;
    let key = KeyPair::generate().map_err(|e| format!("generating the serving key: {e}"))?;
    let mut params = CertificateParams::new(hosts.iter().cloned().collect::<Vec<_>>())
        .map_err(|e| format!("the webhook's host names: {e}"))?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if let Some(first) = hosts.iter().next() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
    }
    let life = secs(lifetime).min(ca.not_after.saturating_sub(now));
    validity(&mut params, now, life)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| format!("signing the serving certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn validity(params: &mut CertificateParams, now: i64, life: i64) -> Result<(), String> {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).map_err(|_| "a time out of range".to_string())
    };
    params.not_before = at(now.saturating_sub(secs(BACKDATE)))?;
    params.not_after = at(now.saturating_add(life))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;

    fn hosts() -> BTreeSet<String> {
        ["127.0.0.1", "webhook.ops.svc"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            ca: Duration::from_secs(300 * H as u64),
            serving: Duration::from_secs(30 * H as u64),
        }
    }

    fn cert(subject: &str, issuer: &str, made: i64, life: i64) -> Cert {
        Cert {
            not_before: made - 300,
            not_after: made + life,
            subject: subject.as_bytes().to_vec(),
            issuer: issuer.as_bytes().to_vec(),
            hosts: hosts(),
            pem: String::new(),
        }
    }

    fn stored(cas: Vec<Cert>, serving: Cert) -> Option<Result<Parsed, String>> {
        Some(Ok(Parsed { cas, serving }))
    }

    #[test]
    fn the_next_step_in_order_of_what_matters_first() {
        let l = lifetimes();
        let ca = cert("ca1", "ca1", 0, 300 * H);
        let serving = cert("web", "ca1", 0, 30 * H);
        let step = |now: i64, s: &Option<Result<Parsed, String>>, published| {
            next_step(now, s.as_ref(), published, &hosts(), &l)
        };
        assert_eq!(step(0, &None, Publication::Missing), Step::Create);
        assert_eq!(
            step(0, &Some(Err("bad".into())), Publication::Unkept),
            Step::Create
        );
        let fresh = stored(vec![ca.clone()], serving.clone());
        assert_eq!(step(H, &fresh, Publication::Missing), Step::Publish);
        assert_eq!(step(H, &fresh, Publication::Since(0)), Step::Rest);
        assert_eq!(
            step(H, &fresh, Publication::Unkept),
            Step::Rest,
            "no configuration to keep"
        );
        // A third of the serving certificate's life left.
        assert_eq!(step(20 * H - 1, &fresh, Publication::Since(0)), Step::Rest);
        assert_eq!(
            step(20 * H + 1, &fresh, Publication::Since(0)),
            Step::Reissue
        );
        // Other hosts wanted.
        let mut moved = serving.clone();
        moved.hosts.insert("other.ops.svc".into());
        assert_eq!(
            step(H, &stored(vec![ca.clone()], moved), Publication::Since(0)),
            Step::Reissue
        );
        // The CA a third from its end: a new one first, published, then the serving certificate
        // from it, then the old CA goes once it has expired.
        assert_eq!(
            step(200 * H + 1, &fresh, Publication::Since(0)),
            Step::AddCa
        );
        let ca2 = cert("ca2", "ca2", 200 * H, 300 * H);
        let both = stored(vec![ca2.clone(), ca.clone()], serving.clone());
        assert_eq!(
            step(200 * H + 2, &both, Publication::Missing),
            Step::Publish
        );
        assert_eq!(
            step(200 * H + 2, &both, Publication::Since(0)),
            Step::Reissue
        );
        // Not before every API server has seen the new bundle (a minute at most).
        assert_eq!(l.publish_margin(), 60);
        let just = Publication::Since(200 * H + 2);
        assert_eq!(step(200 * H + 2, &both, just), Step::Rest);
        assert_eq!(step(200 * H + 62, &both, just), Step::Reissue);
        assert_eq!(
            step(20 * H + 1, &fresh, Publication::Since(20 * H)),
            Step::Rest
        );
        let reissued = cert("web", "ca2", 200 * H + 2, 30 * H);
        let switched = stored(vec![ca2.clone(), ca.clone()], reissued.clone());
        assert_eq!(
            step(200 * H + 3, &switched, Publication::Since(0)),
            Step::Rest
        );
        let renewed = cert("web", "ca2", 290 * H, 30 * H);
        let later = stored(vec![ca2.clone(), ca.clone()], renewed);
        assert_eq!(step(300 * H, &later, Publication::Since(0)), Step::Prune);
        // A lowered lifetime replaces what lives longer than it allows.
        let long = stored(vec![ca.clone()], cert("web", "ca1", 0, 90 * H));
        assert_eq!(step(H, &long, Publication::Since(0)), Step::Reissue);
    }

    #[test]
    fn made_certificates_read_back_and_rotate_without_a_gap_in_trust() {
        let l = lifetimes();
        let h = hosts();
        let now = 1_800_000_000;
        let m = renew(Step::Create, now, None, None, &h, &l)
            .unwrap()
            .unwrap();
        let p = parse(&m).unwrap();
        assert_eq!(p.cas.len(), 1);
        assert_eq!(p.serving.hosts, h, "an IP address and a DNS name");
        assert_eq!(p.serving.issuer, p.cas[0].subject);
        assert_eq!(p.serving.not_after - now, 30 * H);
        assert_eq!(p.cas[0].not_after - now, 300 * H);
        assert_eq!(p.serving.not_before, now - 300);
        assert_eq!(
            next_step(now, Some(&Ok(p.clone())), Publication::Since(0), &h, &l),
            Step::Rest
        );
        assert!(!format!("{m:?}").contains("PRIVATE"), "no key in Debug");
        // The CA renewed: both trusted, the serving certificate unchanged until it is reissued.
        let later = now + 201 * H;
        let step = next_step(later, Some(&Ok(p.clone())), Publication::Since(0), &h, &l);
        assert_eq!(step, Step::AddCa);
        let m2 = renew(step, later, Some(&m), Some(&p), &h, &l)
            .unwrap()
            .unwrap();
        let p2 = parse(&m2).unwrap();
        assert_eq!(p2.cas.len(), 2);
        assert_eq!(
            p2.cas[1].subject, p.cas[0].subject,
            "the old CA still trusted"
        );
        assert_eq!(m2.tls_crt, m.tls_crt);
        let step = next_step(later, Some(&Ok(p2.clone())), Publication::Since(0), &h, &l);
        assert_eq!(step, Step::Reissue);
        let m3 = renew(step, later, Some(&m2), Some(&p2), &h, &l)
            .unwrap()
            .unwrap();
        let p3 = parse(&m3).unwrap();
        assert_eq!(p3.serving.issuer, p3.cas[0].subject, "signed by the new CA");
        assert_eq!(m3.ca_bundle, m2.ca_bundle);
        // Past the old CA's end (the serving certificate renewed meanwhile) it leaves the bundle.
        let end = now + 300 * H;
        let step = next_step(end, Some(&Ok(p3.clone())), Publication::Since(0), &h, &l);
        assert_eq!(step, Step::Reissue);
        let m4 = renew(step, end, Some(&m3), Some(&p3), &h, &l)
            .unwrap()
            .unwrap();
        let p4 = parse(&m4).unwrap();
        let step = next_step(end, Some(&Ok(p4.clone())), Publication::Since(0), &h, &l);
        assert_eq!(step, Step::Prune);
        let m5 = renew(step, end, Some(&m4), Some(&p4), &h, &l)
            .unwrap()
            .unwrap();
        let p5 = parse(&m5).unwrap();
        assert_eq!(p5.cas.len(), 1);
        assert_eq!(p5.cas[0].subject, p3.cas[0].subject);
        assert_eq!(
            next_step(end, Some(&Ok(p5)), Publication::Missing, &h, &l),
            Step::Publish
        );
    }

    #[test]
    fn a_serving_certificate_never_outlives_its_ca_and_mismatched_keys_are_refused() {
        let l = lifetimes();
        let h = hosts();
        let m = renew(Step::Create, 0, None, None, &h, &l).unwrap().unwrap();
        let p = parse(&m).unwrap();
        let (crt, _) = issue(&p.cas[0], &m.ca_key, &h, 299 * H, l.serving).unwrap();
        let late = certs(&crt, "x").unwrap().remove(0);
        assert_eq!(late.not_after, p.cas[0].not_after);
        let other = renew(Step::Create, 0, None, None, &h, &l).unwrap().unwrap();
        let swapped = Material {
            tls_key: other.tls_key.clone(),
            ..m.clone()
        };
        assert_eq!(
            parse(&swapped),
            Err("tls.key is not the key of tls.crt".into())
        );
        let swapped = Material {
            ca_key: other.ca_key.clone(),
            ..m.clone()
        };
        assert_eq!(
            parse(&swapped),
            Err("ca.key is not the key of the newest CA in ca.crt".into())
        );
        // A damaged Secret is made again, keeping the CAs that still read: replicas serving a
        // certificate from them stay trusted until they load the new one.
        let broken = Material {
            ca_key: "not a key".into(),
            ca_bundle: format!("{}junk\n", m.ca_bundle),
            ..m.clone()
        };
        assert!(parse(&broken).is_err());
        let remade = renew(Step::Create, H, Some(&broken), None, &h, &l)
            .unwrap()
            .unwrap();
        let again = parse(&remade).unwrap();
        assert_eq!(again.cas.len(), 2);
        assert_eq!(again.cas[1].subject, p.cas[0].subject);
        assert_eq!(again.serving.issuer, again.cas[0].subject);
        let garbage = Material {
            tls_crt: "not pem".into(),
            ..m
        };
        assert!(parse(&garbage).is_err());
    }
}
