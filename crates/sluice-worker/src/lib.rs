//! The Sluice worker: holds one SSE connection per configured target and publishes every event
//! to Kafka with zero loss.
//!
//! [`run`] reads the checkpoint topic, starts one task per enabled target (jittered), serves the
//! operations endpoints, and on shutdown stops reading, waits for Kafka to acknowledge what was
//! read, writes final checkpoints and returns within the grace period.
//!
//! What it must not do: lose an accepted event (a checkpoint never passes an unacknowledged
//! event; delivery errors are retried, never dropped), grow memory when Kafka is slow (reading
//! pauses instead), or show a secret anywhere (logs, metrics, `/status`, errors).

mod admin;
mod catalogue;
mod control;
mod definitions;
mod error;
mod exactly_once;
mod fleet;
mod http;
mod kafka_config;
mod landed;
mod lanes;
mod metrics;
mod nudge;
mod openapi;
mod paused;
mod pool;
mod registry;
mod startup;
mod status;
mod stop;
mod supervisor;
mod target;
mod totals;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use sluice_config::WorkerConfig;
use sluice_publish::Publisher;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use control::{Control, ControlReceiver};
pub use error::WorkerError;
pub use kafka_config::kafka_client_config;
pub use metrics::{Kind, Metrics, MetricsError, catalog};
pub use registry::Registry;
pub use status::{Delivery, State, StatusRow, TargetStatus};
pub use status::{console, query};
pub use supervisor::{ControlError, Stopped};
pub use target::{CHECKPOINT_INTERVAL, WINDOW};

use crate::kafka_config::{kafka_reader_config, max_record_of};
use crate::pool::{HostLimits, ProxyPool, Transports};
use crate::supervisor::Supervisor;
use crate::target::KafkaSink;

/// How long one attempt at reading the checkpoint topic may take.
const CHECKPOINT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The jittered start spreads targets over at most this long (1 ms per target below it).
const MAX_START_SPREAD: Duration = Duration::from_secs(5);

/// What every target's upstream shares.
pub(crate) struct Shared {
    pub(crate) transports: Transports,
    pub(crate) pools: HashMap<String, ProxyPool>,
    pub(crate) hosts: HostLimits,
    /// One OAuth2 token per grant, shared by its targets.
    pub(crate) tokens: sluice_client::oauth::TokenSources,
    /// Which connection (lane) of its host each target streams on.
    pub(crate) lanes: lanes::Lanes,
}

/// The OpenAPI 3.1 document of the worker's HTTP API (operations server and admin API),
/// generated from its routes, as pretty JSON (the form of `docs/openapi/worker.json`).
pub fn openapi_document() -> String {
    openapi::document()
}

/// Runs the worker until `shutdown` is cancelled, then drains within the grace period.
///
/// `listener` is the operations server's socket (bound by the caller, so tests can use port 0);
/// `None` binds `config.http.listen`.
pub async fn run(
    config: WorkerConfig,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let (_control, inbox) = Control::channel();
    run_controlled(config, listener, shutdown, inbox).await
}

/// [`run`], with targets started and stopped at run time through the [`Control`] whose
/// receiver is `inbox` (the configured targets start first, as with [`run`]).
pub async fn run_controlled(
    mut config: WorkerConfig,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
    inbox: ControlReceiver,
) -> Result<(), WorkerError> {
    raise_open_files_limit();
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| WorkerError::Listen {
                addr: config.http.listen,
                source,
            })?,
    };
    let kafka = kafka_reader_config(&config)?;
    let publisher =
        Publisher::new(&kafka_client_config(&config)?).map_err(WorkerError::Producer)?;
    let origin = Instant::now();
    // Moved out, not cloned: a target's config is over half a KiB, and only the tasks need it.
    let loaded: Vec<Arc<sluice_config::TargetConfig>> = std::mem::take(&mut config.targets)
        .into_iter()
        .filter(|t| t.enabled)
        .map(Arc::new)
        .collect();
    let server_stop = CancellationToken::new();
    let definitions_view = definitions::SharedView::default();
    // The files are read again as the catalogue's start (the same validation as the load), so
    // a later look at them sees what runs; the targets topic's definitions follow.
    let mut definitions = definitions::Definitions::start(
        Arc::new(config.clone()),
        &loaded,
        &kafka,
        definitions_view.clone(),
        server_stop.clone(),
    )
    .await;
    drop(loaded);
    let mut targets = definitions.targets();
    // The collect reuses the configs' buffer (in place), which would stay allocated, and
    // resident, at its full size (measured: docs/BENCHMARKS.md, the density steps table).
    targets.shrink_to_fit();
    let registry = Arc::new(Registry::default());
    let (admin_control, admin_inbox) = Control::channel();
    let metrics = Metrics::new(registry.clone(), config.metrics.per_target)?;
    let in_flight_publisher = publisher.clone();
    let ops = Arc::new(http::Ops {
        targets: registry.clone(),
        metrics: metrics.clone(),
        ready: Default::default(),
        stopping: Default::default(),
        producer_in_flight: Box::new(move || i64::from(in_flight_publisher.in_flight())),
        not_ready_reason: std::sync::Mutex::new(None),
        history: Default::default(),
        fleet: Default::default(),
        owner: match &config.fleet {
            sluice_config::Fleet::Group(_) => Some(owner_name(&config)),
            sluice_config::Fleet::None => None,
        },
        definitions: definitions_view.clone(),
        fleet_targets: Default::default(),
    });
    tokio::spawn(status::history::sample(
        ops.history.clone(),
        registry.clone(),
        server_stop.clone(),
    ));
    if let (sluice_config::Fleet::Group(group), Some(owner)) = (&config.fleet, &ops.owner) {
        let describe = status::fleet_view::Describe {
            group: group.group_id.clone(),
            topic: config.topics.checkpoints.clone(),
            partitions: group.partitions,
            target_partitions: ops.fleet_targets.clone(),
            this_worker: owner.to_string(),
        };
        fleet::publish_targets(
            &ops,
            targets.iter().map(|t| t.id.as_str()),
            group.partitions,
        );
        tokio::spawn(status::fleet_view::follow(
            kafka.clone(),
            describe,
            ops.fleet.clone(),
            metrics.fleet.unowned_targets.clone(),
            server_stop.clone(),
        ));
    }
    let server = {
        let stop = server_stop.clone();
        let router = http::router(ops.clone());
        // The admin API, only with a token: its commands reach the loop through `admin_inbox`.
        let router = match config.admin.token.clone() {
            Some(token) => router.merge(admin::router(admin::Admin {
                token,
                control: admin_control,
                registry: registry.clone(),
                definitions: definitions_view.clone(),
                worker: Arc::new(config.clone()),
                publisher: publisher.clone(),
            })),
            None => router,
        };
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            %addr,
            admin_api = config.admin.token.is_some(),
            "operations server listening (/metrics, /status, /healthz, /readyz; /v1/admin with a token)"
        );
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "operations server failed");
            }
        })
    };

    let result = run_targets(Run {
        config: &config,
        kafka: &kafka,
        publisher,
        targets,
        registry,
        origin,
        ops: &ops,
        shutdown,
        inbox,
        admin_inbox,
        definitions: &mut definitions,
    })
    .await;
    ops.stopping.store(true, Ordering::Relaxed);
    server_stop.cancel();
    let _ = server.await;
    result
}

/// What [`run_targets`] works with.
struct Run<'a> {
    config: &'a WorkerConfig,
    kafka: &'a ClientConfig,
    publisher: Publisher,
    targets: Vec<Arc<sluice_config::TargetConfig>>,
    registry: Arc<Registry>,
    origin: Instant,
    ops: &'a http::Ops,
    shutdown: CancellationToken,
    inbox: ControlReceiver,
    /// The admin API's commands (none come when it is off).
    admin_inbox: ControlReceiver,
    /// The target definitions as they change at run time.
    definitions: &'a mut definitions::Definitions,
}

async fn run_targets(run: Run<'_>) -> Result<(), WorkerError> {
    let Run {
        config,
        kafka,
        publisher,
        targets,
        registry,
        origin,
        ops,
        shutdown,
        mut inbox,
        mut admin_inbox,
        definitions,
    } = run;
    // In the background: a broker without the admin API (or slow to answer) must not hold up
    // the start; a target whose topic is missing shows `paused` until it exists.
    let created = definitions::ensure_topics(kafka, &targets, &shutdown);
    let needs = startup::record_needs(&targets);
    let group = match &config.fleet {
        sluice_config::Fleet::Group(group) => Some(group.clone()),
        sluice_config::Fleet::None => None,
    };
    // Exactly once: the lanes start (fencing whoever held their transactional ids and ending
    // the transactions a killed run left open) before the checkpoints are read, which then sees
    // only committed ones.
    let mut checkpoint_reader = kafka.clone();
    let lanes = match config.delivery {
        sluice_config::DeliveryGuarantee::AtLeastOnce => None,
        sluice_config::DeliveryGuarantee::ExactlyOnce(settings) => {
            checkpoint_reader.set("isolation.level", "read_committed");
            let topic = &config.topics.checkpoints;
            let start = async {
                // One that exists already is fine; a broker that cannot create it shows in the
                // partition count, read until it is there.
                let _ = sluice_publish::topics::create_topic(kafka, topic, true).await;
                let mut attempts = 0;
                let partitions = loop {
                    match sluice_publish::topics::partition_count(kafka, topic).await {
                        Ok(count) => break count,
                        Err(error) if attempts < 50 => {
                            attempts += 1;
                            tracing::debug!(%error, "the checkpoint topic's partitions are not known yet");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(error) => return Err(WorkerError::TransactionPartitions(error)),
                    }
                };
                Ok::<_, WorkerError>(
                    exactly_once::Lanes::start(
                        kafka,
                        topic,
                        partitions,
                        settings,
                        owner_name(config),
                    )
                    .await?,
                )
            };
            tokio::select! {
                lanes = start => Some(lanes?),
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    };
    let kafka_reader = &checkpoint_reader;
    let loaded = tokio::select! {
        loaded = async {
            match &group {
                // A fleet reads checkpoints at each assignment, for the targets it gets.
                Some(group) => Ok(fleet::prepare_topic(kafka, &config.topics.checkpoints, group, ops, &shutdown)
                    .await?
                    .then(sluice_publish::Checkpoints::default)),
                None => startup::load_checkpoints(kafka_reader, &config.topics.checkpoints, None, ops, &shutdown).await,
            }
        } => loaded?,
        (code, reason) = producer_fatal(&publisher) => {
            tracing::error!(?code, reason, "the kafka producer failed fatally before any target started");
            ops.set_not_ready_reason(format!("the kafka producer failed fatally: {reason}"));
            return Err(WorkerError::ProducerFatal { code, reason });
        }
    };
    let Some(checkpoints) = loaded else {
        return Ok(()); // shut down while waiting for Kafka
    };
    let shared = Arc::new(Shared {
        transports: Transports::default(),
        tokens: Default::default(),
        lanes: lanes::Lanes::new(config.defaults.streams_per_connection),
        pools: config
            .proxy_pools
            .iter()
            .map(|(name, proxies)| (name.clone(), ProxyPool::new(name, proxies)))
            .collect(),
        hosts: HostLimits::new(config.defaults.per_host_connections),
    });
    let owner = owner_name(config);
    let sink = KafkaSink::new(
        publisher.clone(),
        config.topics.checkpoints.clone(),
        owner.clone(),
    );
    let sink = Arc::new(match lanes {
        Some(lanes) => sink.with_lanes(lanes),
        None => sink,
    });
    // Follows the checkpoint topic from where it was read (or from now, for a fleet, before
    // any target starts): other processes' records for our targets.
    let mut watch = match watch::Watch::start(
        kafka,
        &config.topics.checkpoints,
        &checkpoints.ends,
        owner.clone(),
    )
    .await
    {
        Ok(watch) => Some(watch),
        Err(error) => {
            tracing::warn!(%error, "cannot follow the checkpoint topic: a zombie's late checkpoint may then move a resume point back (duplicates, never loss)");
            None
        }
    };
    let mut supervisor = Supervisor::new(shared, sink, registry, origin);
    let mut paused = paused::Paused::default();
    let mut fleet = match group {
        Some(group) => {
            // The member's client id is the worker's owner name: the group's description (the
            // fleet view of `/status`) shows which worker each member is.
            let mut member_kafka = kafka.clone();
            member_kafka.set("client.id", &*owner);
            let membership = fleet::Membership::join(
                &member_kafka,
                &group,
                &config.topics.checkpoints,
                config.shutdown.grace,
            )
            .map_err(WorkerError::FleetJoin)?;
            tracing::info!(group = %group.group_id, partitions = group.partitions, instance = group.instance_id.as_deref().unwrap_or(""), targets = targets.len(), "joined the fleet: running the targets of the partitions it assigns here");
            Some((
                membership,
                fleet::Ownership::new(group, targets, owner.clone()),
            ))
        }
        None => {
            tracing::info!(
                checkpoints = checkpoints.resume.len(),
                targets = targets.len(),
                "checkpoints read; starting targets"
            );
            start_configured(&mut supervisor, targets, &checkpoints.resume);
            None
        }
    };
    ops.ready.store(true, Ordering::Relaxed);

    // The topics' configs are checked beside the running targets, not before them: a broker
    // that cannot describe configs (librdkafka's mock cluster) takes the admin timeout to say
    // so, and a start must not wait for it. A checkpoint topic that is not compacted (retention
    // would delete its checkpoints), or an events topic too small for an accepted event (Kafka
    // would refuse it and stop its target), stops the worker at once, before any such event.
    let compaction = async {
        startup::check_compacted(kafka, &config.topics.checkpoints).await?;
        // Topics created by the worker take the records; wait for them to be made first.
        let _ = created.await;
        startup::check_events_topics(kafka, &needs).await
    };
    tokio::pin!(compaction);
    let mut compaction_checked = false;
    let mut lease_tick = tokio::time::interval(Duration::from_millis(250));
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            fatal = producer_fatal(&publisher) => break Ended::ProducerFatal(fatal),
            checked = &mut compaction, if !compaction_checked => {
                compaction_checked = true;
                match checked {
                    Ok(()) => tracing::info!("topic configs checked"),
                    Err(error) => break Ended::Refused(error),
                }
            }
            Some(landed) = landed::next_landed(&mut watch) => {
                landed::serve_landed(landed, &mut watch, &mut fleet, &owner, &mut supervisor, ops, config.shutdown.grace).await;
            }
            Some(command) = inbox.next() => {
                control::serve(command, &mut supervisor, &mut paused, config.shutdown.grace).await;
            }
            Some(command) = admin_inbox.next() => {
                control::serve(command, &mut supervisor, &mut paused, config.shutdown.grace).await;
            }
            _ = lease_tick.tick(), if fleet.is_some() => {
                if let Some((membership, ownership)) = &mut fleet {
                    ownership.set_paused(paused.ids().into_iter().collect());
                    ownership.expire_handovers(&mut supervisor, config.shutdown.grace).await;
                    let ctx = fleet::Ctx { kafka, topic: &config.topics.checkpoints, ops, shutdown: &shutdown, grace: config.shutdown.grace };
                    match ownership.check_lease(membership.heard(), &mut supervisor, &ctx).await {
                        Ok(true) => {}
                        Ok(false) => break Ended::Shutdown,
                        Err(error) => break Ended::Refused(error),
                    }
                }
            }
            update = definitions.next() => {
                let changes = definitions.take(update);
                if !changes.is_empty() {
                    let cx = definitions::Apply {
                        supervisor: &mut supervisor,
                        paused: &mut paused,
                        ownership: fleet.as_mut().map(|(_, ownership)| ownership),
                        kafka,
                        checkpoints: &config.topics.checkpoints,
                        ops,
                        shutdown: &shutdown,
                        grace: config.shutdown.grace,
                    };
                    match definitions::apply(changes, cx).await {
                        Ok(true) => {}
                        Ok(false) => break Ended::Shutdown,
                        Err(error) => break Ended::Refused(error),
                    }
                }
            }
            Some(event) = next_fleet_event(&mut fleet) => {
                if let Some((_, ownership)) = &mut fleet {
                    // A pause is this worker's: a target whose partition moves away is the new
                    // owner's to run, and is no longer paused here.
                    if let fleet::FleetEvent::Revoked { partitions, .. } = &event {
                        for id in paused.ids() {
                            if ownership.in_partitions(&id, partitions) {
                                paused.forget(&id, &supervisor);
                            }
                        }
                    }
                    ownership.set_paused(paused.ids().into_iter().collect());
                    let ctx = fleet::Ctx { kafka, topic: &config.topics.checkpoints, ops, shutdown: &shutdown, grace: config.shutdown.grace };
                    match ownership.serve(event, &mut supervisor, &ctx).await {
                        Ok(true) => {}
                        Ok(false) => break Ended::Shutdown,
                        Err(error) => break Ended::Refused(error),
                    }
                }
            }
        }
    };
    if let Some((membership, ownership)) = &mut fleet {
        fleet::leave_fleet(
            fleet::Leave {
                membership,
                ownership,
                watch: &mut watch,
                owner: &owner,
            },
            &mut supervisor,
            config,
            kafka,
            ops,
            &shutdown,
        )
        .await;
    }
    match &ended {
        Ended::Shutdown => {}
        Ended::ProducerFatal((code, reason)) => {
            // Nothing can be delivered any more: stop (draining what can be), and exit non-zero
            // so the orchestrator restarts the worker with a new producer.
            tracing::error!(
                ?code,
                reason,
                "the kafka producer failed fatally: stopping the worker"
            );
            ops.ready.store(false, Ordering::Relaxed);
            ops.set_not_ready_reason(format!("the kafka producer failed fatally: {reason}"));
        }
        Ended::Refused(error) => {
            tracing::error!(%error, "stopping the worker");
            ops.ready.store(false, Ordering::Relaxed);
            ops.set_not_ready_reason(error.to_string());
        }
    }
    let drained = drain(config, &mut supervisor, &publisher, ops).await;
    match ended {
        Ended::Shutdown => drained,
        Ended::ProducerFatal((code, reason)) => {
            if let Err(error) = drained {
                tracing::warn!(%error, "draining after the fatal producer error did not finish");
            }
            Err(WorkerError::ProducerFatal { code, reason })
        }
        Ended::Refused(error) => {
            if let Err(drain_error) = drained {
                tracing::warn!(error = %drain_error, "draining did not finish");
            }
            Err(error)
        }
    }
}

/// Starts every configured target (`fleet: none`), spread over a short jittered start.
fn start_configured(
    supervisor: &mut Supervisor,
    targets: Vec<Arc<sluice_config::TargetConfig>>,
    checkpoints: &HashMap<String, sluice_publish::Resume>,
) {
    let spread = MAX_START_SPREAD.min(Duration::from_millis(targets.len() as u64));
    let mut rng = rand::rng();
    let launches = targets.into_iter().map(|target| {
        let resume = checkpoints.get(target.id.as_str()).cloned();
        let delay = if spread.is_zero() {
            Duration::ZERO
        } else {
            rng.random_range(Duration::ZERO..spread)
        };
        (target, resume, delay)
    });
    if let Err(error) = supervisor.start_all(launches) {
        // Validation refuses duplicate target ids; this is a programming error.
        tracing::error!(%error, "a target is configured twice; it runs once");
    }
}

/// This worker process as its checkpoint records name it: its fleet instance id (or host
/// name) and its process id, so two processes never share a name.
fn owner_name(config: &WorkerConfig) -> Arc<str> {
    let name = match &config.fleet {
        sluice_config::Fleet::Group(group) => group.instance_id.clone(),
        sluice_config::Fleet::None => None,
    }
    .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
    .unwrap_or_else(|| "worker".to_owned());
    Arc::from(format!("{name}#{}", std::process::id()))
}

/// The next event of the fleet's group (pending for ever with `fleet: none`).
async fn next_fleet_event(
    fleet: &mut Option<(fleet::Membership, fleet::Ownership)>,
) -> Option<fleet::FleetEvent> {
    match fleet {
        Some((membership, _)) => membership.next().await,
        None => std::future::pending().await,
    }
}

/// Why the worker's run ended.
enum Ended {
    /// Shutdown was asked for.
    Shutdown,
    /// The producer failed fatally.
    ProducerFatal((RDKafkaErrorCode, String)),
    /// A start check failed (the checkpoint topic is not compacted, an events topic is too small).
    Refused(WorkerError),
}

/// Resolves once the producer has a fatal error (checked twice a second: one call into
/// librdkafka, nothing else).
async fn producer_fatal(publisher: &Publisher) -> (RDKafkaErrorCode, String) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Some(fatal) = publisher.fatal_error() {
            return fatal;
        }
    }
}

/// Stops every target and waits, within the grace period, for their deliveries and final
/// checkpoints, then flushes the producer.
async fn drain(
    config: &WorkerConfig,
    supervisor: &mut Supervisor,
    publisher: &Publisher,
    ops: &http::Ops,
) -> Result<(), WorkerError> {
    supervisor.signal_all();
    ops.stopping.store(true, Ordering::Relaxed);
    let grace = config.shutdown.grace;
    let deadline = Instant::now() + grace;
    tracing::info!(
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "stopping: draining deliveries and writing final checkpoints"
    );
    match supervisor.join_all(deadline).await {
        // Dropping the supervisor aborts what is left.
        Err(left) => {
            return Err(WorkerError::GraceExceeded {
                grace,
                targets: left,
            });
        }
        // A target task that panicked did not write its final checkpoint.
        Ok(failed) if failed > 0 => return Err(WorkerError::TargetsFailed { targets: failed }),
        Ok(_) => {}
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(error) = publisher.flush(left).await {
        // Every target saw its records and checkpoint acknowledged, so this is what is still
        // queued in librdkafka: nothing of it is checkpointed, a restart reads it again.
        return Err(WorkerError::FlushIncomplete { grace, error });
    }
    tracing::info!("all targets drained; checkpoints written");
    Ok(())
}

/// Raises the soft open-files limit to the hard limit: each connection is a socket.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}
