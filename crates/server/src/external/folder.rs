//! Crawling a customer's folder for folder ingest: the objects directly under an S3 prefix
//! (by video file extension) or the files of a Drive folder (by video MIME type), page by
//! page, up to `maxFiles`.

use super::{drive::DriveSession, drive_request_error, s3_bucket, s3_request_error};
use crate::{http::error::AppResult, state::AppState};
use convertrilo_core::{
    external::{has_video_extension, S3ObjectRef},
    request::{DriveFile, S3FolderSource, S3Source, SourceRequest},
};

/// Keys looked at before a crawl gives up looking for more videos, so that a huge bucket
/// cannot hold a request for ever.
const MAX_SCANNED: usize = 100_000;

/// A video found in the folder, as a job's source.
pub struct Found {
    pub file_name: String,
    pub source: SourceRequest,
    /// As the listing gave it.
    pub size: Option<u64>,
}

pub struct Crawl {
    pub found: Vec<Found>,
    /// Entries passed over: not videos (or empty, or sub-folders).
    pub skipped: usize,
}

/// The videos directly under `src.prefix` (objects deeper down belong to sub-folders and are
/// left alone, as a Drive folder's sub-folders are).
pub async fn crawl_s3(state: &AppState, src: &S3FolderSource, max: usize) -> AppResult<Crawl> {
    let keys = src.keys.as_ref();
    let bucket = s3_bucket(state, &src.bucket, keys)?;
    let page_size = state.config.folder_list_page_size;
    let (mut found, mut skipped, mut scanned) = (Vec::new(), 0usize, 0usize);
    let mut token: Option<String> = None;
    loop {
        let page = state
            .s3
            .list_page(&bucket, &src.prefix, Some("/"), page_size, token.as_deref())
            .await
            .map_err(|e| s3_request_error(&e, "sourceS3", &src.bucket, None, "list", keys))?;
        for object in page.objects {
            scanned += 1;
            let name = object.key.rsplit('/').next().unwrap_or("").to_string();
            if name.is_empty() || object.size == 0 || !has_video_extension(&name) {
                skipped += 1;
                continue;
            }
            if found.len() < max {
                found.push(Found {
                    file_name: name,
                    size: Some(object.size),
                    source: SourceRequest::S3(S3Source {
                        object: S3ObjectRef {
                            bucket: src.bucket.clone(),
                            key: object.key,
                        },
                        keys: src.keys.clone(),
                        size: Some(object.size),
                    }),
                });
            }
        }
        token = page.next;
        if token.is_none() || found.len() >= max || scanned >= MAX_SCANNED {
            return Ok(Crawl { found, skipped });
        }
    }
}

/// The video files of a Drive folder. Each job gets the session's tokens as they are after
/// the listing (renewed, if Google asked for it).
pub async fn crawl_drive(
    state: &AppState,
    session: &mut DriveSession<'_>,
    folder_id: &str,
    max: usize,
) -> AppResult<Crawl> {
    let (entries, skipped) = session
        .list_folder(folder_id, state.config.folder_list_page_size, max, |e| {
            e.mime_type.starts_with("video/")
        })
        .await
        .map_err(|e| drive_request_error(e, "sourceGoogleDrive"))?;
    let tokens = session.tokens().clone();
    let found = entries
        .into_iter()
        .map(|e| Found {
            file_name: e.name.clone(),
            size: e.size,
            source: SourceRequest::GoogleDrive(DriveFile {
                file_id: e.id,
                name: e.name,
                size: e.size,
                duration_sec: e.duration_sec,
                tokens: tokens.clone(),
            }),
        })
        .collect();
    Ok(Crawl { found, skipped })
}
