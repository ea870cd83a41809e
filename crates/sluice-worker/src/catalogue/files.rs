//! Watching the targets directory: every `targets_watch` the directory is listed and each file's
//! stamp (inode, size, modification and change times) compared with the last look's; only new
//! and changed files are read and validated again, so a look at 10,000 unchanged files costs
//! 10,000 `stat` calls and nothing else.
//!
//! What it must NOT do: decide what runs (the catalogue merges what it reports), or write to
//! the directory.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_config::{ConfigProblem, TargetFile, WorkerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What tells a file's content changed without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// What the files looked like at the last look.
#[derive(Default)]
pub(crate) struct FileWatch {
    files: BTreeMap<PathBuf, (Option<Stamp>, TargetFile)>,
    /// The last look's listing error, so a lasting one is reported once.
    unreadable: Option<String>,
    looked: bool,
}

/// A directory read: every file, or why the directory cannot be listed.
pub(crate) type Look = Result<Vec<TargetFile>, ConfigProblem>;

impl FileWatch {
    /// Looks at the directory now: `None` when nothing changed since the last look.
    pub(crate) fn look(&mut self, worker: &WorkerConfig) -> Option<Look> {
        let paths = match sluice_config::target_file_paths(worker) {
            Ok(paths) => paths,
            Err(problem) => {
                let again = self.unreadable.as_deref() == Some(problem.message.as_str());
                self.unreadable = Some(problem.message.clone());
                return (!again).then_some(Err(problem));
            }
        };
        let recovered = self.unreadable.take().is_some();
        let mut changed = recovered || !self.looked || paths.len() != self.files.len();
        self.looked = true;
        let mut next = BTreeMap::new();
        for path in paths {
            let stamp = stamp_of(&path);
            let file = match self.files.remove(&path) {
                Some((before, file)) if stamp.is_some() && before == stamp => file,
                _ => {
                    changed = true;
                    sluice_config::read_target_file(&path, worker)
                }
            };
            next.insert(path, (stamp, file));
        }
        changed |= !self.files.is_empty(); // files gone since the last look
        self.files = next;
        changed.then(|| Ok(self.files.values().map(|(_, f)| f.clone()).collect()))
    }
}

fn stamp_of(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: meta.ino(),
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// Looks at the directory every `every` until `stop`, sending what changed. The first look is
/// the caller's (at start), so this one begins after `every`. A zero `every` watches nothing.
pub(crate) fn spawn(
    mut watch: FileWatch,
    worker: Arc<WorkerConfig>,
    every: Duration,
    stop: CancellationToken,
) -> mpsc::Receiver<Look> {
    let (tx, rx) = mpsc::channel(1);
    if every.is_zero() {
        return rx;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let worker = worker.clone();
            let looked = tokio::task::spawn_blocking(move || {
                let look = watch.look(&worker);
                (watch, look)
            })
            .await;
            let Ok((back, look)) = looked else { return };
            watch = back;
            if let Some(look) = look
                && tx.send(look).await.is_err()
            {
                return;
            }
        }
    });
    rx
}
