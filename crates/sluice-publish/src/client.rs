//! The one place a Kafka client's settings are built from the config: bootstrap servers, client
//! id, the user's properties and the secret ones (`kafka.secret_properties`, read from their
//! references now). Every Sluice client (the worker's producer, checkpoint reader and admin, the
//! aggregator's consumer, producer, state reader and admin) starts here, so none can lose the
//! user's security settings.
//!
//! What it must NOT do: log or print a secret value (errors name the property and where its value
//! was to be read, never the value), or set a property sluice manages (validation refuses those).

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use sluice_config::{SecretError, SecretRef};

/// Property prefixes every client gets, whatever its role: how to reach and authenticate to the
/// brokers. Producer or consumer tuning goes only to the clients of that role (it would only
/// draw librdkafka configuration warnings elsewhere).
const CONNECTION_PREFIXES: [&str; 6] = [
    "security.",
    "sasl.",
    "ssl.",
    "socket.",
    "broker.",
    "client.",
];

/// The Kafka settings a config file gave, for building clients.
#[derive(Debug, Clone, Copy)]
pub struct KafkaSettings<'a> {
    /// `bootstrap.servers`.
    pub brokers: &'a [String],
    /// `client.id`.
    pub client_id: &'a str,
    /// `kafka.properties`, verbatim.
    pub properties: &'a BTreeMap<String, String>,
    /// `kafka.secret_properties`: property -> where its value is read from.
    pub secret_properties: &'a BTreeMap<String, SecretRef>,
}

/// A secret property whose value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("kafka.secret_properties.{property}: {source}")]
pub struct SecretPropertyError {
    /// The librdkafka property.
    pub property: String,
    /// Why its value could not be read (names the source, never the value).
    #[source]
    pub source: SecretError,
}

impl SecretPropertyError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        "secret"
    }

    /// Whether trying again can help: a secret file or variable may appear (a mounted secret).
    pub fn is_retryable(&self) -> bool {
        true
    }
}

impl<'a> From<&'a sluice_config::KafkaConfig> for KafkaSettings<'a> {
    fn from(kafka: &'a sluice_config::KafkaConfig) -> KafkaSettings<'a> {
        KafkaSettings {
            brokers: &kafka.brokers,
            client_id: &kafka.client_id,
            properties: &kafka.properties,
            secret_properties: &kafka.secret_properties,
        }
    }
}

impl<'a> From<&'a sluice_config::AggregatorKafka> for KafkaSettings<'a> {
    fn from(kafka: &'a sluice_config::AggregatorKafka) -> KafkaSettings<'a> {
        KafkaSettings {
            brokers: &kafka.brokers,
            client_id: &kafka.client_id,
            properties: &kafka.properties,
            secret_properties: &kafka.secret_properties,
        }
    }
}

impl KafkaSettings<'_> {
    /// A client that only connects (checkpoint reader, state reader, admin): bootstrap, client
    /// id, the connection and security properties, and every secret property.
    pub fn connection(&self) -> Result<ClientConfig, SecretPropertyError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", self.client_id);
        for (key, value) in self.properties {
            if CONNECTION_PREFIXES.iter().any(|p| key.starts_with(p)) {
                client.set(key, value);
            }
        }
        self.apply_secrets(&mut client)?;
        Ok(client)
    }

    /// A producer or consumer: `defaults` first (the role's sluice settings, which the user may
    /// override), then every property, then the secret ones.
    pub fn full(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig, SecretPropertyError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", self.client_id);
        for (key, value) in defaults {
            client.set(*key, *value);
        }
        for (key, value) in self.properties {
            client.set(key, value);
        }
        self.apply_secrets(&mut client)?;
        Ok(client)
    }

    fn apply_secrets(&self, client: &mut ClientConfig) -> Result<(), SecretPropertyError> {
        for (property, reference) in self.secret_properties {
            let secret = reference.resolve().map_err(|source| SecretPropertyError {
                property: property.clone(),
                source,
            })?;
            client.set(property, secret.expose());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn settings<'a>(
        brokers: &'a [String],
        properties: &'a BTreeMap<String, String>,
        secrets: &'a BTreeMap<String, SecretRef>,
    ) -> KafkaSettings<'a> {
        KafkaSettings {
            brokers,
            client_id: "sluice-test",
            properties,
            secret_properties: secrets,
        }
    }

    #[test]
    fn a_connection_client_gets_security_and_secret_properties_but_no_tuning() {
        let brokers = vec!["a:9092".to_owned(), "b:9092".to_owned()];
        let properties = BTreeMap::from([
            ("security.protocol".to_owned(), "SASL_PLAINTEXT".to_owned()),
            ("sasl.mechanism".to_owned(), "PLAIN".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]);
        let file =
            std::env::temp_dir().join(format!("sluice-client-rs-password-{}", std::process::id()));
        std::fs::write(&file, "s3cret\n").unwrap();
        let secrets = BTreeMap::from([("sasl.password".to_owned(), SecretRef::File(file.clone()))]);
        let client = settings(&brokers, &properties, &secrets).connection();
        std::fs::remove_file(&file).unwrap();
        let client = client.unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(client.get("client.id"), Some("sluice-test"));
        assert_eq!(client.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(client.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
        assert_eq!(client.get("linger.ms"), None);
    }

    #[test]
    fn a_full_client_lets_properties_override_the_role_defaults() {
        let brokers = vec!["a:9092".to_owned()];
        let properties = BTreeMap::from([("linger.ms".to_owned(), "5".to_owned())]);
        let secrets = BTreeMap::new();
        let client = settings(&brokers, &properties, &secrets)
            .full(&[("linger.ms", "0"), ("message.timeout.ms", "0")])
            .unwrap();
        assert_eq!(client.get("linger.ms"), Some("5"));
        assert_eq!(client.get("message.timeout.ms"), Some("0"));
    }

    #[test]
    fn an_unreadable_secret_names_the_property_and_the_source_not_a_value() {
        let brokers = vec!["a:9092".to_owned()];
        let properties = BTreeMap::new();
        let secrets = BTreeMap::from([(
            "sasl.password".to_owned(),
            SecretRef::Env("SLUICE_TEST_CLIENT_RS_UNSET_VARIABLE".to_owned()),
        )]);
        let error = settings(&brokers, &properties, &secrets)
            .full(&[])
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "kafka.secret_properties.sasl.password: secret env var \
             SLUICE_TEST_CLIENT_RS_UNSET_VARIABLE is not set"
        );
        assert_eq!(error.kind(), "secret");
    }
}
