mod harness;

mod cgroups;
mod console;
mod errors;
mod exec;
mod lifecycle;
mod run;
