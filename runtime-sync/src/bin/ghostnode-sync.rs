//! `ghostnode-sync`: one GhostNodes relay and swarm-store node on blocking threads.
//! Settings, data directory, start lines, signals and the node itself are the
//! runtime-neutral host's ([`ghost_host::start`]); this binary adds the sockets. It takes
//! the same flags, environment and configuration file as `ghostnode`.

use std::process::ExitCode;
use std::sync::Arc;

use ghost_host::driver::Carrier;
use runtime_sync::carrier::UreqCarrier;

fn main() -> ExitCode {
    ghost_host::start::main(
        "ghostnode-sync",
        "A GhostNodes node on blocking threads: relays onion packets and stores its swarms' messages.",
        ghost_host::driver::DriverMode::Thread,
        |config, links| -> Arc<dyn Carrier> { UreqCarrier::new(&config.http, links.clone()) },
        |started, shutdown| runtime_sync::serve(started, &shutdown),
    )
}
