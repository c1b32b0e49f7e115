//! `POST /public/jobs`: the unauthenticated, capped subset of a job.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub struct PublicCreate {
    pub spec: EncodeSpec,
    pub source_url: Option<String>,
    pub original_filename: Option<String>,
}

/// The highest fps cap a public job may ask for.
pub const PUBLIC_MAX_FPS: i64 = 60;

pub fn parse_public_create(body: &Value) -> Result<PublicCreate, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let codec = f.wire::<Codec>("codec", true);
    let resolution = f.wire::<Resolution>("resolution", true);
    if resolution.is_some_and(|r| !matches!(r, Resolution::P480 | Resolution::P720)) {
        f.issue(
            "resolution",
            "must be 480p or 720p for a public job; use an API key for higher resolutions",
        );
    }
    let fps = f.int("fps", 1, PUBLIC_MAX_FPS, true);
    let mut spec = EncodeSpec::new(
        codec.unwrap_or(Codec::H264),
        resolution.unwrap_or(Resolution::P720),
        fps.unwrap_or(30) as u32,
    );
    if let Some(c) = f.wire::<Container>("container", false) {
        spec.container = c;
    }
    let source_url = f.url("sourceUrl");
    let original_filename = f.string("originalFilename", 255);
    f.finish(PublicCreate {
        spec,
        source_url,
        original_filename,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caps_resolution_and_fps() {
        let issues = parse_public_create(&json!({"codec":"h264","resolution":"1080p","fps":61}))
            .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["resolution", "fps"]);
        let ok = parse_public_create(&json!({"codec":"av1","resolution":"480p","fps":60,
            "container":"webm","sourceUrl":"http://e.com/a.mp4"}))
        .unwrap();
        assert_eq!(ok.spec.container, Container::Webm);
        assert_eq!(ok.source_url.as_deref(), Some("http://e.com/a.mp4"));
    }
}
