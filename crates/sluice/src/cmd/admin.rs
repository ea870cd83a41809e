//! `sluice targets …` and `sluice checkpoints …`: a worker's admin API (`/v1/admin/...`) from the
//! command line. Prints the worker's JSON answer on stdout; a refusal goes to stderr with its
//! status and exits non-zero.
//!
//! What it must NOT do: print or log the token (it is read from `SLUICE_ADMIN_TOKEN` or a file,
//! and only sent as the bearer header).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Where the worker is and how to authenticate.
#[derive(Debug, Args)]
pub struct WorkerApi {
    /// The worker's operations server, e.g. `http://127.0.0.1:9090`.
    #[arg(
        long,
        global = true,
        env = "SLUICE_WORKER",
        default_value = "http://127.0.0.1:9090"
    )]
    pub worker: String,
    /// A file holding the admin token (one trailing newline removed); without it the token is
    /// read from `SLUICE_ADMIN_TOKEN`.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `sluice targets`.
#[derive(Debug, Args)]
pub struct TargetsArgs {
    #[command(flatten)]
    pub api: WorkerApi,
    #[command(subcommand)]
    pub verb: TargetsVerb,
}

/// What to do with targets.
#[derive(Debug, Subcommand)]
pub enum TargetsVerb {
    /// The running and the paused targets.
    List,
    /// One target: paused or not, and its `/status` row.
    Get { id: String },
    /// Stop a target with its final checkpoint and keep it paused.
    Pause { id: String },
    /// Start a paused target from its final checkpoint.
    Resume { id: String },
    /// Stop a target with its final checkpoint and start it again from it.
    Restart { id: String },
    /// Define (or change) a target in the targets topic from a target file (validated by the
    /// worker as `sluice validate` does; a target a file defines is refused).
    Put {
        id: String,
        /// The target file (YAML) to define it with.
        file: PathBuf,
    },
    /// Remove a target the targets topic defines (its owner stops it).
    Delete { id: String },
}

/// Arguments of `sluice checkpoints`.
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    #[command(flatten)]
    pub api: WorkerApi,
    #[command(subcommand)]
    pub verb: CheckpointsVerb,
}

/// What to do with checkpoints.
#[derive(Debug, Subcommand)]
pub enum CheckpointsVerb {
    /// A target's checkpoint as the worker last stored it.
    Get { id: String },
    /// Move a target's checkpoint: it resumes after `event_id` (paused, written, resumed).
    Set { id: String, event_id: String },
    /// Reset a target's checkpoint: it starts over without `Last-Event-ID` (paused, written,
    /// resumed).
    Reset { id: String },
}

/// Runs `sluice targets VERB`.
pub async fn targets(args: TargetsArgs) -> ExitCode {
    let (method, path, body) = match &args.verb {
        TargetsVerb::List => (reqwest::Method::GET, "/targets".to_owned(), None),
        TargetsVerb::Get { id } => (
            reqwest::Method::GET,
            format!("/targets/{}", segment(id)),
            None,
        ),
        TargetsVerb::Pause { id } => (
            reqwest::Method::POST,
            format!("/targets/{}/pause", segment(id)),
            None,
        ),
        TargetsVerb::Resume { id } => (
            reqwest::Method::POST,
            format!("/targets/{}/resume", segment(id)),
            None,
        ),
        TargetsVerb::Restart { id } => (
            reqwest::Method::POST,
            format!("/targets/{}/restart", segment(id)),
            None,
        ),
        TargetsVerb::Put { id, file } => {
            let yaml = match std::fs::read_to_string(file) {
                Ok(yaml) => yaml,
                Err(error) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "sluice targets: cannot read the target file {}: {error}",
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            (
                reqwest::Method::PUT,
                format!("/targets/{}", segment(id)),
                Some(("application/yaml", yaml)),
            )
        }
        TargetsVerb::Delete { id } => (
            reqwest::Method::DELETE,
            format!("/targets/{}", segment(id)),
            None,
        ),
    };
    call("targets", &args.api, method, &path, body).await
}

/// Runs `sluice checkpoints VERB`.
pub async fn checkpoints(args: CheckpointsArgs) -> ExitCode {
    let (method, path, body) = match &args.verb {
        CheckpointsVerb::Get { id } => (
            reqwest::Method::GET,
            format!("/targets/{}/checkpoint", segment(id)),
            None,
        ),
        CheckpointsVerb::Set { id, event_id } => (
            reqwest::Method::PUT,
            format!("/targets/{}/checkpoint", segment(id)),
            Some((
                "application/json",
                serde_json::json!({ "checkpoint": event_id }).to_string(),
            )),
        ),
        CheckpointsVerb::Reset { id } => (
            reqwest::Method::DELETE,
            format!("/targets/{}/checkpoint", segment(id)),
            None,
        ),
    };
    call("checkpoints", &args.api, method, &path, body).await
}

/// A target id as one path segment (ids are `[A-Za-z0-9._-]`; anything else is escaped).
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn token(api: &WorkerApi) -> Result<String, String> {
    let token = match &api.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the token file {}: {error}", path.display()))?,
        None => std::env::var("SLUICE_ADMIN_TOKEN")
            .map_err(|_| "set SLUICE_ADMIN_TOKEN or pass --token-file".to_owned())?,
    };
    let token = token.strip_suffix('\n').unwrap_or(&token).to_owned();
    if token.is_empty() {
        return Err("the admin token is empty".to_owned());
    }
    Ok(token)
}

async fn call(
    command: &str,
    api: &WorkerApi,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, String)>,
) -> ExitCode {
    let fail = |message: String| {
        let _ = writeln!(std::io::stderr(), "sluice {command}: {message}");
        ExitCode::FAILURE
    };
    let token = match token(api) {
        Ok(token) => token,
        Err(message) => return fail(message),
    };
    let url = format!("{}/v1/admin{path}", api.worker.trim_end_matches('/'));
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some((content_type, body)) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
    }
    let answer = request.send().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            return fail(format!(
                "cannot reach the worker at {}: {error}",
                api.worker
            ));
        }
    };
    let status = answer.status();
    let body = match answer.text().await {
        Ok(body) => body,
        Err(error) => return fail(format!("reading the worker's answer: {error}")),
    };
    if status.is_success() {
        let _ = writeln!(std::io::stdout(), "{body}");
        ExitCode::SUCCESS
    } else {
        fail(format!("{status}: {body}"))
    }
}
