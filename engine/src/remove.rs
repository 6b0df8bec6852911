//! The one way the tool deletes anything: [`remove_within`] removes a path inside a folder the
//! tool owns (the artefacts folder) and never follows a symbolic link on the way. A link at
//! the path itself loses only the link; a link at any folder between the root and the path
//! refuses the removal, so a `.jobs`, `.tmp` or `.store` that someone pointed elsewhere can
//! never make the tool delete what is there. Every deleter in the engine and the library
//! goes through here (a tidy test checks that no other code calls `remove_dir_all`).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Removes `path` (a file, a link or a folder tree) if it exists. `path` must lie inside
/// `root`, and no folder between `root` and `path` may be a symbolic link. Links inside a
/// removed tree are removed, never followed (`std::fs::remove_dir_all`'s rule).
pub fn remove_within(root: &Path, path: &Path) -> io::Result<()> {
    check_within(root, path)?;
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Fails unless `path` is below `root` with no `..` and no linked folder between them.
pub fn check_within(root: &Path, path: &Path) -> io::Result<()> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let rel = path
        .strip_prefix(root)
        .map_err(|_| refuse(format!("refusing to delete {}: it is not inside {}", path.display(), root.display())))?;
    let parts: Vec<Component<'_>> = rel.components().collect();
    if parts.is_empty() || parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(refuse(format!("refusing to delete {}: not a path below {}", path.display(), root.display())));
    }
    let mut at = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        if let Some(target) = link_target(&at) {
            return Err(refuse(format!(
                "refusing to delete {}: {} is a symbolic link (to {}), and the tool never deletes through a link; \
                 replace it with a real folder",
                path.display(),
                at.display(),
                target.display()
            )));
        }
    }
    Ok(())
}

/// Where `path` points, if it is a symbolic link.
pub fn link_target(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    meta.file_type().is_symlink().then(|| fs::read_link(path).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn never_through_a_link() {
        let base = std::env::temp_dir().join(format!("latentscope-remove-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let (root, outside) = (base.join("artifacts"), base.join("mydata"));
        fs::create_dir_all(root.join(".tmp/scratch")).unwrap();
        fs::create_dir_all(outside.join("thesis.final")).unwrap();
        fs::write(outside.join("a.txt"), b"keep").unwrap();
        fs::write(outside.join("thesis.final/chapter1.tex"), b"keep").unwrap();

        // A linked folder on the way: refused, nothing outside touched.
        std::os::unix::fs::symlink(&outside, root.join(".jobs")).unwrap();
        let err = remove_within(&root, &root.join(".jobs/thesis.final")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // The link itself goes, not what it points at.
        remove_within(&root, &root.join(".jobs")).unwrap();
        assert!(outside.join("thesis.final/chapter1.tex").is_file() && outside.join("a.txt").is_file());

        // Outside the root, the root itself, and `..` are refused; a missing path is fine.
        assert!(remove_within(&root, &outside).is_err());
        assert!(remove_within(&root, &root).is_err());
        assert!(remove_within(&root, &root.join(".tmp/../../mydata")).is_err());
        remove_within(&root, &root.join(".tmp/nothing")).unwrap();
        remove_within(&root, &root.join(".tmp/scratch")).unwrap();
        assert!(!root.join(".tmp/scratch").exists());
        fs::remove_dir_all(base).unwrap();
    }
}
