//! Stats from the container's real cgroup, and the shim's own `--cgroup` placement.

use std::path::Path;
use std::time::Duration;

use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::task::v2::{
    DeleteRequest, KillRequest, ShutdownRequest, StartRequest, StatsRequest, StatsResponse,
    WaitRequest,
};
use berth_proto::io::containerd::cgroups::v1::Metrics;

use tonic::transport::Channel;

use crate::harness::{pid_alive, poll, remove_cgroups, skip_unless_root, FakeEvents, Fixture};

const LIMIT: u64 = 64 << 20;

async fn stats(
    client: &mut TaskClient<Channel>,
    id: &str,
) -> Result<tonic::Response<StatsResponse>, tonic::Status> {
    client.stats(StatsRequest { id: id.to_owned() }).await
}

fn v1_memory_mounted() -> bool {
    Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()
}

#[tokio::test]
async fn stats_read_the_running_containers_v1_cgroup() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("stats_read_the_running_containers_v1_cgroup") {
            return Ok(());
        }
        if !v1_memory_mounted() {
            eprintln!("SKIPPED stats_read_the_running_containers_v1_cgroup: no cgroup v1 memory");
            return Ok(());
        }
        // Burn a little CPU first, so the usage counters cannot be 0.
        let script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo up; exec sleep 1000";
        let mut fx = Fixture::new(&["sh", "-c", script])?;
        fx.set_memory_limit(LIMIT)?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        let out = fx.path("out");
        let out_uri = out.display().to_string();
        client.create(fx.create_request(&out_uri, "")).await?;
        let id = fx.id.clone();
        client
            .start(StartRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let up = poll(Duration::from_secs(30), || {
            std::fs::read_to_string(&out)
                .ok()?
                .contains("up")
                .then_some(())
        })
        .await;
        assert!(up.is_some(), "container never printed up");

        let any = stats(&mut client, &id)
            .await?
            .into_inner()
            .stats
            .expect("stats");
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m: Metrics = berth_proto::any::unpack(&any)?;
        let cgroup = format!("/sys/fs/cgroup/memory/{}/{}", fx.cgroup_parent, fx.id);
        let kernel_limit: u64 = std::fs::read_to_string(format!("{cgroup}/memory.limit_in_bytes"))?
            .trim()
            .parse()?;
        let memory = m.memory.expect("memory");
        let usage = memory.usage.expect("memory usage");
        assert_eq!(usage.limit, LIMIT);
        assert_eq!(usage.limit, kernel_limit);
        assert!(usage.usage > 0 && usage.max >= usage.usage, "{usage:?}");
        assert_eq!(memory.hierarchical_memory_limit, LIMIT);
        if Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
            assert_eq!(m.pids.expect("pids").current, 1, "only sleep runs");
        }
        let cpu = m.cpu.expect("cpu").usage.expect("cpu usage");
        assert!(cpu.total > 0, "{cpu:?}");
        assert!(!cpu.per_cpu.is_empty());
        assert!(cpu.per_cpu.iter().sum::<u64>() <= cpu.total + 1_000_000);
        assert!(m.memory_oom_control.is_some());

        // After the exit and before Delete the cgroup still exists: stats still work.
        client
            .kill(KillRequest {
                id: id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: false,
            })
            .await?;
        client
            .wait(WaitRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let after = stats(&mut client, &id)
            .await?
            .into_inner()
            .stats
            .expect("stats");
        let m: Metrics = berth_proto::any::unpack(&after)?;
        if let Some(pids) = m.pids {
            assert_eq!(pids.current, 0);
        }
        client
            .delete(DeleteRequest {
                id: id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let gone = stats(&mut client, &id).await.unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
        client.shutdown(ShutdownRequest { id, now: false }).await?;
        let pid = fx.shim_pid.unwrap_or_default();
        let exited = poll(Duration::from_secs(15), || (!pid_alive(pid)).then_some(())).await;
        assert!(exited.is_some(), "shim did not exit");
        fx.shim_pid = None;
        Ok(())
    })
    .await
}

/// The path of hierarchy `ctrl` (a v1 controller, or "" for the unified one) in
/// /proc/PID/cgroup.
fn cgroup_of(pid: u32, ctrl: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if ctrl.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == ctrl)
        };
        hit.then(|| path.to_owned())
    })
}

#[tokio::test]
async fn shim_moves_itself_into_its_cgroup() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("shim_moves_itself_into_its_cgroup") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["true"])?;
        let cgroup = format!("/{}/shim", fx.cgroup_parent);
        fx.shim_cgroup = Some(cgroup.clone());
        let mut client = fx.start_shim().await?;
        let pid = fx.shim_pid.unwrap_or_default();
        let mut checked = 0;
        for ctrl in ["memory", "pids", "cpu", "cpuset", ""] {
            let hierarchy = if ctrl.is_empty() { "unified" } else { ctrl };
            let dir = Path::new("/sys/fs/cgroup").join(hierarchy);
            if !dir.join("cgroup.procs").exists() {
                continue;
            }
            assert_eq!(
                cgroup_of(pid, ctrl).as_deref(),
                Some(cgroup.as_str()),
                "{hierarchy}"
            );
            let procs = std::fs::read_to_string(
                dir.join(cgroup.trim_start_matches('/'))
                    .join("cgroup.procs"),
            )?;
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{hierarchy}: {procs}"
            );
            checked += 1;
        }
        assert!(checked > 0, "no cgroup hierarchy mounted");
        client
            .shutdown(ShutdownRequest {
                id: fx.id.clone(),
                now: false,
            })
            .await?;
        let exited = poll(Duration::from_secs(15), || (!pid_alive(pid)).then_some(())).await;
        assert!(exited.is_some(), "shim did not exit");
        fx.shim_pid = None;
        // The caller owns the cgroup: it is still there, and removable once empty.
        assert!(
            Path::new("/sys/fs/cgroup/memory")
                .join(&cgroup[1..])
                .exists()
                || !v1_memory_mounted()
        );
        remove_cgroups(&fx.cgroup_parent);
        assert!(!Path::new("/sys/fs/cgroup/memory")
            .join(&fx.cgroup_parent)
            .exists());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_shim_cgroup_fails_start() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        let mut fx = Fixture::new(&["true"])?;
        fx.shim_cgroup = Some("relative/shim".into());
        let out = fx.start_command().output()?;
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid shim cgroup \"relative/shim\""),
            "{stderr}"
        );
        assert!(!fx.bundle.join("shim.pid").exists());
        Ok(())
    })
    .await
}

/// The v2 reader against the kernel's own files: a process in a cgroup of its own on the
/// unified hierarchy (controllers or not, `cpu.stat` is always there).
#[tokio::test]
async fn v2_reader_parses_the_kernels_unified_files() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("v2_reader_parses_the_kernels_unified_files") {
            return Ok(());
        }
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.controllers").exists());
        let Some(root) = root else {
            eprintln!("SKIPPED v2_reader_parses_the_kernels_unified_files: no cgroup2 mount");
            return Ok(());
        };
        let name = format!("berth-test-v2-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir)?;
        // It burns CPU only once it is in the cgroup (after reading a line).
        let script = "read go; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000";
        let mut child = std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", script])
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        let result = async {
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string())?;
            if let Some(stdin) = child.stdin.as_mut() {
                use std::io::Write;
                stdin.write_all(b"go\n")?;
            }
            let paths = berth_shim::cgroup::CgroupPaths::V2(dir.clone());
            let used = poll(Duration::from_secs(30), || {
                let any = paths.metrics().ok()?;
                let m: berth_proto::io::containerd::cgroups::v2::Metrics =
                    berth_proto::any::unpack(&any).ok()?;
                m.cpu.filter(|c| c.usage_usec > 0)
            })
            .await;
            let cpu = used.ok_or_else(|| anyhow::anyhow!("no CPU usage in {}", dir.display()))?;
            assert!(
                cpu.user_usec + cpu.system_usec <= cpu.usage_usec + 1000,
                "{cpu:?}"
            );
            anyhow::Ok(())
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let removed = poll(Duration::from_secs(5), || std::fs::remove_dir(&dir).ok()).await;
        assert!(removed.is_some(), "cannot remove {}", dir.display());
        result
    })
    .await
}
