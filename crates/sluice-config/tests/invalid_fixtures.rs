//! One fixture directory per validation rule under `fixtures/invalid/<rule>/`: a `worker.yaml`,
//! its `targets/`, and `expected.txt` with every problem line `load` must report (paths relative to
//! the fixture directory), in order.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// The problem lines for one fixture, with the fixture directory stripped from paths.
fn problems(rule: &str) -> Vec<String> {
    let dir = fixtures().join(rule);
    let errors = sluice_config::load(&dir.join("worker.yaml"))
        .expect_err("an invalid fixture must not load");
    let prefix = format!("{}/", dir.display());
    errors
        .to_string()
        .lines()
        .map(|line| line.replace(&prefix, ""))
        .collect()
}

fn expected(rule: &str) -> Vec<String> {
    let path = fixtures().join(rule).join("expected.txt");
    std::fs::read_to_string(&path)
        .expect("every fixture has expected.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_fixture(rule: &str) {
    assert_eq!(problems(rule), expected(rule), "fixture {rule}");
}

#[test]
fn unknown_keys_are_reported_with_key_and_file_in_worker_and_target() {
    assert_fixture("unknown_key");
    let lines = problems("unknown_key");
    assert!(lines.contains(&"worker.yaml: defaults.idel: unknown key \"idel\" (expected one of idle_timeout, connect_timeout, backoff, max_connection_age, max_redirects, limits, per_host_connections)".to_owned()));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("targets/a.yaml: proxy.poool: unknown key \"poool\""))
    );
}

#[test]
fn bad_urls_and_non_http_schemes_are_reported() {
    assert_fixture("bad_url");
}

#[test]
fn duplicate_target_ids_name_both_files() {
    assert_eq!(
        problems("duplicate_target_id"),
        ["targets/b.yaml: id: duplicate target id \"prices\" (also in targets/a.yaml)"]
    );
}

#[test]
fn unknown_proxy_pool_is_reported_with_the_known_pools() {
    assert_eq!(
        problems("unknown_proxy_pool"),
        ["targets/prices.yaml: proxy.pool: unknown proxy pool \"eu\" (defined in worker.yaml: us)"]
    );
}

#[test]
fn missing_secret_file_is_reported_with_its_path() {
    assert_eq!(
        problems("missing_secret_file"),
        ["targets/a.yaml: auth.bearer: missing secret file /nonexistent/sluice/token"]
    );
}

#[test]
fn missing_tls_ca_file_is_reported_with_its_path_resolved_against_the_target_file() {
    assert_fixture("missing_ca_file");
}

#[test]
fn tls_ca_file_without_a_pem_certificate_is_reported() {
    assert_fixture("not_pem_ca_file");
    let dir = fixtures().join("not_pem_ca_file");
    let errors = sluice_config::load(&dir.join("worker.yaml")).expect_err("invalid");
    assert_eq!(
        errors.kind(),
        sluice_config::ProblemKind::BadCaFile,
        "{errors}"
    );
}

#[test]
fn unset_secret_env_var_is_reported_with_its_name() {
    assert_fixture("unset_secret_env");
}

#[test]
fn bad_durations_are_reported_in_worker_and_target() {
    assert_fixture("bad_duration");
}

#[test]
fn bad_target_id_is_reported_with_the_charset_rule() {
    assert_fixture("bad_target_id");
}

#[test]
fn bad_json_pointer_is_reported() {
    assert_fixture("bad_json_pointer");
}

#[test]
fn inline_proxy_password_is_refused_without_echoing_it() {
    assert_fixture("inline_proxy_password");
    let lines = problems("inline_proxy_password").join("\n");
    assert!(lines.contains("password: {env: VAR} or {file: /path}"));
    assert!(!lines.contains("hunter2"), "the password leaked: {lines}");
}

#[test]
fn empty_brokers_are_reported() {
    assert_fixture("empty_brokers");
}

#[test]
fn one_run_reports_every_problem_across_all_files() {
    assert_fixture("several_problems");
    assert!(problems("several_problems").len() >= 8);
}

#[test]
fn every_fixture_directory_has_a_test_and_every_problem_has_a_kind() {
    let mut rules: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures dir exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rules.sort();
    let known = [
        "bad_duration",
        "bad_json_pointer",
        "bad_target_id",
        "bad_url",
        "duplicate_target_id",
        "empty_brokers",
        "inline_proxy_password",
        "missing_ca_file",
        "missing_secret_file",
        "not_pem_ca_file",
        "several_problems",
        "unknown_key",
        "unknown_proxy_pool",
        "unset_secret_env",
    ];
    assert_eq!(rules, known);
    for rule in known {
        let dir = fixtures().join(rule);
        let errors = sluice_config::load(&dir.join("worker.yaml")).expect_err("invalid");
        for problem in &errors.problems {
            assert!(!problem.kind().as_str().is_empty());
            assert!(!problem.message.ends_with('.'), "{problem}");
            assert_eq!(
                problem.message.chars().next().map(char::is_lowercase),
                Some(true),
                "{problem}"
            );
        }
    }
}

#[test]
fn a_missing_worker_file_is_one_problem_naming_it() {
    let path = fixtures().join("no-such-dir/worker.yaml");
    let errors = sluice_config::load(&path).expect_err("missing file");
    assert_eq!(errors.problems.len(), 1, "{errors}");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}: cannot read file: no such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn a_missing_targets_directory_is_reported_on_targets_dir() {
    let dir = std::env::temp_dir().join(format!("sluice-config-no-targets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    std::fs::write(dir.join("worker.yaml"), "kafka:\n  brokers: [b:9092]\n").expect("writable");
    let errors = sluice_config::load(&dir.join("worker.yaml")).expect_err("no targets dir");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(errors.problems.len(), 1, "{errors}");
    assert_eq!(errors.problems[0].field, "targets_dir");
    assert!(
        errors.problems[0]
            .message
            .starts_with("cannot read targets directory ")
    );
}
