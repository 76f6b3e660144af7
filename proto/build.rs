//! Generates prost messages and tonic clients/servers from `protos/`.
//!
//! protoc is not bundled by prost-build 0.14, so fail early with a message that says
//! how to fix it instead of prost's generic "Could not find `protoc`".

use std::path::{Path, PathBuf};

fn main() {
    let protoc = find_protoc().unwrap_or_else(|| {
        panic!(
            "berth-proto: protoc not found. Install it (apt-get install -y protobuf-compiler) \
             or set PROTOC=/path/to/protoc"
        )
    });
    let include = well_known_include(&protoc).unwrap_or_else(|| {
        panic!(
            "berth-proto: google/protobuf/*.proto not found next to {} or in /usr/include; \
             set PROTOC_INCLUDE to the directory that contains google/protobuf/any.proto",
            protoc.display()
        )
    });

    let root = PathBuf::from("protos");
    let mut protos = Vec::new();
    collect_protos(&root, &mut protos);
    protos.sort();
    println!("cargo:rerun-if-changed=protos");
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-env-changed=PROTOC_INCLUDE");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(&protoc);
    // prost::Name impls give every message its full protobuf name, which is exactly the
    // Any type URL containerd's typeurl uses for events ("containerd.events.TaskExit").
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The shim Task service has a `Connect` rpc, which clashes with the generated
        // `TaskClient::connect(endpoint)` constructor; clients use `transport::connect_unix`.
        .build_transport(false)
        .compile_with_config(config, &protos, &[root, include])
        .unwrap_or_else(|e| panic!("berth-proto: generating code from protos/ failed: {e}"));
}

fn find_protoc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROTOC") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|p| p.is_file())
}

fn well_known_include(protoc: &Path) -> Option<PathBuf> {
    let has_any = |dir: &Path| dir.join("google/protobuf/any.proto").is_file();
    if let Some(dir) = std::env::var_os("PROTOC_INCLUDE") {
        let dir = PathBuf::from(dir);
        return has_any(&dir).then_some(dir);
    }
    // protoc installed as <prefix>/bin/protoc ships its includes in <prefix>/include.
    let beside = protoc.parent()?.parent()?.join("include");
    [
        beside,
        PathBuf::from("/usr/include"),
        PathBuf::from("/usr/local/include"),
    ]
    .into_iter()
    .find(|d| has_any(d))
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("berth-proto: cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("berth-proto: cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect_protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
