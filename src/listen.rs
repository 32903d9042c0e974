//! Where sockets come from: our own binds, or the ones systemd (or
//! `systemd-socket-activate`, or inetd) hands us. Decided once, at start-up,
//! before any thread runs: `listenfd` changes the environment, which is
//! unsound once threads exist.
//!
//! Everything here returns std sockets; the server turns them into tokio
//! ones inside its runtime.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike};
use nix::sys::stat::{umask, Mode};

use crate::diag::describe;
use crate::endpoint::{Endpoint, DEFAULT_ADDRESS};
use crate::exit::Failure;

/// The listen backlog of the sockets we bind ourselves.
pub const BACKLOG: i32 = 4096;

/// A listening socket, TCP or Unix.
#[derive(Debug)]
pub enum StdListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connected socket, TCP or Unix.
#[derive(Debug)]
pub enum StdStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A listener with the name it goes by in logs, and, when we created its
/// socket file, the guard that removes the file again.
#[derive(Debug)]
pub struct Listener {
    pub socket: StdListener,
    pub name: String,
    pub path: Option<SocketFile>,
}

/// A connection systemd accepted for us (`Accept=yes`) or inetd handed us.
#[derive(Debug)]
pub struct Connection {
    pub stream: StdStream,
    pub name: String,
}

/// A Unix socket file this process created. Dropping it removes the file,
/// but only if it is still the very file we bound (same device and inode):
/// a socket that somebody else put there since is never touched.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds every address an endpoint stands for. A host name that resolves
/// to several addresses (`localhost`) is bound on each.
pub fn bind(endpoint: &Endpoint, unix_mode: u32) -> Result<Vec<Listener>, String> {
    match endpoint {
        Endpoint::Tcp { .. } => {
            let addrs = endpoint
                .resolve()
                .map_err(|e| format!("cannot resolve {endpoint}: {}", describe(&e)))?;
            if addrs.is_empty() {
                return Err(format!("cannot resolve {endpoint}: no addresses"));
            }
            addrs
                .into_iter()
                .map(|a| {
                    let socket = bind_tcp(a).map_err(|e| bind_error(&a.to_string(), &e))?;
                    let name = socket
                        .local_addr()
                        .map(|l| l.to_string())
                        .unwrap_or_default();
                    Ok(Listener {
                        socket: StdListener::Tcp(socket),
                        name,
                        path: None,
                    })
                })
                .collect()
        }
        Endpoint::Unix(path) => {
            let (socket, file) = bind_unix_path(path, unix_mode)
                .map_err(|e| bind_error(&endpoint.to_string(), &e))?;
            Ok(vec![Listener {
                socket: StdListener::Unix(socket),
                name: endpoint.to_string(),
                path: Some(file),
            }])
        }
        Endpoint::Abstract(name) => {
            let addr = socket::UnixAddr::new_abstract(name)
                .map_err(|e| bind_error(&endpoint.to_string(), &e.into()))?;
            let fd = listen_on(AddressFamily::Unix, &addr)
                .map_err(|e| bind_error(&endpoint.to_string(), &e))?;
            Ok(vec![Listener {
                socket: StdListener::Unix(UnixListener::from(fd)),
                name: endpoint.to_string(),
                path: None,
            }])
        }
    }
}

fn bind_error(what: &str, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => "; is another server running there?",
        io::ErrorKind::PermissionDenied => {
            "; pick another address or run with the right privileges"
        }
        io::ErrorKind::AddrNotAvailable => "; pick an address of this machine",
        _ => "",
    };
    format!("cannot bind {what}: {}{hint}", describe(e))
}

fn listen_on(family: AddressFamily, addr: &dyn SockaddrLike) -> io::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if family != AddressFamily::Unix {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if family == AddressFamily::Inet6 {
        // [::]:P means IPv6 only; give 0.0.0.0:P as well for both.
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(fd.as_raw_fd(), addr)?;
    socket::listen(
        &fd,
        socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(fd)
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let fd = match addr {
        SocketAddr::V4(a) => listen_on(AddressFamily::Inet, &socket::SockaddrIn::from(a))?,
        SocketAddr::V6(a) => listen_on(AddressFamily::Inet6, &socket::SockaddrIn6::from(a))?,
    };
    Ok(TcpListener::from(fd))
}

/// Binds a Unix socket file with exactly `mode`: the umask is narrowed for
/// the bind, so the file is never wider than asked, not for an instant.
/// A stale socket file (nobody accepts on it) is replaced; a live one, or
/// anything that is not a socket, is not.
fn bind_unix_path(path: &Path, mode: u32) -> io::Result<(UnixListener, SocketFile)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket; not replacing it",
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "address in use (a server is listening on it)",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    let addr = socket::UnixAddr::new(path).map_err(io::Error::from)?;
    // umask is process-wide: this runs before any thread starts.
    let old = umask(Mode::from_bits_truncate(0o777 & !mode));
    let bound = listen_on(AddressFamily::Unix, &addr);
    umask(old);
    let fd = bound?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok((UnixListener::from(fd), file))
}

/// Every socket the server will serve, decided once from the command line
/// and the environment, before any thread starts.
#[derive(Debug, Default)]
pub struct Sources {
    /// Sockets to accept on: inherited through `LISTEN_FDS`, or bound here.
    pub listeners: Vec<Listener>,
    /// Connections already accepted (`Accept=yes`, inetd). With no
    /// listeners, the server serves these and exits.
    pub connections: Vec<Connection>,
    /// The connection came on standard input (inetd style), so standard
    /// output is the connection, not a place for received lines.
    pub inetd: bool,
}

/// What the command line asks of [`Sources::take`].
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub addresses: &'a [Endpoint],
    pub fd_names: &'a [String],
    pub inetd: bool,
    pub unix_mode: u32,
}

impl Sources {
    /// Takes inherited sockets (`LISTEN_FDS`, or a connection on standard
    /// input), then binds the addresses asked for, or the default address
    /// when nothing else is there. Must run before any thread starts.
    pub fn take(want: Wanted<'_>) -> Result<Sources, Failure> {
        // Inherited sockets first: listenfd edits the environment.
        let inherited = take_inherited(want.fd_names).map_err(Failure::runtime)?;
        let mut sources = Sources {
            listeners: inherited.listeners,
            connections: inherited.connections,
            inetd: false,
        };
        let nothing_else = want.addresses.is_empty()
            && sources.listeners.is_empty()
            && sources.connections.is_empty()
            && want.fd_names.is_empty();
        if want.inetd || (nothing_else && stdin_is_connection()) {
            if !sources.listeners.is_empty() || !sources.connections.is_empty() {
                return Err(Failure::runtime(format!(
                    "--inetd serves the one connection on standard input, but LISTEN_FDS passes {} more sockets; drop --inetd, or start sockserve without LISTEN_FDS",
                    sources.listeners.len() + sources.connections.len()
                )));
            }
            sources
                .connections
                .push(take_stdin_connection().map_err(Failure::runtime)?);
            sources.inetd = true;
            return Ok(sources);
        }
        if !want.fd_names.is_empty()
            && sources.listeners.is_empty()
            && sources.connections.is_empty()
        {
            return Err(Failure::runtime(format!(
                "no inherited socket is named {} (LISTEN_FDNAMES); check FileDescriptorName= in the .socket unit",
                want.fd_names.join(" or ")
            )));
        }
        let default;
        let addresses = if nothing_else {
            default = [DEFAULT_ADDRESS
                .parse::<Endpoint>()
                .map_err(Failure::runtime)?];
            &default[..]
        } else {
            want.addresses
        };
        for a in addresses {
            sources
                .listeners
                .extend(bind(a, want.unix_mode).map_err(Failure::runtime)?);
        }
        Ok(sources)
    }

    /// Only already-accepted connections: serve them, then exit.
    pub fn single(&self) -> bool {
        self.listeners.is_empty()
    }
}

/// The sockets inherited through `LISTEN_FDS`.
#[derive(Debug, Default)]
pub struct Inherited {
    pub listeners: Vec<Listener>,
    pub connections: Vec<Connection>,
}

/// Takes the sockets passed with `LISTEN_FDS` (systemd's protocol),
/// through `listenfd`. `LISTEN_PID` naming another process means the
/// sockets are not ours: they are left alone. `LISTEN_FDS`, `LISTEN_PID`
/// and `LISTEN_FDNAMES` are removed from the environment either way.
/// With `only` non-empty, just the sockets whose `LISTEN_FDNAMES` name is
/// listed are taken.
///
/// Must run before any thread starts.
pub fn take_inherited(only: &[String]) -> Result<Inherited, String> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let pid = std::env::var("LISTEN_PID").ok();
    let had_fds = std::env::var_os("LISTEN_FDS").is_some();
    let mut fds = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    if had_fds && fds.len() == 0 {
        if let Some(pid) = pid.filter(|p| p.parse() != Ok(std::process::id())) {
            crate::debug!("LISTEN_PID={pid} is not this process; not taking inherited sockets");
        }
    }
    let mut out = Inherited::default();
    for idx in 0..fds.len() {
        let fd = 3 + idx as RawFd;
        let name = names
            .get(idx)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("fd {fd}"));
        // The name as diagnostics show it: whoever set LISTEN_FDNAMES
        // cannot break a log line or forge a journal priority with it.
        let shown = crate::diag::escape(&name).into_owned();
        if !only.is_empty() && !only.contains(&name) {
            crate::debug!("not serving inherited {shown} (fd {fd}): not named by --fd-name");
            continue;
        }
        let kind = classify(fd).map_err(|e| format!("inherited fd {fd} ({shown}): {e}"))?;
        let err = |e: io::Error| format!("inherited fd {fd} ({shown}): {}", describe(&e));
        match kind {
            Kind::Listener(AddressFamily::Unix) => {
                let l = fds.take_unix_listener(idx).map_err(err)?;
                out.listeners.extend(l.map(|l| Listener {
                    name: inherited_name(&name, fd, &l.local_addr().ok().map(unix_display)),
                    socket: StdListener::Unix(l),
                    path: None,
                }));
            }
            Kind::Listener(_) => {
                let l = fds.take_tcp_listener(idx).map_err(err)?;
                out.listeners.extend(l.map(|l| Listener {
                    name: inherited_name(&name, fd, &l.local_addr().ok().map(|a| a.to_string())),
                    socket: StdListener::Tcp(l),
                    path: None,
                }));
            }
            Kind::Connection(family) => {
                let Some(raw) = fds.take_raw_fd(idx).map_err(err)? else {
                    continue;
                };
                // SAFETY: `classify` just checked that this fd is an open
                // socket, and listenfd handed it out once; we own it now.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                nix::fcntl::fcntl(
                    owned.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .map_err(|e| err(e.into()))?;
                out.connections.push(Connection {
                    stream: stream_from(owned, family),
                    name: shown,
                });
            }
        }
    }
    Ok(out)
}

fn unix_display(a: std::os::unix::net::SocketAddr) -> String {
    use std::os::linux::net::SocketAddrExt;
    if let Some(p) = a.as_pathname() {
        format!("unix:{}", p.display())
    } else if let Some(n) = a.as_abstract_name() {
        format!("unix:@{}", String::from_utf8_lossy(n))
    } else {
        "unix".to_string()
    }
}

/// How logs name an inherited listener, escaped for them
/// ([`crate::diag::escape`]).
fn inherited_name(name: &str, fd: RawFd, addr: &Option<String>) -> String {
    let full = match addr {
        Some(a) if name.starts_with("fd ") => format!("{a} (fd {fd})"),
        Some(a) => format!("{a} ({name}, fd {fd})"),
        None => name.to_string(),
    };
    crate::diag::escape(&full).into_owned()
}

fn stream_from(fd: OwnedFd, family: AddressFamily) -> StdStream {
    if family == AddressFamily::Unix {
        StdStream::Unix(UnixStream::from(fd))
    } else {
        StdStream::Tcp(TcpStream::from(fd))
    }
}

enum Kind {
    Listener(AddressFamily),
    Connection(AddressFamily),
}

/// Tells what an fd is: a listening stream socket, a connected one, or an
/// error that names what it is instead.
fn classify(fd: RawFd) -> Result<Kind, String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| match e {
        nix::errno::Errno::EBADF => {
            "is not open (LISTEN_FDS counts more fds than were passed)".to_string()
        }
        e => format!("cannot inspect it: {}", describe(&e.into())),
    })?;
    let fmt = st.st_mode & nix::libc::S_IFMT;
    if fmt != nix::libc::S_IFSOCK {
        let what = match fmt {
            nix::libc::S_IFREG => "a regular file",
            nix::libc::S_IFDIR => "a directory",
            nix::libc::S_IFCHR => "a character device",
            nix::libc::S_IFBLK => "a block device",
            nix::libc::S_IFIFO => "a pipe",
            _ => "not a socket",
        };
        return Err(format!("is {what}, not a stream socket"));
    }
    // SAFETY: fstat succeeded, so the fd is open; it is borrowed only for
    // the calls below, while the caller still holds it.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    classify_socket(bfd)
}

/// Like [`classify`], for a socket we already hold.
fn classify_socket(fd: BorrowedFd<'_>) -> Result<Kind, String> {
    let ty = socket::getsockopt(&fd, sockopt::SockType)
        .map_err(|e| format!("cannot inspect it: {}", describe(&e.into())))?;
    if ty != SockType::Stream {
        let what = match ty {
            SockType::Datagram => "a datagram socket",
            SockType::SeqPacket => "a seqpacket socket",
            _ => "a socket of another type",
        };
        return Err(format!("is {what}, not a stream socket"));
    }
    let family = socket::getsockname::<socket::SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family())
        .ok_or_else(|| "is a socket of unknown family".to_string())?;
    if !matches!(
        family,
        AddressFamily::Inet | AddressFamily::Inet6 | AddressFamily::Unix
    ) {
        return Err(format!("is a {family:?} socket, not TCP or Unix"));
    }
    let listening = socket::getsockopt(&fd, sockopt::AcceptConn)
        .map_err(|e| format!("cannot inspect it: {}", describe(&e.into())))?;
    Ok(if listening {
        Kind::Listener(family)
    } else {
        Kind::Connection(family)
    })
}

/// Whether standard input is a connected stream socket: how inetd, systemd's
/// `StandardInput=socket` and `systemd-socket-activate --inetd` hand over a
/// connection.
pub fn stdin_is_connection() -> bool {
    matches!(
        classify_socket(io::stdin().as_fd()),
        Ok(Kind::Connection(_))
    )
}

/// Takes the connection on standard input (inetd style). Standard input
/// and output stay open; the server reads and writes its own duplicate.
pub fn take_stdin_connection() -> Result<Connection, String> {
    let stdin = io::stdin();
    match classify_socket(stdin.as_fd()) {
        Ok(Kind::Connection(family)) => {
            let fd = stdin
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("cannot duplicate standard input: {}", describe(&e)))?;
            Ok(Connection {
                stream: stream_from(fd, family),
                name: "stdin".to_string(),
            })
        }
        Ok(Kind::Listener(_)) => {
            Err("standard input is a listening socket; --inetd wants a connected one".to_string())
        }
        Err(e) => Err(format!("--inetd: standard input {e}")),
    }
}
