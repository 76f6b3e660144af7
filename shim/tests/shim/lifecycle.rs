//! Create → Start → Wait → Delete → Shutdown, with json-file output and events.

use std::time::Duration;

use berth_proto::any::Event;
use berth_proto::containerd::task::v2::{StartRequest, StateRequest, WaitRequest};
use berth_proto::containerd::v1::types::Status;

use crate::harness::{poll, skip_unless_root, FakeEvents, Fixture};

#[tokio::test]
async fn run_to_exit_logs_records_and_reports() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("run_to_exit_logs_records_and_reports") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sh", "-c", "echo hello; echo oops >&2; exit 3"])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;

        let log = fx.path("c-json.log");
        let uri = format!("jsonfile://{}?max-size=1000000&max-file=2", log.display());
        let created = client
            .create(fx.create_request(&uri, &uri))
            .await?
            .into_inner();
        assert!(created.pid > 0);
        assert!(fx.rootfs_mounted(), "rootfs not mounted by Create");
        let state = client
            .state(StateRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(state.status, Status::Created as i32);
        assert_eq!(state.pid, created.pid);

        let started = client
            .start(StartRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(started.pid, created.pid);
        let waited = client
            .wait(WaitRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(waited.exit_status, 3);
        assert!(waited.exited_at.is_some());

        // Wait returns only after the output was flushed and exit.json written.
        let text = std::fs::read_to_string(&log)?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let find = |stream: &str| {
            lines
                .iter()
                .find(|l| l["stream"] == stream)
                .map(|l| l["log"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(find("stdout").as_deref(), Some("hello\n"), "{text}");
        assert_eq!(find("stderr").as_deref(), Some("oops\n"), "{text}");
        let exit: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.bundle.join("exit.json"))?)?;
        assert_eq!(exit["exit_status"], 3);
        assert_eq!(exit["pid"], created.pid);
        assert!(exit["exited_at"].as_str().is_some_and(|t| t.ends_with('Z')));

        assert_eq!(fx.delete_and_shutdown(&mut client).await?, 3);
        let want = [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
        ];
        let got = poll(Duration::from_secs(10), || {
            let topics = events.topics();
            (topics.len() >= want.len()).then_some(topics)
        })
        .await
        .unwrap_or_else(|| events.topics());
        assert_eq!(got, want);
        for (ns, _, event) in events.events() {
            assert_eq!(ns, "testns");
            if let Event::TaskExit(exit) = event {
                assert_eq!(exit.exit_status, 3);
                assert_eq!(exit.pid, created.pid);
                assert_eq!(exit.id, fx.id);
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn json_log_rotates_by_size() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("json_log_rotates_by_size") {
            return Ok(());
        }
        let script = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done";
        let mut fx = Fixture::new(&["sh", "-c", script])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        let log = fx.path("r-json.log");
        let uri = format!("jsonfile://{}?max-size=4000&max-file=3", log.display());
        client.create(fx.create_request(&uri, "")).await?;
        client
            .start(StartRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        client
            .wait(WaitRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let rotated = |n: u32| std::path::PathBuf::from(format!("{}.{n}", log.display()));
        assert!(
            rotated(1).exists() && rotated(2).exists(),
            "no rotation happened"
        );
        assert!(!rotated(3).exists(), "more files than max-file");
        for f in [log.clone(), rotated(1), rotated(2)] {
            let meta = std::fs::metadata(&f)?;
            assert!(meta.len() <= 4000, "{} too big", f.display());
            // Container output can hold secrets: never world-readable, also when
            // rotation recreated the file.
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            assert_eq!(mode & !0o640, 0, "{} is {mode:o}", f.display());
        }
        let current = std::fs::read_to_string(&log)?;
        let last: serde_json::Value =
            serde_json::from_str(current.lines().last().unwrap_or_default())?;
        assert_eq!(last["log"], "line-299\n");
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn final_burst_is_logged_before_the_exit_is_recorded() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("final_burst_is_logged_before_the_exit_is_recorded") {
            return Ok(());
        }
        // Init writes 4 MiB and exits at once, while a background child keeps stdout open
        // and silent: the log must hold every byte by the time the exit is recorded, and
        // the silent holder must not delay the exit for long.
        // Whole 33-byte lines: an unterminated last line is only written at EOF, which the
        // silent child holds back.
        const TOTAL: usize = 33 * 128 * 1024;
        let script = format!("sleep 20 & yes 0123456789abcdef0123456789abcdef | head -c {TOTAL}");
        let mut fx = Fixture::new(&["sh", "-c", &script])?;
        // Without a pid namespace of its own, the background child outlives init (with
        // one, init's exit would kill it and close the pipe).
        let config = fx.bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
        if let Some(list) = spec["linux"]["namespaces"].as_array_mut() {
            list.retain(|ns| ns["type"] != "pid");
        }
        std::fs::write(&config, serde_json::to_vec_pretty(&spec)?)?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        let log = fx.path("burst-json.log");
        let uri = format!("jsonfile://{}", log.display());
        client.create(fx.create_request(&uri, "")).await?;
        client
            .start(StartRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let waited = tokio::time::timeout(
            Duration::from_secs(15),
            client.wait(WaitRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            }),
        )
        .await
        .map_err(|_| anyhow::anyhow!("exit not reported while a silent child holds stdout"))??
        .into_inner();
        assert_eq!(waited.exit_status, 0);
        assert!(fx.bundle.join("exit.json").exists());
        // Wait returns after exit.json was written: the log must be complete already.
        let text = std::fs::read_to_string(&log)?;
        let logged: usize = text
            .lines()
            .map(|l| {
                let entry: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                entry["log"].as_str().map_or(0, str::len)
            })
            .sum();
        assert_eq!(logged, TOTAL);
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}
