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

/// Removes what killed processes left in `dir`: entries named `<prefix><pid>` or
/// `<prefix><pid>.<anything>` whose process no longer runs on this machine (and never this
/// process's own), at least `min_age` old. Returns the bytes freed. Without `/proc` (not
/// Linux) nothing can be known dead, so nothing goes.
pub fn remove_orphans(dir: &Path, prefix: &str, min_age: std::time::Duration) -> u64 {
    let proc = Path::new("/proc");
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    if !proc.join("self").exists() {
        return 0;
    }
    let mut freed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|rest| rest.split('.').next()?.parse::<u32>().ok()) else { continue };
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= min_age);
        if pid == std::process::id() || !old || proc.join(pid.to_string()).exists() {
            continue;
        }
        let size = super::store::dir_size(&entry.path());
        match remove_within(dir, &entry.path()) {
            Ok(()) => freed += size,
            Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
        }
    }
    freed
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

    #[cfg(target_os = "linux")]
    #[test]
    fn orphans_of_dead_processes_go_live_ones_stay() {
        let dir = std::env::temp_dir().join(format!("latentscope-orphans-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(".pull.4000000.0")).unwrap();
        fs::write(dir.join(".page.tmp.4000001"), b"partial").unwrap();
        fs::write(dir.join(format!(".page.tmp.{}", std::process::id())), b"mine").unwrap();
        fs::write(dir.join(".page.tmp.1"), b"init runs").unwrap();
        fs::write(dir.join("page"), b"keep").unwrap();
        assert_eq!(remove_orphans(&dir, ".page.tmp.", std::time::Duration::ZERO), 7);
        // A minimum age not reached keeps them.
        assert_eq!(remove_orphans(&dir, ".pull.", std::time::Duration::from_secs(3600)), 0);
        assert_eq!(remove_orphans(&dir, ".pull.", std::time::Duration::ZERO), 0, "an empty folder frees no bytes");
        let mut left: Vec<String> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut want = vec![format!(".page.tmp.{}", std::process::id()), ".page.tmp.1".to_owned(), "page".to_owned()];
        want.sort();
        assert_eq!(left, want);
        fs::remove_dir_all(dir).unwrap();
    }
}
