//! The node driver: the one owner of the [`Node`] and its database, fed by a channel.
//! It runs on a thread of its own ([`spawn`], for runtimes of blocking threads) or as a
//! task on the async runtime's executor ([`spawn_task`]): there a request, the exchanges
//! it makes the node start and its answer stay on the executor's thread instead of
//! crossing to a driver thread and back at every step.
//!
//! Everything that touches the node reaches it as a command on the driver's inbox:
//! HTTP requests handed over by a runtime, results of the node's own exchanges, reads for
//! `/metrics` and the directory endpoints, and the stop. The driver sleeps until the next
//! command or the core's [`Node::poll_timeout`], whichever comes first, so a new input
//! re-arms the timer at once and a retry fires when the core asked for it. It handles the
//! commands waiting (up to a bound), then drains the node's outputs: answers go to the
//! responder the runtime gave with the request, transmits go to the runtime's
//! [`Carrier`]. Draining once for the commands handled together lets the core send
//! together what fell due together (the copies several stores owe the same member);
//! when one command waits, that is a drain after every command.
//!
//! Writes are group-committed off the driver ([`WriteBehind`]): the writes since the last
//! commit go to the database's writer thread as one group, which fsyncs while the
//! driver goes on serving. Group commits start at least `commit_interval` apart: a write
//! after a quiet spell goes at once, and under load each commit carries what arrived
//! in the interval instead of a write or two (a commit costs far more CPU than the writes
//! in it). When the writer is done it wakes the driver, which takes the new durable
//! state in and releases the acks that waited for it ([`Node::handle_durable`]).
//!
//! Invariants: no lock is shared with the runtime's threads (they only hold a
//! [`Driver`], a channel sender); an answer is sent exactly once, or its responder is
//! dropped (at a stop), which the runtime reads as "stopping"; at the stop the database
//! is committed and closed and the known peers are written down before the driver ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto_core::node::{Endpoint, Node, Output, Reply, RequestId, TransmitFailure, TransmitId};
use proto_core::{NodeId, Timestamp};
use rand_core::UnwrapErr;

use crate::peers;
use crate::tls::TlsRotation;
use crate::write_behind::WriteBehind;

/// The node as the host runs it: the core's state machine on the write-behind redb
/// backend.
pub type HostedNode = Node<WriteBehind>;

/// The node's wall clock as the core's [`Timestamp`].
#[must_use]
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

/// How often the known nodes are written down (also at a stop).
const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the driver checks that the database still answers, for `/health`.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest sleep when the core asks for no wake-up: a bound, not a schedule.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Commands handled in a row before their outputs are carried and timers and commits
/// get their turn.
const BATCH: usize = 64;

/// An outgoing exchange the node asked for: POST [`Exchange::body`] to
/// [`Exchange::endpoint`] at [`Exchange::address`], then [`Completion::finish`] with the
/// answer.
pub struct Exchange {
    /// `host:port` of the other node.
    pub address: String,
    /// The hash of the TLS key the other node's descriptor names (`None` for a seed,
    /// known by address alone).
    pub tls_key_hash: Option<proto_core::TlsKeyHash>,
    /// Which endpoint to POST to.
    pub endpoint: Endpoint,
    /// The request body, moved out of the node (the one copy the wire needs).
    pub body: Vec<u8>,
    /// Where the outcome goes.
    pub done: Completion,
}

/// Hands an exchange's outcome back to the node. One dropped unfinished is timed out by
/// the core at its deadline.
pub struct Completion {
    id: TransmitId,
    inbox: Inbox,
}

impl Completion {
    /// Reports the outcome (from any thread).
    pub fn finish(self, result: Result<Vec<u8>, TransmitFailure>) {
        self.inbox.send(Command::Transmitted {
            id: self.id,
            result,
        });
    }
}

/// The engine's command channel: a thread's blocking channel, or an async one for an
/// engine run as a task (sends from the task's own executor thread then wake no other
/// thread).
#[derive(Clone)]
enum Inbox {
    Thread(Sender<Command>),
    Task(async_channel::Sender<Command>),
}

impl Inbox {
    /// Sends `command`; lost only when the engine has ended.
    fn send(&self, command: Command) {
        match self {
            Self::Thread(inbox) => {
                let _ = inbox.send(command);
            }
            Self::Task(inbox) => {
                let _ = inbox.try_send(command);
            }
        }
    }
}

/// How a runtime carries the node's outgoing exchanges: the one hook a runtime provides.
/// `carry` is called on the driver thread and must return at once (spawn a task, queue
/// to a worker), never block on the network.
pub trait Carrier: Send + Sync + 'static {
    /// Starts `exchange`; [`Completion::finish`] it when it is done.
    fn carry(&self, exchange: Exchange);
}

type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// What the driver thread is asked to do.
enum Command {
    Run(Job),
    Transmitted {
        id: TransmitId,
        result: Result<Vec<u8>, TransmitFailure>,
    },
    /// The database writer finished a group commit.
    Written,
    Stop,
}

/// What `/health` reads without asking the driver (so it answers even while the node is
/// busy): kept current by the driver thread.
#[derive(Debug)]
pub struct Status {
    /// The node's identity.
    pub node_id: NodeId,
    database_open: AtomicBool,
    peers: AtomicUsize,
}

impl Status {
    /// Whether the database answered its last check and is not closed.
    #[must_use]
    pub fn database_open(&self) -> bool {
        self.database_open.load(Ordering::Relaxed)
    }

    /// Nodes in the directory at the last check.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }
}

/// Where a node's driver runs: what a runtime asks [`crate::start::start`] for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverMode {
    /// On a thread of its own ([`spawn`]): for runtimes of blocking threads.
    Thread,
    /// As a task the runtime runs on the executor serving the node ([`spawn_task`]).
    Task,
}

/// Settings of the driver thread.
#[derive(Debug)]
pub struct DriverSettings {
    /// Shortest time between the starts of two group commits: the longest a write waits
    /// before its group goes to the writer (longer while the writer is still busy).
    pub commit_interval: Duration,
    /// Where the known nodes' addresses are written down, if anywhere.
    pub peers_file: Option<PathBuf>,
    /// The TLS key schedule, on TLS links: the driver runs it and tells the core about
    /// every new key ([`Node::rotate_tls_key`]).
    pub tls_rotation: Option<TlsRotation>,
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(1),
            peers_file: None,
            tls_rotation: None,
        }
    }
}

/// A handle on the driver: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Driver {
    inbox: Inbox,
    status: Arc<Status>,
}

/// The running driver, on a thread of its own ([`spawn`]) or as a task the runtime runs
/// ([`spawn_task`]); [`DriverThread::stop`] ends it.
pub struct DriverThread {
    driver: Driver,
    thread: Option<JoinHandle<()>>,
    /// For a driver run as a task: disconnected once its [`EngineTask`] is gone.
    task_ended: Option<Receiver<()>>,
}

impl DriverThread {
    /// A handle for runtimes and handlers.
    #[must_use]
    pub fn driver(&self) -> Driver {
        self.driver.clone()
    }

    /// Commits and closes the database, writes the known peers down and waits for the
    /// driver to end. Requests still waiting for the node get no answer (their
    /// responders are dropped). A driver run as a task must be running on another
    /// thread than the caller's (or call [`DriverThread::request_stop`] and await the
    /// task instead).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Asks the driver to stop and returns at once: a driver run as a task ends its
    /// [`EngineTask::run`] once it has stopped.
    pub fn request_stop(&self) {
        self.driver.inbox.send(Command::Stop);
    }

    fn stop_and_join(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the node driver thread panicked");
        }
        if let Some(ended) = self.task_ended.take() {
            // Returns when the task's sender is dropped: its engine is gone.
            let _ = ended.recv();
        }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the thread that owns `node`; `carrier` takes the node's outgoing exchanges.
pub fn spawn(
    node: HostedNode,
    carrier: Arc<dyn Carrier>,
    settings: DriverSettings,
) -> std::io::Result<DriverThread> {
    let (inbox, commands) = mpsc::channel();
    let (driver, engine) = engine(node, carrier, settings, Inbox::Thread(inbox));
    let thread = std::thread::Builder::new()
        .name("node".into())
        .spawn(move || engine.run(&commands))?;
    Ok(DriverThread {
        driver,
        thread: Some(thread),
        task_ended: None,
    })
}

/// The driver as a task for an async runtime to run ([`EngineTask::run`]) on the
/// executor that serves the node's connections and carries its exchanges: a request,
/// the exchanges it causes and its answer then stay on one thread, where a driver
/// thread takes four hand-offs between threads per request (docs/PERFORMANCE.md).
pub fn spawn_task(
    node: HostedNode,
    carrier: Arc<dyn Carrier>,
    settings: DriverSettings,
) -> (DriverThread, EngineTask) {
    let (inbox, commands) = async_channel::unbounded();
    let (driver, engine) = engine(node, carrier, settings, Inbox::Task(inbox));
    let (ended, task_ended) = mpsc::channel();
    (
        DriverThread {
            driver,
            thread: None,
            task_ended: Some(task_ended),
        },
        EngineTask {
            engine,
            commands,
            _ended: ended,
        },
    )
}

/// The engine over `node`, and its handle, fed through `inbox`.
fn engine(
    mut node: HostedNode,
    carrier: Arc<dyn Carrier>,
    settings: DriverSettings,
    inbox: Inbox,
) -> (Driver, Engine) {
    let wake = inbox.clone();
    node.backend_mut()
        .set_waker(move || wake.send(Command::Written));
    let status = Arc::new(Status {
        node_id: node.node_id(),
        database_open: AtomicBool::new(node.store().backend().is_healthy()),
        peers: AtomicUsize::new(node.directory().len()),
    });
    let engine = Engine {
        node,
        waiting: HashMap::new(),
        next_req: 0,
        carrier,
        inbox: inbox.clone(),
        status: status.clone(),
        settings,
        last_commit: None,
        save_peers_at: Instant::now() + PEERS_SAVE_INTERVAL,
        check_health_at: Instant::now() + HEALTH_CHECK_INTERVAL,
    };
    (Driver { inbox, status }, engine)
}

/// The driver's engine as an async task: run it with [`EngineTask::run`] on the node's
/// executor. It ends at the stop ([`DriverThread::stop`]).
pub struct EngineTask {
    engine: Engine,
    commands: async_channel::Receiver<Command>,
    /// Dropped with the task (run to its end, or dropped unrun): tells
    /// [`DriverThread::stop`] the engine is gone.
    _ended: Sender<()>,
}

impl EngineTask {
    /// Runs the engine until it is stopped; `sleep` is the runtime's timer.
    pub async fn run<F: Future<Output = ()>>(self, sleep: impl Fn(Duration) -> F) {
        let Self {
            mut engine,
            commands,
            _ended,
        } = self;
        loop {
            let wake = engine.next_wake();
            let first = futures_lite::future::or(
                async { Some(commands.recv().await.unwrap_or(Command::Stop)) },
                async {
                    sleep(wake).await;
                    None
                },
            )
            .await;
            if !engine.handle_batch(first, || commands.try_recv().ok()) {
                return;
            }
            // The executor's other tasks (this node's connections) get their turn.
            futures_lite::future::yield_now().await;
        }
    }
}

impl Driver {
    /// The state `/health` reports.
    #[must_use]
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Runs `f` on the node and hands its result to `done` (on the driver thread). When
    /// the driver has stopped, `done` is dropped uncalled.
    pub fn run<T: 'static>(
        &self,
        f: impl FnOnce(&mut HostedNode, Timestamp) -> T + Send + 'static,
        done: impl FnOnce(T) + Send + 'static,
    ) {
        let job: Job = Box::new(move |engine: &mut Engine| {
            let out = f(&mut engine.node, now());
            done(out);
        });
        self.inbox.send(Command::Run(job));
    }

    /// Commits pending writes and closes the database while the node keeps running:
    /// later stores are refused and `/health` reports the node unavailable (what an
    /// operator sees when the disk goes away). Returns once done, so a driver run as a
    /// task must be running on another thread than the caller's.
    pub fn close_database(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |engine: &mut Engine| {
            engine.close_database();
            let _ = tx.send(());
        });
        self.inbox.send(Command::Run(job));
        let _ = rx.recv();
    }

    /// Hands a request to the node: `f` gives it to the core under a fresh
    /// [`RequestId`], and `respond` gets the core's one [`Reply`] for it, whenever the
    /// core produces it (at once, or after an exchange with another node). At a stop,
    /// `respond` is dropped uncalled.
    pub fn request(
        &self,
        f: impl FnOnce(&mut HostedNode, Timestamp, RequestId) + Send + 'static,
        respond: impl FnOnce(Reply) + Send + 'static,
    ) {
        let job: Job = Box::new(move |engine: &mut Engine| {
            engine.next_req += 1;
            let req = RequestId(engine.next_req);
            engine.waiting.insert(req, Box::new(respond));
            f(&mut engine.node, now(), req);
        });
        self.inbox.send(Command::Run(job));
    }
}

type Responder = Box<dyn FnOnce(Reply) + Send>;

/// The driver's state.
struct Engine {
    node: HostedNode,
    waiting: HashMap<RequestId, Responder>,
    next_req: u64,
    carrier: Arc<dyn Carrier>,
    inbox: Inbox,
    status: Arc<Status>,
    settings: DriverSettings,
    /// When the last group commit started; none yet, so the first write goes at once.
    last_commit: Option<Instant>,
    save_peers_at: Instant,
    check_health_at: Instant,
}

impl Engine {
    fn run(mut self, commands: &Receiver<Command>) {
        loop {
            let first = match commands.recv_timeout(self.next_wake()) {
                Ok(command) => Some(command),
                Err(RecvTimeoutError::Timeout) => None,
                // Every handle is gone: nobody can ask for anything any more.
                Err(RecvTimeoutError::Disconnected) => Some(Command::Stop),
            };
            if !self.handle_batch(first, || commands.try_recv().ok()) {
                return;
            }
        }
    }

    /// Handles `first` and the commands `waiting` has ready, up to [`BATCH`], then what
    /// falls due after them ([`Engine::after_commands`]); `false` once it stopped the
    /// engine.
    fn handle_batch(
        &mut self,
        first: Option<Command>,
        mut waiting: impl FnMut() -> Option<Command>,
    ) -> bool {
        let mut next = first;
        let mut handled = 0;
        while let Some(command) = next.take() {
            if !self.handle(command) {
                return false;
            }
            handled += 1;
            if handled < BATCH {
                next = waiting();
            }
        }
        self.after_commands();
        true
    }

    /// How long the engine may sleep: until its next timer, commit or chore.
    fn next_wake(&self) -> Duration {
        [
            Some(self.until_node_timer()),
            self.until_tls_rotation(),
            self.until_commit(self.last_commit),
            Some(self.save_peers_at.saturating_duration_since(Instant::now())),
            Some(
                self.check_health_at
                    .saturating_duration_since(Instant::now()),
            ),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(MAX_SLEEP)
    }

    /// Handles one command; `false` once it stopped the engine.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Stop => {
                self.stop();
                return false;
            }
            Command::Run(job) => job(self),
            Command::Transmitted { id, result } => {
                self.node.handle_transmit_result(now(), id, result);
            }
            Command::Written => self.written(),
        }
        true
    }

    /// After a batch of commands: their outputs, then the timers, commits and chores
    /// that are due.
    fn after_commands(&mut self) {
        self.drain();
        let t = now();
        if self.node.poll_timeout().is_some_and(|w| w <= t) {
            self.node.handle_timeout(t);
            self.drain();
        }
        self.rotate_tls_key(t);
        if self.until_commit(self.last_commit) == Some(Duration::ZERO) {
            // Counted as a commit even when none could start (a closed database): the
            // next attempt waits an interval instead of spinning.
            self.commit();
            self.last_commit = Some(Instant::now());
        }
        if self.save_peers_at <= Instant::now() {
            self.save_peers();
            self.save_peers_at = Instant::now() + PEERS_SAVE_INTERVAL;
        }
        if self.check_health_at <= Instant::now() {
            self.refresh_status();
            self.check_health_at = Instant::now() + HEALTH_CHECK_INTERVAL;
        }
    }

    /// Time until the pending writes may go to the writer (zero when they may now), or
    /// `None` when there are none or the writer is still busy (it wakes the driver when
    /// done).
    fn until_commit(&self, last_commit: Option<Instant>) -> Option<Duration> {
        let backend = self.node.store().backend();
        if !self.node.store().has_pending_writes() || backend.committing() {
            return None;
        }
        Some(last_commit.map_or(Duration::ZERO, |at| {
            (at + self.settings.commit_interval).saturating_duration_since(Instant::now())
        }))
    }

    /// Time until the core's next timer (zero when it is due).
    fn until_node_timer(&self) -> Duration {
        self.node.poll_timeout().map_or(MAX_SLEEP, |wake| {
            Duration::from_millis(wake.millis_since(now())).min(MAX_SLEEP)
        })
    }

    /// Time until the TLS key schedule has something to do, if it ever has.
    fn until_tls_rotation(&self) -> Option<Duration> {
        let due = self.settings.tls_rotation.as_ref()?.next_due()?;
        Some(Duration::from_millis(due.millis_since(now())))
    }

    /// Runs the TLS key schedule when due; a new key goes into a new descriptor.
    fn rotate_tls_key(&mut self, t: Timestamp) {
        let Some(rotation) = &mut self.settings.tls_rotation else {
            return;
        };
        if let Some(rotated) = rotation.run(t, &mut UnwrapErr(getrandom::SysRng)) {
            self.node
                .rotate_tls_key(t, rotated.tls_key_hash, rotated.overlap_until);
            self.drain();
        }
    }

    /// The drain rule: carry out outputs until the node has none.
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Respond { req, reply } => {
                    if let Some(respond) = self.waiting.remove(&req) {
                        respond(reply);
                    }
                }
                Output::Transmit {
                    id,
                    address,
                    tls_key_hash,
                    endpoint,
                    body,
                    ..
                } => self.carrier.carry(Exchange {
                    address: address.as_str().to_owned(),
                    tls_key_hash,
                    endpoint,
                    body,
                    done: Completion {
                        id,
                        inbox: self.inbox.clone(),
                    },
                }),
            }
        }
    }

    /// Sends every write since the last commit to the writer thread as one group (a
    /// no-op while it is busy: the run loop sends the next group once it is done).
    fn commit(&mut self) {
        self.node.backend_mut().start_commit();
    }

    /// A group commit finished: take the durable state in and release the acks waiting
    /// for it. What accumulated meanwhile goes when the interval allows (the run loop).
    fn written(&mut self) {
        let backend = self.node.backend_mut();
        let advanced = backend.absorb();
        self.status
            .database_open
            .store(backend.is_healthy(), Ordering::Relaxed);
        if advanced {
            self.node.handle_durable(now());
        }
    }

    fn refresh_status(&self) {
        self.status
            .database_open
            .store(self.node.store().backend().is_healthy(), Ordering::Relaxed);
        self.status
            .peers
            .store(self.node.directory().len(), Ordering::Relaxed);
    }

    fn save_peers(&self) {
        if let Some(path) = &self.settings.peers_file {
            let addresses: Vec<String> = self
                .node
                .directory()
                .descriptors()
                .map(|d| d.address().as_str().to_owned())
                .collect();
            peers::write(path, &addresses);
        }
    }

    /// Commits pending writes and closes the database, answers what that released, and
    /// writes the known peers down.
    fn stop(&mut self) {
        self.close_database();
        self.save_peers();
        self.waiting.clear();
    }

    fn close_database(&mut self) {
        match self.node.backend_mut().close() {
            Ok(()) => {
                self.node.handle_durable(now());
                tracing::info!("database committed and closed");
            }
            Err(e) => tracing::error!(error = %e, "final commit failed"),
        }
        self.drain();
        self.status.database_open.store(false, Ordering::Relaxed);
    }
}
