//! One fixture directory per validation rule under `fixtures/invalid/<rule>/`: a `worker.yaml`,
//! its `targets/`, and `expected.txt` with every problem line `load` must report (paths relative to
//! the fixture directory), in order. A fixture with an `aggregator.yaml` is loaded through it
//! with `load_aggregator` instead.

use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

/// Loads one fixture: its `aggregator.yaml` when it has one, else its `worker.yaml`.
fn load(rule: &str) -> sluice_config::ConfigErrors {
    let dir = fixtures().join(rule);
    let aggregator = dir.join("aggregator.yaml");
    if aggregator.exists() {
        sluice_config::load_aggregator(&aggregator)
            .map(drop)
            .expect_err("an invalid fixture must not load")
    } else {
        sluice_config::load(&dir.join("worker.yaml"))
            .map(drop)
            .expect_err("an invalid fixture must not load")
    }
}

/// The problem lines for one fixture, with the fixture directory stripped from paths.
fn problems(rule: &str) -> Vec<String> {
    let dir = fixtures().join(rule);
    let errors = load(rule);
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
    assert!(lines.contains(&"worker.yaml: defaults.idel: unknown key \"idel\" (expected one of idle_timeout, connect_timeout, backoff, max_connection_age, max_redirects, limits, per_host_connections, streams_per_connection)".to_owned()));
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
fn durations_over_the_maximum_are_refused_in_worker_and_target() {
    assert_fixture("too_long_duration");
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
fn kafka_secret_properties_are_references_to_unmanaged_properties_written_once() {
    assert_fixture("kafka_secret_property_rules");
}

#[test]
fn the_partitioner_is_refused_because_sluice_places_records_itself() {
    assert_fixture("partitioner_is_managed");
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
fn aggregate_pointers_must_be_rfc_6901_json_pointers() {
    assert_fixture("aggregate_bad_json_pointer");
}

#[test]
fn aggregate_unknown_strategy_lists_the_valid_ones() {
    assert_fixture("aggregate_unknown_strategy");
}

#[test]
fn aggregate_single_version_and_version_range_exclude_each_other() {
    assert_fixture("aggregate_version_and_range");
}

#[test]
fn aggregate_version_range_needs_both_ends() {
    assert_fixture("aggregate_half_range");
}

#[test]
fn aggregate_versioned_deltas_need_a_base_version() {
    assert_fixture("aggregate_missing_base_version");
}

#[test]
fn aggregate_contiguous_needs_versioned_deltas() {
    assert_fixture("aggregate_contiguous_without_versions");
}

#[test]
fn aggregate_event_type_may_be_in_only_one_event_list() {
    assert_fixture("aggregate_event_type_in_two_lists");
}

#[test]
fn aggregate_delete_and_reset_events_must_pass_the_event_type_filter() {
    assert_fixture("aggregate_filtered_event_type");
}

#[test]
fn an_inline_admin_token_is_refused_without_showing_it() {
    assert_fixture("admin_token_rules");
    assert!(!load("admin_token_rules").to_string().contains("s3cret"));
}

#[test]
fn fleet_settings_are_checked_field_by_field() {
    assert_fixture("fleet_rules");
}

#[test]
fn an_unknown_fleet_mode_names_the_choices() {
    let dir = std::env::temp_dir().join(format!("sluice-config-fleet-mode-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("targets")).expect("temp dir is writable");
    std::fs::write(
        dir.join("worker.yaml"),
        "kafka:\n  brokers: [b:9092]\nfleet: everyone\n",
    )
    .expect("writable");
    let errors = sluice_config::load(&dir.join("worker.yaml")).expect_err("bad fleet mode");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(errors.problems.len(), 1, "{errors}");
    assert_eq!(errors.problems[0].field, "fleet");
    assert!(
        errors.problems[0]
            .message
            .contains("use none, or a map with group_id"),
        "{errors}"
    );
}

#[test]
fn fleet_none_and_no_fleet_mean_the_same() {
    for fleet in ["", "fleet: none\n"] {
        let dir = std::env::temp_dir().join(format!(
            "sluice-config-fleet-none-{}-{}",
            std::process::id(),
            fleet.len()
        ));
        std::fs::create_dir_all(dir.join("targets")).expect("temp dir is writable");
        std::fs::write(
            dir.join("worker.yaml"),
            format!("kafka:\n  brokers: [b:9092]\n{fleet}"),
        )
        .expect("writable");
        let config = sluice_config::load(&dir.join("worker.yaml"));
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(config.expect("valid").fleet, sluice_config::Fleet::None);
    }
}

#[test]
fn aggregate_buffer_and_entity_bounds_must_be_at_least_one() {
    assert_fixture("aggregate_zero_max_buffered");
}

#[test]
fn aggregate_entity_limits_must_be_positive_and_the_depth_readable_back() {
    assert_fixture("aggregate_bad_limits");
}

#[test]
fn aggregate_unknown_keys_are_reported_in_every_section() {
    assert_fixture("aggregate_unknown_key");
}

#[test]
fn aggregate_needs_the_target_id_as_record_key() {
    assert_fixture("aggregate_pointer_record_key");
    let lines = problems("aggregate_pointer_record_key").join("\n");
    assert!(lines.contains("all of the target's deltas in one partition, in order"));
}

#[test]
fn aggregate_missing_sections_and_required_pointers_are_reported() {
    assert_fixture("aggregate_missing_required");
}

#[test]
fn aggregate_base_url_follows_the_target_url_rules_without_echoing_a_password() {
    assert_fixture("aggregate_bad_base_url");
    let lines = problems("aggregate_bad_base_url").join("\n");
    assert!(!lines.contains("hunter2"), "the password leaked: {lines}");
}

#[test]
fn aggregate_base_headers_follow_the_target_header_rules() {
    assert_fixture("aggregate_base_header_inline_secret");
    let lines = problems("aggregate_base_header_inline_secret").join("\n");
    assert!(!lines.contains("hunter2"), "the secret leaked: {lines}");
}

#[test]
fn aggregate_base_timeout_must_be_a_positive_duration() {
    assert_fixture("aggregate_bad_base_timeout");
}

#[test]
fn aggregator_needs_an_enabled_aggregated_target() {
    assert_fixture("aggregator_no_aggregated_target");
}

#[test]
fn aggregator_needs_a_worker_file() {
    assert_fixture("aggregator_missing_worker");
}

#[test]
fn aggregator_names_an_unreadable_worker_file_on_its_worker_key() {
    assert_fixture("aggregator_unreadable_worker");
}

#[test]
fn aggregator_reports_the_problems_of_its_worker_config_with_their_files() {
    assert_fixture("aggregator_worker_problems");
}

#[test]
fn aggregator_unknown_keys_are_reported() {
    assert_fixture("aggregator_unknown_key");
}

#[test]
fn aggregator_refuses_managed_and_secret_kafka_properties() {
    assert_fixture("aggregator_managed_property");
    let lines = problems("aggregator_managed_property").join("\n");
    assert!(!lines.contains("hunter2"), "the password leaked: {lines}");
}

#[test]
fn aggregator_group_id_must_not_be_empty() {
    assert_fixture("aggregator_empty_group_id");
}

#[test]
fn aggregator_group_instance_id_must_be_a_legal_kafka_name() {
    assert_fixture("aggregator_bad_group_instance_id");
}

#[test]
fn aggregator_deliveries_name_known_targets_a_positive_interval_a_format_a_directory_and_keep() {
    assert_fixture("aggregator_delivery_rules");
}

#[test]
fn aggregator_s3_deliveries_name_a_valid_bucket_prefix_endpoint_and_both_credentials_by_reference()
{
    assert_fixture("aggregator_delivery_s3");
}

#[test]
fn exactly_once_takes_a_positive_interval_and_records_and_a_longer_transaction_timeout() {
    assert_fixture("delivery_rules");
}

#[test]
fn exactly_once_needs_fleet_none_for_now() {
    assert_fixture("delivery_fleet");
}

#[test]
fn the_delivery_mode_is_at_least_once_or_exactly_once() {
    assert_fixture("delivery_unknown");
}

#[test]
fn aggregator_snapshot_interval_must_be_positive() {
    assert_fixture("aggregator_zero_snapshot_interval");
}

#[test]
fn aggregator_cors_origins_must_be_origins_and_star_stands_alone() {
    assert_fixture("aggregator_bad_cors_origins");
}

#[test]
fn aggregator_bearer_token_is_never_inline() {
    assert_fixture("aggregator_inline_bearer");
}

#[test]
fn aggregator_max_connections_must_be_at_least_one_and_routing_redirect_or_proxy() {
    assert_fixture("aggregator_zero_max_connections");
}

#[test]
fn aggregator_topics_must_not_be_the_ones_it_reads_or_the_checkpoints() {
    assert_fixture("aggregator_topic_clash");
}

#[test]
fn aggregator_dead_letter_topic_must_differ_from_the_state_topic() {
    assert_fixture("aggregator_dead_letter_is_state");
}

#[test]
fn aggregator_needs_brokers_like_the_worker() {
    assert_fixture("aggregator_no_brokers");
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
        "admin_token_rules",
        "aggregate_bad_base_timeout",
        "aggregate_bad_base_url",
        "aggregate_bad_json_pointer",
        "aggregate_bad_limits",
        "aggregate_base_header_inline_secret",
        "aggregate_contiguous_without_versions",
        "aggregate_event_type_in_two_lists",
        "aggregate_filtered_event_type",
        "aggregate_half_range",
        "aggregate_missing_base_version",
        "aggregate_missing_required",
        "aggregate_pagination_fields_of_another_mode",
        "aggregate_pagination_missing_fields",
        "aggregate_pagination_unknown_mode",
        "aggregate_pagination_zero_limits",
        "aggregate_pointer_record_key",
        "aggregate_unknown_key",
        "aggregate_unknown_strategy",
        "aggregate_version_and_range",
        "aggregate_zero_max_buffered",
        "aggregator_bad_cors_origins",
        "aggregator_bad_group_instance_id",
        "aggregator_bad_metrics_per_target",
        "aggregator_dead_letter_is_state",
        "aggregator_delivery_rules",
        "aggregator_delivery_s3",
        "aggregator_empty_group_id",
        "aggregator_inline_bearer",
        "aggregator_managed_property",
        "aggregator_missing_worker",
        "aggregator_no_aggregated_target",
        "aggregator_no_brokers",
        "aggregator_topic_clash",
        "aggregator_unknown_key",
        "aggregator_unreadable_worker",
        "aggregator_worker_problems",
        "aggregator_zero_max_connections",
        "aggregator_zero_snapshot_interval",
        "bad_compression",
        "bad_duration",
        "bad_json_pointer",
        "bad_metrics_per_target",
        "bad_request_body",
        "bad_target_id",
        "bad_url",
        "client_cert_rules",
        "delivery_fleet",
        "delivery_rules",
        "delivery_unknown",
        "duplicate_target_id",
        "empty_brokers",
        "fleet_rules",
        "inline_proxy_password",
        "kafka_secret_property_rules",
        "missing_ca_file",
        "missing_secret_file",
        "not_pem_ca_file",
        "oauth2_rules",
        "partitioner_is_managed",
        "several_problems",
        "too_long_duration",
        "unknown_key",
        "unknown_proxy_pool",
        "unset_secret_env",
    ];
    assert_eq!(rules, known);
    for rule in known {
        let errors = load(rule);
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

#[test]
fn metrics_per_target_takes_all_essential_or_none_in_both_files() {
    assert_fixture("bad_metrics_per_target");
    assert_fixture("aggregator_bad_metrics_per_target");
}

#[test]
fn compression_takes_true_or_false() {
    assert_fixture("bad_compression");
}

#[test]
fn a_request_body_needs_a_method_that_carries_one_and_one_source() {
    assert_fixture("bad_request_body");
}

#[test]
fn a_client_certificate_needs_its_key_as_a_secret_and_a_readable_pem_file() {
    assert_fixture("client_cert_rules");
}

#[test]
fn an_oauth2_grant_needs_a_token_url_a_client_and_a_secret_and_no_bearer_beside_it() {
    assert_fixture("oauth2_rules");
}

#[test]
fn aggregate_pagination_mode_must_be_one_of_the_modes() {
    assert_fixture("aggregate_pagination_unknown_mode");
}

#[test]
fn aggregate_pagination_modes_need_their_pointer_and_parameters() {
    assert_fixture("aggregate_pagination_missing_fields");
}

#[test]
fn aggregate_pagination_limits_and_page_size_must_be_at_least_one() {
    assert_fixture("aggregate_pagination_zero_limits");
}

#[test]
fn aggregate_pagination_fields_of_another_mode_are_refused() {
    assert_fixture("aggregate_pagination_fields_of_another_mode");
}
