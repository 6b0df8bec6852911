//! The limits on every request to the Hub, from the environment: a timeout for connecting and
//! for each wait on the server (`LATENTSCOPE_HUB_TIMEOUT_S`, default 30 s) and a number of
//! retries with exponential backoff after a transient failure (`LATENTSCOPE_HUB_RETRIES`,
//! default 3: a timeout, a refused or reset connection, 408, 429 or 5xx), and the one way to
//! build an hf-hub client with them (used by `publish`, `pull`, `metrics --diff hub:` and the
//! dataset download).
//!
//! hf-hub 1.0 has no timeout setting of its own and builds its `reqwest::Client` without one
//! (`HFClientBuilder::build`, hf-hub-1.0.0/src/client.rs), but it takes a ready client
//! (`HFClientBuilder::client`): the timeouts are set on a client built here. Its retry loop
//! (hf-hub-1.0.0/src/retry.rs) retries transient failures, timeouts included, up to
//! `retry_max_attempts` times after the first try, with jittered backoff of at most
//! `base * 2^n` before retry n.
//!
//! One request escapes these limits: hf-hub builds a second client of its own, without a
//! timeout and without a way to replace it, for the HEAD request of `download_file` into the
//! hf cache (`no_redirect_client`, hf-hub-1.0.0/src/client.rs, used by
//! `head_with_relative_redirects` from repository/download.rs). [`download_to_cache`] asks for
//! the same file through the limited client first, so a Hub that does not answer fails there.

use std::path::PathBuf;
use std::time::Duration;

use hf_hub::{HFClientBuilder, HFClientSync, HFError, HFRepositorySync, RepoType};

use super::HubError;

/// Seconds to wait for a connection and for each answer (decimals allowed).
pub const TIMEOUT_VAR: &str = "LATENTSCOPE_HUB_TIMEOUT_S";
/// Retries after the first try of a request that failed transiently.
pub const RETRIES_VAR: &str = "LATENTSCOPE_HUB_RETRIES";
pub const DEFAULT_TIMEOUT_S: u64 = 30;
pub const DEFAULT_RETRIES: usize = 3;
/// A day: more is a typo, and a request that long is a hang.
const MAX_TIMEOUT_S: f64 = 86_400.0;
const MAX_RETRIES: usize = 20;
/// The backoff before retry n (from 1) is at most `BASE_DELAY * 2^n` (hf-hub's schedule).
const BASE_DELAY: Duration = Duration::from_millis(200);

/// How long a request may wait, and how often a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub timeout: Duration,
    pub retries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(DEFAULT_TIMEOUT_S), retries: DEFAULT_RETRIES }
    }
}

/// An environment variable's value; `None` when unset or empty.
fn var(name: &'static str) -> Result<Option<String>, HubError> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(HubError::BadSetting { var: name, value: v.to_string_lossy().into_owned(), expected: "text" })
        }
    }
}

impl Limits {
    /// The limits `LATENTSCOPE_HUB_TIMEOUT_S` and `LATENTSCOPE_HUB_RETRIES` set (the defaults
    /// where unset or empty).
    pub fn from_env() -> Result<Self, HubError> {
        Self::parse(var(TIMEOUT_VAR)?.as_deref(), var(RETRIES_VAR)?.as_deref())
    }

    /// The limits from the two settings' values (`None`: the default).
    pub fn parse(timeout_s: Option<&str>, retries: Option<&str>) -> Result<Self, HubError> {
        let mut limits = Self::default();
        if let Some(text) = timeout_s {
            let s: f64 = text.trim().parse().map_err(|_| HubError::BadSetting {
                var: TIMEOUT_VAR,
                value: text.to_owned(),
                expected: "a number of seconds above 0, at most 86400",
            })?;
            if !(s > 0.0 && s <= MAX_TIMEOUT_S) {
                return Err(HubError::BadSetting {
                    var: TIMEOUT_VAR,
                    value: text.to_owned(),
                    expected: "a number of seconds above 0, at most 86400",
                });
            }
            limits.timeout = Duration::from_secs_f64(s);
        }
        if let Some(text) = retries {
            limits.retries = text.trim().parse::<usize>().ok().filter(|n| *n <= MAX_RETRIES).ok_or_else(|| HubError::BadSetting {
                var: RETRIES_VAR,
                value: text.to_owned(),
                expected: "a whole number from 0 to 20",
            })?;
        }
        Ok(limits)
    }

    /// Tries of one request: the first and the retries.
    pub fn tries(&self) -> usize {
        self.retries + 1
    }

    /// The longest one request can wait on a Hub that never answers: every try up to the
    /// timeout, and the longest backoff between them.
    pub fn budget(&self) -> Duration {
        let backoff: Duration = (1..=self.retries as u32).map(|n| BASE_DELAY * 2u32.saturating_pow(n.min(16))).sum();
        self.timeout * self.tries() as u32 + backoff
    }

    /// The timeout in seconds, as the messages show it (`30`, `0.5`).
    pub fn timeout_text(&self) -> String {
        format!("{}", self.timeout.as_secs_f64())
    }

    /// An hf-hub client builder for `endpoint` whose every request obeys these limits; the
    /// caller adds the token, if any (without one, hf-hub looks up `HF_TOKEN` and the token
    /// file itself).
    pub fn builder(&self, endpoint: &str) -> Result<HFClientBuilder, HubError> {
        let user_agent = format!("latentscope/{}", crate::VERSION);
        // `read_timeout` runs from the start of a request until its answer's headers, and again
        // for each wait on its body; `connect_timeout` bounds the connection on its own.
        let http = reqwest::Client::builder()
            .user_agent(user_agent.clone())
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout)
            .build()
            .map_err(|e| HubError::Request { action: "setting up the HTTP client".into(), detail: e.to_string() })?;
        Ok(HFClientBuilder::new()
            .endpoint(endpoint)
            .user_agent(user_agent)
            .client(http)
            .retry_max_attempts(self.retries)
            .retry_base_delay(BASE_DELAY))
    }

    /// What a transport failure (no answer in time, no connection) means, naming the
    /// endpoint and the settings; `None` for any other error (an HTTP status, a bad answer).
    pub fn transport_error(&self, e: &HFError, endpoint: &str, action: &str, detail: impl FnOnce() -> String) -> Option<HubError> {
        let HFError::Request { source, .. } = e else { return None };
        if source.is_builder() {
            // A request that could not be formed (a bad endpoint URL) was never sent.
            return None;
        }
        let endpoint = shown_endpoint(endpoint);
        let action = action.to_owned();
        Some(if source.is_timeout() {
            HubError::Timeout { endpoint, action, timeout_s: self.timeout_text(), tries: self.tries() }
        } else {
            HubError::Unreachable { endpoint, action, tries: self.tries(), detail: detail() }
        })
    }
}

/// A blocking client for `endpoint` with the limits of the environment, for callers outside
/// this module's [`super::client::Hub`] (the dataset download). hf-hub finds the token itself.
pub fn client_sync(endpoint: &str) -> Result<(HFClientSync, Limits), HubError> {
    let limits = Limits::from_env()?;
    let client = limits
        .builder(endpoint)?
        .build_sync()
        .map_err(|e| HubError::Request { action: "setting up the client".into(), detail: e.to_string() })?;
    Ok((client, limits))
}

/// `hf_hub`'s `download_file` into its cache, behind a HEAD request through the limited
/// client: hf-hub's own HEAD for the cache has no timeout (see the module docs), so a Hub that
/// accepts connections and never answers fails here, within [`Limits::budget`], instead of
/// hanging. A Hub that answers this request and then stops answering can still hang the
/// second one; nothing short of a patched hf-hub bounds that.
pub fn download_to_cache<T: RepoType>(repo: &HFRepositorySync<T>, file: &str, revision: &str) -> Result<PathBuf, HFError> {
    repo.file_exists().filename(file).revision(revision).send()?;
    repo.download_file().filename(file).revision(revision).send()
}

/// The endpoint as messages show it: without any `user:password@` part.
pub fn shown_endpoint(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else { return endpoint.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_parse() {
        assert_eq!(Limits::parse(None, None).unwrap(), Limits { timeout: Duration::from_secs(30), retries: 3 });
        let l = Limits::parse(Some("1.5"), Some("0")).unwrap();
        assert_eq!((l.timeout, l.retries, l.tries(), l.timeout_text()), (Duration::from_millis(1500), 0, 1, "1.5".to_owned()));
        assert_eq!(Limits::default().timeout_text(), "30");
        for (t, r, var) in [
            (Some("0"), None, TIMEOUT_VAR),
            (Some("-1"), None, TIMEOUT_VAR),
            (Some("soon"), None, TIMEOUT_VAR),
            (Some("NaN"), None, TIMEOUT_VAR),
            (Some("1e9"), None, TIMEOUT_VAR),
            (None, Some("-1"), RETRIES_VAR),
            (None, Some("1.5"), RETRIES_VAR),
            (None, Some("21"), RETRIES_VAR),
        ] {
            let e = Limits::parse(t, r).unwrap_err().to_string();
            assert!(e.starts_with(var), "{e}");
        }
    }

    #[test]
    fn the_budget_bounds_tries_and_backoff() {
        let l = Limits { timeout: Duration::from_secs(1), retries: 1 };
        assert_eq!(l.budget(), Duration::from_millis(1000 * 2 + 400));
        let l = Limits::default();
        assert_eq!(l.budget(), Duration::from_millis(30_000 * 4 + 400 + 800 + 1600));
    }

    #[test]
    fn messages_name_the_endpoint_and_the_settings_but_no_credentials() {
        assert_eq!(shown_endpoint("http://127.0.0.1:1234"), "http://127.0.0.1:1234");
        assert_eq!(shown_endpoint("https://user:secret@hub.example/x@y"), "https://hub.example/x@y");
        let e = HubError::Timeout {
            endpoint: "http://127.0.0.1:1234".into(),
            action: "looking up me/run at main".into(),
            timeout_s: "30".into(),
            tries: 4,
        }
        .to_string();
        assert!(e.contains("the Hub at http://127.0.0.1:1234 did not answer within 30 s"), "{e}");
        assert!(e.contains(TIMEOUT_VAR) && e.contains(RETRIES_VAR), "{e}");
        let e = HubError::Unreachable { endpoint: "http://x".into(), action: "a".into(), tries: 2, detail: "refused".into() }.to_string();
        assert!(e.starts_with("cannot reach the Hub at http://x") && e.contains(RETRIES_VAR) && e.ends_with("refused"), "{e}");
    }
}
