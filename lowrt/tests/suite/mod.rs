mod harness;

mod cgroups;
mod console;
mod containerd;
mod docker;
mod errors;
mod events;
mod exec;
mod hooks;
mod lifecycle;
mod mounts;
mod run;
mod stress;
mod timens;
mod update_rt;
mod userns;
