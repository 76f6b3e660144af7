//! API version prefixes (`/v1.50/...`) and their bounds, as dockerd checks them.

use super::error::ApiError;

/// Newest API version served; the docker CLI 28 negotiates down to this via `/_ping`.
pub const MAX_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 50,
};
/// Oldest API version dockerd 28 still accepts.
pub const MIN_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 24,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Splits an optional `/vX.Y` prefix off `path`. Returns the version the request asks for
/// (the newest when unversioned) and the rest of the path. A prefix that is not a version
/// number is not a prefix (moby's router only matches `v[0-9.]+`), so it falls through to
/// "page not found".
pub fn split_version(path: &str) -> Result<(ApiVersion, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((MAX_API_VERSION, path));
    };
    let (candidate, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if candidate.is_empty() || !candidate.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ok((MAX_API_VERSION, path));
    }
    let version = parse(candidate).ok_or_else(ApiError::page_not_found)?;
    if version > MAX_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {candidate} is too new. Maximum supported API version is {MAX_API_VERSION}"
        )));
    }
    if version < MIN_API_VERSION {
        return Err(ApiError::bad_request(format!(
            "client version {candidate} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok((version, tail))
}

fn parse(s: &str) -> Option<ApiVersion> {
    let (major, minor) = s.split_once('.')?;
    Some(ApiVersion {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unversioned_paths_get_the_newest_version() {
        assert_eq!(
            split_version("/containers/json").unwrap(),
            (MAX_API_VERSION, "/containers/json")
        );
    }

    #[test]
    fn every_supported_prefix_is_stripped() {
        for minor in 24..=50 {
            let path = format!("/v1.{minor}/containers/json");
            let (v, rest) = split_version(&path).unwrap();
            assert_eq!(v, ApiVersion { major: 1, minor });
            assert_eq!(rest, "/containers/json");
        }
    }

    #[test]
    fn out_of_range_versions_get_dockerds_messages() {
        let err = split_version("/v1.51/_ping").unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(
            err.message,
            "client version 1.51 is too new. Maximum supported API version is 1.50"
        );
        let err = split_version("/v1.12/info").unwrap_err();
        assert_eq!(
            err.message,
            "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"
        );
    }

    #[test]
    fn non_numeric_prefix_is_not_a_version() {
        assert_eq!(split_version("/vx/info").unwrap().1, "/vx/info");
        assert_eq!(
            split_version("/v1.2.3/info").unwrap_err().status,
            http::StatusCode::NOT_FOUND
        );
    }
}
