//! A real S3 protocol server on a loopback port: `s3s` (SigV4 header and presigned-URL
//! authentication, the S3 REST API) over `s3s-fs` (buckets are directories of a temporary
//! root, objects are files). One access key pair is accepted; the bucket `locked` answers
//! every request with `AccessDenied`, as a bucket policy would, and the bucket `readonly`
//! every write, as read-only credentials would; and a bucket that does not
//! exist is `NoSuchBucket` for every operation, as on S3 (s3s-fs alone would create it on a
//! write).

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use s3s::{
    access::{S3Access, S3AccessContext},
    auth::SimpleAuth,
    path::S3Path,
    s3_error,
    service::S3ServiceBuilder,
    S3Result,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const ACCESS_KEY: &str = "AKIACONVERTRILOTEST";
pub const SECRET_KEY: &str = "s3cr3t-Do-Not-Leak-9f8e7d6c";

pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

struct Policy {
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3Access for Policy {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Anonymous access is forbidden"));
        }
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
            S3Path::Root => None,
        };
        match bucket {
            Some(b) if b == "locked" => Err(s3_error!(AccessDenied, "Access Denied")),
            // Read-only credentials: reads pass, writes are refused.
            Some(b)
                if b == "readonly"
                    && !matches!(*cx.method(), hyper::Method::GET | hyper::Method::HEAD) =>
            {
                Err(s3_error!(AccessDenied, "Access Denied"))
            }
            Some(b) if !self.root.join(&b).is_dir() => Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            )),
            _ => Ok(()),
        }
    }
}

impl S3Server {
    /// Starts the server with the given (empty) buckets.
    pub async fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for b in buckets.iter().chain(["locked", "readonly"].iter()) {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.set_access(Policy {
            root: root.path().to_path_buf(),
        });
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            task,
        }
    }

    /// Where an object lives on disk.
    pub fn path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Places a file as an object (s3s-fs serves the directory tree as it is).
    pub fn put(&self, bucket: &str, key: &str, from: &Path) {
        let to = self.path(bucket, key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }

    pub fn put_bytes(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let to = self.path(bucket, key);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }

    /// A request's bucket object with the right keys (plus `extra` fields).
    pub fn bucket(&self, bucket: &str, extra: Value) -> Value {
        let mut v = json!({
            "bucket": bucket,
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "accessKeyId": ACCESS_KEY,
            "secretAccessKey": SECRET_KEY,
            "forcePathStyle": true,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// A client of our storage crate for looking at objects as S3 reports them.
    pub fn client_bucket(&self, bucket: &str) -> convertrilo_storage::s3::S3Bucket {
        convertrilo_storage::s3::S3Bucket::new(&convertrilo_storage::s3::S3Location {
            endpoint: reqwest::Url::parse(&self.endpoint).unwrap(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            path_style: true,
            credentials: Some(convertrilo_storage::s3::S3Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
            }),
        })
        .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts that no key material shows in `text` (a response body, a message).
pub fn assert_no_credentials(text: &str) {
    assert!(!text.contains(SECRET_KEY), "the secret key leaked: {text}");
    assert!(!text.contains(ACCESS_KEY), "the access key leaked: {text}");
}
