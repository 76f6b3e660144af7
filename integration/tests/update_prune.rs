//! `docker update` (live cgroup limits, limits of stopped containers applied at start,
//! dockerd's errors) and prune filters, with the real docker CLI.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use berth_integration::Stack;

use berth_integration::prereq::Need;

use crate::common::{container_id, expect_contains, inspect, wait_status, Spec, DOCKER};
use crate::registry::Registry;

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "update_prune::update_changes_live_cgroup_limits",
            needs: DOCKER,
            run: update_live,
        },
        Spec {
            name: "update_prune::update_of_a_stopped_container_applies_at_start",
            needs: DOCKER,
            run: update_stopped,
        },
        Spec {
            name: "update_prune::update_errors_match_dockerd",
            needs: DOCKER,
            run: update_errors,
        },
        Spec {
            name: "update_prune::container_prune_until_and_labels",
            needs: DOCKER,
            run: container_prune,
        },
        Spec {
            name: "update_prune::image_and_network_prune_filters",
            needs: DOCKER,
            run: image_network_prune,
        },
        Spec {
            name: "update_prune::repo_digests_pull_push_run_rmi",
            needs: &[Need::Root, Need::Busybox, Need::Docker, Need::Registry],
            run: repo_digests,
        },
        Spec {
            name: "update_prune::images_filters_with_a_digest_only_image",
            needs: &[Need::Root, Need::Busybox, Need::Docker, Need::Registry],
            run: digest_only_filters,
        },
        Spec {
            name: "update_prune::info_reports_this_hosts_cgroup_support",
            needs: DOCKER,
            run: info_support,
        },
    ]
}

/// A UNIX time a minute from now: every object of the test was created before it.
fn in_a_minute() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now + 60).to_string()
}

fn names(s: &Stack, args: &[&str]) -> Result<Vec<String>> {
    let out = s.docker(args)?.ok()?;
    let mut v: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    v.sort();
    Ok(v)
}

fn container_prune() -> Result<()> {
    let s = Stack::with_busybox()?;
    for (name, label) in [("ca", "tier=web"), ("cb", "tier=db"), ("cc", "keep=1")] {
        s.docker(&[
            "create", "--name", name, "--label", label, "busybox", "true",
        ])?
        .ok()?;
    }
    s.docker(&[
        "run", "-d", "--name", "up", "--label", "tier=web", "busybox", "sleep", "1000",
    ])?
    .ok()?;
    let all = |s: &Stack| names(s, &["ps", "-a", "--format", "{{.Names}}"]);
    // Everything was created in the last hour: `until=1h` prunes nothing.
    s.docker(&["container", "prune", "-f", "--filter", "until=1h"])?
        .ok()?;
    ensure!(
        all(&s)? == ["ca", "cb", "cc", "up"],
        "after until=1h: {:?}",
        all(&s)?
    );
    let out = s
        .docker(&["container", "prune", "-f", "--filter", "label=tier=web"])?
        .ok()?;
    expect_contains("container prune output", &out.stdout, "Deleted Containers:")?;
    ensure!(
        all(&s)? == ["cb", "cc", "up"],
        "after label=tier=web: {:?}",
        all(&s)?
    );
    s.docker(&["container", "prune", "-f", "--filter", "label!=keep"])?
        .ok()?;
    ensure!(
        all(&s)? == ["cc", "up"],
        "after label!=keep: {:?}",
        all(&s)?
    );
    let until = in_a_minute();
    s.docker(&[
        "container",
        "prune",
        "-f",
        "--filter",
        &format!("until={until}"),
    ])?
    .ok()?;
    ensure!(all(&s)? == ["up"], "after until=<later>: {:?}", all(&s)?);
    let bad = s.docker(&["container", "prune", "-f", "--filter", "until=soon"])?;
    ensure!(bad.code != 0, "until=soon must be refused");
    expect_contains(
        "until=soon",
        &bad.stderr,
        "failed to parse value as time or duration: \"soon\"",
    )?;
    let bad = s.docker(&["container", "prune", "-f", "--filter", "dangling=true"])?;
    expect_contains(
        "dangling on containers",
        &bad.stderr,
        "invalid filter 'dangling'",
    )?;
    s.docker(&["rm", "-f", "up"])?.ok()?;
    Ok(())
}

fn image_network_prune() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&["create", "--name", "src", "busybox", "true"])?
        .ok()?;
    for (tag, label) in [("tmp:1", "purpose=tmp"), ("kept:1", "purpose=keep")] {
        s.docker(&["commit", "--change", &format!("LABEL {label}"), "src", tag])?
            .ok()?;
    }
    s.docker(&["rm", "src"])?.ok()?;
    let images = |s: &Stack| names(s, &["images", "--format", "{{.Repository}}"]);
    ensure!(
        images(&s)? == ["busybox", "kept", "tmp"],
        "images: {:?}",
        images(&s)?
    );
    s.docker(&["image", "prune", "-a", "-f", "--filter", "until=1h"])?
        .ok()?;
    ensure!(
        images(&s)? == ["busybox", "kept", "tmp"],
        "after until=1h: {:?}",
        images(&s)?
    );
    let until = format!("until={}", in_a_minute());
    let out = s
        .docker(&[
            "image",
            "prune",
            "-a",
            "-f",
            "--filter",
            "label=purpose=tmp",
            "--filter",
            &until,
        ])?
        .ok()?;
    expect_contains("image prune output", &out.stdout, "untagged: tmp:1")?;
    ensure!(
        images(&s)? == ["busybox", "kept"],
        "after label=purpose=tmp: {:?}",
        images(&s)?
    );
    s.docker(&["image", "prune", "-a", "-f", "--filter", "label!=purpose"])?
        .ok()?;
    ensure!(
        images(&s)? == ["kept"],
        "after label!=purpose: {:?}",
        images(&s)?
    );
    let bad = s.docker(&["image", "prune", "-f", "--filter", "reference=x"])?;
    expect_contains(
        "reference on prune",
        &bad.stderr,
        "invalid filter 'reference'",
    )?;

    s.docker(&["network", "create", "--label", "env=test", "pn1"])?
        .ok()?;
    let nets = |s: &Stack| {
        names(
            s,
            &[
                "network",
                "ls",
                "--filter",
                "name=pn",
                "--format",
                "{{.Name}}",
            ],
        )
    };
    s.docker(&["network", "prune", "-f", "--filter", "until=1h"])?
        .ok()?;
    ensure!(
        nets(&s)? == ["pn1"],
        "after network prune until=1h: {:?}",
        nets(&s)?
    );
    s.docker(&["network", "prune", "-f", "--filter", &until])?
        .ok()?;
    ensure!(
        nets(&s)?.is_empty(),
        "after network prune until=<later>: {:?}",
        nets(&s)?
    );
    Ok(())
}

fn repo_digests() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "1", None)?;
    let host = reg.host.clone();
    let img = format!("{host}/busybox:1");
    let out = s.docker(&["pull", &img])?.ok()?;
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .context("no Digest line in the pull output")?
        .trim()
        .to_string();
    let by_digest = format!("{host}/busybox@{digest}");
    let repo_digests = |s: &Stack, name: &str| -> Result<serde_json::Value> {
        let out = s.docker(&["image", "inspect", name])?.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
        Ok(v[0]["RepoDigests"].clone())
    };
    let got = repo_digests(&s, &img)?;
    ensure!(
        got == serde_json::json!([by_digest]),
        "RepoDigests after pull: {got}"
    );
    let out = s
        .docker(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ])?
        .ok()?;
    expect_contains(
        "docker images --digests",
        &out.stdout,
        &format!("{host}/busybox 1 {digest}"),
    )?;
    expect_contains(
        "imported busybox has no digest",
        &out.stdout,
        "busybox latest <none>",
    )?;
    let out = s.docker(&["images", "--digests"])?.ok()?;
    expect_contains("docker images --digests header", &out.stdout, "DIGEST")?;
    let out = s
        .docker(&[
            "images",
            "--filter",
            &format!("reference={by_digest}"),
            "--format",
            "{{.Repository}}",
        ])?
        .ok()?;
    ensure!(
        out.stdout.trim() == format!("{host}/busybox"),
        "images --filter reference=<digest>: {:?}",
        out.stdout
    );
    // Run by digest.
    let out = s
        .docker(&["run", "--rm", &by_digest, "echo", "by-digest"])?
        .ok()?;
    expect_contains("run by digest", &out.stdout, "by-digest")?;
    // rmi of the digest reference while a tag remains only untags the digest.
    let out = s.docker(&["rmi", &by_digest])?.ok()?;
    ensure!(
        out.stdout.trim() == format!("Untagged: {by_digest}"),
        "rmi by digest: {:?}",
        out.stdout
    );
    ensure!(
        repo_digests(&s, &img)? == serde_json::json!([]),
        "digest left after its rmi"
    );
    // Pull by digest brings the reference back; rmi of the last tag removes it too.
    s.docker(&["pull", &by_digest])?.ok()?;
    ensure!(
        repo_digests(&s, &img)? == serde_json::json!([by_digest]),
        "pull by digest"
    );
    let out = s.docker(&["rmi", &img])?.ok()?;
    for want in [
        format!("Untagged: {img}"),
        format!("Untagged: {by_digest}"),
        "Deleted: sha256:".to_string(),
    ] {
        expect_contains("rmi of the last tag", &out.stdout, &want)?;
    }
    let gone = s.docker(&["image", "inspect", &by_digest])?;
    ensure!(gone.code != 0, "the digest reference outlived its image");

    // A push records the digest the registry now knows the image by.
    let mine = format!("{host}/mine:1");
    s.docker(&["tag", "busybox", &mine])?.ok()?;
    let out = s.docker(&["push", &mine])?.ok()?;
    let pushed = out
        .stdout
        .lines()
        .find_map(|l| l.split_once(": digest: ").map(|(_, r)| r.to_string()))
        .context("no digest line in the push output")?;
    let pushed = pushed
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        repo_digests(&s, &mine)? == serde_json::json!([format!("{host}/mine@{pushed}")]),
        "RepoDigests after push: {}",
        repo_digests(&s, &mine)?
    );
    Ok(())
}

/// The container's v1 cgroup file under the stack's cgroup parent.
fn cgroup_file(s: &Stack, controller: &str, id: &str, file: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(&s.cgroup_name)
        .join(id)
        .join(file)
}

fn read_cgroup(s: &Stack, controller: &str, id: &str, file: &str) -> Result<String> {
    let path = cgroup_file(s, controller, id, file);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("read {}", path.display()))?
        .trim()
        .to_string())
}

fn expect_cgroup(s: &Stack, controller: &str, id: &str, file: &str, want: &str) -> Result<()> {
    let got = read_cgroup(s, controller, id, file)?;
    ensure!(got == want, "{controller}/{file} is {got:?}, want {want:?}");
    Ok(())
}

fn expect_host(v: &serde_json::Value, key: &str, want: serde_json::Value) -> Result<()> {
    let got = &v["HostConfig"][key];
    ensure!(
        *got == want,
        "inspect HostConfig.{key} is {got}, want {want}"
    );
    Ok(())
}

fn update_live() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&[
            "run", "-d", "--name", "up", "-m", "64m", "busybox", "sleep", "1000",
        ])?
        .ok()?;
    let id = container_id(&out.stdout)?;
    expect_cgroup(&s, "memory", &id, "memory.limit_in_bytes", "67108864")?;
    // dockerd gives a memory limit twice as much memory+swap.
    expect_cgroup(
        &s,
        "memory",
        &id,
        "memory.memsw.limit_in_bytes",
        "134217728",
    )?;
    let v = inspect(&s, "up")?;
    expect_host(&v, "MemorySwap", 134_217_728.into())?;

    // Raising memory above the old memory+swap needs memsw written first.
    let out = s
        .docker(&[
            "update",
            "--memory",
            "256m",
            "--memory-swap",
            "512m",
            "--memory-reservation",
            "100m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "50",
            "--cpuset-cpus",
            "0",
            "up",
        ])?
        .ok()?;
    expect_contains("docker update output", &out.stdout, "up")?;
    expect_cgroup(&s, "memory", &id, "memory.limit_in_bytes", "268435456")?;
    expect_cgroup(
        &s,
        "memory",
        &id,
        "memory.memsw.limit_in_bytes",
        "536870912",
    )?;
    expect_cgroup(&s, "memory", &id, "memory.soft_limit_in_bytes", "104857600")?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_quota_us", "50000")?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_period_us", "100000")?;
    expect_cgroup(&s, "cpu", &id, "cpu.shares", "512")?;
    expect_cgroup(&s, "pids", &id, "pids.max", "50")?;
    expect_cgroup(&s, "cpuset", &id, "cpuset.cpus", "0")?;
    let v = inspect(&s, "up")?;
    expect_host(&v, "Memory", 268_435_456.into())?;
    expect_host(&v, "MemorySwap", 536_870_912.into())?;
    expect_host(&v, "MemoryReservation", 104_857_600.into())?;
    expect_host(&v, "NanoCpus", 500_000_000.into())?;
    expect_host(&v, "CpuShares", 512.into())?;
    expect_host(&v, "PidsLimit", 50.into())?;
    expect_host(&v, "CpusetCpus", "0".into())?;

    // Lowering, and lifting the pids limit; a paused container is updated too.
    s.docker(&["pause", "up"])?.ok()?;
    s.docker(&["update", "-m", "32m", "--pids-limit", "-1", "up"])?
        .ok()?;
    s.docker(&["unpause", "up"])?.ok()?;
    expect_cgroup(&s, "memory", &id, "memory.limit_in_bytes", "33554432")?;
    expect_cgroup(&s, "pids", &id, "pids.max", "max")?;
    let v = inspect(&s, "up")?;
    expect_host(&v, "Memory", 33_554_432.into())?;
    expect_host(&v, "MemorySwap", 536_870_912.into())?;

    // The restart policy changes live: the container now comes back after a kill.
    s.docker(&["update", "--restart", "always", "up"])?.ok()?;
    let v = inspect(&s, "up")?;
    ensure!(
        v["HostConfig"]["RestartPolicy"]["Name"] == "always",
        "restart policy after update: {}",
        v["HostConfig"]["RestartPolicy"]
    );
    // The limits survive a restart (they are in highd's spec too).
    s.docker(&["restart", "-t", "0", "up"])?.ok()?;
    let v = wait_status(&s, "up", "running")?;
    ensure!(v["State"]["Pid"].as_i64() > Some(0), "no pid after restart");
    expect_cgroup(&s, "memory", &id, "memory.limit_in_bytes", "33554432")?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_quota_us", "50000")?;
    s.docker(&["rm", "-f", "up"])?.ok()?;
    Ok(())
}

fn update_stopped() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&["create", "--name", "later", "busybox", "sleep", "1000"])?
        .ok()?;
    let id = container_id(&out.stdout)?;
    s.docker(&[
        "update",
        "--memory",
        "100m",
        "--memory-swap",
        "200m",
        "--pids-limit",
        "20",
        "--cpu-quota",
        "30000",
        "--cpu-period",
        "60000",
        "--restart",
        "on-failure:2",
        "later",
    ])?
    .ok()?;
    let v = inspect(&s, "later")?;
    expect_host(&v, "Memory", 104_857_600.into())?;
    expect_host(&v, "PidsLimit", 20.into())?;
    expect_host(&v, "CpuQuota", 30_000.into())?;
    ensure!(
        v["HostConfig"]["RestartPolicy"]
            == serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2}),
        "restart policy: {}",
        v["HostConfig"]["RestartPolicy"]
    );
    s.docker(&["start", "later"])?.ok()?;
    expect_cgroup(&s, "memory", &id, "memory.limit_in_bytes", "104857600")?;
    expect_cgroup(
        &s,
        "memory",
        &id,
        "memory.memsw.limit_in_bytes",
        "209715200",
    )?;
    expect_cgroup(&s, "pids", &id, "pids.max", "20")?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_quota_us", "30000")?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_period_us", "60000")?;
    // An exited container too.
    s.docker(&["stop", "-t", "0", "later"])?.ok()?;
    s.docker(&["update", "--pids-limit", "25", "later"])?.ok()?;
    s.docker(&["start", "later"])?.ok()?;
    expect_cgroup(&s, "pids", &id, "pids.max", "25")?;
    s.docker(&["rm", "-f", "later"])?.ok()?;
    Ok(())
}

fn update_errors() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"])?
        .ok()?;
    let id = container_id(&out.stdout)?;
    let fails = |args: &[&str], want: &str| -> Result<()> {
        let out = s.docker(args)?;
        ensure!(
            out.code == 1,
            "{args:?} exited {}: {}",
            out.code,
            out.stderr
        );
        expect_contains(&format!("{args:?}"), &out.stderr, want)
    };
    fails(
        &["update", "-m", "1m", "plain"],
        "Error response from daemon: Minimum memory limit allowed is 6MB",
    )?;
    // No memory limit means no memory+swap limit: dockerd wants both.
    fails(
        &["update", "-m", "64m", "plain"],
        &format!("Cannot update container {id}: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"),
    )?;
    fails(
        &["update", "-m", "64m", "--memory-swap", "32m", "plain"],
        "Minimum memoryswap limit should be larger than memory limit, see usage",
    )?;
    fails(
        &["update", "--cpu-period", "10", "plain"],
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
    )?;
    fails(
        &["update", "--cpuset-cpus", "64", "plain"],
        "Requested CPUs are not available - requested 64",
    )?;
    fails(
        &["update", "--cpus", "0.5", "nosuch"],
        "No such container: nosuch",
    )?;
    fails(
        &["update", "--restart", "sometimes", "plain"],
        "invalid restart policy",
    )?;
    s.docker(&["update", "--cpu-quota", "20000", "plain"])?
        .ok()?;
    fails(
        &["update", "--cpus", "1", "plain"],
        "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
    )?;
    // A refused update changes nothing.
    let v = inspect(&s, "plain")?;
    expect_host(&v, "Memory", 0.into())?;
    expect_host(&v, "NanoCpus", 0.into())?;
    expect_cgroup(&s, "cpu", &id, "cpu.cfs_quota_us", "20000")?;

    s.docker(&[
        "run", "-d", "--rm", "--name", "gone", "busybox", "sleep", "1000",
    ])?
    .ok()?;
    let gone = inspect(&s, "gone")?["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    fails(
        &["update", "--restart", "always", "gone"],
        &format!("Cannot update container {gone}: Restart policy cannot be updated because AutoRemove is enabled for the container"),
    )?;
    s.docker(&["rm", "-f", "plain", "gone"])?.ok()?;
    Ok(())
}

/// `docker images` lines `REPOSITORY TAG` with `args` added.
fn image_rows(s: &Stack, args: &[&str]) -> Result<Vec<String>> {
    let mut all = vec!["images", "--format", "{{.Repository}} {{.Tag}}"];
    all.extend_from_slice(args);
    let out = s.docker(&all)?.ok()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// An image pulled by digest only has a RepoDigest and no tag: dockerd 20.10 lists it
/// under `dangling=true` and `dangling=false` alike (only an image with neither is
/// dangling-only); `reference=` filters digests too; `-a`, `label`, `before`/`since`.
fn digest_only_filters() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "1", None)?;
    let host = reg.host.clone();
    let out = s.docker(&["pull", &format!("{host}/busybox:1")])?.ok()?;
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .context("no Digest line in the pull output")?
        .trim()
        .to_string();
    // Leave the digest reference only.
    s.docker(&["rmi", &format!("{host}/busybox:1")])?.ok()?;
    s.docker(&["pull", &format!("{host}/busybox@{digest}")])?
        .ok()?;
    let digest_row = format!("{host}/busybox <none>");
    let ctx = crate::build::context(
        &s,
        "labelled",
        &[(
            "Dockerfile",
            "FROM busybox\nLABEL team=blue\nRUN echo x > /x\n",
        )],
    )?;
    s.docker(&["build", "-q", "-t", "lab:1", &ctx.to_string_lossy()])?
        .ok()?;
    let dangling = image_rows(&s, &["--filter", "dangling=true"])?;
    ensure!(
        dangling.contains(&digest_row) && !dangling.iter().any(|r| r.starts_with("lab ")),
        "dangling=true: {dangling:?}"
    );
    let kept = image_rows(&s, &["--filter", "dangling=false"])?;
    ensure!(
        kept.contains(&digest_row) && kept.contains(&"lab 1".to_string()),
        "dangling=false: {kept:?}"
    );
    let by_ref = image_rows(&s, &["--digests", "--filter", "reference=lab"])?;
    ensure!(by_ref == ["lab 1"], "reference=lab: {by_ref:?}");
    let labelled = image_rows(&s, &["--filter", "label=team=blue"])?;
    ensure!(labelled == ["lab 1"], "label=team=blue: {labelled:?}");
    let before = image_rows(&s, &["--filter", "before=lab:1"])?;
    ensure!(
        !before.contains(&"lab 1".to_string()) && before.contains(&"busybox latest".to_string()),
        "before=lab:1: {before:?}"
    );
    let since = image_rows(&s, &["--filter", "since=busybox"])?;
    ensure!(
        since.contains(&"lab 1".to_string()),
        "since=busybox: {since:?}"
    );
    let plain = image_rows(&s, &[])?;
    let all = image_rows(&s, &["-a"])?;
    ensure!(
        plain == all,
        "images -a lists what images does here: {all:?} vs {plain:?}"
    );
    Ok(())
}

/// `docker info`'s support fields follow this host's cgroup control files, and a missing
/// swap limit gives dockerd's warning.
fn info_support() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&[
            "info",
            "--format",
            "{{.SwapLimit}} {{.KernelMemory}} {{.OomKillDisable}} {{.CPUCfsQuota}}",
        ])?
        .ok()?;
    let has = |p: &str| std::path::Path::new(p).exists();
    let want = format!(
        "{} {} {} {}",
        has("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
        has("/sys/fs/cgroup/memory/memory.kmem.limit_in_bytes"),
        has("/sys/fs/cgroup/memory/memory.oom_control"),
        has("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    );
    ensure!(
        out.stdout.trim() == want,
        "info: {:?}, host: {want}",
        out.stdout
    );
    let out = s.docker(&["info"])?.ok()?;
    if !has("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") {
        expect_contains(
            "info warnings",
            &out.stderr,
            "WARNING: No swap limit support",
        )?;
    }
    Ok(())
}
