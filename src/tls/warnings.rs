//! What an operator should know about the client CAs although they load: `caregate check`
//! prints these, start and reload log them.

use std::path::Path;
use x509_parser::prelude::*;

/// Name constraints in a client CA that webpki does not evaluate. It fails closed on them (RFC
/// 5280 allows that), so a CA that has them looks, to its users, like a CA whose certificates
/// are refused for no reason: say so at `check` rather than at the first handshake.
pub(super) fn unevaluated_name_constraints(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(nc)) = cert.name_constraints() else {
        return Vec::new();
    };
    let subtrees = [&nc.value.permitted_subtrees, &nc.value.excluded_subtrees];
    let mut forms: Vec<(&str, &str)> = Vec::new();
    for subtree in subtrees.into_iter().flatten().flatten() {
        let form = match &subtree.base {
            GeneralName::DNSName(_) | GeneralName::IPAddress(_) => continue,
            GeneralName::DirectoryName(_) => ("directoryName", "every certificate under it"),
            GeneralName::URI(_) => (
                "URI",
                "its certificates with a URI SAN, the urn:nhs:ods: organisation SAN among them",
            ),
            GeneralName::RFC822Name(_) => ("e-mail (rfc822Name)", "its certificates with an e-mail SAN"),
            _ => ("another form of", "its certificates with a SAN of that form"),
        };
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    let subject = crate::identity::rfc4514(cert.subject());
    forms
        .into_iter()
        .map(|(form, refused)| {
            format!(
                "the CA \"{subject}\" has {form} name constraints, which the client verifier does not evaluate: it refuses {refused}"
            )
        })
        .collect()
}

/// The intermediate CAs (certificates their subject did not issue) in the client CA files.
/// webpki lets a certificate through whose issuer has no CRL (`allow_unknown_revocation_status`),
/// and a root's CRL does not cover the leaves under an intermediate: an intermediate without a
/// CRL of its own means its leaves are never checked for revocation. Say so, rather than let
/// them look checked.
#[derive(Default)]
pub(super) struct Intermediates(Vec<(Vec<u8>, String)>);

impl Intermediates {
    /// Notes `der`, a certificate of the file `path` at `key`, if it is an intermediate.
    pub(super) fn add(&mut self, key: &str, path: &Path, der: &[u8]) {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return;
        };
        if cert.issuer().as_raw() == cert.subject().as_raw() {
            return;
        }
        let name = crate::identity::rfc4514(cert.subject());
        let warning = format!(
            "{key}: the intermediate CA \"{name}\" in {} has no CRL in listener.crl: the certificates it issues are never checked for revocation",
            path.display()
        );
        self.0.push((cert.subject().as_raw().to_vec(), warning));
    }

    /// One warning per intermediate that none of these CRL issuers (names, DER) is.
    pub(super) fn without_crl(self, crl_issuers: &[Vec<u8>]) -> impl Iterator<Item = String> + '_ {
        self.0
            .into_iter()
            .filter(|(subject, _)| !crl_issuers.contains(subject))
            .map(|(_, warning)| warning)
    }
}
