//! `POST /ondemand/ingest/folder` (`OnDemandFolderIngestRequest`): an S3 prefix or a Google
//! Drive folder to crawl, the encode settings every file gets (the contract's defaults), and
//! where the outputs go (`outputDestination`).

use super::external::{self, DriveFolderSource, S3FolderSource};
use super::*;

/// The most files one folder request may queue.
pub const MAX_FOLDER_FILES: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum FolderSource {
    S3(S3FolderSource),
    GoogleDrive(DriveFolderSource),
    /// The contract keeps `sourceDropbox` only to answer it with 410.
    Dropbox,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FolderIngest {
    pub spec: EncodeSpec,
    pub external_id_prefix: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub priority: Priority,
    /// At most this many video files are queued.
    pub max_files: usize,
    pub source: FolderSource,
    pub output: OutputRequest,
}

pub fn parse_folder_ingest(body: &Value) -> Result<FolderIngest, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let external_id_prefix = f.string("externalIdPrefix", 200);
    let metadata = f.metadata();
    let codec = f.wire::<Codec>("codec", false).unwrap_or(Codec::H264);
    let resolution = f
        .wire::<Resolution>("resolution", false)
        .unwrap_or(Resolution::P1080);
    let fps = f.int("fps", 1, 120, false).unwrap_or(30) as u32;
    let mut spec = EncodeSpec::new(codec, resolution, fps);
    spec.quality = Some(Quality::Better);
    f.knobs(&mut spec);
    f.overrides(&mut spec, (50.0, 99.0));
    let priority = f
        .wire::<Priority>("priority", false)
        .unwrap_or(Priority::Normal);
    let max_files = f
        .int("maxFiles", 1, MAX_FOLDER_FILES as i64, false)
        .map_or(MAX_FOLDER_FILES, |n| n as usize);

    let s3 = external::folder_source_s3(&mut f, "sourceS3");
    let drive = external::drive_folder_source(&mut f, "sourceGoogleDrive");
    let dropbox = f.object("sourceDropbox").is_some();
    let source = match (dropbox, s3, drive) {
        (true, _, _) => FolderSource::Dropbox,
        (false, Some(s3), None) => FolderSource::S3(s3),
        (false, None, Some(d)) => FolderSource::GoogleDrive(d),
        (false, Some(s3), Some(_)) => {
            f.issue(
                "sourceS3",
                "give either sourceS3 or sourceGoogleDrive, not both",
            );
            FolderSource::S3(s3)
        }
        (false, None, None) => {
            if f.get("sourceS3").is_none() && f.get("sourceGoogleDrive").is_none() {
                f.missing(
                    "sourceS3",
                    "the folder to crawl: sourceS3 (a bucket prefix) or sourceGoogleDrive (a folder)",
                );
            }
            FolderSource::Dropbox
        }
    };

    let destination = match f.get("outputDestination") {
        None => None,
        Some(Value::String(s)) if matches!(s.as_str(), "cdn" | "s3" | "google-drive") => {
            Some(s.clone())
        }
        Some(Value::String(s)) if s == "dropbox" => Some(s.clone()),
        Some(other) => {
            f.issue(
                "outputDestination",
                format!("must be one of cdn, s3, google-drive; got {other}"),
            );
            None
        }
    };
    let out_s3 = external::folder_output_s3(&mut f, "outputS3");
    let out_drive = external::drive_output(&mut f, "outputGoogleDrive", true);
    let out_dropbox = f.object("outputDropbox").is_some();
    // Without outputDestination the one output object given says where outputs go; a
    // destination that contradicts the objects is a mistake worth naming.
    let output = match (destination.as_deref(), out_dropbox, out_s3, out_drive) {
        (Some("dropbox"), ..) | (_, true, _, _) => OutputRequest::Dropbox,
        (None | Some("cdn"), false, None, None) => OutputRequest::Cdn,
        (None | Some("s3"), false, Some(s3), None) => OutputRequest::S3(s3),
        (None | Some("google-drive"), false, None, Some(d)) => OutputRequest::GoogleDrive(d),
        (Some("s3"), false, None, _) => {
            f.missing(
                "outputS3",
                "the bucket and prefix outputs go to (outputDestination is s3)",
            );
            OutputRequest::Cdn
        }
        (Some("google-drive"), false, _, None) => {
            f.missing(
                "outputGoogleDrive",
                "the Drive folder outputs go to (outputDestination is google-drive)",
            );
            OutputRequest::Cdn
        }
        (None, false, Some(_), Some(_)) => {
            f.issue(
                "outputS3",
                "give either outputS3 or outputGoogleDrive (and outputDestination), not both",
            );
            OutputRequest::Cdn
        }
        (Some(d), false, s3, drive) => {
            let given = if s3.is_some() {
                "outputS3"
            } else {
                "outputGoogleDrive"
            };
            debug_assert!(s3.is_some() || drive.is_some());
            f.issue(
                given,
                format!("does not match outputDestination \"{d}\"; leave it out or change outputDestination"),
            );
            OutputRequest::Cdn
        }
    };
    f.finish(FolderIngest {
        spec,
        external_id_prefix,
        metadata,
        priority,
        max_files,
        source,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn contract_defaults_and_destinations() {
        let r = parse_folder_ingest(&json!({
            "sourceS3": {"bucket": "in", "prefix": "incoming/"},
            "outputDestination": "s3", "outputS3": {"bucket": "out"},
            "externalIdPrefix": "batch-1", "maxFiles": 25, "resolution": "4320p"
        }))
        .unwrap();
        assert_eq!(
            (r.spec.codec, r.spec.resolution, r.spec.fps, r.spec.quality),
            (Codec::H264, Resolution::P4320, 30, Some(Quality::Better))
        );
        assert_eq!(r.max_files, 25);
        assert!(matches!(r.source, FolderSource::S3(ref s) if s.prefix == "incoming/"));
        assert!(
            matches!(r.output, OutputRequest::S3(ref o) if o.naming == super::super::S3Naming::Prefix("outputs/".into()))
        );
        // The output object alone says where outputs go.
        let r = parse_folder_ingest(&json!({"sourceGoogleDrive": {"folderId": "a"},
            "outputGoogleDrive": {"folderId": "b"}}))
        .unwrap();
        assert!(matches!(r.output, OutputRequest::GoogleDrive(_)));
        assert_eq!(r.max_files, MAX_FOLDER_FILES);
        let r = parse_folder_ingest(&json!({"sourceDropbox": {"path": "/x"}})).unwrap();
        assert_eq!(r.source, FolderSource::Dropbox);
    }

    #[test]
    fn names_every_bad_field() {
        let issues = parse_folder_ingest(&json!({
            "maxFiles": 0, "outputDestination": "s3", "externalIdPrefix": "x".repeat(201)
        }))
        .unwrap_err();
        assert_eq!(
            paths(&issues),
            ["externalIdPrefix", "maxFiles", "sourceS3", "outputS3"]
        );
        let issues = parse_folder_ingest(&json!({
            "sourceS3": {"bucket": "b"}, "outputDestination": "cdn",
            "outputGoogleDrive": {"folderId": "x"}
        }))
        .unwrap_err();
        assert_eq!(paths(&issues), ["outputGoogleDrive"]);
    }
}
