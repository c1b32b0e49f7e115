//! Per-process scratch directories that survive nothing. Each process owns `<base>/<owner_id>/`
//! and holds an exclusive lock on a file inside it for as long as it lives; the kernel drops the
//! lock when the process dies however it dies, so a successor can tell leftovers of a crashed or
//! SIGKILLed process (lock free) from a live neighbour's directory (lock held) and sweep them.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The lock file inside every owner directory; the dot keeps it apart from job ids.
const LOCK_FILE: &str = ".owner.lock";
/// A directory without a lock file is swept only when older than this: a process that is
/// creating its directory right now has not written its lock file yet.
const LOCKLESS_GRACE: Duration = Duration::from_secs(60);

/// This process's scratch directory; removed when dropped.
#[derive(Debug)]
pub struct ScratchRoot {
    path: PathBuf,
    /// Held for the life of this value: the lock is what marks the directory as alive.
    _lock: File,
}

impl ScratchRoot {
    /// Creates `<base>/<owner_id>/` holding a lock file locked exclusively for the life of this
    /// value, after first removing every sibling directory under `base` whose lock can be taken
    /// (its owner process is gone: crash, SIGKILL). Returns how many it swept.
    pub fn create(base: &Path, owner_id: &str) -> io::Result<(ScratchRoot, usize)> {
        check_component(owner_id, "owner id")?;
        fs::create_dir_all(base)?;
        let swept = sweep(base)?;

        let path = base.join(owner_id);
        match fs::create_dir(&path) {
            Ok(()) => {}
            // Still there only if its lock is held: another live process uses the same id.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "scratch directory {} is in use by another live process",
                        path.display()
                    ),
                ))
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        tracing::info!(path = %path.display(), swept, "scratch directory ready");
        Ok((ScratchRoot { path, _lock: lock }, swept))
    }

    /// This process's scratch directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `<root>/<job_id>/`, removing leftovers of an earlier attempt first.
    pub fn job_dir(&self, job_id: &str) -> io::Result<JobDir> {
        check_component(job_id, "job id")?;
        let path = self.path.join(job_id);
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "removed leftover job directory"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir(&path)?;
        Ok(JobDir { path })
    }
}

/// Already gone is as good as removed.
fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path).or_else(ignore_missing) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove scratch directory");
        }
    }
}

/// One job's scratch directory; removed (best effort) when dropped.
#[derive(Debug)]
pub struct JobDir {
    path: PathBuf,
}

impl JobDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove job directory")
            }
        }
    }
}

/// Ids become path components: one plain name, nothing that walks elsewhere or hides.
fn check_component(name: &str, what: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 200;
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {name:?} cannot be used as a directory name"),
        ))
    }
}

/// Removes every directory under `base` whose owner is gone; returns how many.
fn sweep(base: &Path) -> io::Result<usize> {
    let mut swept = 0;
    for entry in fs::read_dir(base)? {
        let entry = entry?;
        // Symlinks and files are not ours to judge.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        match owner_is_gone(&dir) {
            Ok(Some(lock)) => {
                // Remove while holding the lock so nobody can adopt the directory meanwhile.
                let removed = fs::remove_dir_all(&dir);
                drop(lock);
                match removed {
                    Ok(()) => {
                        tracing::info!(path = %dir.display(), "swept scratch directory of a dead process");
                        swept += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %dir.display(), error = %e, "could not sweep scratch directory")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(path = %dir.display(), error = %e, "skipping scratch directory")
            }
        }
    }
    Ok(swept)
}

/// `Some(guard)` when the directory's owner is gone: its lock file could be locked (the guard
/// holds it), or it has none and is old enough not to be one being set up right now.
fn owner_is_gone(dir: &Path) -> io::Result<Option<Option<File>>> {
    match OpenOptions::new().write(true).open(dir.join(LOCK_FILE)) {
        Ok(file) => match file.try_lock() {
            Ok(()) => Ok(Some(Some(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let age = fs::metadata(dir)?
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            Ok((age > LOCKLESS_GRACE).then_some(None))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_dead_owners_and_keeps_live_ones() {
        let base = tempfile::tempdir().unwrap();
        let (live, swept) = ScratchRoot::create(base.path(), "worker-live").unwrap();
        assert_eq!(swept, 0);
        let live_job = live.job_dir("job-1").unwrap();
        fs::write(live_job.path().join("input"), b"data").unwrap();

        // A dead process's leftovers: lock file present but nobody holds it.
        let dead = base.path().join("worker-dead");
        fs::create_dir_all(dead.join("job-9")).unwrap();
        fs::write(dead.join(LOCK_FILE), b"").unwrap();
        fs::write(dead.join("job-9").join("output"), b"partial").unwrap();
        // A fresh directory without a lock file may be a process mid-setup: left alone.
        let fresh = base.path().join("worker-starting");
        fs::create_dir(&fresh).unwrap();
        // Files in base are not directories and are ignored.
        fs::write(base.path().join("README"), b"scratch").unwrap();

        let (second, swept) = ScratchRoot::create(base.path(), "worker-2").unwrap();
        assert_eq!(swept, 1);
        assert!(!dead.exists());
        assert!(fresh.exists());
        assert!(
            live_job.path().join("input").exists(),
            "a held lock protects the directory"
        );
        assert!(second.path().join(LOCK_FILE).exists());

        // The same owner id while its holder lives is refused.
        let err = ScratchRoot::create(base.path(), "worker-live").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(live.path().exists());

        // Dropping cleans up after itself.
        let live_path = live.path().to_path_buf();
        drop(live_job);
        drop(live);
        assert!(!live_path.exists());
    }

    #[test]
    fn job_dirs_start_fresh_and_vanish_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let (root, _) = ScratchRoot::create(base.path(), "w").unwrap();
        let job = root.job_dir("j").unwrap();
        fs::write(job.path().join("stale"), b"x").unwrap();
        std::mem::forget(job); // as if the previous attempt crashed
        let job = root.job_dir("j").unwrap();
        assert!(!job.path().join("stale").exists());
        let path = job.path().to_path_buf();
        drop(job);
        assert!(!path.exists());
        assert!(root.job_dir("../escape").is_err());
        assert!(root.job_dir("").is_err());
        assert!(ScratchRoot::create(base.path(), ".hidden").is_err());
    }
}
