//! A target's `tls.ca_file` is read at load, relative to the target file, and carried as PEM bytes.

use std::path::Path;

#[test]
fn target_with_a_pem_ca_file_loads_and_carries_its_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/tls_ca_file");
    let config = sluice_config::load(&dir.join("worker.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let expected = std::fs::read(dir.join("certs/internal-ca.pem")).expect("fixture CA exists");
    assert!(expected.starts_with(b"-----BEGIN CERTIFICATE-----"));

    let with_tls = &config.targets[0];
    assert_eq!(with_tls.id.as_str(), "a");
    assert_eq!(with_tls.root_certificates_pem, [expected]);

    let without_tls = &config.targets[1];
    assert_eq!(without_tls.id.as_str(), "b");
    assert!(without_tls.root_certificates_pem.is_empty());
}

#[test]
fn tls_section_refuses_unknown_keys() {
    let dir = std::env::temp_dir().join(format!("sluice-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("targets")).expect("temp dir is writable");
    std::fs::write(dir.join("worker.yaml"), "kafka:\n  brokers: [b:9092]\n").expect("writable");
    std::fs::write(
        dir.join("targets/a.yaml"),
        "id: a\nurl: https://127.0.0.1/\ntls:\n  ca_fille: ca.pem\n",
    )
    .expect("writable");
    let errors = sluice_config::load(&dir.join("worker.yaml")).expect_err("unknown key");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(errors.problems.len(), 1, "{errors}");
    assert_eq!(errors.problems[0].field, "tls.ca_fille");
    assert_eq!(
        errors.problems[0].message,
        "unknown key \"ca_fille\" (expected one of ca_file, client_cert, client_key)"
    );
}
