//! Signatures a receiver can check from the raw body: the contract's `X-Webhook-Signature`
//! (hex HMAC-SHA256 of the body, keyed with the secret as given) and the Standard Webhooks
//! headers (`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
//! base64-decoded part of the `whsec_…` secret), whose timestamp lets receivers reject replays.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Webhook-Signature`: hex HMAC-SHA256 of the raw body, keyed with the whole secret string.
pub fn contract_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac(secret.as_bytes(), &[body]))
}

/// `webhook-signature` of the Standard Webhooks scheme.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix(PREFIX)
        .and_then(|k| STANDARD.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let ts = timestamp.to_string();
    let mac = hmac(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_independent_computations() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_") && secret.len() > 40);
        let body = br#"{"event":"job.completed"}"#;
        // Recomputed with the primitives a receiver would use.
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        assert_eq!(
            contract_signature(&secret, body),
            hex::encode(mac.finalize().into_bytes())
        );
        let key = STANDARD.decode(&secret[6..]).unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(b"msg_1.1700000000.");
        mac.update(body);
        assert_eq!(
            standard_signature(&secret, "msg_1", 1_700_000_000, body),
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        );
        assert_ne!(
            standard_signature(&secret, "msg_2", 1_700_000_000, body),
            standard_signature(&secret, "msg_1", 1_700_000_000, body)
        );
    }
}
