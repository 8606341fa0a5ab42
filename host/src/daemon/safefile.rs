//! Files synthnet names itself — the spec it saves back, its temporary files, its
//! state directory and locks — written so that whoever can write to the directory can
//! neither redirect the write (a symbolic link) nor stall it (a FIFO).
//!
//! - A new file is made with `O_CREAT | O_EXCL | O_NOFOLLOW` under a name nobody can
//!   guess (a random suffix), written, `fsync`ed, then renamed over its destination,
//!   and the directory is synced. `O_EXCL` never follows a link and never opens a file
//!   that is already there; a name taken by chance is tried again under another.
//! - What is at the destination must be a regular file (or nothing): a link, a FIFO,
//!   a directory or a device there is refused with a message that names it, before
//!   anything is written, and checked again just before the rename.
//! - A lock keeps its fixed name (other processes look for it there), so it is opened
//!   with `O_NOFOLLOW | O_NONBLOCK` and must turn out to be a regular file.
//!
//! Outputs the user names (`replay --out FILE`, `--command-log FILE`) are not made
//! here: those may well be FIFOs on purpose.

use std::fs::{File, Metadata, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();

/// What kind of thing `meta` is, in words, if it is not a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    })
}

fn refusal(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {what}, not a regular file: synthnet does not write through it (remove it, or save elsewhere)",
            path.display()
        ),
    )
}

/// What is at `path` (not following a link): `Ok(Some(meta))` for a regular file,
/// `Ok(None)` for nothing, an error naming it for anything else.
pub fn regular_or_absent(path: &Path) -> io::Result<Option<Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => match not_regular(&m) {
            None => Ok(Some(m)),
            Some(what) => Err(refusal(path, what)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// 64 bits nobody outside this process can predict: std's hasher keys come from the
/// operating system's random source.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A new file beside `dest` (`.NAME.synthnet-RANDOM.tmp`), created exclusively,
/// never through a link.
fn create_temp(dest: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..8 {
        let tmp = dest.with_file_name(format!(".{name}.synthnet-{:016x}.tmp", random_u64()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", tmp.display()),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// A file written beside its destination and synced; [`Staged::commit`] renames it
/// over the destination (atomic on one filesystem), dropping it removes it.
pub struct Staged {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl Staged {
    /// Write `bytes` to a new file beside `dest`, keeping `dest`'s permissions if it
    /// exists (else `0644`). Refused when `dest` is anything but a regular file.
    pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<Staged> {
        let mode = regular_or_absent(dest)?.map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let (mut f, tmp) = create_temp(dest, 0o600)?;
        let staged = Staged {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        };
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        Ok(staged)
    }

    /// Rename it over the destination (checked again first: something may have been
    /// put there meanwhile), then sync the directory so the rename lasts.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        regular_or_absent(&self.dest)?;
        let tmp = self.tmp.take().expect("staged once");
        std::fs::rename(&tmp, &self.dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        if let Some(dir) = self.dest.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Write `bytes` to `dest` whole ([`Staged`], then commit).
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    Staged::write(dest, bytes)?.commit()
}

/// A new directory `PREFIX-RANDOM` in `parent`, mode 0700, made by us (never one that
/// was there already).
pub fn private_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for _ in 0..8 {
        let dir = parent.join(format!("{prefix}-{:016x}", random_u64()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", dir.display()),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
}

/// A state directory we may trust: a real directory (not a link), ours, and writable
/// by nobody else.
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    if !m.file_type().is_dir() {
        let what = not_regular(&m).unwrap_or("a regular file");
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {what}, not a directory", dir.display()),
        ));
    }
    if m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {} with mode {:o}: a state directory must be ours and writable by nobody else",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A lock held for the life of the process: the kernel drops it however it ends, and a
/// clean end (the value dropped) also removes its file, so a stopped synthnet leaves no
/// lock files behind.
///
/// Removing a lock file races with a process that opened it just before: that one may
/// then lock the removed file while a third creates a new one at the name. So a lock is
/// only taken on the file that still is at its name ([`lock_with_pid`] checks the inode
/// after locking, and tries again otherwise), and the file is removed while held.
#[derive(Debug)]
pub struct Lock {
    flock: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl Lock {
    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Only our file: if something else took the name meanwhile, leave it.
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .zip(self.flock.metadata().ok())
            .is_some_and(|(at_name, held)| {
                at_name.ino() == held.ino() && at_name.dev() == held.dev()
            });
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Take the exclusive lock on the file at `path` ([`open_lock`]) and write our pid in
/// it; when another process holds it, `Ok(Err(pid))` with the pid it wrote (0 if none).
pub fn lock_with_pid(path: &Path) -> io::Result<Result<Lock, u32>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek};
    loop {
        match Flock::lock(open_lock(path)?, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The holder we waited for may have removed the file as it ended: then
                // this lock is on a file nobody else will look at. Take the new one.
                let held = lock.metadata()?;
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {}
                    _ => continue,
                }
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = write!(lock, "{}", std::process::id());
                return Ok(Ok(Lock {
                    flock: lock,
                    path: path.to_path_buf(),
                }));
            }
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Ok(Err(pid.trim().parse().unwrap_or(0)));
            }
        }
    }
}

/// Open (creating, mode 0600) the lock file at `path` for reading and writing: never
/// through a link, never blocking on a FIFO, and refused unless it is a regular file.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                refusal(path, "a symbolic link")
            } else {
                io::Error::new(e.kind(), format!("{}: {e}", path.display()))
            }
        })?;
    let m = f.metadata()?;
    if let Some(what) = not_regular(&m) {
        return Err(refusal(path, what));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("synthnet-safefile-{tag}-{:x}", random_u64()));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn a_write_replaces_a_regular_file_whole_and_keeps_its_mode() {
        let d = scratch("w");
        let dest = d.join("spec.json");
        std::fs::write(&dest, "old").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&dest, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_fifos_and_directories_at_the_destination_are_refused_untouched() {
        let d = scratch("r");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let link = d.join("link.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let fifo = d.join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let dir = d.join("dir.json");
        std::fs::create_dir(&dir).unwrap();
        for (p, what) in [
            (&link, "a symbolic link"),
            (&fifo, "a FIFO"),
            (&dir, "a directory"),
        ] {
            let e = write(p, b"{}").unwrap_err().to_string();
            assert!(
                e.contains(&p.display().to_string()) && e.contains(what),
                "{e}"
            );
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // Only what the test made: no temporary file left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 4);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_link_put_between_write_and_commit_is_refused() {
        let d = scratch("c");
        let dest = d.join("spec.json");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let staged = Staged::write(&dest, b"{}").unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        assert!(staged.commit().is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_lock_excludes_others_and_its_file_goes_when_it_is_dropped() {
        let d = scratch("p");
        let path = d.join("x.lock");
        let lock = lock_with_pid(&path).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::process::id().to_string()
        );
        // Held (by this process, through another open file): refused, naming our pid.
        assert_eq!(
            lock_with_pid(&path).unwrap().unwrap_err(),
            std::process::id()
        );
        drop(lock);
        assert!(!path.exists(), "the lock file stays after a clean end");
        let again = lock_with_pid(&path).unwrap().unwrap();
        assert!(path.exists());
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn locks_refuse_links_and_fifos_without_blocking() {
        let d = scratch("l");
        let victim = d.join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let link = d.join("a.lock");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = open_lock(&link).unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
        let fifo = d.join("b.lock");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_lock(&fifo).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        assert!(open_lock(&d.join("c.lock")).is_ok());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let p = private_dir(&d, "x").unwrap();
        check_private_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_private_dir(&p).is_err());
        assert!(check_private_dir(&link).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
