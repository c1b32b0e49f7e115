//! Customer credentials at rest. A job's S3 keys and OAuth tokens are sealed with
//! ChaCha20-Poly1305 under a 256-bit server key before they reach the database: a fresh random
//! nonce per seal, stored in front of the ciphertext, and the job id as associated data, so a
//! sealed blob opens only for the job it was made for.
//!
//! The key comes from `job_secrets_key` in the configuration when set (keep it outside the
//! database that holds the ciphertexts), else from a random key the first server start stores
//! in the `settings` table (shared by every process on that database, like the URL-signing
//! secret). Rows are deleted when their job ends, so a key change only strands running jobs,
//! which then fail with a message that says so.

use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    ChaCha20Poly1305, Key, Nonce,
};
use convertrilo_core::{external::JobSecrets, JobId};
use rand::RngCore;

const NONCE_LEN: usize = 12;

pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("job_secrets_key must be 64 hex characters (32 bytes); generate one with `openssl rand -hex 32`")]
    BadKey,
    #[error("the job's stored credentials cannot be read with this server's key (was job_secrets_key changed?)")]
    Unreadable,
}

impl SecretBox {
    pub fn from_hex(key: &str) -> Result<SecretBox, SecretError> {
        let bytes = hex::decode(key.trim()).map_err(|_| SecretError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SecretError::BadKey);
        }
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// A new random key, hex-encoded.
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        hex::encode(key)
    }

    pub fn seal(&self, job: JobId, secrets: &JobSecrets) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        // Serializing a map of strings cannot fail.
        let plain = serde_json::to_vec(secrets).unwrap_or_default();
        let aad = job.to_string();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, job: JobId, blob: &[u8]) -> Result<JobSecrets, SecretError> {
        if blob.len() < NONCE_LEN {
            return Err(SecretError::Unreadable);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let aad = job.to_string();
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Unreadable)?;
        serde_json::from_slice(&plain).map_err(|_| SecretError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convertrilo_core::external::{S3Keys, Secret};

    #[test]
    fn seals_per_job_and_hides_the_plaintext() {
        let b = SecretBox::from_hex(&SecretBox::generate_hex()).unwrap();
        let secrets = JobSecrets {
            source_s3: Some(S3Keys {
                access_key_id: Secret::new("AKIAEXAMPLE"),
                secret_access_key: Secret::new("very-secret-value"),
            }),
            ..JobSecrets::default()
        };
        let (a, other) = (JobId::new(), JobId::new());
        let blob = b.seal(a, &secrets);
        assert!(!String::from_utf8_lossy(&blob).contains("very-secret-value"));
        assert_ne!(blob, b.seal(a, &secrets), "a fresh nonce every time");
        assert_eq!(b.open(a, &blob).unwrap(), secrets);
        assert!(b.open(other, &blob).is_err(), "bound to its job");
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(b.open(a, &tampered).is_err());
        let stranger = SecretBox::from_hex(&SecretBox::generate_hex()).unwrap();
        assert!(stranger.open(a, &blob).is_err());
        assert!(SecretBox::from_hex("abcd").is_err());
    }
}
