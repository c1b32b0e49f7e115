//! Parse, don't validate: JSON request bodies become typed requests, or a list of issues that
//! names every offending field at once (not just the first, as serde would).

mod bulk;
mod external;
mod folder;
mod ondemand;
mod public;

pub use bulk::{
    parse_bulk, parse_bulk_confirm, BulkConfirm, BulkCreate, BulkSettings, MAX_BULK_JOBS,
};
pub use external::{
    DriveFile, DriveFolderSource, DriveOutput, S3FolderSource, S3Naming, S3Output, S3Source,
};
pub use folder::{parse_folder_ingest, FolderIngest, FolderSource, MAX_FOLDER_FILES};
pub use ondemand::{parse_ondemand, OnDemandCreate, OutputRequest, OUTPUT_EXPIRY_DEFAULT};
pub use public::{parse_public_create, PublicCreate};

use crate::spec::*;
use crate::WireEnum;
use serde::Serialize;
use serde_json::{Map, Value};

/// One problem with one field of a request body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

/// Where the source comes from, as asked at creation.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceRequest {
    /// No source given: the client PUTs the bytes to a signed URL.
    Upload,
    Url(String),
    /// An object in the customer's S3-compatible bucket (`sourceS3`).
    S3(S3Source),
    /// A file of a Google Drive folder (folder ingest only).
    GoogleDrive(DriveFile),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobCreate {
    pub spec: EncodeSpec,
    pub source: SourceRequest,
    pub original_filename: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub confirm: bool,
}

/// Settings that replace the same fields of a spec (bulk `settings`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecOverrides {
    pub container: Option<Container>,
    pub quality: Option<Quality>,
    pub optimize: Option<Optimize>,
    pub vmaf_target: Option<f64>,
}

impl SpecOverrides {
    pub fn apply(&self, spec: &mut EncodeSpec) {
        if let Some(v) = self.container {
            spec.container = v;
        }
        if let Some(v) = self.quality {
            spec.quality = Some(v);
        }
        if let Some(v) = self.optimize {
            spec.optimize = v;
            // Switching the quality search off drops the target that went with it (one sent
            // in the same request stays, and is refused as a target without a search).
            if v != Optimize::Vmaf {
                spec.vmaf_target = None;
            }
        }
        if let Some(v) = self.vmaf_target {
            spec.vmaf_target = Some(v);
        }
    }
}

/// Reads fields of one JSON object, collecting issues as it goes.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    issues: Vec<Issue>,
}

impl<'a> Fields<'a> {
    fn issue(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// `None` for absent or `null`.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn missing(&mut self, name: &str, what: &str) {
        self.issue(name, format!("is required: {what}"));
    }

    fn wire<T: WireEnum>(&mut self, name: &str, required: bool) -> Option<T> {
        let expected = format!("one of {}", T::allowed());
        match self.get(name) {
            None => {
                if required {
                    self.missing(name, &expected);
                }
                None
            }
            Some(Value::String(s)) => {
                let v = T::parse(s);
                if v.is_none() {
                    self.issue(name, format!("`{s}` is not allowed; use {expected}"));
                }
                v
            }
            Some(other) => {
                self.issue(
                    name,
                    format!("must be a string, {expected}; got {}", kind(other)),
                );
                None
            }
        }
    }

    fn int(&mut self, name: &str, min: i64, max: i64, required: bool) -> Option<i64> {
        let range = format!("an integer from {min} to {max}");
        match self.get(name) {
            None => {
                if required {
                    self.missing(name, &range);
                }
                None
            }
            Some(Value::Number(n)) => {
                let int = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
                match int {
                    Some(i) if (min..=max).contains(&i) => Some(i),
                    Some(_) => {
                        self.issue(name, format!("{n} is out of range; use {range}"));
                        None
                    }
                    None => {
                        self.issue(name, format!("{n} is not a whole number; use {range}"));
                        None
                    }
                }
            }
            Some(other) => {
                self.issue(name, format!("must be {range}; got {}", kind(other)));
                None
            }
        }
    }

    fn number(&mut self, name: &str, min: f64, max: f64) -> Option<f64> {
        match self.get(name) {
            None => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if (min..=max).contains(&f) => Some(f),
                _ => {
                    self.issue(
                        name,
                        format!("{n} is out of range; use a number from {min} to {max}"),
                    );
                    None
                }
            },
            Some(other) => {
                self.issue(
                    name,
                    format!("must be a number from {min} to {max}; got {}", kind(other)),
                );
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.issue(name, format!("must be true or false; got {}", kind(other)));
                None
            }
        }
    }

    fn string(&mut self, name: &str, max_len: usize) -> Option<String> {
        match self.get(name) {
            None => None,
            Some(Value::String(s)) if s.chars().count() > max_len => {
                self.issue(
                    name,
                    format!(
                        "is {} characters long; the limit is {max_len}",
                        s.chars().count()
                    ),
                );
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.issue(name, "must not be empty; leave the field out instead");
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.issue(name, format!("must be a string; got {}", kind(other)));
                None
            }
        }
    }

    fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        match self.get(name) {
            None => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                self.issue(name, format!("must be a JSON object; got {}", kind(other)));
                None
            }
        }
    }

    fn passes(&mut self, name: &str) -> Option<u8> {
        self.int(name, 1, 2, false).map(|p| p as u8)
    }

    /// preset, bitrateTier, passes and policy, when given.
    fn knobs(&mut self, spec: &mut EncodeSpec) {
        if let Some(v) = self.wire::<Preset>("preset", false) {
            spec.preset = v;
        }
        if let Some(v) = self.wire::<BitrateTier>("bitrateTier", false) {
            spec.bitrate_tier = v;
        }
        if let Some(v) = self.passes("passes") {
            spec.passes = v;
        }
        if let Some(v) = self.wire::<Policy>("policy", false) {
            spec.policy = v;
        }
    }

    /// Applies the optional overrides shared by create, approve and confirm.
    fn overrides(&mut self, spec: &mut EncodeSpec, vmaf_range: (f64, f64)) {
        self.read_overrides(vmaf_range).apply(spec);
    }

    /// Reads the overrides without applying them (bulk `settings`).
    fn read_overrides(&mut self, vmaf_range: (f64, f64)) -> SpecOverrides {
        SpecOverrides {
            container: self.wire::<Container>("container", false),
            quality: self.wire::<Quality>("quality", false),
            optimize: self.wire::<Optimize>("optimize", false),
            vmaf_target: self.number("vmafTarget", vmaf_range.0, vmaf_range.1),
        }
    }

    /// `metadata`, size-capped.
    fn metadata(&mut self) -> Option<Map<String, Value>> {
        let metadata = self.object("metadata");
        if let Some(m) = &metadata {
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(0);
            if size > METADATA_MAX_BYTES {
                self.issue(
                    "metadata",
                    format!("is {size} bytes as JSON; the limit is {METADATA_MAX_BYTES}"),
                );
            }
        }
        metadata
    }

    /// An optional URL field, as a string. Whether it is a URL the server will fetch or
    /// call (scheme, host, address) is the server's judgement, answered with the contract's
    /// URL codes (`invalid_url`, `private_ip_blocked`, …) rather than a body issue.
    fn url(&mut self, name: &str) -> Option<String> {
        self.string(name, 4096)
    }

    /// An optional http(s) URL field whose shape is checked here (a storage endpoint; the
    /// network checks of customer URLs are the server's).
    fn http_url(&mut self, name: &str) -> Option<String> {
        let url = self.string(name, 4096)?;
        if !is_http_url(&url) {
            self.issue(name, "must be an http:// or https:// URL with a host");
        }
        Some(url)
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Issue>> {
        if self.issues.is_empty() {
            Ok(value)
        } else {
            Err(self.issues)
        }
    }
}

/// Scheme and host check only; network-level hardening is the server's.
pub fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

fn merge_prefixed(into: &mut Vec<Issue>, prefix: &str, from: Vec<Issue>) {
    into.extend(from.into_iter().map(|i| Issue {
        path: if i.path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", i.path)
        },
        message: i.message,
    }));
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, Vec<Issue>> {
    body.as_object().ok_or_else(|| {
        vec![Issue {
            path: "".into(),
            message: format!("the body must be a JSON object; got {}", kind(body)),
        }]
    })
}

/// Largest `metadata` object accepted, serialized.
pub const METADATA_MAX_BYTES: usize = 16 * 1024;
pub const EXTERNAL_ID_MAX: usize = 255;

/// `POST /jobs` (`JobCreateRequest`).
pub fn parse_job_create(body: &Value) -> Result<JobCreate, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let codec = f.wire::<Codec>("codec", true);
    let resolution = f.wire::<Resolution>("resolution", true);
    let fps = f.int("fps", 1, MAX_FPS.into(), true);
    let mut spec = EncodeSpec::new(
        codec.unwrap_or(Codec::H264),
        resolution.unwrap_or(Resolution::P720),
        fps.unwrap_or(30) as u32,
    );
    f.knobs(&mut spec);
    f.overrides(&mut spec, (50.0, 99.0));

    let source_url = f.url("sourceUrl");
    let source_s3 = external::source_s3(&mut f, "sourceS3");
    let source = match (source_url, source_s3) {
        (Some(_), Some(_)) => {
            f.issue("sourceUrl", "give either sourceUrl or sourceS3, not both");
            SourceRequest::Upload
        }
        // Judged by the server's URL checks (see `Fields::url`).
        (Some(url), None) => SourceRequest::Url(url),
        (None, Some(s3)) => SourceRequest::S3(s3),
        (None, None) => SourceRequest::Upload,
    };
    let original_filename = f.string("originalFilename", 255);
    let external_id = f.string("externalId", EXTERNAL_ID_MAX);
    let metadata = f.metadata();
    let confirm = f.boolean("confirm").unwrap_or(false);
    f.finish(JobCreate {
        spec,
        source,
        original_filename,
        external_id,
        metadata,
        confirm,
    })
}

/// `POST /jobs/{id}/approve-unified` (`ApproveUnifiedRequest`): every field optional.
pub fn parse_approve(body: &Value, current: &EncodeSpec) -> Result<EncodeSpec, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let mut spec = current.clone();
    if let Some(v) = f.wire::<Codec>("codec", false) {
        spec.codec = v;
    }
    if let Some(v) = f.wire::<Resolution>("resolution", false) {
        spec.resolution = v;
    }
    if let Some(v) = f.int("fps", 1, MAX_FPS.into(), false) {
        spec.fps = v as u32;
    }
    if let Some(v) = f.wire::<Preset>("preset", false) {
        spec.preset = v;
    }
    if let Some(v) = f.wire::<BitrateTier>("bitrateTier", false) {
        spec.bitrate_tier = v;
    }
    if let Some(v) = f.passes("passes") {
        spec.passes = v;
    }
    if let Some(v) = f.wire::<Policy>("policy", false) {
        spec.policy = v;
    }
    f.overrides(&mut spec, (50.0, 99.0));
    f.finish(spec)
}

/// `POST /jobs/{id}/confirm` (`ConfirmRequest`): container, quality, optimize, vmafTarget.
pub fn parse_confirm(body: &Value, current: &EncodeSpec) -> Result<EncodeSpec, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let mut spec = current.clone();
    f.overrides(&mut spec, (1.0, 100.0));
    f.finish(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn names_every_missing_field() {
        let issues = parse_job_create(&json!({})).unwrap_err();
        assert_eq!(paths(&issues), ["codec", "resolution", "fps"]);
        assert!(issues[0].message.contains("h264, h265, av1"));
    }

    #[test]
    fn fps_out_of_range_and_bad_types() {
        for fps in [json!(0), json!(999), json!(29.97), json!("30")] {
            let issues = parse_job_create(&json!({"codec":"h264","resolution":"720p","fps":fps}))
                .unwrap_err();
            assert_eq!(paths(&issues), ["fps"], "fps {fps}");
        }
        let issues = parse_job_create(
            &json!({"codec":"vp9","resolution":"720p","fps":30,"passes":3,"confirm":"yes"}),
        )
        .unwrap_err();
        assert_eq!(paths(&issues), ["codec", "passes", "confirm"]);
    }

    #[test]
    fn parses_full_request() {
        let r = parse_job_create(&json!({
            "codec":"av1","resolution":"480p","fps":30.0,"container":"webm","preset":"slow",
            "bitrateTier":"high","passes":2,"policy":"fastest","quality":"best",
            "sourceUrl":"https://example.com/a.mp4","originalFilename":"a.mp4",
            "externalId":"x-1","metadata":{"k":1},"confirm":true
        }))
        .unwrap();
        assert_eq!(r.spec.codec, Codec::Av1);
        assert_eq!(r.spec.fps, 30);
        assert_eq!(r.spec.passes, 2);
        assert_eq!(
            r.source,
            SourceRequest::Url("https://example.com/a.mp4".into())
        );
        assert!(r.confirm);
    }

    #[test]
    fn urls_are_strings_judged_by_the_server() {
        let r = parse_job_create(
            &json!({"codec":"h264","resolution":"720p","fps":30,"sourceUrl":"file:///x"}),
        )
        .unwrap();
        assert_eq!(r.source, SourceRequest::Url("file:///x".into()));
        let issues =
            parse_job_create(&json!({"codec":"h264","resolution":"720p","fps":30,"sourceUrl":7}))
                .unwrap_err();
        assert_eq!(paths(&issues), ["sourceUrl"]);
    }

    /// `optimize` and `vmafTarget` wherever the contract has them: 50–99, except the confirm
    /// body's 1–100; bulk settings apply them to every item.
    #[test]
    fn vmaf_target_is_read_and_bounded_on_every_surface() {
        let base = EncodeSpec::new(Codec::H264, Resolution::P720, 30);
        let job = |t: Value| json!({"codec":"h264","resolution":"720p","fps":30,"optimize":"vmaf","vmafTarget":t});
        let r = parse_job_create(&job(json!(95))).unwrap();
        assert_eq!(
            (r.spec.optimize, r.spec.vmaf_target),
            (Optimize::Vmaf, Some(95.0))
        );
        for bad in [json!(49.9), json!(99.1), json!("95")] {
            assert_eq!(
                paths(&parse_job_create(&job(bad)).unwrap_err()),
                ["vmafTarget"]
            );
        }
        let s = parse_approve(&json!({"optimize":"vmaf","vmafTarget":50}), &base).unwrap();
        assert_eq!(s.effective_vmaf_target(), Some(50.0));
        assert_eq!(
            paths(&parse_approve(&json!({"vmafTarget":100}), &base).unwrap_err()),
            ["vmafTarget"]
        );
        let s = parse_confirm(&json!({"optimize":"vmaf","vmafTarget":100}), &base).unwrap();
        assert_eq!(s.vmaf_target, Some(100.0));
        let s = parse_confirm(&json!({"optimize":"vmaf"}), &base).unwrap();
        assert_eq!(
            s.effective_vmaf_target(),
            Some(crate::vmaf::DEFAULT_VMAF_TARGET)
        );
        assert_eq!(
            paths(&parse_confirm(&json!({"vmafTarget":0.5}), &base).unwrap_err()),
            ["vmafTarget"]
        );
        let b = parse_bulk(&json!({
            "jobs": [{"codec":"h264","resolution":"720p","fps":30}],
            "settings": {"optimize":"vmaf","vmafTarget":91}
        }))
        .unwrap();
        let item = b.items[0].as_ref().unwrap();
        assert_eq!(item.spec.effective_vmaf_target(), Some(91.0));
        let issues = parse_bulk(&json!({"jobs": [], "settings": {"vmafTarget": 120}})).unwrap_err();
        assert!(
            paths(&issues).contains(&"settings.vmafTarget"),
            "{issues:?}"
        );
        let bc = parse_bulk_confirm(
            &json!({"jobIds": ["j"], "settings": {"optimize":"vmaf","vmafTarget":100}}),
        )
        .unwrap();
        assert_eq!(
            (bc.overrides.optimize, bc.overrides.vmaf_target),
            (Some(Optimize::Vmaf), Some(100.0))
        );
        // Turning the search off drops its target, unless the same request sends one.
        let mut vmaf = base.clone();
        vmaf.optimize = Optimize::Vmaf;
        vmaf.vmaf_target = Some(95.0);
        let off = parse_confirm(&json!({"optimize":"none"}), &vmaf).unwrap();
        assert_eq!((off.optimize, off.vmaf_target), (Optimize::None, None));
        let both = parse_confirm(&json!({"optimize":"none","vmafTarget":90}), &vmaf).unwrap();
        assert_eq!(both.vmaf_target, Some(90.0));
        let od = parse_ondemand(
            &json!({"sourceUrl":"https://e.com/a.mp4","optimize":"vmaf","vmafTarget":97}),
        )
        .unwrap();
        assert_eq!(od.spec.effective_vmaf_target(), Some(97.0));
        let issues = parse_ondemand(&json!({"sourceUrl":"https://e.com/a.mp4","vmafTarget":10}))
            .unwrap_err();
        assert_eq!(paths(&issues), ["vmafTarget"]);
        let f = parse_folder_ingest(
            &json!({"sourceS3":{"bucket":"b"},"optimize":"vmaf","vmafTarget":92}),
        )
        .unwrap();
        assert_eq!(f.spec.effective_vmaf_target(), Some(92.0));
        let issues =
            parse_folder_ingest(&json!({"sourceS3":{"bucket":"b"},"vmafTarget":100})).unwrap_err();
        assert_eq!(paths(&issues), ["vmafTarget"]);
    }

    #[test]
    fn overrides_apply_on_top() {
        let base = EncodeSpec::new(Codec::H264, Resolution::P720, 30);
        let s = parse_approve(&json!({"resolution":"1080p","fps":60}), &base).unwrap();
        assert_eq!((s.resolution, s.fps), (Resolution::P1080, 60));
        let s = parse_confirm(&json!({"container":"mkv"}), &base).unwrap();
        assert_eq!(s.container, Container::Mkv);
        assert_eq!(
            paths(&parse_confirm(&json!({"container":"avi"}), &base).unwrap_err()),
            ["container"]
        );
    }
}
