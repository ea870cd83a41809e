//! OpenTelemetry export of the process's own tracing data: spans (through `tracing-opentelemetry`)
//! and log events (through `opentelemetry-appender-tracing`), sent as OTLP over HTTP/protobuf.
//!
//! Nothing runs unless an endpoint is configured: `--otlp-endpoint URL` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; spans go to `URL/v1/traces`, logs to `URL/v1/logs`),
//! or the per-signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`
//! (full URLs, read by the exporter itself and preferred over the base URL).
//! `OTEL_SERVICE_NAME` names the service (default `sluice`); `OTEL_SDK_DISABLED=true` turns export
//! off. The other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `OTEL_BSP_*`,
//! `OTEL_RESOURCE_ATTRIBUTES`) are honoured by the SDK.
//!
//! The batch processors run on their own threads with a blocking HTTP client, so they need no
//! async runtime and work for every subcommand. A collector that is down costs one warning per
//! outage, never a crash; [`Telemetry::shutdown`] flushes what is buffered, bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// Name of the root span of every run (`sluice{command=…}`), opened by `main`.
pub const ROOT_SPAN: &str = "sluice";
/// Service name when `OTEL_SERVICE_NAME` is unset.
const DEFAULT_SERVICE_NAME: &str = "sluice";
/// Upper bound for flushing at exit, per provider (they shut down in parallel).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Target of this module's own events; never exported (they talk about the exporter itself).
const TARGET: &str = "sluice::telemetry";
/// Targets whose events and spans are never exported: the exporter's own HTTP stack and SDK, which
/// would otherwise feed their own output back into the export.
const NOT_EXPORTED: &[&str] = &[TARGET, "opentelemetry", "hyper", "reqwest", "h2", "tower"];

/// Where spans and logs go; built from the command line and the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Base URL from `--otlp-endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: full URL for spans.
    pub traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`: full URL for logs.
    pub logs_endpoint: Option<String>,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `OTEL_SDK_DISABLED=true`.
    pub disabled: bool,
}

impl Config {
    /// The command line's endpoint (clap already falls back to `OTEL_EXPORTER_OTLP_ENDPOINT`) plus
    /// the process environment.
    pub fn from_env(endpoint: Option<&str>) -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        Self {
            endpoint: endpoint
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty()),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            logs_endpoint: var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
            service_name: var("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
            disabled: var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }

    /// The URL spans are posted to, if any.
    fn traces_url(&self) -> Option<Signal> {
        self.signal(self.traces_endpoint.as_deref(), "/v1/traces")
    }

    /// The URL log records are posted to, if any.
    fn logs_url(&self) -> Option<Signal> {
        self.signal(self.logs_endpoint.as_deref(), "/v1/logs")
    }

    fn signal(&self, specific: Option<&str>, path: &str) -> Option<Signal> {
        if self.disabled {
            return None;
        }
        match (specific, &self.endpoint) {
            // The exporter reads the per-signal variable itself, unchanged (OTel precedence).
            (Some(url), _) => Some(Signal {
                url: url.to_owned(),
                programmatic: false,
            }),
            (None, Some(base)) => Some(Signal {
                url: format!("{}{path}", base.trim_end_matches('/')),
                programmatic: true,
            }),
            (None, None) => None,
        }
    }
}

/// One signal's destination.
struct Signal {
    url: String,
    /// Whether the URL must be handed to the exporter (it does not come from its own variable).
    programmatic: bool,
}

/// The running exporters. Keep it alive for the whole run and call [`Telemetry::shutdown`] at exit:
/// the tracing subscriber holds the providers forever, so nothing flushes them on its own.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
    /// Set-up problems, reported once the subscriber is installed.
    problems: Vec<String>,
    /// Redacted endpoints, for the start-up log line.
    destinations: Vec<String>,
    /// Shared with the exporters: whether a failure was already reported.
    outage: Arc<Outage>,
}

impl Telemetry {
    /// Starts the exporters the configuration asks for (none when no endpoint is configured).
    /// Never fails: a bad endpoint is reported by [`Telemetry::report`] and export stays off.
    pub fn start(config: &Config) -> Self {
        let mut telemetry = Self::default();
        let traces = config.traces_url();
        let logs = config.logs_url();
        if traces.is_none() && logs.is_none() {
            return telemetry;
        }
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let outage = Arc::clone(&telemetry.outage);

        if let Some(signal) = traces {
            let mut builder = SpanExporter::builder().with_http();
            if signal.programmatic {
                builder = builder.with_endpoint(signal.url.clone());
            }
            match builder.build() {
                Ok(exporter) => {
                    let exporter = WarnOnce::new(exporter, "traces", &signal.url, &outage);
                    telemetry.tracer = Some(
                        SdkTracerProvider::builder()
                            .with_batch_exporter(exporter)
                            .with_resource(resource.clone())
                            .build(),
                    );
                    telemetry
                        .destinations
                        .push(format!("traces to {}", redact(&signal.url)));
                }
                Err(error) => telemetry.problems.push(format!(
                    "traces endpoint {}: {}",
                    redact(&signal.url),
                    scrub(&error.to_string(), &signal.url)
                )),
            }
        }
        if let Some(signal) = logs {
            let mut builder = LogExporter::builder().with_http();
            if signal.programmatic {
                builder = builder.with_endpoint(signal.url.clone());
            }
            match builder.build() {
                Ok(exporter) => {
                    let exporter = WarnOnce::new(exporter, "logs", &signal.url, &outage);
                    telemetry.logger = Some(
                        SdkLoggerProvider::builder()
                            .with_batch_exporter(exporter)
                            .with_resource(resource)
                            .build(),
                    );
                    telemetry
                        .destinations
                        .push(format!("logs to {}", redact(&signal.url)));
                }
                Err(error) => telemetry.problems.push(format!(
                    "logs endpoint {}: {}",
                    redact(&signal.url),
                    scrub(&error.to_string(), &signal.url)
                )),
            }
        }
        telemetry
    }

    /// The layer bridging tracing into the exporters: spans (with their events) to the tracer, and
    /// events to the logger. `None` when nothing is exported.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        if self.tracer.is_none() && self.logger.is_none() {
            return None;
        }
        let spans = self.tracer.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("sluice"))
                .with_filter(filter_fn(exported))
        });
        let logs = self.logger.as_ref().map(|provider| {
            OpenTelemetryTracingBridge::new(provider).with_filter(filter_fn(exported))
        });
        Some(Layer::and_then(spans, logs))
    }

    /// Logs what was set up (and what could not be); call once the subscriber is installed.
    pub fn report(&self) {
        for problem in &self.problems {
            tracing::warn!(target: TARGET, "OpenTelemetry export is off: {problem}");
        }
        if !self.destinations.is_empty() {
            tracing::debug!(target: TARGET, "OpenTelemetry export: {}", self.destinations.join(", "));
        }
    }

    /// Flushes buffered spans and logs and stops the exporters, waiting at most a few seconds (a
    /// collector that is down does not hold the process).
    pub fn shutdown(self) {
        let Self {
            tracer,
            logger,
            outage,
            ..
        } = self;
        let outage = &outage;
        std::thread::scope(|scope| {
            if let Some(tracer) = &tracer {
                scope.spawn(move || {
                    note_shutdown(
                        "traces",
                        tracer.shutdown_with_timeout(SHUTDOWN_TIMEOUT),
                        outage,
                    );
                });
            }
            if let Some(logger) = &logger {
                scope.spawn(move || {
                    note_shutdown(
                        "logs",
                        logger.shutdown_with_timeout(SHUTDOWN_TIMEOUT),
                        outage,
                    );
                });
            }
        });
    }
}

fn note_shutdown(signal: &str, result: OTelSdkResult, outage: &Outage) {
    match result {
        Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
        // The failure was already reported (once), by `WarnOnce` or the other signal.
        Err(error) if outage.failing.swap(true, Ordering::Relaxed) => {
            tracing::debug!(target: TARGET, signal, "OpenTelemetry shutdown: {error}");
        }
        // Typically a collector that accepts connections but does not answer.
        Err(error) => tracing::warn!(
            target: TARGET,
            signal,
            "OpenTelemetry data not flushed at exit (waited at most {SHUTDOWN_TIMEOUT:?}); the rest is dropped: {error}"
        ),
    }
}

/// False for the root span only: it exists for export and is not shown on stderr.
pub fn not_root_span(metadata: &Metadata<'_>) -> bool {
    !(metadata.is_span() && metadata.name() == ROOT_SPAN && metadata.target() == "sluice")
}

/// Whether events and spans of this target may be exported.
fn exported(metadata: &Metadata<'_>) -> bool {
    exported_target(metadata.target())
}

fn exported_target(target: &str) -> bool {
    !NOT_EXPORTED.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// `scheme://host:port/path` of a URL: no user info, no query (they may hold credentials).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
            if let Some(port) = parsed.port() {
                shown.push_str(&format!(":{port}"));
            }
            shown.push_str(parsed.path());
            shown
        }
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// An error text with every spelling of the endpoint replaced by its redacted form.
fn scrub(text: &str, url: &str) -> String {
    let shown = redact(url);
    let mut text = text.replace(url, &shown);
    if let Ok(parsed) = url::Url::parse(url) {
        text = text.replace(parsed.as_str(), &shown);
    }
    text
}

/// Whether the collector is currently failing, shared by the span and log exporters so an outage
/// is logged once, not once per signal or per batch.
#[derive(Debug, Default)]
struct Outage {
    failing: AtomicBool,
}

/// An exporter that logs the first failure of an outage as one warning, and the recovery.
#[derive(Debug)]
struct WarnOnce<E> {
    inner: E,
    signal: &'static str,
    url: String,
    outage: Arc<Outage>,
}

impl<E> WarnOnce<E> {
    fn new(inner: E, signal: &'static str, url: &str, outage: &Arc<Outage>) -> Self {
        Self {
            inner,
            signal,
            url: url.to_owned(),
            outage: Arc::clone(outage),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                if self.outage.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: TARGET,
                        signal = self.signal,
                        endpoint = %redact(&self.url),
                        "OpenTelemetry export recovered"
                    );
                }
            }
            Err(error) => {
                if !self.outage.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: TARGET,
                        signal = self.signal,
                        endpoint = %redact(&self.url),
                        error = %scrub(&error.to_string(), &self.url),
                        "OpenTelemetry export failed; telemetry is dropped until the collector answers (not logged again)"
                    );
                }
            }
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for WarnOnce<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter for WarnOnce<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.note(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> Config {
        Config {
            endpoint: endpoint.map(str::to_owned),
            traces_endpoint: None,
            logs_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            disabled: false,
        }
    }

    #[test]
    fn no_endpoint_means_no_exporter() {
        let telemetry = Telemetry::start(&config(None));
        assert!(telemetry.tracer.is_none() && telemetry.logger.is_none());
        assert!(telemetry.layer::<tracing_subscriber::Registry>().is_none());
    }

    #[test]
    fn base_endpoint_gets_the_signal_path() {
        let config = config(Some("http://collector:4318/"));
        assert_eq!(
            config.traces_url().map(|s| s.url).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            config.logs_url().map(|s| s.url).as_deref(),
            Some("http://collector:4318/v1/logs")
        );
    }

    #[test]
    fn per_signal_endpoint_wins_and_disabled_turns_everything_off() {
        let mut config = config(Some("http://collector:4318"));
        config.traces_endpoint = Some("http://other:9999/custom".to_owned());
        let traces = config.traces_url().expect("traces configured");
        assert_eq!(traces.url, "http://other:9999/custom");
        assert!(!traces.programmatic);
        config.disabled = true;
        assert!(config.traces_url().is_none() && config.logs_url().is_none());
    }

    #[test]
    fn redaction_drops_credentials_and_query() {
        assert_eq!(
            redact("https://user:secret@collector:4318/v1/traces?token=abc"),
            "https://collector:4318/v1/traces"
        );
        let text = scrub(
            "error sending request for url (https://user:secret@collector:4318/v1/traces?token=abc)",
            "https://user:secret@collector:4318/v1/traces?token=abc",
        );
        assert!(!text.contains("secret") && !text.contains("abc"), "{text}");
    }

    #[test]
    fn the_exporters_own_stack_is_not_exported() {
        for (target, expected) in [
            ("sluice_client::connect", true),
            ("sluice", true),
            ("hyper_util::client", false),
            ("reqwest::connect", false),
            ("h2::proto", false),
            ("h2o", true),
            ("opentelemetry_sdk", false),
            ("sluice::telemetry", false),
        ] {
            assert_eq!(exported_target(target), expected, "{target}");
        }
    }
}
