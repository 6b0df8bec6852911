//! Sharing a finished run through the Hugging Face Hub: `publish` uploads the artefacts, a
//! model card and the lock file as one commit of a model repository; `pull` brings them back
//! into the local store, verified against the published lock file, so that `run` finds every
//! stage after `download` cached.
//!
//! The Hub is reached only through the `hf-hub` crate (repository, commit and download API),
//! with a timeout and a bounded number of retries on every request ([`net`]); only a checked
//! [`RepoId`] and revision ([`check_revision`]) go into a request.

pub mod auth;
pub mod card;
pub mod client;
pub mod layout;
pub mod net;
pub mod publish;
pub mod pull;
pub mod repo_id;

pub use publish::{publish, PublishOptions, PublishOutcome};
pub use pull::{published_metrics, pull, PullOptions, PullReport};
pub use repo_id::{check_revision, parse_revision, BadRepoId, BadRevision, RepoId};

/// What can go wrong talking to the Hub. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` (token file {path}); publishing needs a token with write access")]
    NoToken { path: String },
    #[error("the Hub refused the token (HTTP {status}) for {repo}: it lacks write access to that repository{detail}")]
    NoWriteAccess { repo: String, status: u16, detail: String },
    #[error("the Hub refused access (HTTP {status}) to {repo}: the repository is private or gated; set HF_TOKEN to a token that can read it{detail}")]
    NoReadAccess { repo: String, status: u16, detail: String },
    #[error("cannot reach the Hub at {endpoint} while {action} ({tries} tries; set LATENTSCOPE_HUB_RETRIES / LATENTSCOPE_HUB_TIMEOUT_S or check the endpoint): {detail}")]
    Unreachable { endpoint: String, action: String, tries: usize, detail: String },
    /// Every try of a request ran out of time (see [`net::Limits`]).
    #[error("the Hub at {endpoint} did not answer within {timeout_s} s (up to {tries} tries) while {action}; set LATENTSCOPE_HUB_TIMEOUT_S / LATENTSCOPE_HUB_RETRIES or check the endpoint")]
    Timeout { endpoint: String, action: String, timeout_s: String, tries: usize },
    /// A network setting (`LATENTSCOPE_HUB_TIMEOUT_S`, `LATENTSCOPE_HUB_RETRIES`) that is not a
    /// value it can take.
    #[error("{var}={value:?}: expected {expected}")]
    BadSetting { var: &'static str, value: String, expected: &'static str },
    #[error("the Hub failed while {action}: {detail}")]
    Request { action: String, detail: String },
    #[error("{repo} at {revision} was not found on the Hub (if it is private, set HF_TOKEN to a token that can read it)")]
    NotFound { repo: String, revision: String },
    #[error("{repo} at {revision} has no {file}: it was not published by latentscope")]
    NotPublished { repo: String, revision: String, file: String },
    #[error("{file}: {message}")]
    BadPublished { file: String, message: String },
    #[error("{file}: hash mismatch: blake3 {got}, the published lock file says {expected}; nothing from it entered the store")]
    HashMismatch { file: String, expected: String, got: String },
    #[error("refusing to publish: {} stale stage(s): {}. Run `cargo xtask pipeline run` first", stages.len(), stages.join(", "))]
    Stale { stages: Vec<String> },
    #[error("--repo {0}")]
    BadRepoId(#[from] BadRepoId),
    #[error("--revision {0}")]
    BadRevision(#[from] BadRevision),
}
