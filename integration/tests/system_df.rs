//! `docker system df` (and `-v`, and `--format '{{json .}}'`) with two images sharing
//! their base layer with busybox: LayersSize counts the base once, each image's
//! SharedSize is the base, UNIQUE SIZE the rest; a container's SizeRw and SizeRootFs; a
//! volume's size; `?type=` narrowing the answer, as dockerd 28 does. The same scenario
//! against Debian's dockerd 20.10 (overlay2) gave the same numbers to the byte.

use anyhow::{ensure, Context, Result};
use berth_integration::{http, Stack};
use serde_json::Value;

use crate::build::nothing_left;
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "system_df::shared_layers_once_sizes_and_types_as_dockerd",
        needs: DOCKER,
        run: shared_layers,
    }]
}

/// go-units' HumanSize, which the CLI prints sizes with: 4 significant digits, 1000-based.
fn human(size: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    // Go's %.4g: 4 significant digits, trailing zeros dropped.
    let digits = if v == 0.0 {
        0
    } else {
        3 - v.abs().log10().floor() as i32
    };
    let text = format!("{:.*}", digits.max(0) as usize, v);
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[i])
}

fn image_size(s: &Stack, image: &str) -> Result<i64> {
    let out = s
        .docker(&["image", "inspect", "-f", "{{.Size}}", image])?
        .ok()?;
    out.out()
        .parse()
        .with_context(|| format!("inspect .Size of {image}: {:?}", out.stdout))
}

fn api_df(s: &Stack, query: &str) -> Result<(u16, Value)> {
    let r = http::request(
        &s.engine_sock(),
        "GET",
        &format!("/v1.47/system/df{query}"),
        b"",
    )?;
    let v = serde_json::from_str(&r.body).with_context(|| format!("df body {:?}", r.body))?;
    Ok((r.status, v))
}

fn with_file(s: &Stack, from: &str, bytes: usize, to: &str) -> Result<()> {
    let cmd = format!("head -c {bytes} /dev/zero > /f{bytes}");
    s.docker(&["run", "--name", "mk", from, "sh", "-c", &cmd])?
        .ok()?;
    s.docker(&["commit", "mk", to])?.ok()?;
    s.docker(&["rm", "mk"])?.ok()?;
    Ok(())
}

fn by_tag<'a>(images: &'a Value, tag: &str) -> Result<&'a Value> {
    images
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t == tag)
        })
        .with_context(|| format!("{tag} not in {images}"))
}

fn shared_layers() -> Result<()> {
    let s = Stack::with_busybox()?;
    with_file(&s, "busybox", 1000, "dfa:1")?;
    with_file(&s, "busybox", 3000, "dfb:1")?;
    s.docker(&[
        "run",
        "--name",
        "keep",
        "dfa:1",
        "sh",
        "-c",
        "head -c 5000 /dev/zero > /w",
    ])?
    .ok()?;
    s.docker(&["volume", "create", "dfvol"])?.ok()?;
    s.docker(&[
        "run",
        "--rm",
        "-v",
        "dfvol:/v",
        "busybox",
        "sh",
        "-c",
        "head -c 2000 /dev/zero > /v/f",
    ])?
    .ok()?;
    let base = image_size(&s, "busybox")?;
    let a = image_size(&s, "dfa:1")?;
    let b = image_size(&s, "dfb:1")?;
    ensure!(a - base >= 1000 && b - base >= 3000, "sizes {base} {a} {b}");
    let layers = base + (a - base) + (b - base);

    // The API's numbers.
    let (status, df) = api_df(&s, "")?;
    ensure!(status == 200, "df: {status} {df}");
    ensure!(
        df["LayersSize"] == layers,
        "LayersSize {} != {layers} (busybox {base}, dfa {a}, dfb {b})",
        df["LayersSize"]
    );
    for (tag, size, users) in [
        ("busybox:latest", base, 0),
        ("dfa:1", a, 1),
        ("dfb:1", b, 0),
    ] {
        let img = by_tag(&df["Images"], tag)?;
        ensure!(img["Size"] == size, "{tag} Size: {img}");
        ensure!(img["SharedSize"] == base, "{tag} SharedSize: {img}");
        ensure!(img["Containers"] == users, "{tag} Containers: {img}");
    }
    let keep = df["Containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["Names"][0] == "/keep")
        .with_context(|| format!("no keep in {}", df["Containers"]))?;
    let rw = keep["SizeRw"].as_i64().unwrap_or(0);
    ensure!(rw >= 5000, "SizeRw {rw}");
    ensure!(keep["SizeRootFs"] == a + rw, "SizeRootFs: {keep}");
    let vol = df["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["Name"] == "dfvol")
        .with_context(|| format!("no dfvol in {}", df["Volumes"]))?;
    ensure!(
        vol["UsageData"]["Size"] == 2000 && vol["UsageData"]["RefCount"] == 0,
        "dfvol: {vol}"
    );
    ensure!(
        df["BuildCache"].is_array(),
        "BuildCache: {}",
        df["BuildCache"]
    );
    ensure!(
        df.get("BuilderSize").is_none(),
        "BuilderSize after 1.42: {df}"
    );

    // `?type=` narrows the answer; an unknown type is dockerd's 400.
    let (_, only) = api_df(&s, "?type=image")?;
    ensure!(
        only["Images"].is_array()
            && only["Containers"].is_null()
            && only["Volumes"].is_null()
            && only["BuildCache"].is_null()
            && only["LayersSize"] == layers,
        "type=image: {only}"
    );
    let (_, only) = api_df(&s, "?type=container&type=volume")?;
    ensure!(
        only["Images"].is_null() && only["Containers"].is_array() && only["Volumes"].is_array(),
        "type=container&type=volume: {only}"
    );
    let (status, bad) = api_df(&s, "?type=bogus")?;
    ensure!(
        status == 400 && bad["message"] == "unknown object type: bogus",
        "type=bogus: {status} {bad}"
    );

    // API 1.41 had no `type` (ignored) and still had VirtualSize (= Size).
    let r = http::request(
        &s.engine_sock(),
        "GET",
        "/v1.41/system/df?type=container",
        b"",
    )?;
    let old: Value = serde_json::from_str(&r.body)?;
    let img = by_tag(&old["Images"], "dfb:1")?;
    ensure!(
        r.status == 200 && img["VirtualSize"] == b && old["Volumes"].is_array(),
        "API 1.41 df: {} {old}",
        r.status
    );
    ensure!(
        df["Images"][0].get("VirtualSize").is_none(),
        "VirtualSize after 1.44: {df}"
    );

    // The CLI's summary rows.
    let out = s
        .docker(&["system", "df", "--format", "{{json .}}"])?
        .ok()?;
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let images = rows
        .iter()
        .find(|r| r["Type"] == "Images")
        .with_context(|| format!("no Images row: {}", out.stdout))?;
    ensure!(
        images["TotalCount"] == "3" && images["Active"] == "1" && images["Size"] == human(layers),
        "Images row {images}, expected 3 / 1 / {}",
        human(layers)
    );
    // Reclaimable: all layers but what the used image holds alone.
    expect_contains(
        "Images reclaimable",
        images["Reclaimable"].as_str().unwrap_or(""),
        &format!("{} (", human(layers - (a - base))),
    )?;
    let containers = rows
        .iter()
        .find(|r| r["Type"] == "Containers")
        .with_context(|| format!("no Containers row: {}", out.stdout))?;
    ensure!(
        containers["TotalCount"] == "1" && containers["Size"] == human(rw),
        "Containers row {containers}"
    );

    // -v: per image SHARED SIZE, UNIQUE SIZE and CONTAINERS.
    let out = s
        .docker(&["system", "df", "-v", "--format", "{{json .}}"])?
        .ok()?;
    let v: Value = serde_json::from_str(out.out())
        .with_context(|| format!("system df -v json: {}", out.stdout))?;
    let row = v["Images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["Repository"] == "dfb" && i["Tag"] == "1")
        .with_context(|| format!("no dfb in {}", v["Images"]))?;
    ensure!(
        row["SharedSize"] == human(base)
            && row["UniqueSize"] == human(b - base)
            && row["Containers"] == "0",
        "dfb -v row: {row}"
    );
    let table = s.docker(&["system", "df", "-v"])?.ok()?;
    for header in ["SHARED SIZE", "UNIQUE SIZE", "CONTAINERS", "LINKS"] {
        expect_contains("system df -v", &table.stdout, header)?;
    }

    s.docker(&["rm", "keep"])?.ok()?;
    s.docker(&["volume", "rm", "dfvol"])?.ok()?;
    s.docker(&["rmi", "dfa:1", "dfb:1"])?.ok()?;
    nothing_left(&s)
}
