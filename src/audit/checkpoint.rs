//! Signed checkpoints (SPEC §5): an Ed25519 signature over the chain head, so that anyone with
//! the public key can detect a trail that was truncated or rewritten after the fact.
//!
//! A checkpoint record's own members are
//! `"chain_head":"<hash of the record before it>","key_id":"<16 hex>","signature":"<base64>"`,
//! and the signature covers [`checkpoint_message`] of the checkpoint's own `seq`.

use std::path::Path;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::AuditError;

/// The bytes a checkpoint signs: `caregate-checkpoint-v1\n<seq>\n<chain_head>\n`, where `seq` is
/// the checkpoint record's own `seq` and `chain_head` the `hash` of the record before it.
///
/// The one definition of the signed message; verifiers must build exactly these bytes.
pub fn checkpoint_message(seq: u64, chain_head: &str) -> Vec<u8> {
    format!("caregate-checkpoint-v1\n{seq}\n{chain_head}\n").into_bytes()
}

/// `key_id` of a public key: the first 16 hex digits of SHA-256 of the raw 32-byte key.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    let mut id = crate::hex(digest.as_ref());
    id.truncate(16);
    id
}

/// The writer's signing key.
pub(crate) struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
}

impl Signer {
    /// Loads an Ed25519 PKCS#8 key from a PEM file (`-----BEGIN PRIVATE KEY-----`).
    pub(crate) fn load(path: &Path) -> Result<Signer, AuditError> {
        let der = PrivatePkcs8KeyDer::from_pem_file(path)
            .map_err(|e| AuditError::SigningKey(format!("{}: not a PKCS#8 PEM private key: {e}", path.display())))?;
        Signer::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| AuditError::SigningKey(format!("{}: {e}", path.display())))
    }

    /// From PKCS#8 DER (v1 or v2, as `openssl genpkey -algorithm ed25519` and ring write them).
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Signer, AuditError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| AuditError::SigningKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Signer { key, key_id })
    }

    /// The checkpoint record's own members (no braces) for a checkpoint at `seq`.
    pub(crate) fn fields(&self, seq: u64, chain_head: &str) -> Vec<u8> {
        let signature = self.key.sign(&checkpoint_message(seq, chain_head));
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());
        format!(
            "\"chain_head\":\"{chain_head}\",\"key_id\":\"{}\",\"signature\":\"{signature}\"",
            self.key_id
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn message_format_is_pinned() {
        assert_eq!(
            checkpoint_message(42, "ab"),
            b"caregate-checkpoint-v1\n42\nab\n".to_vec()
        );
    }

    #[test]
    fn fields_carry_a_verifiable_signature() {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let signer = Signer::from_pkcs8(pkcs8.as_ref()).unwrap();
        let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let head = super::super::chain::GENESIS;
        let fields = signer.fields(9, head);
        let v: serde_json::Value = serde_json::from_slice(&[b"{".as_slice(), &fields, b"}"].concat()).unwrap();
        assert_eq!(v["chain_head"], head);
        assert_eq!(v["key_id"], key_id(&public));
        assert_eq!(v["key_id"].as_str().unwrap().len(), 16);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().unwrap())
            .unwrap();
        let public = UnparsedPublicKey::new(&ED25519, &public);
        public.verify(&checkpoint_message(9, head), &sig).unwrap();
        assert!(public.verify(&checkpoint_message(10, head), &sig).is_err());
    }

    #[test]
    fn load_reports_a_bad_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not pem").unwrap();
        assert!(matches!(Signer::load(&path), Err(AuditError::SigningKey(_))));
    }
}
