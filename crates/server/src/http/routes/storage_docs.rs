//! Documentation of the storage objects requests carry (`sourceS3`, `outputS3`,
//! `outputGoogleDrive`, the folder variants). Parsing is done by `convertrilo_core::request`;
//! these types only describe the accepted fields in `/openapi.json`.
#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

/// An object in the caller's S3-compatible bucket (AWS S3, R2, MinIO, …).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    pub bucket: String,
    pub key: String,
    /// The provider's endpoint; AWS S3 of `region` when absent.
    #[schema(format = "uri")]
    pub endpoint: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// Needs read access to the object. Leave both keys out for a public bucket.
    pub access_key_id: Option<String>,
    #[schema(format = "password")]
    pub secret_access_key: Option<String>,
    /// `https://host/bucket/key` addressing (default true).
    pub force_path_style: Option<bool>,
}

/// Where in the caller's bucket the output goes: `key`, or `prefix` followed by the output's
/// file name.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Output {
    pub bucket: String,
    pub key: Option<String>,
    pub prefix: Option<String>,
    #[schema(format = "uri")]
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Needs write access (multipart uploads for large outputs).
    pub access_key_id: Option<String>,
    #[schema(format = "password")]
    pub secret_access_key: Option<String>,
    pub force_path_style: Option<bool>,
}

/// A prefix of the caller's bucket to crawl: the video files directly under it are queued.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3FolderSource {
    pub bucket: String,
    /// Default: the whole bucket's top level.
    pub prefix: Option<String>,
    #[schema(format = "uri")]
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Needs list and read access.
    pub access_key_id: Option<String>,
    #[schema(format = "password")]
    pub secret_access_key: Option<String>,
    pub force_path_style: Option<bool>,
}

/// Where folder outputs go: `prefix` (default `outputs/`) followed by each output's file
/// name (the source's name with the resolution and new extension).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3FolderOutput {
    pub bucket: String,
    pub prefix: Option<String>,
    #[schema(format = "uri")]
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    #[schema(format = "password")]
    pub secret_access_key: Option<String>,
    pub force_path_style: Option<bool>,
}

/// A Google Drive folder to upload the output to, with the caller's OAuth tokens.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleDriveOutput {
    pub folder_id: String,
    /// The output's file name by default (not accepted by folder ingest).
    pub file_name: Option<String>,
    /// Must allow uploading to the folder.
    pub access_token: Option<String>,
    /// Renews an expired access token when this server has a Google OAuth client configured.
    pub refresh_token: Option<String>,
}

/// A Google Drive folder whose video files are queued, with the caller's OAuth tokens.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoogleDriveFolderSource {
    pub folder_id: String,
    /// Must allow listing and reading the folder's files.
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}
