//! Signed checkpoints (SPEC §5): an Ed25519 signature over the chain head and the time, so that
//! anyone with the public key can detect a trail that was rewritten after the fact, and tell how
//! long it claims to run (issue 19: a trail cut after an earlier checkpoint still ends signed).
//!
//! A checkpoint record's own members, after the `seq`, `time` and `event` every record has, are
//! `"chain_head":"<hash of the record before it>","next_due":"<RFC 3339>","key_id":"<16 hex>",
//! "signature":"<base64>"`. `next_due` is the time by which the next checkpoint is due: the
//! checkpoint's `time` plus `checkpoint_interval` (the writer signs at least that often, records
//! or not). The signature covers [`checkpoint_message`].
//!
//! Versions of the signed message, the one definition (docs/auditors.md repeats it):
//!
//! - v2 (written now): `caregate-checkpoint-v2\n<seq>\n<chain_head>\n<time>\n<next_due>\n`
//! - v1 (trails written before `next_due` existed; such a record has no `next_due` member):
//!   `caregate-checkpoint-v1\n<seq>\n<chain_head>\n`, which leaves the record's `time` unsigned.
//!
//! A verifier builds v2 for a record with `next_due` and v1 for one without: taking `next_due`
//! out of a v2 record does not make a valid v1 one, the signature covers other bytes.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::AuditError;

/// The first line of a v1 message.
pub const CHECKPOINT_V1: &str = "caregate-checkpoint-v1";
/// The first line of a v2 message.
pub const CHECKPOINT_V2: &str = "caregate-checkpoint-v2";

/// The bytes a checkpoint signs (v2):
/// `caregate-checkpoint-v2\n<seq>\n<chain_head>\n<time>\n<next_due>\n`, where `seq` and `time`
/// are the checkpoint record's own, `chain_head` the `hash` of the record before it and
/// `next_due` its `next_due` member, each exactly as written in the record.
///
/// The one definition of the signed message; verifiers must build exactly these bytes.
pub fn checkpoint_message(seq: u64, chain_head: &str, time: &str, next_due: &str) -> Vec<u8> {
    format!("{CHECKPOINT_V2}\n{seq}\n{chain_head}\n{time}\n{next_due}\n").into_bytes()
}

/// The bytes a v1 checkpoint signed (a record without `next_due`):
/// `caregate-checkpoint-v1\n<seq>\n<chain_head>\n`. Only verifiers build it now.
pub fn checkpoint_message_v1(seq: u64, chain_head: &str) -> Vec<u8> {
    format!("{CHECKPOINT_V1}\n{seq}\n{chain_head}\n").into_bytes()
}

/// `next_due` of a checkpoint written at `time` (a record time, RFC 3339 UTC with microseconds):
/// `time` + `interval`, written the same way.
pub(crate) fn next_due(time: &str, interval: Duration) -> String {
    use time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(time, &Rfc3339).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let micros = (at.unix_timestamp_nanos() / 1000).max(0) as u64;
    let interval = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
    super::chain::format_micros(micros.saturating_add(interval))
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

    /// The checkpoint record's own members (no braces) for a checkpoint at `seq` whose record
    /// `time` is `time` (v2, see [`checkpoint_message`]).
    pub(crate) fn fields(&self, seq: u64, chain_head: &str, time: &str, next_due: &str) -> Vec<u8> {
        let signature = self.key.sign(&checkpoint_message(seq, chain_head, time, next_due));
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.as_ref());
        format!(
            "\"chain_head\":\"{chain_head}\",\"next_due\":\"{next_due}\",\"key_id\":\"{}\",\"signature\":\"{signature}\"",
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

    const T: &str = "2026-11-22T05:08:59.123456Z";
    const DUE: &str = "2026-11-22T05:09:59.123456Z";

    #[test]
    fn message_formats_are_pinned() {
        assert_eq!(
            checkpoint_message(42, "ab", T, DUE),
            b"caregate-checkpoint-v2\n42\nab\n2026-11-22T05:08:59.123456Z\n2026-11-22T05:09:59.123456Z\n".to_vec()
        );
        assert_eq!(
            checkpoint_message_v1(42, "ab"),
            b"caregate-checkpoint-v1\n42\nab\n".to_vec()
        );
    }

    #[test]
    fn next_due_is_time_plus_interval_in_record_format() {
        assert_eq!(next_due(T, Duration::from_secs(60)), DUE);
        assert_eq!(
            next_due("2026-12-31T23:59:59.999999Z", Duration::from_micros(2)),
            "2027-01-01T00:00:00.000001Z"
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
        let fields = signer.fields(9, head, T, DUE);
        let v: serde_json::Value = serde_json::from_slice(&[b"{".as_slice(), &fields, b"}"].concat()).unwrap();
        assert_eq!(v["chain_head"], head);
        assert_eq!(v["next_due"], DUE);
        assert_eq!(v["key_id"], key_id(&public));
        assert_eq!(v["key_id"].as_str().unwrap().len(), 16);
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().unwrap())
            .unwrap();
        let public = UnparsedPublicKey::new(&ED25519, &public);
        public.verify(&checkpoint_message(9, head, T, DUE), &sig).unwrap();
        // Every part is signed: another seq, time or next_due, or the v1 message, fails.
        assert!(public.verify(&checkpoint_message(10, head, T, DUE), &sig).is_err());
        assert!(public.verify(&checkpoint_message(9, head, DUE, DUE), &sig).is_err());
        let later = "2026-11-22T06:09:59.123456Z";
        assert!(public.verify(&checkpoint_message(9, head, T, later), &sig).is_err());
        assert!(public.verify(&checkpoint_message_v1(9, head), &sig).is_err());
    }

    #[test]
    fn load_reports_a_bad_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, "not pem").unwrap();
        assert!(matches!(Signer::load(&path), Err(AuditError::SigningKey(_))));
    }
}
