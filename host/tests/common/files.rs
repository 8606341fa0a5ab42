//! Files the namespace tests write — a directory of their own, a spec file in one — all
//! removed on drop, whether the test passes or fails.

use serde_json::Value;
use std::path::{Path, PathBuf};
use synthnet_testkit::netns;

/// A new temporary directory, named after `tag` and unique in the machine (pid and a
/// counter), removed with its contents on drop. Derefs to its path.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(netns::unique(tag));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A spec file (`spec.json`) in a temporary directory of its own: the bridge may write
/// it back (API changes) and tests may put more files beside it.
pub struct SpecFile {
    pub dir: TempDir,
    pub path: PathBuf,
}

impl SpecFile {
    pub fn new(tag: &str, text: &str) -> SpecFile {
        let dir = TempDir::new(tag);
        let path = dir.join("spec.json");
        std::fs::write(&path, text).expect("write the spec");
        SpecFile { dir, path }
    }

    /// Replace the file's text (for a reload).
    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write the spec");
    }

    /// The file as JSON now.
    pub fn read(&self) -> Value {
        let text = std::fs::read_to_string(&self.path).expect("read the spec");
        serde_json::from_str(&text).expect("the spec file is JSON")
    }
}
