//! What may name a repository and a revision on the Hub. hf-hub puts a repository id into
//! request paths as it is (`{endpoint}/api/models/{owner}/{name}`), so an id such as `../x`,
//! `a/b?x=1` or `a/%2e%2e` would send an authorised request somewhere else; [`RepoId`] only
//! holds ids that follow the Hub's own rules, and [`check_revision`] refuses revisions that a
//! git ref or commit id cannot be, or that would change a URL's meaning.

use std::fmt;
use std::str::FromStr;

/// The longest owner or name the Hub accepts.
pub const MAX_PART: usize = 96;
/// The longest revision accepted here (git has no limit; the Hub's refs are short).
pub const MAX_REVISION: usize = 255;

const REPO_RULES: &str = "expected OWNER/NAME, each part of ASCII letters, digits, '-', '_' and '.', not starting or ending \
     with '-' or '.', without '--' or '..', at most 96 characters, the name not ending in '.git'";

const REVISION_RULES: &str = "expected a branch, tag or commit id: ASCII letters, digits, '-', '_', '.', '/' and '+', not \
     starting with '-' or '/', not ending with '/', '.' or '.lock', without '..', '//' or a part starting with '.', \
     at most 255 characters";

/// A Hub repository id, `OWNER/NAME`, checked against the Hub's rules: only such a value
/// reaches a URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    id: String,
    slash: usize,
}

/// Why a text is not a [`RepoId`]. The message says what is allowed; the caller names the flag
/// (clap does for `--repo`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a Hub repository id: {problem}; {}", REPO_RULES)]
pub struct BadRepoId {
    pub given: String,
    pub problem: String,
}

impl RepoId {
    /// Parses `OWNER/NAME` (see the module docs for the rules).
    pub fn parse(text: &str) -> Result<Self, BadRepoId> {
        let bad = |problem: String| BadRepoId { given: text.to_owned(), problem };
        let Some((owner, name)) = text.split_once('/') else {
            return Err(bad("it has no '/' between owner and name".into()));
        };
        if name.contains('/') {
            return Err(bad("it has more than one '/'".into()));
        }
        check_part("owner", owner).map_err(bad)?;
        check_part("name", name).map_err(bad)?;
        if name.to_ascii_lowercase().ends_with(".git") {
            return Err(bad("the name ends in '.git'".into()));
        }
        Ok(Self { id: text.to_owned(), slash: owner.len() })
    }

    pub fn owner(&self) -> &str {
        &self.id[..self.slash]
    }

    pub fn name(&self) -> &str {
        &self.id[self.slash + 1..]
    }

    /// `OWNER/NAME`.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

/// One part of a repository id: what is wrong with it, if anything.
fn check_part(what: &str, part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if let Some(c) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("the {what} {part:?} holds {c:?}"));
    }
    if part.len() > MAX_PART {
        return Err(format!("the {what} is {} characters long", part.len()));
    }
    for edge in ['-', '.'] {
        if part.starts_with(edge) {
            return Err(format!("the {what} {part:?} starts with '{edge}'"));
        }
        if part.ends_with(edge) {
            return Err(format!("the {what} {part:?} ends with '{edge}'"));
        }
    }
    for pair in ["--", ".."] {
        if part.contains(pair) {
            return Err(format!("the {what} {part:?} holds '{pair}'"));
        }
    }
    Ok(())
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for RepoId {
    type Err = BadRepoId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for RepoId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

/// Why a text is not a usable revision. The message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a usable revision: {problem}; {}", REVISION_RULES)]
pub struct BadRevision {
    pub given: String,
    pub problem: String,
}

/// Checks a branch, tag or commit id before it goes into a request: the characters git allows
/// in a ref less those that mean something in a URL (`?`, `#`, `%`, `\`, spaces, control
/// characters), and git's rules on dots and slashes (so no `..` and no `.` part, which a URL
/// would resolve as a path step).
pub fn check_revision(revision: &str) -> Result<(), BadRevision> {
    let bad = |problem: String| Err(BadRevision { given: revision.to_owned(), problem });
    if revision.is_empty() {
        return bad("it is empty".into());
    }
    if let Some(c) = revision.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+'))) {
        let what = if c.is_control() {
            format!("a control character ({:?})", c)
        } else if c.is_whitespace() {
            format!("a space ({c:?})")
        } else {
            format!("{c:?}")
        };
        return bad(format!("it holds {what}"));
    }
    if revision.len() > MAX_REVISION {
        return bad(format!("it is {} characters long", revision.len()));
    }
    if revision.starts_with('-') {
        return bad("it starts with '-'".into());
    }
    if revision.starts_with('/') {
        return bad("it starts with '/'".into());
    }
    if revision.ends_with('/') {
        return bad("it ends with '/'".into());
    }
    if revision.contains("..") {
        return bad("it holds '..'".into());
    }
    if revision.contains("//") {
        return bad("it holds '//'".into());
    }
    if revision.split('/').any(|part| part.starts_with('.')) {
        return bad("a part of it starts with '.'".into());
    }
    if revision.ends_with('.') || revision.ends_with(".lock") {
        return bad("it ends with '.' or '.lock'".into());
    }
    Ok(())
}

/// [`check_revision`] as a clap value parser: the revision itself when it passes.
pub fn parse_revision(revision: &str) -> Result<String, BadRevision> {
    check_revision(revision).map(|()| revision.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_repository_ids_parse_into_owner_and_name() {
        for (text, owner, name) in [
            ("me/model", "me", "model"),
            ("Org-1/my_model.v2", "Org-1", "my_model.v2"),
            ("alice/latentscope-run", "alice", "latentscope-run"),
            ("_x/y_", "_x", "y_"),
        ] {
            let id = RepoId::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((id.owner(), id.name(), id.as_str(), id.to_string()), (owner, name, text, text.to_owned()));
            assert_eq!(text.parse::<RepoId>().unwrap(), id);
        }
        assert!(RepoId::parse(&format!("me/{}", "a".repeat(96))).is_ok());
    }

    #[test]
    fn ids_that_would_leave_the_repository_path_are_refused() {
        for (text, problem) in [
            ("../x", "the owner \"..\" starts with '.'"),
            ("me/..", "the name \"..\" starts with '.'"),
            ("a/b?x=1", "the name \"b?x=1\" holds '?'"),
            ("a/b#c", "the name \"b#c\" holds '#'"),
            ("a/%2e%2e", "the name \"%2e%2e\" holds '%'"),
            ("a/b/c", "more than one '/'"),
            ("model", "no '/'"),
            ("/model", "the owner is empty"),
            ("me/", "the name is empty"),
            ("me/-x", "starts with '-'"),
            ("me/x-", "ends with '-'"),
            ("me/x.", "ends with '.'"),
            ("me/a--b", "holds '--'"),
            ("me/a..b", "holds '..'"),
            ("me/a b", "holds ' '"),
            ("me/a\\b", "holds '\\\\'"),
            ("me/ä", "holds 'ä'"),
            ("me/repo.git", "ends in '.git'"),
            ("me/a\nb", "holds '\\n'"),
        ] {
            let e = RepoId::parse(text).unwrap_err();
            assert!(e.problem.contains(problem), "{text}: {}", e.problem);
            let message = e.to_string();
            assert!(message.contains("expected OWNER/NAME") && message.contains("ASCII letters"), "{message}");
        }
        let long = format!("me/{}", "a".repeat(97));
        assert!(RepoId::parse(&long).unwrap_err().problem.contains("97 characters"));
    }

    #[test]
    fn revisions_are_git_refs_that_keep_a_url_intact() {
        for good in ["main", "exp-1", "v1.0", "refs/pr/1", "feature/x_y+z", "77f3279092a1c1579b2250db8eafed0ad422088c"] {
            assert_eq!(parse_revision(good).as_deref(), Ok(good));
        }
        for (bad, problem) in [
            ("", "empty"),
            ("..", "'..'"),
            ("a/../b", "'..'"),
            (".", "starts with '.'"),
            ("a/.hidden", "starts with '.'"),
            ("ma\u{7}in", "control character"),
            ("ma in", "a space"),
            ("main?x=1", "'?'"),
            ("main#x", "'#'"),
            ("%2e%2e", "'%'"),
            ("a\\b", "'\\\\'"),
            ("/main", "starts with '/'"),
            ("main/", "ends with '/'"),
            ("a//b", "'//'"),
            ("-main", "starts with '-'"),
            ("main.lock", "'.lock'"),
            ("main.", "ends with '.'"),
            ("a~1", "'~'"),
            ("a^1", "'^'"),
            ("a:b", "':'"),
            ("a*", "'*'"),
            ("a[1]", "'['"),
            ("@{-1}", "'@'"),
        ] {
            let e = check_revision(bad).unwrap_err();
            assert!(e.problem.contains(problem), "{bad:?}: {}", e.problem);
            assert!(e.to_string().contains("expected a branch, tag or commit id"), "{e}");
        }
        assert!(check_revision(&"a".repeat(256)).unwrap_err().problem.contains("256 characters"));
    }
}
