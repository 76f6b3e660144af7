use super::*;
use crate::api::images_api::ImageRoute;
use http::StatusCode;

fn p(method: Method, uri: &str) -> Result<Route, ApiError> {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    parse(&method, path, query).map(|p| p.route)
}

#[test]
fn ping_and_system_routes() {
    assert_eq!(
        p(Method::HEAD, "/_ping").unwrap(),
        Route::Ping { head: true }
    );
    assert_eq!(
        p(Method::GET, "/v1.50/_ping").unwrap(),
        Route::Ping { head: false }
    );
    assert_eq!(p(Method::GET, "/v1.24/version").unwrap(), Route::Version);
    assert_eq!(p(Method::GET, "/info").unwrap(), Route::Info);
}

#[test]
fn unknown_paths_and_methods_are_page_not_found() {
    for (m, u) in [
        (Method::GET, "/nope"),
        (Method::DELETE, "/_ping"),
        (Method::GET, "/containers/abc/start"),
    ] {
        let err = p(m, u).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert_eq!(err.message, "page not found");
    }
}

#[test]
fn image_routes() {
    assert_eq!(
        p(
            Method::POST,
            "/v1.50/images/create?fromSrc=-&repo=busybox&tag=1.0&message=m&changes=CMD+sh&changes=ENV+A%3D1"
        )
        .unwrap(),
        Route::ImageCreate(ImageCreate::Import {
            src: "-".into(),
            repo: "busybox".into(),
            tag: "1.0".into(),
            message: "m".into(),
            changes: vec!["CMD sh".into(), "ENV A=1".into()],
        })
    );
    assert_eq!(
        p(Method::POST, "/images/create?fromImage=busybox&tag=latest").unwrap(),
        Route::ImageCreate(ImageCreate::Pull {
            image: "busybox".into(),
            tag: "latest".into()
        })
    );
    assert_eq!(
        p(Method::POST, "/images/create").unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        p(Method::GET, "/images/docker.io/library/busybox:latest/json").unwrap(),
        Route::ImageInspect {
            name: "docker.io/library/busybox:latest".into()
        }
    );
    assert_eq!(
        p(Method::GET, "/images/json").unwrap(),
        Route::Images(ImageRoute::List {
            filters: String::new()
        })
    );
}

#[test]
fn image_routes_of_images_api() {
    assert_eq!(
        p(Method::GET, "/v1.50/images/me/app:1/history").unwrap(),
        Route::Images(ImageRoute::History {
            name: "me/app:1".into()
        })
    );
    let Route::Images(ImageRoute::Commit { container, opts }) = p(
        Method::POST,
        "/commit?container=c1&repo=r&changes=ENV+A%3D1&changes=CMD+x",
    )
    .unwrap() else {
        panic!("not a commit route");
    };
    assert_eq!(container, "c1");
    assert_eq!(opts.changes, vec!["ENV A=1", "CMD x"]);
    let Route::Images(ImageRoute::Build(b)) = p(
        Method::POST,
        "/build?t=a&t=b:2&buildargs=%7B%22X%22%3A%221%22%7D&rm=0",
    )
    .unwrap() else {
        panic!("not a build route");
    };
    assert_eq!(b.tags, vec!["a", "b:2"]);
    assert_eq!(b.build_args, vec![("X".to_string(), Some("1".to_string()))]);
    assert!(!b.rm);
    assert_eq!(b.dockerfile, "Dockerfile");
}

#[test]
fn container_routes_with_query_parameters() {
    assert_eq!(
        p(Method::POST, "/v1.50/containers/create?name=web").unwrap(),
        Route::ContainerCreate {
            name: Some("web".into())
        }
    );
    assert_eq!(
        p(Method::POST, "/containers/create?name=").unwrap(),
        Route::ContainerCreate { name: None }
    );
    assert_eq!(
        p(Method::GET, "/containers/json?all=1&limit=-1").unwrap(),
        Route::ContainerList {
            all: true,
            limit: None,
            filters: Default::default(),
        }
    );
    assert_eq!(
        p(Method::POST, "/containers/abc/stop?t=3").unwrap(),
        Route::ContainerStop {
            id: "abc".into(),
            timeout: Some(3),
            signal: None
        }
    );
    assert_eq!(
        p(Method::POST, "/containers/abc/stop?t=x")
            .unwrap_err()
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        p(Method::DELETE, "/containers/abc?force=True&v=1").unwrap(),
        Route::ContainerRemove {
            id: "abc".into(),
            force: true,
            volumes: true,
        }
    );
    assert_eq!(
        p(Method::POST, "/containers/abc/kill?signal=SIGTERM").unwrap(),
        Route::ContainerKill {
            id: "abc".into(),
            signal: Some("SIGTERM".into())
        }
    );
}

#[test]
fn wait_conditions() {
    for (q, c) in [
        ("", WaitCondition::NotRunning),
        ("?condition=not-running", WaitCondition::NotRunning),
        ("?condition=next-exit", WaitCondition::NextExit),
        ("?condition=removed", WaitCondition::Removed),
    ] {
        assert_eq!(
            p(Method::POST, &format!("/containers/x/wait{q}")).unwrap(),
            Route::ContainerWait {
                id: "x".into(),
                condition: c
            }
        );
    }
    let err = p(Method::POST, "/containers/x/wait?condition=bogus").unwrap_err();
    assert_eq!(err.message, "invalid condition: \"bogus\"");
}

#[test]
fn attach_and_logs_options() {
    assert_eq!(
        p(
            Method::POST,
            "/containers/x/attach?stream=1&stdout=1&stderr=1"
        )
        .unwrap(),
        Route::ContainerAttach {
            id: "x".into(),
            opts: AttachOptions {
                stream: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            }
        }
    );
    assert_eq!(
        p(
            Method::GET,
            "/containers/x/logs?stdout=1&tail=2&follow=1&timestamps=0"
        )
        .unwrap(),
        Route::ContainerLogs {
            id: "x".into(),
            opts: LogOptions {
                stdout: true,
                follow: true,
                tail: Some(2),
                ..Default::default()
            }
        }
    );
    let err = p(Method::GET, "/containers/x/logs").unwrap_err();
    assert_eq!(
        err.message,
        "Bad parameters: you must choose at least one stream"
    );
    assert_eq!(
        p(Method::GET, "/containers/x/logs?stdout=1&tail=all").unwrap(),
        Route::ContainerLogs {
            id: "x".into(),
            opts: LogOptions {
                stdout: true,
                ..Default::default()
            }
        }
    );
}

#[test]
fn exec_routes() {
    assert_eq!(
        p(Method::POST, "/v1.50/containers/c/exec").unwrap(),
        Route::ExecCreate { id: "c".into() }
    );
    assert_eq!(
        p(Method::POST, "/exec/e/start").unwrap(),
        Route::ExecStart { id: "e".into() }
    );
    assert_eq!(
        p(Method::GET, "/exec/e/json").unwrap(),
        Route::ExecInspect { id: "e".into() }
    );
}

#[test]
fn decode_json_reports_malformed_bodies() {
    #[derive(serde::Deserialize, Default, Debug)]
    struct T {
        #[allow(dead_code)]
        a: u32,
    }
    let err = decode_json::<T>(b"{bad").unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.message.starts_with("invalid JSON: "), "{}", err.message);
    assert!(decode_json::<T>(b"  ").is_ok());
}

#[test]
fn logs_since_and_until() {
    let Route::ContainerLogs { opts, .. } = p(
        Method::GET,
        "/containers/x/logs?stdout=1&since=1700000000.5&until=0",
    )
    .unwrap() else {
        panic!("not a logs route");
    };
    assert_eq!(opts.since.unwrap().timestamp(), 1_700_000_000);
    assert_eq!(opts.since.unwrap().timestamp_subsec_nanos(), 500_000_000);
    assert!(opts.until.is_none());
    assert!(p(Method::GET, "/containers/x/logs?stdout=1&since=yesterday").is_err());
}

#[test]
fn restart_route() {
    assert_eq!(
        p(Method::POST, "/v1.50/containers/abc/restart?t=2").unwrap(),
        Route::ContainerRestart {
            id: "abc".into(),
            timeout: Some(2),
            signal: None
        }
    );
}

#[test]
fn image_tag_remove_and_prune_routes() {
    assert_eq!(
        p(Method::POST, "/images/busybox/tag?repo=me/bb&tag=v1").unwrap(),
        Route::ImageTag {
            name: "busybox".into(),
            repo: "me/bb".into(),
            tag: "v1".into()
        }
    );
    assert_eq!(
        p(Method::DELETE, "/v1.50/images/quay.io/x/y:1?force=1").unwrap(),
        Route::ImageRemove {
            name: "quay.io/x/y:1".into(),
            force: true
        }
    );
    assert_eq!(
        p(Method::POST, "/containers/prune").unwrap(),
        Route::ContainerPrune {
            filters: String::new()
        }
    );
}

#[test]
fn registry_and_events_routes() {
    assert_eq!(
        p(Method::POST, "/v1.50/images/127.0.0.1:5000/app/push?tag=1").unwrap(),
        Route::ImagePush {
            name: "127.0.0.1:5000/app".into(),
            tag: "1".into()
        }
    );
    assert_eq!(p(Method::POST, "/v1.50/auth").unwrap(), Route::Auth);
    assert_eq!(
        p(
            Method::GET,
            "/v1.50/events?since=1.5&until=2&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"
        )
        .unwrap(),
        Route::Events {
            since: "1.5".into(),
            until: "2".into(),
            filters: r#"{"type":["container"]}"#.into()
        }
    );
}

#[test]
fn pause_unpause_rename_routes() {
    assert_eq!(
        p(Method::POST, "/v1.50/containers/web/pause").unwrap(),
        Route::ContainerPause { id: "web".into() }
    );
    assert_eq!(
        p(Method::POST, "/containers/web/unpause").unwrap(),
        Route::ContainerUnpause { id: "web".into() }
    );
    assert_eq!(
        p(Method::POST, "/v1.50/containers/web/rename?name=db").unwrap(),
        Route::ContainerRename {
            id: "web".into(),
            name: "db".into()
        }
    );
    assert_eq!(
        p(Method::POST, "/v1.50/containers/web/update").unwrap(),
        Route::ContainerUpdate { id: "web".into() }
    );
}

#[test]
fn volume_routes() {
    assert_eq!(
        p(Method::GET, "/v1.50/volumes?filters=%7B%7D").unwrap(),
        Route::VolumeList {
            filters: "{}".into()
        }
    );
    assert_eq!(
        p(Method::POST, "/volumes/create").unwrap(),
        Route::VolumeCreate
    );
    assert_eq!(
        p(Method::GET, "/volumes/data").unwrap(),
        Route::VolumeInspect {
            name: "data".into()
        }
    );
    assert_eq!(
        p(Method::DELETE, "/volumes/data?force=1").unwrap(),
        Route::VolumeRemove {
            name: "data".into(),
            force: true
        }
    );
    assert_eq!(
        p(Method::POST, "/volumes/prune").unwrap(),
        Route::VolumePrune {
            filters: String::new(),
            anonymous_only: true,
        }
    );
    assert_eq!(
        p(Method::POST, "/v1.41/volumes/prune").unwrap(),
        Route::VolumePrune {
            filters: String::new(),
            anonymous_only: false,
        }
    );
    assert_eq!(
        p(Method::GET, "/v1.41/system/df?type=image").unwrap(),
        Route::SystemDf {
            types: vec!["image".into()],
            before_1_42: true,
            before_1_44: true,
        }
    );
}

#[test]
fn terminal_and_observation_routes() {
    assert_eq!(
        p(Method::POST, "/v1.50/containers/c1/resize?h=40&w=120").unwrap(),
        Route::ContainerResize {
            id: "c1".into(),
            height: 40,
            width: 120
        }
    );
    assert_eq!(
        p(Method::POST, "/exec/e1/resize?h=1&w=2").unwrap(),
        Route::ExecResize {
            id: "e1".into(),
            height: 1,
            width: 2
        }
    );
    let err = p(Method::POST, "/containers/c1/resize?h=x&w=1").unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert_eq!(err.message, "strconv.Atoi: parsing \"x\": invalid syntax");
    assert_eq!(
        p(Method::GET, "/containers/c1/top?ps_args=aux").unwrap(),
        Route::ContainerTop {
            id: "c1".into(),
            ps_args: "aux".into()
        }
    );
    // dockerd streams unless told otherwise.
    assert_eq!(
        p(Method::GET, "/containers/c1/stats").unwrap(),
        Route::ContainerStats {
            id: "c1".into(),
            stream: true,
            one_shot: false
        }
    );
    assert_eq!(
        p(Method::GET, "/containers/c1/stats?stream=0&one-shot=1").unwrap(),
        Route::ContainerStats {
            id: "c1".into(),
            stream: false,
            one_shot: true
        }
    );
    match p(
        Method::POST,
        "/containers/c1/attach?stream=1&detachKeys=ctrl-a",
    )
    .unwrap()
    {
        Route::ContainerAttach { opts, .. } => assert_eq!(opts.detach_keys, "ctrl-a"),
        other => panic!("attach parsed as {other:?}"),
    }
}
