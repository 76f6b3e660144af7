//! `berth version`: the client's side always, the engine's when it answers.

use serde_json::Value;

use super::print_out;
use crate::client::{Client, MAX_API_VERSION};
use crate::error::CliError;

fn client_section(negotiated: Option<&str>) -> String {
    let api = match negotiated {
        Some(v) if v != MAX_API_VERSION => format!("{v} (downgraded from {MAX_API_VERSION})"),
        _ => MAX_API_VERSION.to_string(),
    };
    format!(
        "Client:\n Version:           {}\n API version:       {api}\n OS/Arch:           {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH,
    )
}

/// Prints the client section; used when the engine cannot be reached.
pub fn client_only() -> Result<(), CliError> {
    print_out(&client_section(None))
}

pub async fn version(client: &Client) -> Result<i32, CliError> {
    print_out(&client_section(Some(client.version())))?;
    let v: Value = client.get_json("/version").await?;
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    print_out(&format!(
        "\nServer:\n Engine:\n  Version:          {}\n  API version:      {} (minimum version {})\n  OS/Arch:          {}/{}\n  Kernel:           {}\n",
        s("Version"),
        s("ApiVersion"),
        s("MinAPIVersion"),
        s("Os"),
        s("Arch"),
        s("KernelVersion"),
    ))?;
    Ok(0)
}
