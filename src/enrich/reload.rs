//! Files read at startup and read again when they change (service tags, MaxMind databases):
//! the current table is shared as an `Arc`, swapped whole by a successful reload and kept by a
//! failed one.
//!
//! A change is a different size, modification time or inode (a file renamed over the old one,
//! as `geoipupdate` and careful downloads do, keeps neither). The stamp is taken before the
//! file is read, so a write that lands during the read changes the stamp again and is picked
//! up by the next check. A failed reload records the stamp it failed on: the same broken file
//! is reported once, not at every check.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use super::EnrichError;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// What a stat of the path showed: a file version, or that it could not be read.
type Seen = Result<Stamp, std::io::ErrorKind>;

fn stamp(path: &Path) -> Result<Stamp, std::io::Error> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode,
    })
}

/// What a reload check did.
#[derive(Debug)]
pub enum Reload {
    /// The file is as it was (or as it was when it last failed to load).
    Unchanged,
    /// The file changed and the new version is in use.
    Reloaded,
    /// The file changed but could not be loaded: the previous version stays in use.
    Failed(EnrichError),
}

/// A table loaded from a file, reloadable.
pub struct Watched<T> {
    path: PathBuf,
    load: fn(&Path) -> Result<T, EnrichError>,
    current: RwLock<Arc<T>>,
    seen: Mutex<Seen>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("path", &self.path).finish()
    }
}

impl<T> Watched<T> {
    /// Loads `path` with `load`; its error (naming the file) is a startup error.
    pub fn open(
        path: &Path,
        load: fn(&Path) -> Result<T, EnrichError>,
    ) -> Result<Self, EnrichError> {
        let seen = stamp(path).map_err(|e| e.kind());
        let table = load(path)?;
        Ok(Watched {
            path: path.to_owned(),
            load,
            current: RwLock::new(Arc::new(table)),
            seen: Mutex::new(seen),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table in use now. Holders keep their version alive across a reload.
    pub fn current(&self) -> Arc<T> {
        // A poisoned lock only means a holder panicked; the Arc inside is whole either way.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Loads the file again if it changed since it was last loaded or last failed to load.
    /// Blocking (reads and parses the file): call it from a blocking context.
    pub fn reload_if_changed(&self) -> Reload {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.path).map_err(|e| e.kind());
        if now == *seen {
            return Reload::Unchanged;
        }
        *seen = now;
        if let Err(kind) = now {
            return Reload::Failed(EnrichError::Reload {
                path: self.path.clone(),
                reason: format!("cannot read: {kind}"),
            });
        }
        match (self.load)(&self.path) {
            Ok(table) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_number(path: &Path) -> Result<u64, EnrichError> {
        let text = std::fs::read_to_string(path).map_err(|e| EnrichError::Reload {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        text.trim().parse().map_err(|_| EnrichError::Reload {
            path: path.to_owned(),
            reason: format!("{text:?} is no number"),
        })
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_table_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "1").unwrap();
        let w = Watched::open(&path, load_number).unwrap();
        assert_eq!(*w.current(), 1);
        assert!(matches!(w.reload_if_changed(), Reload::Unchanged));

        // Another length: a change whatever the clock's resolution.
        std::fs::write(&path, "22").unwrap();
        let before = w.current();
        assert!(matches!(w.reload_if_changed(), Reload::Reloaded));
        assert_eq!(*w.current(), 22);
        assert_eq!(*before, 1, "a holder keeps its version");

        std::fs::write(&path, "x33").unwrap();
        match w.reload_if_changed() {
            Reload::Failed(e) => assert!(e.to_string().contains("\"x33\" is no number"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(*w.current(), 22);
        assert!(
            matches!(w.reload_if_changed(), Reload::Unchanged),
            "reported once"
        );

        std::fs::remove_file(&path).unwrap();
        match w.reload_if_changed() {
            Reload::Failed(e) => assert!(e.to_string().contains("cannot read"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(*w.current(), 22);

        // Renamed over the path: another inode.
        let tmp = dir.path().join("n.tmp");
        std::fs::write(&tmp, "4444").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(matches!(w.reload_if_changed(), Reload::Reloaded));
        assert_eq!(*w.current(), 4444);
    }

    #[test]
    fn a_file_that_cannot_be_loaded_at_startup_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n");
        std::fs::write(&path, "no").unwrap();
        let err = Watched::open(&path, load_number).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}
