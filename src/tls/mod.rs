//! The TLS side of the listener: one function builds the rustls `ServerConfig` (roots → client
//! verifier with CRLs → key-usage check → server cert → ALPN); handshakes run under a deadline
//! and a refused one says why, for the `tls_rejected` audit record. `sessions.rs` bounds how
//! long a session can be resumed and re-checks a resumed session's certificate. [`upstream`]
//! builds the client side, towards `https` upstreams.

mod sessions;
pub mod upstream;
mod warnings;

pub use sessions::SessionCache;

use crate::config::{self, CrlExpired, KeyError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::*;

/// The listener's TLS state, rebuilt as a whole on reload.
pub struct TlsState {
    pub server_config: Arc<rustls::ServerConfig>,
    /// Unix time at which the server certificate expires.
    pub server_not_after: i64,
    /// Each CRL file and its `nextUpdate` (unix time), for freshness metrics.
    pub crl_next_update: Vec<(String, Option<i64>)>,
    /// Certificates revoked by the loaded CRLs, to cut off connections opened before a reload:
    /// by serial (see [`serial_key`]), then by the name (DER) of the issuer whose CRL lists it.
    /// A serial is only unique per issuer; two CAs that number their certificates in sequence
    /// give out the same ones.
    pub revoked: HashMap<String, Vec<Box<[u8]>>>,
    /// The client verifier the listener uses, for `caregate explain`.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// What an operator should know about this TLS setup although it loads (`caregate check`
    /// prints them; start and reload log them).
    pub warnings: Vec<String>,
    /// The resumable sessions, kept across a reload that leaves `listener.session_lifetime` as
    /// it was (every resumed connection is checked against the reloaded CRLs and roots); none
    /// when resumption is off.
    pub sessions: Option<Arc<SessionCache>>,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::new(key.to_string(), format!("cannot read {}: {e}", path.display())))
}

/// Reads every certificate in a PEM file (a chain or a CA bundle).
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    certs_from_pem(key, path, &read(key, path)?)
}

/// Every certificate in `pem`, the bytes of the file at `path`.
fn certs_from_pem(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| KeyError::new(key.to_string(), format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(KeyError::new(
            key.to_string(),
            format!("{} holds no CERTIFICATE", path.display()),
        ));
    }
    Ok(certs)
}

pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, KeyError> {
    key_from_pem(key, path, &read(key, path)?)
}

/// The private key in `pem`, the bytes of the file at `path`.
fn key_from_pem(key: &str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, KeyError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        KeyError::new(
            key.to_string(),
            format!("{} holds no private key in PEM", path.display()),
        )
    })
}

/// Builds the listener's TLS state from `[listener]`.
pub fn build(l: &config::Listener) -> Result<TlsState, KeyError> {
    make(l, None)
}

/// As [`build`], for a reload: the sessions of `previous` stay resumable.
pub fn rebuild(l: &config::Listener, previous: &TlsState) -> Result<TlsState, KeyError> {
    make(l, previous.sessions.as_ref())
}

fn make(l: &config::Listener, sessions: Option<&Arc<SessionCache>>) -> Result<TlsState, KeyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    let mut warnings = Vec::new();
    let mut intermediates = warnings::Intermediates::default();
    for (i, path) in l.client_ca.iter().enumerate() {
        let key = format!("listener.client_ca[{i}]");
        for cert in load_certs(&key, path)? {
            intermediates.add(&key, path, &cert);
            warnings.extend(
                warnings::unevaluated_name_constraints(&cert)
                    .into_iter()
                    .map(|w| format!("{key}: {w}")),
            );
            roots.add(cert).map_err(|e| {
                KeyError::new(
                    key.clone(),
                    format!("{} is not a usable CA certificate: {e}", path.display()),
                )
            })?;
        }
    }

    let mut crls = Vec::new();
    let mut crl_issuers: Vec<Vec<u8>> = Vec::new();
    let mut crl_next_update = Vec::new();
    let mut revoked: HashMap<String, Vec<Box<[u8]>>> = HashMap::new();
    for (i, path) in l.crl.iter().enumerate() {
        let key = format!("listener.crl[{i}]");
        let bytes = read(&key, path)?;
        let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
            CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| KeyError::new(key.clone(), format!("{} is not valid PEM: {e}", path.display())))?
        } else {
            vec![CertificateRevocationListDer::from(bytes)]
        };
        if ders.is_empty() {
            return Err(KeyError::new(key, format!("{} holds no X509 CRL", path.display())));
        }
        for der in ders {
            let (_, crl) = CertificateRevocationList::from_der(&der)
                .map_err(|_| KeyError::new(key.clone(), format!("{} is not a valid CRL", path.display())))?;
            crl_next_update.push((path.display().to_string(), crl.next_update().map(|t| t.timestamp())));
            let issuer = crl.issuer().as_raw();
            crl_issuers.push(issuer.to_vec());
            for r in crl.iter_revoked_certificates() {
                let issuers = revoked
                    .entry(serial_key(&crate::hex(r.raw_serial())).to_string())
                    .or_default();
                if !issuers.iter().any(|i| **i == *issuer) {
                    issuers.push(issuer.into());
                }
            }
            crls.push(der);
        }
    }

    warnings.extend(intermediates.without_crl(&crl_issuers));

    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        // A CA without a CRL file is not an error: only CAs that publish one are checked.
        .allow_unknown_revocation_status();
    if l.crl_expired == CrlExpired::Refuse {
        builder = builder.enforce_revocation_expiration();
    }
    let webpki = builder.build().map_err(|e| {
        KeyError::new(
            "listener.client_ca".to_string(),
            format!("cannot build the client verifier: {e}"),
        )
    })?;

    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(KeyUsageVerifier { inner: webpki });

    let chain = load_certs("listener.server_cert", &l.server_cert)?;
    let (_, leaf) = X509Certificate::from_der(&chain[0])
        .map_err(|_| KeyError::new("listener.server_cert", "the first certificate cannot be parsed"))?;
    let server_not_after = leaf.validity().not_after.timestamp();
    let key = load_key("listener.server_key", &l.server_key)?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        KeyError::new(
            "listener.server_key".to_string(),
            format!("does not match listener.server_cert: {e}"),
        )
    })?;

    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| KeyError::new("listener", e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(NoteSni(Arc::new(certified))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let sessions = (l.session_resumption && !l.session_lifetime.is_zero()).then(|| match sessions {
        Some(kept) if kept.lifetime == l.session_lifetime => kept.clone(),
        _ => Arc::new(SessionCache::new(l.session_lifetime)),
    });
    match &sessions {
        // Stateful resumption (no `Ticketer`): TLS 1.2 session ids and TLS 1.3 tickets are keys
        // into this cache, which holds each session no longer than the lifetime.
        Some(cache) => config.session_storage = cache.clone(),
        None => {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
    }
    Ok(TlsState {
        server_config: Arc::new(config),
        server_not_after,
        crl_next_update,
        revoked,
        verifier,
        warnings,
        sessions,
    })
}

impl TlsState {
    /// Whether the loaded CRLs revoke the certificate `issuer` (its issuer's name, DER) gave
    /// this serial (lowercase hex of the DER integer's bytes), as
    /// [`crate::identity::ClientIdentity`] holds them.
    pub fn is_revoked(&self, issuer: &[u8], serial_hex: &str) -> bool {
        !self.revoked.is_empty()
            && self
                .revoked
                .get(serial_key(serial_hex))
                .is_some_and(|issuers| issuers.iter().any(|i| **i == *issuer))
    }
}

/// A serial's hex without leading zero bytes: DER puts a `00` before a serial whose top bit is
/// set, and a certificate and a CRL entry written by different tools need not agree on it.
pub fn serial_key(serial_hex: &str) -> &str {
    let mut s = serial_hex;
    while s.len() > 2 && s.starts_with("00") {
        s = &s[2..];
    }
    s
}

// === the handshake note ===

/// What the handshake learnt about the peer, kept for the `tls_rejected` record. Filled by the
/// verifier and resolver below, which rustls calls synchronously inside the accept future's poll,
/// so a task-local scoped around that future is the connection's own slot.
///
/// Nothing here is verified (the handshake may be refused for that very reason), so what comes
/// from the peer is kept only as a [`Summary`]: a certificate can carry a subject of tens of
/// kilobytes, and a refused handshake costs the peer nothing.
#[derive(Debug, Default, Clone)]
pub struct HandshakeNote {
    pub sni: Option<Summary>,
    /// The certificate's subject (RFC 4514).
    pub subject: Option<Summary>,
    /// `sha256:<hex>` of the certificate: bounded, and names it exactly.
    pub fingerprint: Option<String>,
    pub reason: Option<&'static str>,
    /// When the full handshake behind a resumed session was (`SessionCache`'s clock): the
    /// tickets this connection is given carry it on. Not recorded.
    pub authenticated_ms: Option<u64>,
}

/// Text from an unauthenticated peer, bounded: at most [`Summary::KEEP`] bytes of it, and when
/// it was longer, its whole length and SHA-256 (hex), so the record still says what was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub text: String,
    /// `Some((length in bytes, SHA-256 hex))` of the whole when `text` is cut.
    pub cut: Option<(u64, String)>,
}

impl Summary {
    pub const KEEP: usize = 256;

    pub fn of(whole: &str) -> Summary {
        if whole.len() <= Summary::KEEP {
            return Summary {
                text: whole.to_string(),
                cut: None,
            };
        }
        let mut end = Summary::KEEP;
        while !whole.is_char_boundary(end) {
            end -= 1;
        }
        let sha = crate::hex(ring::digest::digest(&ring::digest::SHA256, whole.as_bytes()).as_ref());
        Summary {
            text: whole[..end].to_string(),
            cut: Some((whole.len() as u64, sha)),
        }
    }

    /// The whole text's length in bytes, when cut.
    pub fn whole_len(&self) -> Option<u64> {
        self.cut.as_ref().map(|c| c.0)
    }

    /// The whole text's SHA-256 (hex), when cut.
    pub fn sha256(&self) -> Option<String> {
        self.cut.as_ref().map(|c| c.1.clone())
    }
}

tokio::task_local! {
    static NOTE: RefCell<HandshakeNote>;
}

/// Runs a handshake future with a fresh note; returns the note with the result.
pub async fn with_note<F: std::future::Future>(fut: F) -> (F::Output, HandshakeNote) {
    NOTE.scope(RefCell::new(HandshakeNote::default()), async move {
        let out = fut.await;
        let note = NOTE.with(|n| n.borrow().clone());
        (out, note)
    })
    .await
}

fn note(f: impl FnOnce(&mut HandshakeNote)) {
    let _ = NOTE.try_with(|n| f(&mut n.borrow_mut()));
}

/// The `tls_rejected` reason for a failed handshake.
pub fn rejection_reason(err: &std::io::Error, note: &HandshakeNote) -> &'static str {
    if let Some(r) = note.reason {
        return r;
    }
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(e)) => cert_reason(e),
        _ => "other",
    }
}

fn cert_reason(e: &CertificateError) -> &'static str {
    match e {
        CertificateError::UnknownIssuer => "unknown_issuer",
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_yet_valid",
        CertificateError::Revoked => "revoked",
        CertificateError::BadSignature => "bad_signature",
        _ => "other",
    }
}

#[derive(Debug)]
struct NoteSni(Arc<CertifiedKey>);

impl ResolvesServerCert for NoteSni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            note(|n| n.sni = Some(Summary::of(sni)));
        }
        Some(self.0.clone())
    }
}

/// webpki checks the chain, validity, CRLs and extended key usage, but not key usage: this adds
/// it (a client leaf must allow digitalSignature when it has a key usage extension at all).
#[derive(Debug)]
struct KeyUsageVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for KeyUsageVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let parsed = X509Certificate::from_der(end_entity).ok().map(|(_, c)| c);
        note(|n| {
            // A full handshake: the sessions it makes start now.
            n.authenticated_ms = None;
            n.fingerprint = Some(format!(
                "sha256:{}",
                crate::hex(ring::digest::digest(&ring::digest::SHA256, end_entity).as_ref())
            ));
            n.subject = parsed
                .as_ref()
                .map(|c| Summary::of(&crate::identity::rfc4514(c.subject())));
        });
        let result = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .and_then(|ok| {
                let Some(cert) = &parsed else {
                    return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
                };
                match cert.key_usage() {
                    Ok(Some(ku)) if !ku.value.digital_signature() => {
                        Err(Error::InvalidCertificate(CertificateError::InvalidPurpose))
                    }
                    Err(_) => Err(Error::InvalidCertificate(CertificateError::BadEncoding)),
                    _ => Ok(ok),
                }
            });
        if let Err(Error::InvalidCertificate(e)) = &result {
            let reason = cert_reason(e);
            note(|n| n.reason = Some(reason));
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn a_summary_keeps_256_bytes_and_the_length_and_sha256_of_the_rest() {
        assert_eq!(Summary::of("CN=gp").text, "CN=gp");
        assert_eq!(Summary::of("CN=gp").cut, None);
        let long = format!("CN={}", "é".repeat(30_000));
        let s = Summary::of(&long);
        assert!(s.text.len() <= Summary::KEEP && long.starts_with(&s.text));
        assert_eq!(s.whole_len(), Some(long.len() as u64));
        let sha = crate::hex(ring::digest::digest(&ring::digest::SHA256, long.as_bytes()).as_ref());
        assert_eq!(s.sha256(), Some(sha));
    }
}
