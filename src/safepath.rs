//! Paths other users may be able to change under us: the output file and
//! our Unix socket files.
//!
//! A [`DirEntry`] holds the directory open (an `O_PATH` descriptor taken
//! once, at start) and the last component's name. Every later look-up,
//! open and unlink is relative to that descriptor (`openat`, `fstatat`,
//! `unlinkat`) and never follows a symbolic link at the last component,
//! so somebody who can write the directory cannot redirect us elsewhere
//! by planting a link, and renaming a directory above it changes nothing.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

/// A name in a directory held open.
#[derive(Debug)]
pub struct DirEntry {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl DirEntry {
    /// Opens the directory `path` is in. Symbolic links in the directory
    /// part are followed (they are the operator's choice); the last
    /// component is only ever used relative to the directory.
    pub fn new(path: &Path) -> io::Result<DirEntry> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "it does not end with a file name",
            )
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let fd = nix::fcntl::openat(
            None,
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // SAFETY: openat just returned this descriptor; nothing else owns it.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(DirEntry {
            dir,
            name: name.to_os_string(),
            path: path.to_path_buf(),
        })
    }

    /// The path as given, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last component.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory's descriptor.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// The directory, as a path the kernel resolves to the directory we
    /// hold (`/proc/self/fd/N`), when /proc is there to do it.
    pub fn dir_via_proc(&self) -> Option<PathBuf> {
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        p.is_dir().then_some(p)
    }

    /// Opens the name relative to the directory.
    pub fn openat(&self, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let fd = nix::fcntl::openat(Some(self.dir_fd()), self.name.as_os_str(), flags, mode)?;
        // SAFETY: openat just returned this descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `lstat` of the name, relative to the directory.
    pub fn lstat(&self) -> Result<FileStat, Errno> {
        nix::sys::stat::fstatat(
            Some(self.dir_fd()),
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    /// Removes the name (never a directory, never a link's target).
    pub fn unlink(&self) -> Result<(), Errno> {
        nix::unistd::unlinkat(
            Some(self.dir_fd()),
            self.name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
    }

    /// Who besides us can change the directory's entries, if anybody:
    /// `None` for a directory only its owner (us or root) can write.
    /// `sticky_counts`: whether the sticky bit (`/tmp`) makes a directory
    /// writable by others safe enough.
    pub fn shared_dir(&self, sticky_counts: bool) -> Option<String> {
        let st = nix::sys::stat::fstat(self.dir_fd()).ok()?;
        let me = nix::unistd::geteuid().as_raw();
        let mode = st.st_mode & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if st.st_uid != me && st.st_uid != 0 {
            return Some(format!(
                "it belongs to uid {}, another user (mode {mode:04o})",
                st.st_uid
            ));
        }
        if mode & 0o022 != 0 && !(sticky && sticky_counts) {
            let who = if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            };
            let sticky = if sticky {
                ", sticky"
            } else {
                ", without the sticky bit"
            };
            return Some(format!("{who} can write it (mode {mode:04o}{sticky})"));
        }
        None
    }
}

/// What a file type is called in messages.
pub fn kind_name(st_mode: u32) -> &'static str {
    match st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFREG => "a regular file",
        nix::libc::S_IFDIR => "a directory",
        nix::libc::S_IFCHR => "a character device",
        nix::libc::S_IFBLK => "a block device",
        nix::libc::S_IFIFO => "a FIFO",
        nix::libc::S_IFSOCK => "a socket",
        nix::libc::S_IFLNK => "a symbolic link",
        _ => "a file of unknown type",
    }
}
