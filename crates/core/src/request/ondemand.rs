//! `POST /ondemand/encode` (`OnDemandEncodeRequest`): a URL source, the contract's defaults
//! for every knob, a priority, how long the output stays downloadable, and where it goes.

use super::external::{DriveOutput, S3Output};
use super::*;

/// Where the encoded file goes.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputRequest {
    /// Kept by the service and served through a signed link (the contract's `cdn`).
    Cdn,
    S3(S3Output),
    GoogleDrive(DriveOutput),
    /// The contract keeps `outputDropbox` only to answer it with 410.
    Dropbox,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandCreate {
    pub spec: EncodeSpec,
    pub source_url: String,
    pub original_filename: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub priority: Priority,
    pub output_expiry_secs: i64,
    pub webhook: Option<String>,
    pub output: OutputRequest,
}

pub const OUTPUT_EXPIRY_DEFAULT: i64 = 86_400;
pub const OUTPUT_EXPIRY_MIN: i64 = 3_600;
pub const OUTPUT_EXPIRY_MAX: i64 = 604_800;

pub fn parse_ondemand(body: &Value) -> Result<OnDemandCreate, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let blank = f
        .get("sourceUrl")
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().is_empty());
    let source_url = if blank { None } else { f.url("sourceUrl") };
    if source_url.is_none() && (blank || f.get("sourceUrl").is_none()) {
        f.missing("sourceUrl", "the http(s) URL of the video to encode");
    }
    let codec = f.wire::<Codec>("codec", false).unwrap_or(Codec::H264);
    let resolution = f
        .wire::<Resolution>("resolution", false)
        .unwrap_or(Resolution::P1080);
    if resolution == Resolution::P4320 {
        f.issue(
            "resolution",
            "must be 2160p or lower on demand; use POST /jobs for 4320p",
        );
    }
    let fps = f.int("fps", 1, 120, false).unwrap_or(30) as u32;
    let mut spec = EncodeSpec::new(codec, resolution, fps);
    spec.quality = Some(Quality::Better);
    f.knobs(&mut spec);
    f.overrides(&mut spec, (50.0, 99.0));
    let original_filename = f.string("originalFilename", 255);
    let external_id = f.string("externalId", EXTERNAL_ID_MAX);
    let metadata = f.metadata();
    let priority = f
        .wire::<Priority>("priority", false)
        .unwrap_or(Priority::Normal);
    let output_expiry_secs = f
        .int("outputExpiry", OUTPUT_EXPIRY_MIN, OUTPUT_EXPIRY_MAX, false)
        .unwrap_or(OUTPUT_EXPIRY_DEFAULT);
    let webhook = f.url("webhook");
    let s3 = external::output_s3(&mut f, "outputS3");
    let drive = external::drive_output(&mut f, "outputGoogleDrive", false);
    let dropbox = f.object("outputDropbox").is_some();
    let output = match (dropbox, s3, drive) {
        (true, _, _) => OutputRequest::Dropbox,
        (false, Some(_), Some(_)) => {
            f.issue(
                "outputS3",
                "give either outputS3 or outputGoogleDrive, not both",
            );
            OutputRequest::Cdn
        }
        (false, Some(s3), None) => OutputRequest::S3(s3),
        (false, None, Some(d)) => OutputRequest::GoogleDrive(d),
        (false, None, None) => OutputRequest::Cdn,
    };
    f.finish(OnDemandCreate {
        spec,
        source_url: source_url.unwrap_or_default(),
        original_filename,
        external_id,
        metadata,
        priority,
        output_expiry_secs,
        webhook,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contract_defaults_apply() {
        let r = parse_ondemand(&json!({"sourceUrl": "https://example.com/v.mp4"})).unwrap();
        assert_eq!(
            (r.spec.codec, r.spec.resolution, r.spec.fps),
            (Codec::H264, Resolution::P1080, 30)
        );
        assert_eq!(
            (r.spec.preset, r.spec.bitrate_tier, r.spec.container),
            (Preset::Fast, BitrateTier::Medium, Container::Mp4)
        );
        assert_eq!(r.spec.quality, Some(Quality::Better));
        assert_eq!(r.priority, Priority::Normal);
        assert_eq!(r.output_expiry_secs, 86_400);
        assert_eq!(r.output, OutputRequest::Cdn);
    }

    #[test]
    fn names_every_bad_field() {
        let issues = parse_ondemand(&json!({
            "resolution": "4320p", "fps": 121, "priority": "urgent", "outputExpiry": 60,
            "webhook": 5, "externalId": "x".repeat(256)
        }))
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sourceUrl",
                "resolution",
                "fps",
                "externalId",
                "priority",
                "outputExpiry",
                "webhook"
            ]
        );
    }

    #[test]
    fn dropbox_wins_over_everything() {
        let r = parse_ondemand(&json!({"sourceUrl": "https://e.com/a.mp4",
            "outputDropbox": {"path": "/x"}}))
        .unwrap();
        assert_eq!(r.output, OutputRequest::Dropbox);
    }
}
