//! The auditor's public key: an Ed25519 SPKI PEM, and its `key_id`.

use std::path::Path;

use base64::Engine as _;
use ring::digest;

use super::VerifyError;

/// Reads a PEM `PUBLIC KEY` (Ed25519 SubjectPublicKeyInfo) and returns the raw 32-byte key.
pub fn read_public_key(path: &Path) -> Result<[u8; 32], VerifyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| VerifyError::BadKey(format!("cannot read public key {}: {e}", path.display())))?;
    parse_public_key_pem(&text).map_err(|why| VerifyError::BadKey(format!("public key {}: {why}", path.display())))
}

/// The Ed25519 SubjectPublicKeyInfo DER prefix (RFC 8410): SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes) }. Checking it whole rejects RSA/EC keys with a clear
/// message instead of a signature mismatch later.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

pub fn parse_public_key_pem(text: &str) -> Result<[u8; 32], String> {
    let begin = "-----BEGIN PUBLIC KEY-----";
    let end = "-----END PUBLIC KEY-----";
    let start = text.find(begin).ok_or("not a PEM \"PUBLIC KEY\" file")? + begin.len();
    let stop = text[start..]
        .find(end)
        .ok_or("PEM \"PUBLIC KEY\" block has no END line")?
        + start;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 in PEM: {e}"))?;
    if der.len() != 44 || der[..12] != ED25519_SPKI_PREFIX {
        return Err("not an Ed25519 public key".into());
    }
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&der[12..]);
    Ok(raw)
}

/// `key_id` as the writer computes it: the first 16 hex digits of SHA-256(raw public key).
pub fn key_id(raw_public_key: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, raw_public_key);
    crate::hex(&d.as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_keys_parse_and_others_are_refused() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(pair.public_key().as_ref());
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        assert_eq!(parse_public_key_pem(&pem).unwrap(), pair.public_key().as_ref());
        assert!(parse_public_key_pem("hello").is_err());
        let short = pem.replace(&b64, &b64[..20]);
        assert!(parse_public_key_pem(&short).is_err());
        assert_eq!(key_id(&[0u8; 32]).len(), 16);
    }
}
