//! Customers' own storage as jobs refer to it: S3-compatible buckets and Google Drive.
//!
//! Locations (bucket, key, folder) are plain data, stored with the job and shown in status
//! responses. Credentials are [`Secret`]s: `Debug` never prints them, and they are only
//! serialized into the job's encrypted secrets (see the server's `secrets` module).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A credential string. Serializes in clear (only ever into an encrypted blob); `Debug`
/// shows `***`, so a logged request or job never carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An S3-compatible bucket: where it is and how it is addressed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketRef {
    pub bucket: String,
    /// The provider's endpoint; AWS S3 (from the region) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
}

/// The region used when a request names none (AWS's default; most S3-compatible servers
/// accept any region).
pub const DEFAULT_REGION: &str = "us-east-1";

impl BucketRef {
    /// The endpoint to talk to: the given one, else AWS S3's regional endpoint.
    pub fn endpoint_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region))
    }
}

/// One object in a bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3ObjectRef {
    #[serde(flatten)]
    pub bucket: BucketRef,
    pub key: String,
}

/// A job's source when it is in the customer's storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SourceRef {
    S3(S3ObjectRef),
    #[serde(rename_all = "camelCase")]
    GoogleDrive {
        file_id: String,
        name: String,
    },
}

/// Where a job's output goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Destination {
    /// Kept by this server and served through a signed link (the contract's `cdn`).
    #[default]
    Cdn,
    S3(S3ObjectRef),
    #[serde(rename_all = "camelCase")]
    GoogleDrive {
        folder_id: String,
        file_name: String,
    },
}

/// An S3 access key pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Keys {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
}

/// Google OAuth tokens supplied by the caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriveTokens {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
}

/// Everything secret a job needs, kept encrypted apart from the job and deleted when the
/// job ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSecrets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_s3: Option<S3Keys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_drive: Option<DriveTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_s3: Option<S3Keys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_drive: Option<DriveTokens>,
}

impl JobSecrets {
    pub fn is_empty(&self) -> bool {
        self == &JobSecrets::default()
    }
}

/// File name extensions taken for videos when crawling a bucket prefix.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "wmv", "flv", "mpg", "mpeg", "m2v", "ts", "mts",
    "m2ts", "3gp", "3g2", "ogv", "mxf", "vob", "f4v", "asf", "dv",
];

/// Whether an object key or file name looks like a video, by its extension.
pub fn has_video_extension(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            let ext = ext.to_ascii_lowercase();
            VIDEO_EXTENSIONS.contains(&ext.as_str())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shapes_and_secrecy() {
        let dest = Destination::S3(S3ObjectRef {
            bucket: BucketRef {
                bucket: "out".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: "us-east-1".into(),
                force_path_style: true,
            },
            key: "a/b.mp4".into(),
        });
        let v = serde_json::to_value(&dest).unwrap();
        assert_eq!(v["type"], "s3");
        assert_eq!(
            (v["bucket"].as_str(), v["key"].as_str()),
            (Some("out"), Some("a/b.mp4"))
        );
        assert_eq!(serde_json::from_value::<Destination>(v).unwrap(), dest);
        let drive: Destination = serde_json::from_value(
            json!({"type": "google-drive", "folderId": "f", "fileName": "x.mp4"}),
        )
        .unwrap();
        assert!(matches!(drive, Destination::GoogleDrive { .. }));
        let secrets = JobSecrets {
            output_drive: Some(DriveTokens {
                access_token: Some(Secret::new("ya29.secret")),
                refresh_token: None,
            }),
            ..JobSecrets::default()
        };
        assert!(!format!("{secrets:?}").contains("ya29"));
        let round: JobSecrets =
            serde_json::from_slice(&serde_json::to_vec(&secrets).unwrap()).unwrap();
        assert_eq!(round, secrets);
        assert!(JobSecrets::default().is_empty());
    }

    #[test]
    fn video_extensions() {
        assert!(has_video_extension("in/Clip.MP4"));
        assert!(has_video_extension("a.mkv"));
        assert!(!has_video_extension("in/readme.txt"));
        assert!(!has_video_extension("in/.mp4"));
        assert!(!has_video_extension("in/mp4"));
        assert!(!has_video_extension("in/folder.mp4/"));
    }
}
