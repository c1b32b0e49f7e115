//! Human-readable source and output file names, safe for a `Content-Disposition` header.

use crate::spec::EncodeSpec;

/// Keeps letters, digits, `.`, `-`, `_` and spaces; anything else becomes `_`. Never empty,
/// never a path, at most 120 characters.
pub fn sanitize(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// The last path segment of a URL, without query or fragment.
pub fn from_url(url: &str) -> Option<String> {
    let no_query = url.split(['?', '#']).next()?;
    let after_scheme = no_query
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(no_query);
    let path = after_scheme.split_once('/').map(|(_, p)| p)?;
    sanitize(path.rsplit('/').next()?)
}

/// `clip.mov` encoded to 720p mp4 → `clip-720p.mp4`; without a source name, `video-720p.mp4`.
pub fn output_name(source: Option<&str>, spec: &EncodeSpec) -> String {
    let stem = source
        .map(|s| match s.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem,
            _ => s,
        })
        .unwrap_or("video");
    format!("{stem}-{}.{}", spec.resolution, spec.container.extension())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Codec, Container, Resolution};

    #[test]
    fn names() {
        assert_eq!(
            sanitize("../etc/pa\"ss wd.mp4").as_deref(),
            Some("pa_ss wd.mp4")
        );
        assert_eq!(sanitize("..."), None);
        assert_eq!(
            from_url("https://h.example/a/b/My%20Clip.mp4?x=1").as_deref(),
            Some("My_20Clip.mp4")
        );
        assert_eq!(from_url("https://h.example/"), None);
        let mut spec = EncodeSpec::new(Codec::H265, Resolution::P480, 30);
        spec.container = Container::Mkv;
        assert_eq!(
            output_name(Some("bigbuckbunny.mp4"), &spec),
            "bigbuckbunny-480p.mkv"
        );
        assert_eq!(output_name(None, &spec), "video-480p.mkv");
    }
}
