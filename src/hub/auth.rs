//! The Hub token: `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `$HF_HOME/token` (the file
//! `hf auth login` writes), the same order the Hub's own tools use. The token is held in a
//! type whose `Debug` hides it, and [`Token::redact`] scrubs it from any text we print.

use std::path::PathBuf;

use super::HubError;

#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// The secret, for handing to the client only.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the token replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "***")
        }
    }
}

/// Where the token file is looked for when `HF_TOKEN` is unset.
pub fn token_path() -> PathBuf {
    match std::env::var_os("HF_TOKEN_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => hf_hub::hf_home().join("token"),
    }
}

/// The token, if one is configured.
pub fn find_token() -> Option<Token> {
    if let Ok(t) = std::env::var("HF_TOKEN") {
        let t = t.trim();
        if !t.is_empty() {
            return Some(Token(t.to_owned()));
        }
    }
    let text = std::fs::read_to_string(token_path()).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| Token(t.to_owned()))
}

/// The token, or the error that says how to provide one.
pub fn require_token() -> Result<Token, HubError> {
    find_token().ok_or_else(|| HubError::NoToken { path: token_path().display().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_occurrence_and_hides_debug() {
        let t = Token("hf_secret".into());
        assert_eq!(t.redact("a hf_secret b hf_secret"), "a *** b ***");
        assert_eq!(format!("{t:?}"), "Token(***)");
    }
}
