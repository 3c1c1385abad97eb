//! `ghostnode`: one GhostNodes relay and swarm-store node on smol (hyper's HTTP/1.1 on
//! async-io). Settings, data directory, start lines, signals and the node itself are the
//! runtime-neutral host's ([`ghost_host::start`]); this binary adds the sockets.
//!
//! Settings come from an optional TOML file (`--config`), overridden by environment
//! variables and flags. SIGINT or SIGTERM stop it gracefully: no new connections,
//! in-flight requests finish, the database is committed and closed, exit code 0.

use std::process::ExitCode;
use std::sync::Arc;

use ghost_host::driver::{Carrier, DriverMode};
use runtime_smol::host::{SmolCarrier, serve};
use smol::Executor;

fn main() -> ExitCode {
    let ex = Arc::new(Executor::new());
    ghost_host::start::main(
        "ghostnode",
        "A GhostNodes node on smol: relays onion packets and stores its swarms' messages.",
        DriverMode::Task,
        |config, links| -> Arc<dyn Carrier> {
            SmolCarrier::new(ex.clone(), config.http.clone(), links.clone())
        },
        |started, shutdown| serve(started, &ex, shutdown),
    )
}
