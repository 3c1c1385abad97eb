//! `ghost bench`: load tests through true 3-hop paths against a running network or a
//! local one it starts, with HDR latency percentiles, replication checks, a JSON and
//! Markdown report with SVG plots, and comparison of two reports.
//!
//! Scenarios: `http` (`GET /health` on every node and `/metrics` on every admin
//! listener), `store` (3-hop stores, receipts verified by the core client), `flow`
//! (stores, then every acknowledged message checked on all K members by signed retrieves
//! and fetched as a user would, exactly once; replication delay sampled during the
//! stores) and `mixed` (stores and retrieves in a fixed ratio). See the `load` module for the
//! load models and `docs/OPERATING.md` for every option and the report schema.

pub mod compare;
mod load;
mod markdown;
mod nodes;
pub mod plot;
pub mod report;
mod verify;
mod work;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use proto_core::fragment::MAX_MESSAGE_LEN;
use proto_core::sealed::MAX_MESSAGE_IN_ONE_BODY;

use crate::client::{Client, Links, Listening};
use crate::local::{LocalNetwork, NodeBinaries, Runtime};
use load::{LoadModel, Plan, Recorder, Stop};
use report::{BenchConfig, FlowCheck, GeneratorUsage, Report, SCHEMA};
use work::{HttpTarget, ProbeResults, Shared};

/// What `ghost bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `GET /health` on every node and `/metrics` on every admin listener.
    Http,
    /// 3-hop stores to many recipients, receipts verified.
    Store,
    /// Stores, then every acknowledged message checked on all K members and fetched
    /// exactly once; replication delay sampled.
    Flow,
    /// Stores and 3-hop retrieves in the ratio `--mix`.
    Mixed,
    /// Compare two reports: `ghost bench compare OLD/report.json NEW/report.json`.
    Compare,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Store => "store",
            Self::Flow => "flow",
            Self::Mixed => "mixed",
            Self::Compare => "compare",
        }
    }
}

/// The options of `ghost bench`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  ghost bench --local 5 flow --messages 20000
  ghost bench --local 5 store --rate 1000 --duration 30
  ghost bench --via 10.0.0.5:7100 --admin 10.0.0.5:9100 mixed --mix 4:1 --concurrency 32
  ghost bench --local 3 http --messages 5000 --concurrency 8
  ghost bench compare old/report.json new/report.json --max-regression 5%")]
pub struct BenchArgs {
    /// The scenario, or `compare`.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// `compare` only: the old and the new report.json.
    #[arg(value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Start a local network of N nodes for the run (removed afterwards).
    #[arg(long, value_name = "N", conflicts_with = "via")]
    pub local: Option<usize>,
    /// A running network: any node's address.
    #[arg(long, value_name = "ADDR", env = "GHOST_SEED")]
    pub via: Option<String>,
    /// With --via: a node's admin listener (`/metrics`), repeatable; the report then has
    /// its CPU, memory and counters.
    #[arg(long, value_name = "ADDR")]
    pub admin: Vec<String>,
    /// With --local: which node binary the nodes run.
    #[arg(long, value_enum, default_value_t = Runtime::Smol)]
    pub runtime: Runtime,
    /// With --local: TOML merged over every node's settings (e.g. `[store]` then
    /// `commit_interval_ms = 1`), to measure a configuration.
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    /// With --local: the ghostnode binary (default: next to this one).
    #[arg(long, env = "GHOSTNODE_BIN")]
    pub ghostnode: Option<PathBuf>,
    /// With --local: the ghostnode-sync binary (default: next to this one).
    #[arg(long, env = "GHOSTNODE_SYNC_BIN")]
    pub ghostnode_sync: Option<PathBuf>,
    /// Closed loop: operations in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// Open loop: operations started per second, whatever the network does (latency
    /// counts from when each was due).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Open loop: most operations in flight; due operations wait beyond it.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_in_flight: u32,
    /// Measured phase length, seconds (default 10 unless --messages is given).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Measured operations (messages stored, or requests for `http`), instead of a
    /// duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Warm-up before measuring, seconds (its operations run, unmeasured).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Plaintext bytes per message, sealed to the recipient before storing (1 to 131,072).
    /// Above 1,340 bytes (one packet) a message is stored as fragments, each on its own
    /// path, and counts once in the throughput but once per fragment in the checks.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub payload: usize,
    /// Distinct recipients messages go to.
    #[arg(long, default_value_t = 1000)]
    pub recipients: usize,
    /// Receipts each store needs (W; the network's `node.write_quorum`).
    #[arg(long, default_value_t = 2)]
    pub quorum: usize,
    /// Swarm size (K; the network's `node.swarm_size`).
    #[arg(long, default_value_t = 3)]
    pub swarm_size: usize,
    /// `mixed`: stores to retrieves, `STORES:RETRIEVES`.
    #[arg(long, default_value = "1:1")]
    pub mix: String,
    /// Seed of the bench's choices (recipient keys, who gets which message, payloads);
    /// default: random, printed and recorded in the report.
    #[arg(long)]
    pub seed: Option<u64>,
    /// `flow`: how long to wait for every member to hold every message, seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub verify_timeout: f64,
    /// Where the report goes (default: bench-results/SCENARIO-UNIXTIME).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `compare`: the largest regression of a gated figure that still passes.
    #[arg(long, default_value = "5%")]
    pub max_regression: String,
}

/// Why the bench stopped early or failed, and how `ghost` should exit.
#[derive(Debug)]
pub struct BenchFailure {
    /// What to tell the user.
    pub message: String,
    /// 1: the run or a check failed, or compare found a regression; 2: usage or setup.
    pub code: u8,
}

fn usage(message: impl Into<String>) -> BenchFailure {
    BenchFailure {
        message: message.into(),
        code: 2,
    }
}

fn failed(message: impl Into<String>) -> BenchFailure {
    BenchFailure {
        message: message.into(),
        code: 1,
    }
}

/// Runs `ghost bench` with `args`.
pub fn run(args: &BenchArgs, links: &Links) -> Result<(), BenchFailure> {
    if args.scenario == Scenario::Compare {
        return run_compare(args);
    }
    if !args.reports.is_empty() {
        return Err(usage(format!(
            "unexpected argument {}: only `compare` takes reports",
            args.reports[0].display()
        )));
    }
    let plan_args = PlanArgs::check(args)?;
    let node_config_text = match &args.node_config {
        Some(path) if args.local.is_some() => Some(
            std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read --node-config {}: {e}", path.display())))?,
        ),
        Some(_) => return Err(usage("--node-config applies to --local networks only")),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(random_seed);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "bench-results/{}-{}",
            args.scenario.name(),
            unix_ms() / 1000
        ))
    });
    std::fs::create_dir_all(&out).map_err(|e| {
        failed(format!(
            "cannot create the output directory {}: {e}",
            out.display()
        ))
    })?;

    // The network: started here (and stopped when `_local` drops), or given.
    let (_local, _dir, seed_address, mut watched, runtime) = match (args.local, &args.via) {
        (Some(n), _) => {
            let (net, dir) = start_local(args, n, node_config_text.as_deref(), links)?;
            let seed_address = net.seed().to_owned();
            let watched = net
                .nodes
                .iter()
                .map(|n| nodes::Watched {
                    address: n.address.clone(),
                    admin: Some(n.admin.clone()),
                    pid: n.pid(),
                })
                .collect();
            (
                Some(net),
                Some(dir),
                seed_address,
                watched,
                Some(args.runtime.name()),
            )
        }
        (None, Some(via)) => (None, None, via.clone(), Vec::new(), None),
        (None, None) => {
            return Err(usage(
                "say which network: --local N to start one, or --via ADDR for a running one",
            ));
        }
    };

    let config = work::client_config(args.quorum, args.swarm_size);
    let workers = plan_args.model.workers();
    let http = work::pool(workers + 8, links.clone());
    let directory_client = Client::with_transport(&seed_address, config.clone(), http.clone())
        .map_err(|e| {
            failed(format!(
                "cannot read the directory from {seed_address}: {}",
                e.0
            ))
        })?;
    let directory = directory_client.nodes();
    if watched.is_empty() {
        watched = directory
            .iter()
            .map(|d| nodes::Watched {
                address: d.address().as_str().to_owned(),
                admin: None,
                pid: None,
            })
            .collect();
        // An admin listener names its node in its /health; one that names no node of
        // the directory is still read, on a line of its own.
        for admin in &args.admin {
            let id = nodes::admin_node_id(&http, admin);
            let node =
                id.and_then(|id| directory.iter().position(|d| d.node_id().to_string() == id));
            match node {
                Some(i) => watched[i].admin = Some(admin.clone()),
                None => watched.push(nodes::Watched {
                    address: admin.clone(),
                    admin: Some(admin.clone()),
                    pid: None,
                }),
            }
        }
    }
    if args.scenario != Scenario::Http && directory.len() < crate::client::PATH_HOPS {
        return Err(failed(format!(
            "the network has {} nodes; a 3-hop path needs at least 3",
            directory.len()
        )));
    }

    eprintln!(
        "ghost bench {}: {} nodes via {seed_address}, {}, seed {seed}, report in {}",
        args.scenario.name(),
        directory.len(),
        plan_args.describe(),
        out.display()
    );

    let recipients = work::recipients(seed, args.recipients);
    let flow = args.scenario == Scenario::Flow;
    let (probe_tx, probe_rx) = sync_channel::<work::Acked>(64);
    let shared = Shared {
        seed,
        recipients,
        payload: args.payload,
        mix: match args.scenario {
            Scenario::Mixed => plan_args.mix,
            _ => (1, 0),
        },
        acked: flow.then(|| Mutex::new(Vec::new())),
        probes: Mutex::new(flow.then_some(probe_tx)),
        // About 200 samples, at most one per 25 acknowledgements.
        probe_every: match plan_args.stop {
            Stop::Count(n) => (n / PROBE_SAMPLES).max(25),
            Stop::After(_) => 25,
        },
        probe_limit: PROBE_SAMPLES,
    };

    // Workers connect (one directory read each) before the clock starts.
    let clients: Vec<Client> = if args.scenario == Scenario::Http {
        Vec::new()
    } else {
        let connected: Vec<Result<Client, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| s.spawn(|| work::connect(&seed_address, &config, &http)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a worker panicked".into())))
                .collect()
        });
        connected
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| failed(format!("cannot connect the workers: {e}")))?
    };
    let http_targets: Arc<Vec<HttpTarget>> = Arc::new(
        watched
            .iter()
            .filter(|w| w.address != w.admin.clone().unwrap_or_default())
            .map(|w| HttpTarget {
                address: w.address.clone(),
                path: "/health".into(),
                listening: Listening::Public(
                    directory
                        .iter()
                        .find(|d| d.address().as_str() == w.address)
                        .map(proto_core::Descriptor::tls_key_hash),
                ),
            })
            .chain(watched.iter().filter_map(|w| {
                w.admin.as_ref().map(|a| HttpTarget {
                    address: a.clone(),
                    path: "/metrics".into(),
                    listening: Listening::Admin,
                })
            }))
            .collect(),
    );

    let plan = Plan::new(plan_args.model, plan_args.warmup, plan_args.stop);
    let slice = match plan_args.stop {
        Stop::After(d) => Duration::from_secs_f64((d.as_secs_f64() / 300.0).max(1.0)),
        Stop::Count(_) => Duration::from_secs(1),
    };
    let recorder = Recorder::new(plan.measure_from(), slice);
    let probe_results = Mutex::new(ProbeResults::new());
    let probe_queue = Mutex::new(probe_rx);
    let probe_clients: Vec<Client> = if flow {
        (0..4)
            .map(|_| work::connect(&seed_address, &config, &http))
            .collect::<Result<_, _>>()
            .map_err(|e| failed(format!("cannot connect the replication probes: {e}")))?
    } else {
        Vec::new()
    };

    let bar = progress_bar(&plan_args);
    let active = AtomicUsize::new(0);
    let mut before: Vec<nodes::Reading> = Vec::new();
    let mut generator_before = None;
    let mut generator_after = None;
    let mut after: Vec<nodes::Reading> = Vec::new();
    let mut clients_back: Vec<Client> = Vec::new();
    std::thread::scope(|s| {
        let mut store_workers = Vec::new();
        for client in clients {
            let (shared, plan, recorder) = (&shared, &plan, &recorder);
            let working = Working::start(&active);
            store_workers.push(s.spawn(move || {
                let _working = working;
                work::store_worker(&client, shared, plan, recorder);
                client
            }));
        }
        if args.scenario == Scenario::Http {
            for _ in 0..workers {
                let (http, targets, plan, recorder) = (&http, &http_targets, &plan, &recorder);
                let working = Working::start(&active);
                s.spawn(move || {
                    let _working = working;
                    work::http_worker(http, targets, plan, recorder);
                });
            }
        }
        for client in probe_clients {
            let (shared, queue, results) = (&shared, &probe_queue, &probe_results);
            s.spawn(move || work::probe_worker(&client, shared, queue, results));
        }
        let interrupted = ghost_host::start::shutdown_signal().ok();
        let mut last = Instant::now();
        let mut measuring = false;
        while active.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(PROGRESS_TICK / 2);
            if !measuring && Instant::now() >= plan.measure_from() {
                measuring = true;
                before = watched.iter().map(|w| nodes::read(&http, w)).collect();
                generator_before = ghost_host::process::usage(None);
            }
            if interrupted.as_ref().is_some_and(|r| r.try_recv().is_ok()) && !plan.is_cancelled() {
                eprintln!("interrupted: finishing the operations in flight ...");
                plan.cancel();
            }
            if last.elapsed() >= PROGRESS_TICK {
                let p = recorder.progress(last.elapsed());
                last = Instant::now();
                update_bar(&bar, &plan_args, &plan, &p);
            }
        }
        generator_after = ghost_host::process::usage(None);
        after = watched.iter().map(|w| nodes::read(&http, w)).collect();
        // The probes end once their queue is closed and drained.
        drop(shared.probes.lock().expect("no panics while held").take());
        clients_back = store_workers
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect();
    });
    bar.finish_and_clear();
    if before.is_empty() {
        // The run ended before the measured phase began (interrupted in the warm-up).
        before = vec![nodes::Reading::default(); watched.len()];
    }

    let (operations, http_stats, timeline) = recorder.finish();
    let measured_seconds = recorder.measured_seconds();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let generator = match (generator_before, generator_after) {
        (Some(b), Some(a)) => {
            let cpu = a.cpu_seconds - b.cpu_seconds;
            #[allow(clippy::cast_precision_loss)] // a few CPUs
            let capacity = measured_seconds.max(1e-9) * cpus as f64;
            GeneratorUsage {
                cpu_seconds: cpu,
                share_of_machine: cpu / capacity,
                cpus,
            }
        }
        _ => GeneratorUsage {
            cpus,
            ..GeneratorUsage::default()
        },
    };
    let node_usage = watched
        .iter()
        .zip(&before)
        .zip(&after)
        .map(|((w, b), a)| nodes::usage(w, b, a))
        .collect();

    let mut flow_check = None;
    if flow {
        let acked = shared
            .acked
            .map(|m| m.into_inner().expect("no panics while held"))
            .unwrap_or_default();
        eprintln!(
            "checking {} acknowledged messages on every swarm member ...",
            acked.len()
        );
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(args.verify_timeout);
        clients_back.truncate(16);
        let v = verify::verify(clients_back, &shared.recipients, &acked, deadline);
        let probes = probe_results.into_inner().expect("no panics while held");
        flow_check = Some(FlowCheck {
            acknowledged: v.acknowledged,
            retrieved_once: v.retrieved_once,
            missing: v.missing,
            duplicated: v.duplicated,
            on_all_members: v.on_all_members,
            member_copies_missing: v.member_copies_missing,
            recipients_unreadable: v.recipients_unreadable,
            replication_delay_ms: (!probes.delay_us.is_empty())
                .then(|| load::summary(&probes.delay_us)),
            replication_samples: probes.samples,
            replication_unconfirmed: probes.unconfirmed,
            verify_seconds: started.elapsed().as_secs_f64(),
        });
    }

    let mut report = Report {
        schema: SCHEMA.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_unix_ms: unix_ms()
            .saturating_sub(u64::try_from(plan.measure_from().elapsed().as_millis()).unwrap_or(0)),
        config: BenchConfig {
            scenario: args.scenario.name().into(),
            target: if args.local.is_some() { "local" } else { "via" }.into(),
            nodes: directory.len(),
            runtime: runtime.map(str::to_owned),
            seed_address,
            load_model: match plan_args.model {
                LoadModel::Closed { .. } => "closed",
                LoadModel::Open { .. } => "open",
            }
            .into(),
            concurrency: workers,
            rate_per_second: args.rate,
            duration_seconds: match plan_args.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Count(_) => None,
            },
            operations: args.messages,
            warmup_seconds: args.warmup,
            payload_bytes: args.payload,
            recipients: args.recipients,
            write_quorum: args.quorum,
            swarm_size: args.swarm_size,
            mix: (args.scenario == Scenario::Mixed).then(|| args.mix.clone()),
            seed,
            node_config: node_config_text,
        },
        measured_seconds,
        operations,
        http_targets: http_stats,
        flow: flow_check,
        timeline,
        generator,
        nodes: node_usage,
        targets: Vec::new(),
    };
    report.targets = markdown::targets(&report);
    write_report(&report, &out)?;
    print_summary(&report, &out);
    check_outcome(&report)
}

/// One worker counted as running until it is dropped, even by a panic, so the progress
/// loop that waits for the workers always ends.
struct Working<'a>(&'a AtomicUsize);

impl<'a> Working<'a> {
    fn start(active: &'a AtomicUsize) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        Self(active)
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Acknowledged stores of a `flow` run whose replication is timed.
const PROBE_SAMPLES: u64 = 200;

/// How often the progress bar is redrawn.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// The checked load options.
struct PlanArgs {
    model: LoadModel,
    stop: Stop,
    warmup: Duration,
    mix: (u32, u32),
}

impl PlanArgs {
    fn check(args: &BenchArgs) -> Result<Self, BenchFailure> {
        let model = match args.rate {
            Some(rate) if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) => {
                return Err(usage(format!(
                    "--rate must be a number of operations per second above 0 (at most 1000000), got {rate}"
                )));
            }
            Some(rate) => LoadModel::Open {
                rate,
                max_in_flight: args.max_in_flight as usize,
            },
            None => LoadModel::Closed {
                concurrency: args.concurrency as usize,
            },
        };
        let seconds = |name: &str, v: f64, min: f64| {
            if v.is_finite() && v >= min && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(usage(format!(
                    "--{name} must be between {min} and 86400 seconds, got {v}"
                )))
            }
        };
        let stop = match (args.messages, args.duration) {
            (Some(0), _) => return Err(usage("--messages must be at least 1")),
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) => Stop::After(seconds("duration", d, 0.1)?),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        let warmup = seconds("warmup", args.warmup, 0.0)?;
        seconds("verify-timeout", args.verify_timeout, 0.0)?;
        if args.payload == 0 || args.payload > MAX_MESSAGE_LEN {
            return Err(usage(format!(
                "--payload must be 1 to {MAX_MESSAGE_LEN} bytes (above {MAX_MESSAGE_IN_ONE_BODY}, one packet, a message goes as fragments), got {}",
                args.payload
            )));
        }
        if args.recipients == 0 {
            return Err(usage("--recipients must be at least 1"));
        }
        if args.swarm_size == 0 || args.quorum == 0 || args.quorum > args.swarm_size {
            return Err(usage(format!(
                "--quorum must be 1 to --swarm-size ({}), got {}",
                args.swarm_size, args.quorum
            )));
        }
        let mix = parse_mix(&args.mix).map_err(usage)?;
        if let Some(n) = args.local
            && n < 3
        {
            return Err(usage(format!(
                "--local must be at least 3 nodes (every path has three distinct hops), got {n}"
            )));
        }
        Ok(Self {
            model,
            stop,
            warmup,
            mix,
        })
    }

    fn describe(&self) -> String {
        let load = match self.model {
            LoadModel::Closed { concurrency } => format!("closed loop of {concurrency}"),
            LoadModel::Open {
                rate,
                max_in_flight,
            } => format!("open loop at {rate}/s (at most {max_in_flight} in flight)"),
        };
        let stop = match self.stop {
            Stop::After(d) => format!("{:.1} s", d.as_secs_f64()),
            Stop::Count(n) => format!("{n} operations"),
        };
        format!(
            "{load}, {stop} after {:.1} s warm-up",
            self.warmup.as_secs_f64()
        )
    }
}

/// `STORES:RETRIEVES`, both small whole numbers, not both zero.
fn parse_mix(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--mix must be STORES:RETRIEVES such as 4:1, got {text:?}");
    let (a, b) = text.split_once(':').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a + b == 0 || a > 1000 || b > 1000 {
        return Err(bad());
    }
    Ok((a, b))
}

fn random_seed() -> u64 {
    use rand_core::Rng;
    rand_core::UnwrapErr(getrandom::SysRng).next_u64()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts `n` nodes on free loopback ports under a temporary directory, with connection
/// limits raised for one busy client address and the run's K and W.
fn start_local(
    args: &BenchArgs,
    n: usize,
    node_config: Option<&str>,
    links: &Links,
) -> Result<(LocalNetwork, tempfile::TempDir), BenchFailure> {
    let binaries = NodeBinaries {
        smol: args.ghostnode.clone(),
        sync: args.ghostnode_sync.clone(),
    };
    let rotation = binaries.rotation(args.runtime).map_err(usage)?;
    let dir = tempfile::Builder::new()
        .prefix("ghost-bench-")
        .tempdir()
        .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?;
    // One client address opens up to a connection per worker and node.
    let ours = format!(
        "[node]\nswarm_size = {}\nwrite_quorum = {}\n[http]\nmax_connections = 8192\nmax_connections_per_address = 8192\ninsecure_plaintext = {}\n",
        args.swarm_size,
        args.quorum,
        matches!(links, Links::InsecurePlaintext)
    );
    let extra = match node_config {
        None => ours,
        Some(text) => crate::local::merge_settings(&ours, text)
            .map_err(|e| usage(format!("--node-config: {e}")))?,
    };
    crate::local::local_settings(&extra).map_err(usage)?;
    eprintln!("starting {n} local nodes ({}) ...", args.runtime.name());
    let net = LocalNetwork::start(
        |i| rotation[i % rotation.len()].clone(),
        dir.path(),
        n,
        0,
        &extra,
    )
    .map_err(failed)?;
    net.wait_ready(Duration::from_secs(60)).map_err(failed)?;
    Ok((net, dir))
}

fn progress_bar(plan: &PlanArgs) -> ProgressBar {
    let bar = match plan.stop {
        Stop::Count(n) => ProgressBar::new(n),
        Stop::After(d) => ProgressBar::new(d.as_secs().max(1)),
    };
    let unit = match plan.stop {
        Stop::Count(_) => "ops",
        Stop::After(_) => "s",
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn update_bar(bar: &ProgressBar, args: &PlanArgs, plan: &Plan, p: &load::Progress) {
    let position = match args.stop {
        Stop::Count(_) => plan.measured_started(),
        Stop::After(_) => Instant::now()
            .saturating_duration_since(plan.measure_from())
            .as_secs(),
    };
    bar.set_position(position);
    let phase = if Instant::now() < plan.measure_from() {
        "warm-up  "
    } else {
        ""
    };
    bar.set_message(format!(
        "{phase}{:.0}/s  errors {}  p99 {:.1} ms",
        p.rate, p.failed, p.p99_ms
    ));
}

/// Writes report.json, report.md and the plots into `out`.
fn write_report(report: &Report, out: &Path) -> Result<(), BenchFailure> {
    let json = serde_json::to_string_pretty(report).expect("a report always serializes");
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text)
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
    };
    write("report.json", &json)?;
    write("report.md", &markdown::render(report))?;
    plot::write_plots(report, out).map_err(failed)?;
    Ok(())
}

fn print_summary(report: &Report, out: &Path) {
    for (name, s) in &report.operations {
        let l = &s.latency_ms;
        println!(
            "{name}: {} done, {:.2} % ok, {:.1}/s, latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
            s.completed,
            s.success_rate * 100.0,
            s.throughput_per_second,
            l.p50,
            l.p95,
            l.p99,
            l.max
        );
    }
    if let Some(f) = &report.flow {
        println!(
            "flow: {} acknowledged, {} retrieved exactly once, {} missing, {} duplicated, {} on all K members",
            f.acknowledged, f.retrieved_once, f.missing, f.duplicated, f.on_all_members
        );
        if let Some(d) = &f.replication_delay_ms {
            println!(
                "replication delay ms ({} samples): p50 {:.1} p99 {:.1} max {:.1}",
                f.replication_samples, d.p50, d.p99, d.max
            );
        }
    }
    println!(
        "load generator: {:.1} % of {} CPUs",
        report.generator.share_of_machine * 100.0,
        report.generator.cpus
    );
    for t in &report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        println!(
            "target {}: {} (goal {}) {verdict}",
            t.name, t.measured, t.goal
        );
    }
    println!("report: {}", out.join("report.md").display());
}

/// A run whose operations all failed, or a flow run that lost or duplicated an
/// acknowledged message, fails; a missed performance target does not (it is a
/// benchmark, and the report says so).
fn check_outcome(report: &Report) -> Result<(), BenchFailure> {
    if let Some(f) = &report.flow
        && !(f.retrieved_once == f.acknowledged
            && f.on_all_members == f.acknowledged
            && f.missing == 0
            && f.duplicated == 0)
    {
        return Err(failed(format!(
            "acknowledged messages not retrieved exactly once from all K members: {} acknowledged, {} missing, {} duplicated, {} member copies missing",
            f.acknowledged, f.missing, f.duplicated, f.member_copies_missing
        )));
    }
    let completed: u64 = report.operations.values().map(|s| s.completed).sum();
    let succeeded: u64 = report.operations.values().map(|s| s.succeeded).sum();
    if completed > 0 && succeeded == 0 {
        return Err(failed(
            "every operation failed; see report.md for the causes",
        ));
    }
    Ok(())
}

fn run_compare(args: &BenchArgs) -> Result<(), BenchFailure> {
    let [old, new] = &args.reports[..] else {
        return Err(usage(
            "compare takes two reports: ghost bench compare OLD/report.json NEW/report.json",
        ));
    };
    let threshold = compare::parse_threshold(&args.max_regression).map_err(usage)?;
    let old = compare::load(old).map_err(failed)?;
    let new = compare::load(new).map_err(failed)?;
    let comparison = compare::compare(&old, &new, threshold);
    print!("{}", comparison.render());
    if comparison.regressed() {
        return Err(failed(format!(
            "a gated figure regressed by more than {}",
            args.max_regression
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stops_counting_as_running_even_when_it_panics() {
        let active = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let working = Working::start(&active);
            assert_eq!(active.load(Ordering::SeqCst), 1);
            let worker = s.spawn(move || {
                let _working = working;
                panic!("a worker failed");
            });
            assert!(worker.join().is_err());
        });
        assert_eq!(active.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn mix_parses_stores_to_retrieves() {
        assert_eq!(parse_mix("4:1"), Ok((4, 1)));
        assert_eq!(parse_mix(" 1 : 0 "), Ok((1, 0)));
        for bad in ["", "4", "0:0", "a:1", "1:-1", "5000:1"] {
            assert!(parse_mix(bad).is_err(), "{bad}");
        }
    }
}
