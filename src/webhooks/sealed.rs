//! Webhook signing secrets at rest: sealed with AES-256-GCM under a key kept outside the database
//! (`LEDGER_SECRETS_KEY`), bound to their endpoint's id, so a copy of the database alone (a
//! backup, a replica, a read-only role) cannot sign as the ledger.
//!
//! A stored secret reads `sealed.v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`; the key id
//! is the first 4 bytes of the key's SHA-256, so that with several keys (a rotation) each secret
//! names the one that opens it. A secret stored before sealing existed is plain `whsec_…`; it is
//! read as is, and sealed when the service starts with a key.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PREFIX: &str = "sealed.v1.";
const NONCE_LEN: usize = 12;

/// The keys that seal and open endpoint secrets: the first seals, every one opens.
#[derive(Clone)]
pub struct SecretKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

/// Two key lists are equal when they hold the same keys in the same order (compared by id).
impl PartialEq for SecretKeys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self.keys.iter().zip(&other.keys).all(|(a, b)| a.0 == b.0)
    }
}

impl Eq for SecretKeys {}

impl std::fmt::Debug for SecretKeys {
    // Key material never reaches a log line; the ids say which keys are loaded.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretKeys").field("ids", &ids).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the secret is sealed with key {0}, which is not in LEDGER_SECRETS_KEY")]
    UnknownKey(String),
    #[error("the sealed secret does not open: it was altered, or belongs to another endpoint")]
    Tampered,
    #[error("the stored secret is neither sealed nor a whsec_ secret")]
    Unreadable,
    #[error("the secret is sealed, and this process has no LEDGER_SECRETS_KEY to open it")]
    NoKeys,
}

impl SecretKeys {
    /// Parses `LEDGER_SECRETS_KEY`: comma-separated keys of 32 bytes, each as 64 hex digits or
    /// base64. `Err` says what is wrong without echoing the value.
    pub fn parse(raw: &str) -> Result<SecretKeys, String> {
        let keys = raw
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(i, text)| {
                let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    hex::decode(text).ok()
                } else {
                    STANDARD.decode(text).ok()
                };
                match bytes {
                    Some(bytes) if bytes.len() == 32 => Ok(Self::key(&bytes)),
                    _ => Err(format!(
                        "key {} is not 32 bytes as 64 hex digits or base64 (make one with `openssl rand -base64 32`)",
                        i + 1
                    )),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SecretKeys { keys })
    }

    fn key(bytes: &[u8]) -> (String, Aes256Gcm) {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        (id, Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Seals `secret` for the endpoint `endpoint`, under the first key.
    pub fn seal(&self, endpoint: Uuid, secret: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: endpoint.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message this short");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{id}.{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Whether `stored` is sealed under the current key (else it should be sealed again).
    pub fn is_current(&self, stored: &str) -> bool {
        key_id(stored) == Some(self.current_id())
    }

    /// The secret of a stored value (sealed or, from before sealing, plain).
    pub fn open(&self, endpoint: Uuid, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return plain(stored);
        };
        let (id, body) = rest.split_once('.').ok_or(SealError::Unreadable)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Unreadable)?;
        if bytes.len() <= NONCE_LEN {
            return Err(SealError::Unreadable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let opened = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered)?;
        String::from_utf8(opened).map_err(|_| SealError::Tampered)
    }
}

/// The secret of a stored value when this process has no keys: only a plain one reads.
pub fn open_without_keys(stored: &str) -> Result<String, SealError> {
    if stored.starts_with(PREFIX) {
        return Err(SealError::NoKeys);
    }
    plain(stored)
}

fn plain(stored: &str) -> Result<String, SealError> {
    if stored.starts_with(super::sign::SECRET_PREFIX) {
        Ok(stored.to_owned())
    } else {
        Err(SealError::Unreadable)
    }
}

fn key_id(stored: &str) -> Option<&str> {
    stored
        .strip_prefix(PREFIX)?
        .split_once('.')
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn b() -> String {
        STANDARD.encode([7u8; 32])
    }

    #[test]
    fn a_sealed_secret_opens_for_its_endpoint_only_and_hides_the_secret() {
        let keys = SecretKeys::parse(A).unwrap();
        let endpoint = Uuid::now_v7();
        let sealed = keys.seal(endpoint, "whsec_abc");
        assert!(sealed.starts_with("sealed.v1."), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            keys.seal(endpoint, "whsec_abc"),
            "a fresh nonce each time"
        );
        assert_eq!(keys.open(endpoint, &sealed).unwrap(), "whsec_abc");
        assert_eq!(
            keys.open(Uuid::now_v7(), &sealed),
            Err(SealError::Tampered),
            "moved to another endpoint"
        );
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.open(endpoint, &altered).is_err());
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = SecretKeys::parse(A).unwrap();
        let endpoint = Uuid::now_v7();
        let under_old = old.seal(endpoint, "whsec_x");
        let rotated = SecretKeys::parse(&format!("{}, {A}", b())).unwrap();
        assert_eq!(rotated.open(endpoint, &under_old).unwrap(), "whsec_x");
        assert!(!rotated.is_current(&under_old));
        assert!(rotated.is_current(&rotated.seal(endpoint, "whsec_x")));
        let only_new = SecretKeys::parse(&b()).unwrap();
        assert!(matches!(
            only_new.open(endpoint, &under_old),
            Err(SealError::UnknownKey(id)) if id == old.current_id()
        ));
    }

    #[test]
    fn plain_secrets_from_before_sealing_still_read() {
        let keys = SecretKeys::parse(A).unwrap();
        assert_eq!(keys.open(Uuid::nil(), "whsec_old").unwrap(), "whsec_old");
        assert!(!keys.is_current("whsec_old"));
        assert_eq!(open_without_keys("whsec_old").unwrap(), "whsec_old");
        let sealed = keys.seal(Uuid::nil(), "whsec_new");
        assert_eq!(open_without_keys(&sealed), Err(SealError::NoKeys));
        assert_eq!(
            keys.open(Uuid::nil(), "garbage"),
            Err(SealError::Unreadable)
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for raw in ["", "short", &"zz".repeat(32), &STANDARD.encode([1u8; 31])] {
            let err = SecretKeys::parse(raw).unwrap_err();
            assert!(err.contains("32 bytes"), "{err}");
            assert!(raw.is_empty() || !err.contains(raw), "{err}");
        }
        let err = SecretKeys::parse(&format!("{A},nope")).unwrap_err();
        assert!(err.starts_with("key 2"), "{err}");
    }
}
