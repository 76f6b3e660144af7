//! `GET /images/json?all=&digests=&filters=`: dockerd's image filters (dangling, label,
//! reference, before, since), parsed without I/O and applied to image views.

use std::collections::BTreeMap;

use super::error::ApiError;
use super::filters::parse_args;
use crate::build::context::glob;
use crate::daemon::ImageView;

const KEYS: &[&str] = &["dangling", "label", "reference", "before", "since", "until"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilters(pub BTreeMap<String, Vec<String>>);

impl ImageFilters {
    /// Both encodings clients send: `{"k":["v"]}` and `{"k":{"v":true}}`.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        parse_args(raw, KEYS, check_dangling).map(Self)
    }

    pub fn get(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `Some(true)` for `dangling=true`, `Some(false)` for `dangling=false`.
    pub fn dangling(&self) -> Option<bool> {
        self.get("dangling")
            .first()
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"))
    }
}

/// reference.FamiliarMatch: the pattern against `name` and `name:tag` (or
/// `name@digest`).
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let name = match tag.split_once('@') {
        Some((n, _)) => n,
        None => tag.rsplit_once(':').map_or(tag, |(n, _)| n),
    };
    let segs = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
    let m = |p: &str, s: &str| {
        let (p, s) = (segs(p), segs(s));
        p.len() == s.len() && p.iter().zip(&s).all(|(a, b)| glob(a, b))
    };
    m(pattern, tag) || m(pattern, name)
}

/// `dangling` takes a boolean (dockerd's message otherwise).
pub fn check_dangling(key: &str, v: &str) -> Result<(), ApiError> {
    let boolean = matches!(
        v.to_ascii_lowercase().as_str(),
        "true" | "false" | "1" | "0"
    );
    if key == "dangling" && !boolean {
        return Err(ApiError::bad_request(format!(
            "invalid filter 'dangling={v}'"
        )));
    }
    Ok(())
}

/// The image's config `created` time.
pub fn created_at(img: &ImageView) -> Option<chrono::DateTime<chrono::Utc>> {
    img.config
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

pub fn label_matches(img: &ImageView, filter: &str) -> bool {
    super::filters::label_matches(&img.runtime_config().labels, filter)
}

fn created(img: &ImageView) -> i64 {
    created_at(img).map_or(0, |t| t.timestamp_nanos_opt().unwrap_or(0))
}

/// The images to list with the tags and digests to show for each (reference-filtered),
/// as dockerd 20.10's `Images` picks them: an image with neither a tag nor a digest is
/// dangling; one with a digest only (pulled by digest) is listed under `dangling=true`
/// and `dangling=false` alike.
pub fn apply(
    images: Vec<ImageView>,
    f: &ImageFilters,
    before: &[ImageView],
    since: &[ImageView],
) -> Vec<(ImageView, Vec<String>, Vec<String>)> {
    let bounds: Vec<(i64, i8)> = before
        .iter()
        .map(|i| (created(i), -1))
        .chain(since.iter().map(|i| (created(i), 1)))
        .collect();
    let mut out = Vec::new();
    for img in images {
        let mut tags = img.repo_tags();
        let mut digests = img.repo_digests();
        let refs = f.get("reference");
        if !refs.is_empty() {
            tags.retain(|t| refs.iter().any(|p| reference_matches(p, t)));
            digests.retain(|d| refs.iter().any(|p| reference_matches(p, d)));
        }
        if tags.is_empty() && digests.is_empty() {
            if !refs.is_empty() || f.dangling() == Some(false) {
                continue;
            }
        } else if f.dangling() == Some(true) && !tags.is_empty() {
            continue;
        }
        if !f.get("label").iter().all(|l| label_matches(&img, l)) {
            continue;
        }
        let c = created(&img);
        if !bounds
            .iter()
            .all(|&(b, cmp)| if cmp < 0 { c < b } else { c > b })
        {
            continue;
        }
        out.push((img, tags, digests));
    }
    // dockerd lists the newest first.
    out.sort_by_key(|(img, _, _)| std::cmp::Reverse(created(img)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let f =
            ImageFilters::parse(r#"{"dangling":{"true":true},"reference":["app:v*"]}"#).unwrap();
        assert_eq!(f.dangling(), Some(true));
        assert!(ImageFilters::parse(r#"{"nope":["x"]}"#).is_err());
        assert!(ImageFilters::parse(r#"{"dangling":["maybe"]}"#).is_err());
        assert!(reference_matches("app", "app:v1"));
        assert!(reference_matches("app:v[12]", "app:v2"));
        assert!(!reference_matches("app:v[12]", "app:v3"));
        assert!(reference_matches("*/x", "me/x:latest"));
        assert!(!reference_matches("x", "me/x:latest"));
    }
}
