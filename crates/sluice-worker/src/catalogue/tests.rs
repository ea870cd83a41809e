//! The catalogue's merge rules, on definitions validated by the config crate from real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A worker directory with `worker.yaml` and an empty `targets/`, removed on drop.
struct Dir {
    root: PathBuf,
    worker: sluice_config::WorkerConfig,
}

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "sluice-catalogue-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("targets")).unwrap();
        std::fs::write(
            root.join("worker.yaml"),
            "kafka:\n  brokers: [\"127.0.0.1:9\"]\ntargets_dir: targets\n",
        )
        .unwrap();
        std::fs::write(root.join("targets/seed.yaml"), target("seed", "a")).unwrap();
        let worker = sluice_config::load(&root.join("worker.yaml")).unwrap();
        Dir { root, worker }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join("targets").join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn files(&self) -> Result<Vec<TargetFile>, ConfigProblem> {
        sluice_config::read_target_files(&self.worker)
    }

    fn record(&self, id: &str, text: &str) -> Result<(String, TargetConfig), String> {
        let label = Path::new("sluice.targets").join(id);
        sluice_config::target_from_text(&label, text, &self.worker)
            .map(|t| (text.to_owned(), t))
            .map_err(|e| format!("{} problems", e.problems.len()))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn target(id: &str, path: &str) -> String {
    format!("id: {id}\nurl: http://127.0.0.1:9/{path}\n")
}

fn id(id: &str) -> TargetId {
    id.parse().unwrap()
}

/// The changes as `+id` (start or restart) and `-id` (stop), in order.
fn shown(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Upsert(t) => format!("+{}", t.id),
            Change::Remove(id) => format!("-{id}"),
        })
        .collect()
}

fn ids(catalogue: &Catalogue) -> Vec<String> {
    catalogue
        .targets()
        .iter()
        .map(|t| t.id.to_string())
        .collect()
}

#[test]
fn files_added_changed_and_removed_are_changes_and_unchanged_ones_are_not() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["+seed"]);
    assert!(
        catalogue.set_files(dir.files()).is_empty(),
        "nothing changed"
    );

    let b = dir.write("b.yaml", &target("b", "b"));
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["+b"]);
    dir.write("b.yaml", &target("b", "b2"));
    assert_eq!(
        shown(&catalogue.set_files(dir.files())),
        ["+b"],
        "a changed file restarts its target"
    );
    std::fs::remove_file(b).unwrap();
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["-b"]);
    assert_eq!(ids(&catalogue), ["seed"]);
}

#[test]
fn a_broken_edit_keeps_the_definition_it_replaced_and_says_why() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    dir.write("seed.yaml", "id: seed\nurl: ftp://nowhere\n");
    assert!(catalogue.set_files(dir.files()).is_empty(), "nothing stops");
    assert_eq!(ids(&catalogue), ["seed"]);
    let problems = catalogue.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].target.as_deref(), Some("seed"));
    assert!(problems[0].message.starts_with("url: "), "{problems:?}");
    assert!(problems[0].message.contains("still runs"), "{problems:?}");

    // Fixed: the fixed definition runs (a restart), and the problem is gone.
    dir.write("seed.yaml", &target("seed", "fixed"));
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["+seed"]);
    assert!(catalogue.problems().is_empty());
}

#[test]
fn a_new_broken_file_runs_nothing_and_is_reported() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    dir.write(
        "bad.yaml",
        "id: bad\nurl: http://127.0.0.1:9/\nunknown_key: 1\n",
    );
    assert!(catalogue.set_files(dir.files()).is_empty());
    let problems = catalogue.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].target, None, "no valid definition names it");
    assert!(problems[0].message.contains("unknown_key"), "{problems:?}");
}

#[test]
fn a_duplicate_id_in_a_second_file_is_ignored_and_reported() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    dir.write("z-copy.yaml", &target("seed", "other"));
    assert!(
        catalogue.set_files(dir.files()).is_empty(),
        "the first file's runs on"
    );
    let problems = catalogue.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("duplicate target id"),
        "{problems:?}"
    );
}

#[test]
fn topic_definitions_start_change_and_stop_by_record_and_tombstone() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    let t = target("t1", "one");
    assert_eq!(
        shown(&catalogue.set_record(id("t1"), Some(dir.record("t1", &t)))),
        ["+t1"]
    );
    assert!(
        catalogue
            .set_record(id("t1"), Some(dir.record("t1", &t)))
            .is_empty(),
        "the same text again"
    );
    let t2 = target("t1", "two");
    assert_eq!(
        shown(&catalogue.set_record(id("t1"), Some(dir.record("t1", &t2)))),
        ["+t1"]
    );
    // An invalid record changes nothing, and is reported.
    let bad = catalogue.set_record(id("t1"), Some(Err("url: bad".to_owned())));
    assert!(bad.is_empty());
    assert_eq!(ids(&catalogue), ["seed", "t1"]);
    assert!(catalogue.problems()[0].message.contains("still runs"));
    assert_eq!(shown(&catalogue.set_record(id("t1"), None)), ["-t1"]);
    assert!(
        catalogue.problems().is_empty(),
        "the tombstone removed the record and its problem"
    );
}

#[test]
fn an_id_in_a_file_and_the_topic_runs_the_files_and_is_reported() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    let changes = catalogue.set_record(
        id("seed"),
        Some(dir.record("seed", &target("seed", "topic"))),
    );
    assert!(
        changes.is_empty(),
        "the file's definition runs on: {:?}",
        shown(&changes)
    );
    let problems = catalogue.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.contains("defined both in"),
        "{problems:?}"
    );
    // The file goes: the topic's definition takes over.
    std::fs::remove_file(dir.root.join("targets/seed.yaml")).unwrap();
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["+seed"]);
    assert!(catalogue.problems().is_empty());
}

#[test]
fn a_disabled_definition_stops_its_target() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    dir.write(
        "seed.yaml",
        &format!("{}enabled: false\n", target("seed", "a")),
    );
    assert_eq!(shown(&catalogue.set_files(dir.files())), ["-seed"]);
    assert!(catalogue.targets().is_empty());
}

#[test]
fn an_unreadable_directory_keeps_the_file_definitions() {
    let dir = Dir::new();
    let mut catalogue = Catalogue::default();
    catalogue.set_files(dir.files());
    std::fs::rename(dir.root.join("targets"), dir.root.join("gone")).unwrap();
    assert!(catalogue.set_files(dir.files()).is_empty());
    assert_eq!(ids(&catalogue), ["seed"]);
    assert!(
        catalogue.problems()[0]
            .message
            .contains("cannot read targets directory")
    );
}

#[test]
fn the_file_watch_reads_only_what_changed() {
    let dir = Dir::new();
    let mut watch = FileWatch::default();
    assert!(
        watch.look(&dir.worker).is_some(),
        "the first look reads every file"
    );
    assert!(watch.look(&dir.worker).is_none(), "nothing changed");
    dir.write("b.yaml", &target("b", "b"));
    let look = watch.look(&dir.worker).unwrap().unwrap();
    assert_eq!(look.len(), 2);
    std::fs::remove_file(dir.root.join("targets/b.yaml")).unwrap();
    assert_eq!(
        watch.look(&dir.worker).unwrap().unwrap().len(),
        1,
        "a removed file is a change"
    );
}

#[test]
fn the_start_set_is_kept_by_the_first_read_unless_a_file_changed_since() {
    let dir = Dir::new();
    dir.write("b.yaml", &target("b", "b"));
    let loaded = sluice_config::load(&dir.root.join("worker.yaml")).unwrap();
    let started: Vec<Arc<TargetConfig>> = loaded.targets.into_iter().map(Arc::new).collect();
    let mut catalogue = Catalogue::started_with(&started);
    dir.write("b.yaml", &target("b", "edited"));
    assert_eq!(
        shown(&catalogue.set_files(dir.files())),
        ["+b"],
        "only the file edited since the load restarts"
    );
    assert!(catalogue.set_files(dir.files()).is_empty());
}
