//! End-to-end tests of the whole Berth stack: each test starts its own highd + engine in a
//! temp dir and drives it with the real docker CLI or with `berth`.
//!
//! The binaries must be built first (`cargo build --workspace --bins`). Tests whose needs
//! (root, docker CLI, busybox) are not met are reported as ignored after a "SKIP:" line.

mod archive;
mod berth_cli;
mod build;
mod build_more;
mod build_remote;
mod build_steps;
mod common;
mod compose;
mod docker_errors;
mod docker_lifecycle;
mod docker_py;
mod docker_run;
mod events;
mod health;
mod image_sizes;
mod images_more;
mod leftovers;
mod lifecycle_more;
mod network;
mod network_dns;
mod network_links;
mod registry;
mod registry_more;
mod registry_pull;
mod registry_push;
mod restart;
mod restart_policy;
mod runtime_more;
mod save_load_stream;
mod stats_top;
mod system_df;
mod tty;
mod update_prune;
mod user_networks;
mod users_seccomp;
mod volumes;

use std::collections::BTreeMap;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let specs: Vec<common::Spec> = [
        docker_run::tests(),
        docker_lifecycle::tests(),
        docker_errors::tests(),
        restart::tests(),
        restart_policy::tests(),
        lifecycle_more::tests(),
        leftovers::tests(),
        network::tests(),
        network_dns::tests(),
        network_links::tests(),
        user_networks::tests(),
        registry::tests(),
        registry_more::tests(),
        registry_pull::tests(),
        registry_push::tests(),
        events::tests(),
        users_seccomp::tests(),
        berth_cli::tests(),
        docker_py::tests(),
        compose::tests(),
        build::tests(),
        build_more::tests(),
        build_steps::tests(),
        build_remote::tests(),
        images_more::tests(),
        save_load_stream::tests(),
        image_sizes::tests(),
        system_df::tests(),
        volumes::tests(),
        tty::tests(),
        stats_top::tests(),
        update_prune::tests(),
        health::tests(),
        archive::tests(),
        runtime_more::tests(),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let trials: Vec<Trial> = specs
        .into_iter()
        .map(|spec| {
            let unmet = berth_integration::prereq::unmet(spec.needs);
            if let Some(reason) = &unmet {
                *skipped.entry(reason.clone()).or_default() += 1;
            }
            let run = spec.run;
            Trial::test(spec.name, move || common::run_test(run)).with_ignored_flag(unmet.is_some())
        })
        .collect();
    for (reason, n) in &skipped {
        println!("SKIP: {n} integration tests: {reason}");
    }
    libtest_mimic::run(&args, trials).exit_code()
}
