//! The storage objects of requests: `sourceS3`, `outputS3` (a key, or a prefix the output's
//! file name is appended to), the folder variants, and the Google Drive source and output.
//! Issues name nested fields by their dotted path (`outputS3.bucket`).

use super::*;
use crate::external::{BucketRef, DriveTokens, S3Keys, S3ObjectRef, Secret, DEFAULT_REGION};

/// `sourceS3` of `POST /jobs`: one object.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Source {
    pub object: S3ObjectRef,
    /// `None`: unsigned requests (a public bucket).
    pub keys: Option<S3Keys>,
    /// The object's size when a listing told it (folder ingest); `None` from a request.
    pub size: Option<u64>,
}

/// How an S3 output is named.
#[derive(Debug, Clone, PartialEq)]
pub enum S3Naming {
    /// Exactly this key.
    Key(String),
    /// This prefix plus the output's file name.
    Prefix(String),
}

/// `outputS3`: where in a bucket the output goes.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Output {
    pub bucket: BucketRef,
    pub naming: S3Naming,
    pub keys: Option<S3Keys>,
}

/// `outputGoogleDrive`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveOutput {
    pub folder_id: String,
    /// The output's file name by default.
    pub file_name: Option<String>,
    pub tokens: DriveTokens,
}

/// `sourceS3` of folder ingest: a prefix to crawl.
#[derive(Debug, Clone, PartialEq)]
pub struct S3FolderSource {
    pub bucket: BucketRef,
    pub prefix: String,
    pub keys: Option<S3Keys>,
}

/// `sourceGoogleDrive` of folder ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveFolderSource {
    pub folder_id: String,
    pub tokens: DriveTokens,
}

/// A file found in a Drive folder, as a job's source.
#[derive(Debug, Clone, PartialEq)]
pub struct DriveFile {
    pub file_id: String,
    pub name: String,
    pub size: Option<u64>,
    /// Google's own measure of the video's length, when it has one.
    pub duration_sec: Option<f64>,
    pub tokens: DriveTokens,
}

const KEY_MAX: usize = 1024;
const TOKEN_MAX: usize = 4096;

impl<'a> Fields<'a> {
    /// The fields of a nested object, to be read and then merged back with `merge`.
    pub(super) fn nested(&mut self, name: &str) -> Option<Fields<'a>> {
        match self.get(name) {
            None => None,
            Some(Value::Object(m)) => Some(Fields {
                obj: m,
                issues: Vec::new(),
            }),
            Some(other) => {
                self.issue(name, format!("must be a JSON object; got {}", kind(other)));
                None
            }
        }
    }

    /// Takes a nested object's issues, their paths prefixed with `name.`.
    pub(super) fn merge(&mut self, name: &str, nested: Fields<'_>) {
        merge_prefixed(&mut self.issues, name, nested.issues);
    }

    fn bucket_ref(&mut self) -> BucketRef {
        let bucket = self.string("bucket", 255);
        match &bucket {
            None if self.get("bucket").is_none() => {
                self.missing("bucket", "the name of the bucket")
            }
            Some(b)
                if b.contains('/') || b.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                self.issue("bucket", "must be a bucket name, without `/` or spaces")
            }
            _ => {}
        }
        let endpoint = self.http_url("endpoint");
        let region = self.string("region", 64);
        if region.as_ref().is_some_and(|r| {
            !r.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            self.issue(
                "region",
                "must be a region name such as us-east-1 (letters, digits and `-`)",
            );
        }
        BucketRef {
            bucket: bucket.unwrap_or_default(),
            endpoint,
            region: region.unwrap_or_else(|| DEFAULT_REGION.to_string()),
            // What S3-compatible servers (MinIO, R2, Garage) want, and what AWS still accepts.
            force_path_style: self.boolean("forcePathStyle").unwrap_or(true),
        }
    }

    /// `accessKeyId` and `secretAccessKey`: both, or neither (unsigned requests).
    fn s3_keys(&mut self) -> Option<S3Keys> {
        let id = self.string("accessKeyId", 256);
        let secret = self.string("secretAccessKey", 256);
        match (id, secret) {
            (Some(id), Some(secret)) => Some(S3Keys {
                access_key_id: Secret::new(id),
                secret_access_key: Secret::new(secret),
            }),
            (Some(_), None) if self.get("secretAccessKey").is_none() => {
                self.missing("secretAccessKey", "the secret of accessKeyId");
                None
            }
            (None, Some(_)) if self.get("accessKeyId").is_none() => {
                self.missing("accessKeyId", "the access key the secret belongs to");
                None
            }
            _ => None,
        }
    }

    fn object_key(&mut self, name: &str) -> Option<String> {
        let key = self.string(name, KEY_MAX)?;
        if !valid_key(&key, false) {
            self.issue(
                name,
                "must be an object key without `.` or `..` segments, a leading `/` or control characters",
            );
        }
        Some(key)
    }

    fn key_prefix(&mut self, name: &str) -> Option<String> {
        match self.get(name) {
            // An empty prefix means the whole bucket.
            Some(Value::String(s)) if s.is_empty() => Some(String::new()),
            _ => {
                let p = self.string(name, KEY_MAX)?;
                if !valid_key(&p, true) {
                    self.issue(
                        name,
                        "must be a key prefix without `.` or `..` segments, a leading `/` or control characters",
                    );
                }
                Some(p)
            }
        }
    }

    fn drive_tokens(&mut self) -> DriveTokens {
        DriveTokens {
            access_token: self.string("accessToken", TOKEN_MAX).map(Secret::new),
            refresh_token: self.string("refreshToken", TOKEN_MAX).map(Secret::new),
        }
    }

    fn folder_id(&mut self) -> String {
        match self.string("folderId", 200) {
            Some(id) => {
                // Drive ids are URL-safe base64; anything else could change the query it
                // is quoted into.
                if !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    self.issue(
                        "folderId",
                        "must be a Google Drive folder id (letters, digits, `-` and `_`)",
                    );
                }
                id
            }
            None => {
                if self.get("folderId").is_none() {
                    self.missing("folderId", "the id of the Google Drive folder");
                }
                String::new()
            }
        }
    }
}

/// S3 keys are free-form, but `.`/`..` segments would be rewritten by URL normalisation and a
/// leading `/` makes an empty first segment: refuse them rather than write elsewhere.
fn valid_key(key: &str, prefix: bool) -> bool {
    let segments: Vec<&str> = key.split('/').collect();
    let last = segments.len() - 1;
    !key.starts_with('/')
        && !key.chars().any(char::is_control)
        && segments
            .iter()
            .enumerate()
            .all(|(i, s)| *s != "." && *s != ".." && !(s.is_empty() && !(prefix && i == last)))
}

/// `sourceS3` of `POST /jobs` (and of bulk items).
pub(super) fn source_s3(f: &mut Fields<'_>, name: &str) -> Option<S3Source> {
    let mut n = f.nested(name)?;
    let bucket = n.bucket_ref();
    let key = n.object_key("key");
    if key.is_none() && n.get("key").is_none() {
        n.missing("key", "the key of the video object");
    }
    let keys = n.s3_keys();
    f.merge(name, n);
    Some(S3Source {
        object: S3ObjectRef {
            bucket,
            key: key.unwrap_or_default(),
        },
        keys,
        size: None,
    })
}

/// `outputS3` of `/ondemand/encode`: `key`, or `prefix` plus the output's file name.
pub(super) fn output_s3(f: &mut Fields<'_>, name: &str) -> Option<S3Output> {
    let mut n = f.nested(name)?;
    let bucket = n.bucket_ref();
    let key = n.object_key("key");
    let prefix = n.key_prefix("prefix");
    let naming = match (key, prefix) {
        (Some(k), None) => S3Naming::Key(k),
        (None, Some(p)) => S3Naming::Prefix(p),
        (Some(_), Some(_)) => {
            n.issue("prefix", "give either key or prefix, not both");
            S3Naming::Prefix(String::new())
        }
        (None, None) => {
            if n.get("key").is_none() && n.get("prefix").is_none() {
                n.missing(
                    "key",
                    "the key to write the output to (or a prefix to put the output's file name after)",
                );
            }
            S3Naming::Prefix(String::new())
        }
    };
    let keys = n.s3_keys();
    f.merge(name, n);
    Some(S3Output {
        bucket,
        naming,
        keys,
    })
}

/// `sourceS3` of folder ingest (`S3FolderSource`).
pub(super) fn folder_source_s3(f: &mut Fields<'_>, name: &str) -> Option<S3FolderSource> {
    let mut n = f.nested(name)?;
    let bucket = n.bucket_ref();
    let prefix = n.key_prefix("prefix").unwrap_or_default();
    let keys = n.s3_keys();
    f.merge(name, n);
    Some(S3FolderSource {
        bucket,
        prefix,
        keys,
    })
}

/// `outputS3` of folder ingest (`S3FolderOutput`): always a prefix.
pub(super) fn folder_output_s3(f: &mut Fields<'_>, name: &str) -> Option<S3Output> {
    let mut n = f.nested(name)?;
    let bucket = n.bucket_ref();
    if n.get("key").is_some() {
        n.issue(
            "key",
            "names one object, but a folder gives one output per file: give a prefix instead",
        );
    }
    let prefix = n.key_prefix("prefix").unwrap_or_else(|| "outputs/".into());
    let keys = n.s3_keys();
    f.merge(name, n);
    Some(S3Output {
        bucket,
        naming: S3Naming::Prefix(prefix),
        keys,
    })
}

/// `outputGoogleDrive` (`GoogleDriveOutput`); `folder` for folder ingest, where one file
/// name cannot serve every output.
pub(super) fn drive_output(f: &mut Fields<'_>, name: &str, folder: bool) -> Option<DriveOutput> {
    let mut n = f.nested(name)?;
    let folder_id = n.folder_id();
    let file_name = n.string("fileName", 255);
    if file_name
        .as_ref()
        .is_some_and(|s| s.chars().any(char::is_control))
    {
        n.issue("fileName", "must not contain control characters");
    }
    if folder && file_name.is_some() {
        n.issue(
            "fileName",
            "names one file, but a folder gives one output per file (each named after its source): leave it out",
        );
    }
    let tokens = n.drive_tokens();
    f.merge(name, n);
    Some(DriveOutput {
        folder_id,
        file_name,
        tokens,
    })
}

/// `sourceGoogleDrive` of folder ingest (`GoogleDriveFolderSource`).
pub(super) fn drive_folder_source(f: &mut Fields<'_>, name: &str) -> Option<DriveFolderSource> {
    let mut n = f.nested(name)?;
    let folder_id = n.folder_id();
    let tokens = n.drive_tokens();
    f.merge(name, n);
    Some(DriveFolderSource { folder_id, tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T>(
        body: Value,
        read: impl FnOnce(&mut Fields<'_>) -> Option<T>,
    ) -> Result<Option<T>, Vec<String>> {
        let obj = body.as_object().unwrap();
        let mut f = Fields {
            obj,
            issues: Vec::new(),
        };
        let v = read(&mut f);
        if f.issues.is_empty() {
            Ok(v)
        } else {
            Err(f.issues.into_iter().map(|i| i.path).collect())
        }
    }

    #[test]
    fn s3_source_defaults_and_issues() {
        let s = parse(
            json!({"s": {"bucket": "media", "key": "in/a.mp4", "accessKeyId": "AK", "secretAccessKey": "SK"}}),
            |f| source_s3(f, "s"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.object.bucket.region, "us-east-1");
        assert!(s.object.bucket.force_path_style);
        assert_eq!(
            s.object.bucket.endpoint_url(),
            "https://s3.us-east-1.amazonaws.com"
        );
        assert_eq!(s.keys.unwrap().secret_access_key.expose(), "SK");
        let bad = parse(
            json!({"s": {"endpoint": "ftp://x", "region": "us east", "key": "a/../b", "accessKeyId": "AK"}}),
            |f| source_s3(f, "s"),
        )
        .unwrap_err();
        assert_eq!(
            bad,
            [
                "s.bucket",
                "s.endpoint",
                "s.region",
                "s.key",
                "s.secretAccessKey"
            ]
        );
        assert_eq!(
            parse(json!({"s": "x"}), |f| source_s3(f, "s")).unwrap_err(),
            ["s"]
        );
    }

    #[test]
    fn s3_output_key_or_prefix() {
        let o = parse(json!({"o": {"bucket": "b", "prefix": "enc/"}}), |f| {
            output_s3(f, "o")
        })
        .unwrap()
        .unwrap();
        assert_eq!(o.naming, S3Naming::Prefix("enc/".into()));
        assert!(o.keys.is_none());
        assert_eq!(
            parse(json!({"o": {"bucket": "b"}}), |f| output_s3(f, "o")).unwrap_err(),
            ["o.key"]
        );
        assert_eq!(
            parse(
                json!({"o": {"bucket": "b", "key": "k", "prefix": "p/"}}),
                |f| output_s3(f, "o")
            )
            .unwrap_err(),
            ["o.prefix"]
        );
        let folder = parse(json!({"o": {"bucket": "b"}}), |f| folder_output_s3(f, "o"))
            .unwrap()
            .unwrap();
        assert_eq!(folder.naming, S3Naming::Prefix("outputs/".into()));
        let whole = parse(json!({"o": {"bucket": "b", "prefix": ""}}), |f| {
            folder_source_s3(f, "o")
        })
        .unwrap()
        .unwrap();
        assert_eq!(whole.prefix, "");
    }

    #[test]
    fn drive_fields() {
        let d = parse(
            json!({"d": {"folderId": "1AbC_d-9", "accessToken": "ya29.x"}}),
            |f| drive_output(f, "d", false),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.tokens.access_token.unwrap().expose(), "ya29.x");
        assert_eq!(
            parse(json!({"d": {"folderId": "x' or '1"}}), |f| {
                drive_folder_source(f, "d")
            })
            .unwrap_err(),
            ["d.folderId"]
        );
        assert_eq!(
            parse(json!({"d": {"folderId": "f", "fileName": "a.mp4"}}), |f| {
                drive_output(f, "d", true)
            })
            .unwrap_err(),
            ["d.fileName"]
        );
    }

    #[test]
    fn keys_and_prefixes() {
        assert!(valid_key("a/b.mp4", false));
        assert!(!valid_key("/a", false));
        assert!(!valid_key("a//b", false));
        assert!(!valid_key("a/", false));
        assert!(valid_key("a/", true));
        assert!(!valid_key("a/./b", true));
    }
}
