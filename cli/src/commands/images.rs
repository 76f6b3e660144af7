//! `berth images` and `berth import`.

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::{enc, print_out};
use crate::args::{split_reference, ImagesArgs, ImportArgs};
use crate::client::Client;
use crate::error::CliError;
use crate::format;

/// One entry of `GET /images/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub size: i64,
}

pub async fn images(client: &Client, args: &ImagesArgs) -> Result<i32, CliError> {
    let list: Vec<ImageSummary> = client.get_json("/images/json").await?;
    let now = chrono::Utc::now().timestamp();
    print_out(&render_images(&list, args, now))?;
    Ok(0)
}

/// The `images` output for `list` at time `now`: one row per tag.
pub fn render_images(list: &[ImageSummary], args: &ImagesArgs, now: i64) -> String {
    let id = |i: &ImageSummary| {
        if args.no_trunc {
            i.id.clone()
        } else {
            format::short_id(&i.id)
        }
    };
    if args.quiet {
        let mut seen = Vec::new();
        for i in list {
            let id = id(i);
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        return seen.iter().map(|id| format!("{id}\n")).collect();
    }
    let mut rows = Vec::new();
    for i in list {
        let tags: Vec<String> = i
            .repo_tags
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t != "<none>:<none>")
            .collect();
        let pairs: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| {
                    let (repo, tag) = split_reference(t);
                    (repo, tag.unwrap_or_else(|| "<none>".into()))
                })
                .collect()
        };
        for (repo, tag) in pairs {
            rows.push(vec![
                repo,
                tag,
                id(i),
                format::ago(i.created, now),
                format::human_size(i.size),
            ]);
        }
    }
    format::table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
}

pub async fn import(client: &Client, args: &ImportArgs) -> Result<i32, CliError> {
    let data = read_input(&args.file)?;
    let mut path = "/images/create?fromSrc=-".to_string();
    if let Some(reference) = &args.reference {
        let (repo, tag) = split_reference(reference);
        path.push_str(&format!("&repo={}", enc(&repo)));
        if let Some(tag) = tag {
            path.push_str(&format!("&tag={}", enc(&tag)));
        }
    }
    let resp = client
        .call(
            http::Method::POST,
            &path,
            Some(data),
            Some("application/x-tar"),
        )
        .await?;
    let body = client.body(resp).await?;
    for line in progress_lines(&body)? {
        print_out(&format!("{line}\n"))?;
    }
    Ok(0)
}

/// The tarball, from a file or from stdin (`-`).
fn read_input(file: &str) -> Result<Bytes, CliError> {
    let mut data = Vec::new();
    let path = PathBuf::from(file);
    let result = if file == "-" {
        std::io::stdin().lock().read_to_end(&mut data)
    } else {
        std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut data))
    };
    result.map_err(|source| CliError::ReadInput { path, source })?;
    Ok(Bytes::from(data))
}

/// The status lines of a JSON progress stream; its first `error` becomes the error.
pub fn progress_lines(body: &[u8]) -> Result<Vec<String>, CliError> {
    let mut lines = Vec::new();
    for msg in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let msg = msg.map_err(|source| CliError::Decode {
            what: "import progress".into(),
            source,
        })?;
        if let Some(err) = msg.get("error").and_then(Value::as_str) {
            return Err(CliError::Daemon {
                status: 200,
                message: err.to_string(),
            });
        }
        if let Some(status) = msg.get("status").and_then(Value::as_str) {
            lines.push(status.to_string());
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_table_one_row_per_tag() {
        let list: Vec<ImageSummary> = serde_json::from_str(
            r#"[{"Id":"sha256:abcdef0123456789ff","RepoTags":["busybox:latest","bb:1"],"Created":0,"Size":4260000},
                {"Id":"sha256:1111111111112222","RepoTags":null,"Created":0,"Size":10}]"#,
        )
        .unwrap();
        let args = ImagesArgs {
            quiet: false,
            no_trunc: false,
        };
        let out = render_images(&list, &args, 30);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].starts_with("REPOSITORY   TAG       IMAGE ID"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("busybox      latest    abcdef012345   30 seconds ago   4.26MB"),
            "{out}"
        );
        assert!(
            lines[3].starts_with("<none>       <none>    111111111111"),
            "{out}"
        );
        let quiet = ImagesArgs {
            quiet: true,
            no_trunc: false,
        };
        assert_eq!(
            render_images(&list, &quiet, 0),
            "abcdef012345\n111111111111\n"
        );
    }

    #[test]
    fn progress_stream_statuses_and_errors() {
        let ok = br#"{"status":"sha256:abc"}
{"status":"done"}"#;
        assert_eq!(progress_lines(ok).unwrap(), ["sha256:abc", "done"]);
        let bad = br#"{"status":"x"}{"errorDetail":{"message":"bad tar"},"error":"bad tar"}"#;
        let err = progress_lines(bad).unwrap_err();
        assert_eq!(err.to_string(), "Error response from daemon: bad tar");
    }
}
