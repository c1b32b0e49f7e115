//! Password sessions: short-lived HS256 JWT access tokens and long-lived refresh tokens that
//! rotate on every use. The signing secret lives in the database so every API process agrees.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use convertrilo_core::UserId;
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct SessionKeys {
    secret: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    /// Only access tokens are JWTs; the field guards against other uses of the same secret.
    typ: String,
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

impl SessionKeys {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn sign(&self, data: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(data.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// An access token for `user`, valid `ttl_secs` from `now` (Unix seconds).
    pub fn access_token(&self, user: UserId, now: i64, ttl_secs: i64) -> String {
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + ttl_secs,
            typ: "access".into(),
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let data = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = self.sign(&data);
        format!("{data}.{sig}")
    }

    /// The user an access token names, if its signature holds and it has not expired.
    pub fn verify_access(&self, token: &str, now: i64) -> Result<UserId, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the bearer token is not a JWT");
        };
        // Only our own header is accepted: no algorithm negotiation ("alg": "none" attacks).
        if h != URL_SAFE_NO_PAD.encode(HEADER) {
            return Err("the bearer token was not issued by this server");
        }
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{h}.{p}").as_bytes());
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "the bearer token's signature is malformed")?;
        mac.verify_slice(&sig)
            .map_err(|_| "the bearer token's signature does not match")?;
        let claims: Claims = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(p)
                .map_err(|_| "the bearer token is malformed")?,
        )
        .map_err(|_| "the bearer token is malformed")?;
        if claims.typ != "access" {
            return Err("the bearer token is not an access token");
        }
        if claims.exp <= now {
            return Err("the access token has expired; get a new one from POST /auth/refresh");
        }
        claims
            .sub
            .parse()
            .map_err(|_| "the bearer token is malformed")
    }
}

/// A new opaque refresh token and its digest (only the digest is stored).
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let raw = format!("cvr_{}", URL_SAFE_NO_PAD.encode(bytes));
    let digest = refresh_digest(&raw);
    (raw, digest)
}

pub fn refresh_digest(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_verify_and_expire() {
        let keys = SessionKeys::new(b"k".to_vec());
        let user = UserId::new();
        let t = keys.access_token(user, 1_000, 60);
        assert_eq!(keys.verify_access(&t, 1_030), Ok(user));
        assert!(keys
            .verify_access(&t, 1_060)
            .unwrap_err()
            .contains("expired"));
        assert!(SessionKeys::new(b"other".to_vec())
            .verify_access(&t, 1_030)
            .is_err());
        let mut tampered = t.clone();
        tampered.insert(tampered.find('.').unwrap() + 3, 'x');
        assert!(keys.verify_access(&tampered, 1_030).is_err());
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            t.split('.').nth(1).unwrap()
        );
        assert!(keys.verify_access(&none_alg, 1_030).is_err());
        let (raw, digest) = new_refresh_token();
        assert_eq!(refresh_digest(&raw), digest);
    }
}
