//! Certificate handling against the x509-limbo path-validation vectors (C2SP, Apache-2.0; a copy
//! in `tests/data/x509-limbo/`, 208 cases). Each case's chain goes through the listener's own
//! client verifier, built by `tls::build` from files as `[listener]` names them (its roots as
//! `client_ca`, its CRLs as `crl`), at the case's validation time; each certificate goes through
//! the organisation mapping; the leaves, cut short and with bytes flipped, are fuzz seeds for
//! both.
//!
//! limbo's verdicts are for its own validation kind, mostly SERVER; caregate verifies clients.
//! So the tests pin every place where caregate's verdict differs, and why.

mod support;

use caregate::config::{self, CrlExpired, OrgSource};
use caregate::directory::Directory;
use caregate::tls::TlsState;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use support::TestPki;
use x509_parser::prelude::*;

#[derive(Deserialize)]
struct Limbo {
    testcases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    crls: Vec<String>,
    expected_result: String,
}

/// One case as caregate saw it.
struct Outcome {
    id: String,
    /// limbo expects the chain to validate (for its own validation kind).
    limbo_accepts: bool,
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    at: UnixTime,
    /// The listener's TLS state for this case's roots and CRLs.
    tls: TlsState,
    verdict: Result<(), rustls::Error>,
    /// The `tls_rejected` reason the handshake would have audited.
    reason: Option<&'static str>,
}

/// Every case, verified once for all the tests below.
fn outcomes() -> &'static [Outcome] {
    static OUTCOMES: OnceLock<Vec<Outcome>> = OnceLock::new();
    OUTCOMES.get_or_init(|| {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/x509-limbo/limbo.json");
        let limbo: Limbo = serde_json::from_slice(&std::fs::read(data).unwrap()).unwrap();
        assert_eq!(limbo.testcases.len(), 208);
        // The server certificate and key the listener needs, and a folder for the cases' files.
        let pki = TestPki::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        limbo
            .testcases
            .into_iter()
            .map(|case| {
                let tls =
                    caregate::tls::build(&listener(pki.path(), &case)).unwrap_or_else(|e| panic!("{}: {e}", case.id));
                let leaf = der(&case.peer_certificate);
                let intermediates: Vec<_> = case.untrusted_intermediates.iter().map(|p| der(p)).collect();
                let at = match &case.validation_time {
                    Some(t) => {
                        let t =
                            ::time::OffsetDateTime::parse(t, &::time::format_description::well_known::Rfc3339).unwrap();
                        UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
                    }
                    None => UnixTime::now(),
                };
                // As in a handshake: the verifier notes the reason for the audit record.
                let (verdict, note) = rt.block_on(caregate::tls::with_note(async {
                    tls.verifier.verify_client_cert(&leaf, &intermediates, at).map(|_| ())
                }));
                Outcome {
                    id: case.id,
                    limbo_accepts: case.expected_result == "SUCCESS",
                    leaf,
                    intermediates,
                    at,
                    tls,
                    verdict,
                    reason: note.reason,
                }
            })
            .collect()
    })
}

/// `[listener]` with the case's roots as `client_ca` and its CRLs as `crl`.
fn listener(dir: &Path, case: &Case) -> config::Listener {
    let ca = dir.join(format!("{}.ca.pem", case.id.replace("::", "_")));
    std::fs::write(&ca, case.trusted_certs.concat()).unwrap();
    let mut crl = Vec::new();
    if !case.crls.is_empty() {
        let path = dir.join(format!("{}.crl", case.id.replace("::", "_")));
        std::fs::write(&path, case.crls.concat()).unwrap();
        crl.push(path);
    }
    config::Listener {
        bind: "127.0.0.1:0".parse().unwrap(),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_ca: vec![ca],
        crl,
        max_connections: 16,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        max_header_bytes: 64 << 10,
        max_inspect_bytes: 64 << 20,
        drain_timeout: Duration::from_secs(1),
        crl_expired: CrlExpired::Refuse,
        session_resumption: false,
        session_lifetime: Duration::ZERO,
        workers: 1,
        body_idle_timeout: Duration::from_secs(60),
        max_connections_per_address: 16,
        max_connections_per_org: 16,
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The leaf names extended key usages, and client authentication is not among them.
fn not_for_clients(leaf: &[u8]) -> bool {
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    let eku = cert.extended_key_usage().unwrap();
    eku.is_some_and(|e| !e.value.client_auth && !e.value.any)
}

fn get(id: &str) -> &'static Outcome {
    outcomes()
        .iter()
        .find(|o| o.id == id)
        .unwrap_or_else(|| panic!("no case {id}"))
}

#[test]
fn a_certificate_whose_extended_key_usage_leaves_out_client_auth_is_never_a_client_certificate() {
    let server_only: Vec<_> = outcomes().iter().filter(|o| not_for_clients(&o.leaf)).collect();
    // Most limbo leaves are serverAuth-only: a verifier that ignored EKU would accept those
    // whose chains are otherwise sound.
    assert!(server_only.len() > 150, "{} cases", server_only.len());
    for o in server_only {
        assert!(o.verdict.is_err(), "{}: a server-only certificate was accepted", o.id);
        assert!(o.reason.is_some(), "{}: refused without an audit reason", o.id);
    }
}

#[test]
fn every_chain_limbo_refuses_is_refused_unless_only_its_server_purpose_failed() {
    let accepted: BTreeSet<&str> = outcomes()
        .iter()
        .filter(|o| !o.limbo_accepts && o.verdict.is_ok())
        .map(|o| o.id.as_str())
        .collect();
    // Both fail only as *server* certificates: a leaf for clients alone, and a leaf with no
    // EKU, which RFC 5280 leaves unrestricted (webpki insists on one for servers only).
    let purpose_only = BTreeSet::from(["rfc5280::eku::ee-wrong-eku", "webpki::eku::ee-without-eku"]);
    assert_eq!(accepted, purpose_only);
}

#[test]
fn chains_limbo_accepts_are_refused_only_for_the_client_purpose_or_by_stricter_rules() {
    let refused: BTreeSet<&str> = outcomes()
        .iter()
        .filter(|o| o.limbo_accepts && o.verdict.is_err() && !not_for_clients(&o.leaf))
        .map(|o| o.id.as_str())
        .collect();
    let stricter = BTreeSet::from([
        // A CA certificate presented as a client's own (webpki: CaUsedAsEndEntity).
        "rfc5280::ca-as-leaf",
        "pathlen::validation-ignores-pathlen-in-leaf",
        // A client CA with e-mail (rfc822Name) name constraints: webpki does not evaluate them
        // and fails closed, so that CA's certificates with an e-mail SAN are refused (README).
        "rfc5280::nc::nc-permits-email-exact",
        "rfc5280::nc::nc-permits-email-domain",
        "rfc5280::nc::nc-permits-email-literal-asterisk-exact-match",
        "rfc5280::nc::nc-permits-email-literal-double-asterisk",
        "rfc5280::nc::nc-permits-email-literal-mid-asterisk",
    ]);
    assert_eq!(refused, stricter);
    // The few server cases whose leaf also allows clientAuth are accepted, as they should be.
    let accepted = outcomes()
        .iter()
        .filter(|o| o.limbo_accepts && o.verdict.is_ok())
        .count();
    assert!(accepted >= 5, "{accepted} accepted");
}

#[test]
fn a_refused_chain_is_audited_with_the_reason_of_spec_section_5() {
    for (id, reason) in [
        ("rfc5280::validity::expired-leaf", "expired"),
        ("rfc5280::validity::expired-1-second", "expired"),
        ("rfc5280::validity::not-yet-valid-1-second", "not_yet_valid"),
        ("rfc5280::validity::notbefore-fractional", "not_yet_valid"),
        ("webpki::cryptographydotio-chain-missing-intermediate", "unknown_issuer"),
        ("crl::revoked-certificate-with-crl", "other"), // serverAuth-only: refused before the CRL
    ] {
        let o = get(id);
        assert!(o.verdict.is_err(), "{id} accepted");
        assert_eq!(o.reason, Some(reason), "{id}: {:?}", o.verdict);
    }
    // One second earlier the same leaf is in date.
    let o = get("rfc5280::validity::expired-1-second");
    let before = UnixTime::since_unix_epoch(Duration::from_secs(o.at.as_secs() - 1));
    let verdict = o.tls.verifier.verify_client_cert(&o.leaf, &o.intermediates, before);
    assert!(
        matches!(verdict, Err(rustls::Error::InvalidCertificate(ref e)) if !matches!(e, rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. })),
        "one second earlier it is in date (and refused for its purpose only): {verdict:?}"
    );
}

/// An open connection is cut off on reload by the loaded CRLs' entries (issuer and serial),
/// not by a handshake: the CRL cases check that matching on their own.
#[test]
fn crl_entries_cut_off_the_certificate_of_their_own_issuer_only() {
    let revoked = |id: &str| {
        let o = get(id);
        let (_, leaf) = X509Certificate::from_der(&o.leaf).unwrap();
        o.tls
            .is_revoked(leaf.issuer().as_raw(), &caregate::hex(leaf.raw_serial()))
    };
    assert!(revoked("crl::revoked-certificate-with-crl"));
    assert!(!revoked("crl::certificate-not-on-crl"));
    assert!(
        !revoked("crl::certificate-serial-on-crl-different-issuer"),
        "the serial is listed, but by another issuer's CRL"
    );
}

#[test]
fn a_client_ca_with_name_constraints_the_verifier_cannot_evaluate_is_named_in_a_warning() {
    // Roots with directoryName or e-mail constraints (read with `openssl x509 -text`); roots
    // with DNS and IP constraints, which webpki evaluates, are in the corpus too.
    let expected = BTreeSet::from([
        "rfc5280::nc::permitted-dn-mismatch",
        "rfc5280::nc::excluded-dn-match",
        "rfc5280::nc::permitted-dn-match",
        "rfc5280::nc::permitted-dn-match-subject-san-mismatch",
        "rfc5280::nc::excluded-dn-match-sub-mismatch",
        "rfc5280::nc::invalid-email-address",
    ]);
    let warned: BTreeSet<&str> = outcomes()
        .iter()
        .filter(|o| o.tls.warnings.iter().any(|w| w.contains("name constraints")))
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(warned, expected);
    // (Other cases are warned about too: intermediates as trust anchors with no CRL.)
    let w = &get("rfc5280::nc::permitted-dn-match").tls.warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("listener.client_ca[0]: the CA"), "{w:?}");
    assert!(
        w[0].contains("directoryName") && w[0].contains("every certificate under it"),
        "{w:?}"
    );
    let w = &get("rfc5280::nc::invalid-email-address").tls.warnings;
    assert!(w[0].contains("e-mail (rfc822Name)"), "{w:?}");
    // And the warning is true: nothing under a directoryName-constrained CA passes.
    for id in [
        "rfc5280::nc::permitted-dn-match",
        "rfc5280::nc::excluded-dn-match-sub-mismatch",
    ] {
        assert!(get(id).verdict.is_err(), "{id}");
    }
}

#[test]
fn no_certificate_of_the_corpus_nor_any_leaf_cut_or_bit_flipped_panics_identity_or_verifier() {
    let sources = [
        OrgSource::SanUri("urn:nhs:ods:".into()),
        OrgSource::Subject("CN".into()),
        OrgSource::Subject("OU".into()),
        OrgSource::Endpoint,
    ];
    let directory = Directory::default();
    let mut identified = 0;
    let mut mutants = 0;
    for o in outcomes() {
        for cert in std::iter::once(&o.leaf).chain(&o.intermediates) {
            identified += usize::from(caregate::identity::identify(cert, &sources, &directory).is_ok());
        }
        let leaf = o.leaf.as_ref();
        // About a hundred places in each certificate (a debug build identifies a few thousand
        // certificates a second; every byte of every leaf would take minutes).
        let step = leaf.len() / 100 + 1;
        // Cut short, through the verifier too.
        for len in (0..leaf.len()).step_by(step) {
            let cut = CertificateDer::from(&leaf[..len]);
            assert!(caregate::identity::identify(&cut, &sources, &directory).is_err());
            assert!(o.tls.verifier.verify_client_cert(&cut, &o.intermediates, o.at).is_err());
            mutants += 1;
        }
        // One byte flipped, each in turn.
        let mut flipped = leaf.to_vec();
        for i in (0..flipped.len()).step_by(step) {
            flipped[i] ^= 0x55;
            let _ = caregate::identity::identify(&flipped, &sources, &directory);
            flipped[i] ^= 0x55;
            mutants += 1;
        }
    }
    assert!(identified > 400, "{identified} certificates identified");
    assert!(mutants > 30_000, "{mutants} mutants");
}
