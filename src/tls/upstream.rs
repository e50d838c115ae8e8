//! The client side: the rustls `ClientConfig` an `[[upstream]]` is reached with (its CA, and a
//! client certificate where the upstream asks for one).

use super::{certs_from_pem, key_from_pem, read};
use crate::config::{self, KeyError};
use std::path::Path;
use std::sync::Arc;

/// An upstream's TLS settings, and a digest of the files they came from: a reload that finds
/// the same config and the same files keeps the upstream, with its open connections.
pub struct UpstreamTls {
    pub config: rustls::ClientConfig,
    /// SHA-256 over the CA, client certificate and key files, as read.
    pub files_sha256: [u8; 32],
}

/// Builds the TLS client config of `upstream[i]`.
pub fn build(i: usize, u: &config::Upstream) -> Result<UpstreamTls, KeyError> {
    let key = |k: &str| format!("upstream[{i}].{k}");
    let mut files = ring::digest::Context::new(&ring::digest::SHA256);
    let mut read_file = |k: &str, path: &Path| -> Result<Vec<u8>, KeyError> {
        let bytes = read(&key(k), path)?;
        files.update(&bytes);
        Ok(bytes)
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &u.ca {
        let pem = read_file("ca", ca)?;
        for cert in certs_from_pem(&key("ca"), ca, &pem)? {
            roots.add(cert).map_err(|e| {
                KeyError::new(
                    key("ca"),
                    format!("{} is not a usable CA certificate: {e}", ca.display()),
                )
            })?;
        }
    }
    if u.ca.is_none() && u.urls.iter().any(|u| u.scheme_str() == Some("https")) {
        return Err(KeyError::new(
            key("ca"),
            "an https upstream needs the CA that signed its certificate",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| KeyError::new(key("ca"), e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&u.client_cert, &u.client_key) {
        (Some(c), Some(k)) => {
            let chain = certs_from_pem(&key("client_cert"), c, &read_file("client_cert", c)?)?;
            let private = key_from_pem(&key("client_key"), k, &read_file("client_key", k)?)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| KeyError::new(key("client_key"), format!("does not match client_cert: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut files_sha256 = [0u8; 32];
    files_sha256.copy_from_slice(files.finish().as_ref());
    Ok(UpstreamTls { config, files_sha256 })
}
