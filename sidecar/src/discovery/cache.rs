//! `--cache-dir`: the last good snapshot on disk, so a sidecar that starts while the
//! control plane is down still routes. Written like the control plane's file store:
//! temp file, fsync, rename, so a crash leaves the old or the new file, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::received::Received;

const FILE: &str = "snapshot.json";

/// Replaces the cached snapshot.
pub(super) fn write(dir: &Path, received: &Received) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let bytes = serde_json::to_vec(received).map_err(std::io::Error::other)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

/// The cached snapshot; `None` when there is none yet.
pub(super) fn read(dir: &Path) -> std::io::Result<Option<Received>> {
    match fs::read(dir.join(FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_snapshots_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let r = Received {
            revision: 4,
            rules: "x".into(),
            endpoints: Default::default(),
        };
        write(dir.path(), &r).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(r));
    }
}
