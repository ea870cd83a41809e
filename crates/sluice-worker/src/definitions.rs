//! Target definitions at run time: the worker's loop side of the catalogue. [`Definitions`]
//! owns the catalogue, the targets directory's watch and the targets topic's follower, turns
//! what they report into [`Change`]s, and [`Definitions::apply`] carries those out: a new
//! target starts from the checkpoint the topic holds for it, a changed one is stopped (its
//! final checkpoint stored) and started again from that checkpoint with its new definition, a
//! removed one is stopped. With a fleet, every worker keeps the whole catalogue but only the
//! owner of a target's partition starts or stops it.
//!
//! What it must NOT do: start a target without reading its checkpoint first, or act on a
//! definition of the targets topic before the topic was read to its end (the start's batch
//! waits for it, so thousands of definitions start together, not one by one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use sluice_config::{TargetConfig, TargetId, WorkerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalogue::topic::{self, Follower, Read};
use crate::catalogue::{Catalogue, Change, FileWatch, Problem};
use crate::paused::Paused;
use crate::supervisor::Supervisor;
use crate::{WorkerError, fleet, http, startup};

/// What `/status` and the admin API read of the catalogue.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct View {
    /// Targets defined by a file, and the file.
    pub files: BTreeMap<String, PathBuf>,
    /// Targets defined in the targets topic.
    pub topic: BTreeSet<String>,
    /// Whether the targets topic has been read to its end.
    pub topic_loaded: bool,
    /// Every problem with a definition (invalid, duplicate, defined twice, unreadable).
    pub problems: Vec<Problem>,
}

/// The view, shared with the HTTP handlers.
pub type SharedView = Arc<std::sync::RwLock<Arc<View>>>;

/// Reads the shared view.
pub(crate) fn read_view(view: &SharedView) -> Arc<View> {
    view.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// The catalogue and its sources.
pub(crate) struct Definitions {
    catalogue: Catalogue,
    files: mpsc::Receiver<crate::catalogue::files::Look>,
    follower: Option<Follower>,
    topic: String,
    worker: Arc<WorkerConfig>,
    /// Set once the targets topic was read to its end.
    loaded: bool,
    /// Why the targets topic cannot be read, while it cannot.
    unreadable: Option<String>,
    /// Changes held until the topic is read to its end.
    held: Vec<Change>,
    view: SharedView,
}

/// One thing that came in.
pub(crate) enum Update {
    Files(crate::catalogue::files::Look),
    Topic(Read),
}

impl Definitions {
    /// The catalogue of the targets a worker starts with (`started`, as loaded), watching the
    /// target files and following the targets topic. `worker` is the config without targets.
    pub(crate) async fn start(
        worker: Arc<WorkerConfig>,
        started: &[Arc<TargetConfig>],
        kafka: &ClientConfig,
        view: SharedView,
        stop: CancellationToken,
    ) -> Definitions {
        // The first look at the files comes after `targets_watch`: it finds the start set's
        // definitions unchanged (or restarts those edited since the load).
        let catalogue = Catalogue::started_with(started);
        let watch = FileWatch::default();
        let files =
            crate::catalogue::files::spawn(watch, worker.clone(), worker.targets_watch, stop);
        let topic = worker.topics.targets.clone();
        let follower = match Follower::start(kafka, &topic) {
            Ok(follower) => Some(follower),
            Err(error) => {
                tracing::warn!(%error, topic, "cannot follow the targets topic: only the target files define targets");
                None
            }
        };
        let definitions = Definitions {
            catalogue,
            files,
            follower,
            topic,
            worker,
            loaded: false,
            unreadable: None,
            held: Vec::new(),
            view,
        };
        definitions.publish();
        definitions
    }

    /// The targets to run at start (as loaded; the topic's come once it is read).
    pub(crate) fn targets(&self) -> Vec<Arc<TargetConfig>> {
        self.catalogue.targets()
    }

    /// The next update (pending for ever once both sources ended).
    pub(crate) async fn next(&mut self) -> Update {
        let topic = async {
            match &mut self.follower {
                Some(follower) => follower.next().await,
                None => None,
            }
        };
        tokio::select! {
            Some(look) = self.files.recv() => Update::Files(look),
            Some(read) = topic => Update::Topic(read),
            else => std::future::pending().await,
        }
    }

    /// Takes an update into the catalogue: the changes to carry out now (none while the
    /// topic's first read is going on).
    pub(crate) fn take(&mut self, update: Update) -> Vec<Change> {
        let from_files = match update {
            Update::Files(look) => self.catalogue.set_files(look),
            Update::Topic(read) => {
                let changes = self.read(read);
                self.hold(changes);
                Vec::new()
            }
        };
        // What else came meanwhile goes in the same batch.
        while let Some(read) = self.follower.as_mut().and_then(Follower::try_next) {
            let changes = self.read(read);
            self.hold(changes);
        }
        self.publish();
        // The files' changes do not wait for the topic; they supersede held ones of their ids.
        let ids: BTreeSet<TargetId> = from_files.iter().map(|c| c.id().clone()).collect();
        self.held.retain(|c| !ids.contains(c.id()));
        let mut changes = if self.loaded || self.follower.is_none() {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        };
        changes.extend(from_files);
        changes
    }

    fn hold(&mut self, changes: Vec<Change>) {
        self.held.extend(changes);
    }

    fn read(&mut self, read: Read) -> Vec<Change> {
        match read {
            Read::Loaded => {
                self.loaded = true;
                self.unreadable = None;
                tracing::info!(
                    topic = self.topic,
                    targets = self.catalogue.targets().len(),
                    "targets topic read to its end"
                );
                Vec::new()
            }
            Read::Unreadable(reason) => {
                tracing::warn!(
                    topic = self.topic,
                    reason,
                    "cannot read the targets topic yet: its definitions wait"
                );
                self.unreadable = Some(reason);
                Vec::new()
            }
            Read::Record { key, value, format } => {
                let Some(id) = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| k.parse::<TargetId>().ok())
                else {
                    tracing::warn!(topic = self.topic, key = %String::from_utf8_lossy(&key), "a targets topic record whose key is not a target id: ignored");
                    return Vec::new();
                };
                let definition = value.map(|value| self.validate(&id, &value, format.as_deref()));
                self.catalogue.set_record(id, definition)
            }
        }
    }

    /// A record's value as a definition, validated as `sluice validate` does.
    fn validate(
        &self,
        id: &TargetId,
        value: &[u8],
        format: Option<&str>,
    ) -> Result<(String, TargetConfig), String> {
        if let Some(format) = format.filter(|f| *f != topic::FORMAT) {
            return Err(format!(
                "record format {format:?} is not one this worker reads ({}): ignored",
                topic::FORMAT
            ));
        }
        let text = std::str::from_utf8(value)
            .map_err(|_| "the definition is not UTF-8 text".to_owned())?;
        let label = PathBuf::from(format!("{}/{}", self.topic, id));
        let target = sluice_config::target_from_text(&label, text, &self.worker)
            .map_err(|errors| problems_text(&errors))?;
        if target.id != *id {
            return Err(format!(
                "id: the definition's id {:?} is not the record's key {:?}",
                target.id.as_str(),
                id.as_str()
            ));
        }
        Ok((text.to_owned(), target))
    }

    /// Updates the shared view.
    fn publish(&self) {
        let mut problems = self.catalogue.problems();
        if let Some(reason) = &self.unreadable {
            problems.push(Problem {
                target: None,
                origin: crate::catalogue::Origin::Topic,
                message: format!("the targets topic cannot be read: {reason}"),
            });
        }
        let view = View {
            files: self.catalogue.file_ids(),
            topic: self.catalogue.topic_ids(),
            topic_loaded: self.loaded,
            problems,
        };
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(view);
    }
}

/// A definition's problems as one line each, `field: message`.
pub(crate) fn problems_text(errors: &sluice_config::ConfigErrors) -> String {
    errors
        .problems
        .iter()
        .map(|p| {
            if p.field.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.field, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What carrying out changes needs of the worker.
pub(crate) struct Apply<'a> {
    pub(crate) supervisor: &'a mut Supervisor,
    pub(crate) paused: &'a mut Paused,
    pub(crate) ownership: Option<&'a mut fleet::Ownership>,
    pub(crate) kafka: &'a ClientConfig,
    pub(crate) checkpoints: &'a str,
    pub(crate) ops: &'a http::Ops,
    pub(crate) shutdown: &'a CancellationToken,
    pub(crate) grace: Duration,
}

/// Carries out `changes` (the last change of each target counts). `Ok(false)` when shutdown
/// came while reading checkpoints.
pub(crate) async fn apply(changes: Vec<Change>, cx: Apply<'_>) -> Result<bool, WorkerError> {
    let Apply {
        supervisor,
        paused,
        mut ownership,
        kafka,
        checkpoints,
        ops,
        shutdown,
        grace,
    } = cx;
    let mut last: BTreeMap<TargetId, Change> = BTreeMap::new();
    for change in changes {
        last.insert(change.id().clone(), change);
    }
    let mut starts: Vec<Arc<TargetConfig>> = Vec::new();
    let mut stops: Vec<TargetId> = Vec::new();
    for (id, change) in last {
        match change {
            Change::Remove(id) => {
                if let Some(ownership) = ownership.as_deref_mut() {
                    ownership.undefine(&id);
                }
                if paused.forget(&id, supervisor) {
                    tracing::info!(target_id = %id, "target removed (it was paused)");
                }
                if supervisor.config_of(&id).is_some() {
                    stops.push(id);
                }
            }
            Change::Upsert(target) => {
                let acts = match ownership.as_deref_mut() {
                    Some(ownership) => ownership.define(target.clone()),
                    None => true,
                };
                if !acts {
                    continue; // another worker's partition: its owner acts
                }
                if paused.redefine(&id, target.clone()) {
                    tracing::info!(target_id = %id, "paused target redefined: it resumes with the new definition");
                    continue;
                }
                if supervisor.config_of(&id).is_some() {
                    stops.push(id);
                }
                starts.push(target);
            }
        }
    }
    if let Some(ownership) = &ownership {
        ownership.publish_targets(ops);
    }
    if !stops.is_empty() {
        let failed = supervisor.stop_many(&stops, grace).await;
        tracing::info!(
            targets = stops.len(),
            failed,
            "targets stopped for their new or removed definitions"
        );
    }
    if starts.is_empty() {
        return Ok(true);
    }
    // Their checkpoints, from the partitions they map to (after the stops above: a changed
    // target's final checkpoint is stored by then).
    let partitions = match &ownership {
        Some(ownership) => Some(ownership.partitions_of(starts.iter().map(|t| &t.id))),
        None => match sluice_publish::topics::partition_count(kafka, checkpoints).await {
            Ok(count) => Some(
                starts
                    .iter()
                    .map(|t| sluice_publish::partition_for(t.id.as_str(), count))
                    .collect::<BTreeSet<i32>>(),
            ),
            Err(_) => None,
        },
    };
    let Some(read) =
        startup::load_checkpoints(kafka, checkpoints, partitions.as_ref(), ops, shutdown).await?
    else {
        return Ok(false);
    };
    drop(ensure_topics(kafka, &starts, shutdown));
    tracing::info!(
        targets = starts.len(),
        "starting targets of new or changed definitions"
    );
    let launches = starts.into_iter().map(|t| {
        let resume = read.resume.get(t.id.as_str()).cloned();
        (t, resume, Duration::ZERO)
    });
    if let Err(error) = supervisor.start_all(launches) {
        tracing::error!(%error, "a redefined target runs already");
    }
    Ok(true)
}

/// Creates the events topics of `targets` that are missing, in the background (a target whose
/// topic is missing shows `paused` until it exists). Topics created here take the largest
/// record a target's events can make.
pub(crate) fn ensure_topics(
    kafka: &ClientConfig,
    targets: &[Arc<TargetConfig>],
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut topics: Vec<String> = targets.iter().map(|t| t.topic.clone()).collect();
    topics.sort_unstable();
    topics.dedup();
    let max_message =
        crate::kafka_config::max_record_of(targets.iter().map(|t| t.limits)).to_string();
    let kafka = kafka.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let configs = [("max.message.bytes", max_message.as_str())];
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = sluice_publish::topics::ensure_topics_with(&kafka, &topics, false, &configs) => {}
        }
    })
}
