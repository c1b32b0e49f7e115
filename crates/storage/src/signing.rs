//! Signed, expiring URLs for the API's own upload and download routes.
//!
//! The signature is HMAC-SHA256 over `method`, object key, expiry and (for downloads) the
//! file name offered to the browser, so none of them can be changed without the secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
    base_url: String,
}

/// The parts of a signed URL's query string.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedUrl {
    pub key: String,
    pub expires: i64,
    pub name: Option<String>,
    pub sig: String,
}

impl UrlSigner {
    pub fn new(secret: impl Into<Vec<u8>>, base_url: &str) -> Self {
        Self {
            secret: secret.into(),
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn mac(&self, method: &str, key: &str, expires: i64, name: Option<&str>) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(format!("{method}\n{key}\n{expires}\n{}", name.unwrap_or("")).as_bytes());
        mac
    }

    fn signature(&self, method: &str, key: &str, expires: i64, name: Option<&str>) -> String {
        hex::encode(self.mac(method, key, expires, name).finalize().into_bytes())
    }

    /// `PUT {base}/uploads/{key}?expires=…&sig=…`
    pub fn upload_url(&self, key: &str, expires: i64) -> String {
        let sig = self.signature("PUT", key, expires, None);
        format!(
            "{}/uploads/{key}?expires={expires}&sig={sig}",
            self.base_url
        )
    }

    /// `GET {base}/files/{key}?expires=…&name=…&sig=…`
    pub fn download_url(&self, key: &str, expires: i64, name: &str) -> String {
        let sig = self.signature("GET", key, expires, Some(name));
        format!(
            "{}/files/{key}?expires={expires}&name={}&sig={sig}",
            self.base_url,
            percent_encode(name)
        )
    }

    /// Checks signature and expiry; `now` in Unix seconds.
    pub fn verify(&self, method: &str, url: &SignedUrl, now: i64) -> Result<(), &'static str> {
        // Constant-time comparison through the MAC's own verifier.
        let mac = self.mac(method, &url.key, url.expires, url.name.as_deref());
        let given = hex::decode(&url.sig).map_err(|_| "the link's signature is malformed")?;
        if mac.verify_slice(&given).is_err() {
            return Err("the link's signature does not match; request a fresh link");
        }
        if url.expires < now {
            return Err("the link has expired; request a fresh link from the job's status");
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> SignedUrl {
        let (path, query) = url.split_once('?').unwrap();
        let key = path
            .split_once("/files/")
            .or_else(|| path.split_once("/uploads/"))
            .unwrap()
            .1
            .to_string();
        let mut u = SignedUrl {
            key,
            expires: 0,
            name: None,
            sig: String::new(),
        };
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            match k {
                "expires" => u.expires = v.parse().unwrap(),
                "name" => u.name = Some(v.replace("%20", " ")),
                "sig" => u.sig = v.to_string(),
                _ => {}
            }
        }
        u
    }

    #[test]
    fn signs_and_rejects_tampering_and_expiry() {
        let s = UrlSigner::new(b"secret".to_vec(), "http://127.0.0.1:8080/");
        let url = s.download_url("outputs/j/out", 2_000, "my clip.mp4");
        assert!(url.starts_with(
            "http://127.0.0.1:8080/files/outputs/j/out?expires=2000&name=my%20clip.mp4&sig="
        ));
        let good = parse(&url);
        assert!(s.verify("GET", &good, 1_000).is_ok());
        assert!(s
            .verify("GET", &good, 3_000)
            .unwrap_err()
            .contains("expired"));
        assert!(s.verify("PUT", &good, 1_000).is_err());
        let mut other = good.clone();
        other.key = "outputs/k/out".into();
        assert!(s.verify("GET", &other, 1_000).is_err());
        let mut renamed = good.clone();
        renamed.name = Some("x.mp4".into());
        assert!(s.verify("GET", &renamed, 1_000).is_err());
        let up = parse(&s.upload_url("inputs/j", 2_000));
        assert!(s.verify("PUT", &up, 1_000).is_ok());
    }
}
