//! berth-proto tests: real gRPC servers on real unix sockets, and wire checks.

mod any;
mod ctr;
mod transport;
mod wire;
