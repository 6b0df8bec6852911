//! The `hf-hub` client for one endpoint and token, and the translation of its errors into
//! [`HubError`]s that say what failed and never show the token.

use hf_hub::{HFClientSync, HFError};

use super::auth::Token;
use super::net::{self, Limits};
use super::{HubError, RepoId};

/// The public Hub, used when neither `--endpoint` nor `HF_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `--endpoint`, else `HF_ENDPOINT`, else the public Hub (trailing `/` removed).
pub fn endpoint(flag: Option<&str>) -> String {
    let e = match flag {
        Some(e) => e.to_owned(),
        None => std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
    };
    e.trim_end_matches('/').to_owned()
}

/// Which access an operation needs, for the message of a 401/403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

pub struct Hub {
    pub client: HFClientSync,
    pub endpoint: String,
    pub repo: String,
    /// The timeout and retries every request of `client` obeys.
    pub limits: Limits,
    token: Option<Token>,
    access: Access,
}

impl Hub {
    /// A client for `repo` at `endpoint`. Every request times out after
    /// `LATENTSCOPE_HUB_TIMEOUT_S` without an answer, and transient failures (timeouts,
    /// connection errors, 408, 429, 5xx) are retried `LATENTSCOPE_HUB_RETRIES` times with
    /// exponential backoff (see [`net`]).
    pub fn new(endpoint: &str, repo: &RepoId, token: Option<Token>, access: Access) -> Result<Self, HubError> {
        let limits = Limits::from_env()?;
        let mut builder = limits.builder(endpoint)?;
        if let Some(t) = &token {
            builder = builder.token(t.secret());
        }
        let client =
            builder.build_sync().map_err(|e| HubError::Request { action: "setting up the client".into(), detail: e.to_string() })?;
        Ok(Self { client, endpoint: endpoint.to_owned(), repo: repo.to_string(), limits, token, access })
    }

    pub fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(t) => t.redact(text),
            None => text.to_owned(),
        }
    }

    /// Turns a client error during `action` into a [`HubError`].
    pub fn error(&self, action: &str, e: HFError) -> HubError {
        let detail = self.redact(&chain(&e));
        let action = action.to_owned();
        match &e {
            HFError::AuthRequired { context } | HFError::Forbidden { context } => {
                let status = context.status.as_u16();
                let detail = context.server_message.as_deref().map(|m| format!(" (the Hub said: {})", self.redact(m))).unwrap_or_default();
                match self.access {
                    Access::Write => HubError::NoWriteAccess { repo: self.repo.clone(), status, detail },
                    Access::Read => HubError::NoReadAccess { repo: self.repo.clone(), status, detail },
                }
            }
            HFError::Request { .. } => {
                self.limits.transport_error(&e, &self.endpoint, &action, || detail.clone()).unwrap_or(HubError::Request { action, detail })
            }
            HFError::RateLimited { .. } => HubError::Request {
                action,
                detail: format!("rate limited after {} tries (set {} to change): {detail}", self.limits.tries(), net::RETRIES_VAR),
            },
            HFError::Http { context } if matches!(context.status.as_u16(), 408 | 500 | 502 | 503 | 504) => HubError::Request {
                action,
                detail: format!("{detail} (after {} tries; set {} to change)", self.limits.tries(), net::RETRIES_VAR),
            },
            _ => HubError::Request { action, detail },
        }
    }
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
