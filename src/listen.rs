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
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike};
use nix::sys::stat::{umask, Mode};

use crate::diag::describe;
use crate::endpoint::{Endpoint, DEFAULT_ADDRESS};
use crate::exit::Failure;
use crate::safepath::DirEntry;

/// Bytes of `sun_path`, its terminating NUL included.
const SUN_PATH_MAX: usize = 108;

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
/// but only if it is still the very file we bound (same device and inode),
/// and only the name in the directory held since the bind (`unlinkat`):
/// a socket that somebody else put there since, or a link planted in its
/// place, is never touched.
#[derive(Debug)]
pub struct SocketFile {
    at: DirEntry,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(st) = self.at.lstat() {
            if st.st_dev == self.dev && st.st_ino == self.ino {
                let _ = self.at.unlink();
            }
        }
    }
}

/// Binds every address an endpoint stands for. A host name that resolves
/// to several addresses (`localhost`) is bound on each. `reuse_port` sets
/// `SO_REUSEPORT` on TCP sockets.
pub fn bind(
    endpoint: &Endpoint,
    unix_mode: u32,
    reuse_port: bool,
) -> Result<Vec<Listener>, String> {
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
                    let socket =
                        bind_tcp(a, reuse_port).map_err(|e| bind_error(&a.to_string(), &e))?;
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
            let fd = listen_on(AddressFamily::Unix, &addr, false)
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
        io::ErrorKind::NotFound if what.starts_with("unix:") => "; create its folder first",
        _ => "",
    };
    format!("cannot bind {what}: {}{hint}", describe(e))
}

fn listen_on(
    family: AddressFamily,
    addr: &dyn SockaddrLike,
    reuse_port: bool,
) -> io::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    if family != AddressFamily::Unix {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        if reuse_port {
            // Several processes on one port; the kernel spreads connections.
            socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
        }
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

fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let fd = match addr {
        SocketAddr::V4(a) => listen_on(
            AddressFamily::Inet,
            &socket::SockaddrIn::from(a),
            reuse_port,
        )?,
        SocketAddr::V6(a) => listen_on(
            AddressFamily::Inet6,
            &socket::SockaddrIn6::from(a),
            reuse_port,
        )?,
    };
    Ok(TcpListener::from(fd))
}

/// Binds a Unix socket file with exactly `mode`: the umask is narrowed for
/// the bind, so the file is never wider than asked, not for an instant,
/// and nothing changes its mode by name afterwards (no `chmod`, which
/// would follow a link swapped in). A stale socket file (nobody accepts
/// on it) is replaced; a live one, or anything that is not a socket (a
/// symbolic link included), is not. Every look-up and unlink is relative
/// to the directory, opened once, and never follows a link.
fn bind_unix_path(path: &Path, mode: u32) -> io::Result<(UnixListener, SocketFile)> {
    let at = DirEntry::new(path)?;
    if let Some(why) = at.shared_dir(false) {
        crate::warn!(
            "the directory of socket {} is not private: {why}; another user can take the name while sockserve is down and clients would talk to them; use a directory only this user can write",
            path.display()
        );
    }
    // The directory as the kernel resolves it from our descriptor, so the
    // connect and bind below land in the directory we checked; the path
    // as given when /proc is missing or the name is too long for that.
    let here = at
        .dir_via_proc()
        .map(|d| d.join(at.name()))
        .filter(|p| p.as_os_str().len() < SUN_PATH_MAX)
        .unwrap_or_else(|| path.to_path_buf());
    match at.lstat() {
        Ok(st) if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFSOCK => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "the path exists and is not a socket (it is {}); not replacing it",
                    crate::safepath::kind_name(st.st_mode)
                ),
            ));
        }
        Ok(st) => match probe_unix(&here) {
            Ok(()) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "address in use (a server is listening on it)",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Remove the name only if it is still the stale socket.
                match at.lstat() {
                    Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => at.unlink()?,
                    _ => return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the stale socket was replaced while sockserve checked it; not touching it",
                    )),
                }
            }
            Err(e) => return Err(e),
        },
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let addr = socket::UnixAddr::new(&here).map_err(io::Error::from)?;
    // umask is process-wide: this runs before any thread starts.
    let old = umask(Mode::from_bits_truncate(0o777 & !mode));
    let bound = listen_on(AddressFamily::Unix, &addr, false);
    umask(old);
    let fd = bound?;
    let st = at.lstat()?;
    let file = SocketFile {
        at,
        dev: st.st_dev,
        ino: st.st_ino,
    };
    let got = st.st_mode & 0o7777;
    if got & !mode != 0 {
        // A default ACL on the directory overrides the umask. Do not serve
        // on a socket wider than asked; `file` removes it again.
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the socket file got mode {got:04o}, wider than {mode:04o} (a default ACL on its directory?); use a directory without one"
            ),
        ));
    }
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
    /// Sockets `LISTEN_FDS` passed to another process (`LISTEN_PID`),
    /// left alone; [`Sources::bind`] says what it binds instead.
    pub foreign: Option<Foreign>,
}

/// What the command line asks of [`Sources::inherit`] and [`Sources::bind`].
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub addresses: &'a [Endpoint],
    pub fd_names: &'a [String],
    pub inetd: bool,
    pub unix_mode: u32,
    /// `--backlog`: re-apply `listen(2)` with this backlog to every
    /// listener, inherited ones included.
    pub backlog: Option<u32>,
    /// `SO_REUSEPORT` on the TCP sockets bound here.
    pub reuse_port: bool,
}

impl Sources {
    /// Takes inherited sockets (`LISTEN_FDS`, or a connection on standard
    /// input). Must run before any thread starts. [`Sources::bind`] binds
    /// the rest, once the output is open.
    pub fn inherit(want: Wanted<'_>) -> Result<Sources, Failure> {
        // Inherited sockets first: listenfd edits the environment.
        let inherited = take_inherited(want.fd_names).map_err(Failure::runtime)?;
        let mut sources = Sources {
            listeners: inherited.listeners,
            connections: inherited.connections,
            inetd: false,
            foreign: inherited.foreign,
        };
        if want.inetd || (sources.nothing_inherited(want) && stdin_is_connection()) {
            if !sources.listeners.is_empty() || !sources.connections.is_empty() {
                return Err(Failure::runtime(format!(
                    "--inetd: LISTEN_FDS passes {} more sockets besides the connection on standard input; drop --inetd, or start sockserve without LISTEN_FDS",
                    sources.listeners.len() + sources.connections.len()
                )));
            }
            if let Some(f) = &sources.foreign {
                f.warn("serving the connection on standard input instead");
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
            if let Some(f) = &sources.foreign {
                f.warn("so none has a --fd-name name");
            }
            return Err(Failure::runtime(format!(
                "--fd-name {}: no inherited socket has that name (LISTEN_FDNAMES); check FileDescriptorName= in the .socket unit",
                want.fd_names.join(" or ")
            )));
        }
        // A usage error, said before the output is opened or anything
        // is bound.
        check_duplicates(want.addresses, &sources.listeners)?;
        Ok(sources)
    }

    /// Binds the addresses asked for, or the default address when nothing
    /// was asked for and nothing inherited.
    pub fn bind(&mut self, want: Wanted<'_>) -> Result<(), Failure> {
        if self.inetd {
            return Ok(());
        }
        let default;
        let addresses = if self.nothing_inherited(want) {
            default = [DEFAULT_ADDRESS
                .parse::<Endpoint>()
                .map_err(Failure::runtime)?];
            &default[..]
        } else {
            want.addresses
        };
        if let Some(f) = &self.foreign {
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            // Not "listening on": scripts and tests read the addresses
            // from the "listening on" lines.
            f.warn(&format!("serving {} instead", list.join(" and ")));
        }
        for a in addresses {
            self.listeners
                .extend(bind(a, want.unix_mode, want.reuse_port).map_err(Failure::runtime)?);
        }
        if let Some(n) = want.backlog {
            set_backlog(&self.listeners, n)?;
        }
        Ok(())
    }

    fn nothing_inherited(&self, want: Wanted<'_>) -> bool {
        want.addresses.is_empty()
            && self.listeners.is_empty()
            && self.connections.is_empty()
            && want.fd_names.is_empty()
    }

    /// Only already-accepted connections: serve them, then exit.
    pub fn single(&self) -> bool {
        self.listeners.is_empty()
    }
}

/// An address given twice, or one that an inherited socket listens on
/// already, fails to bind with "address in use", which blames another
/// server. Say what happened instead, before binding anything.
fn check_duplicates(addresses: &[Endpoint], inherited: &[Listener]) -> Result<(), Failure> {
    // Each address seen, and what it was: an inherited listener's name
    // (Some), or the ADDRESS it was given as (None).
    let mut seen: Vec<(SocketAddr, Option<String>, String)> = inherited
        .iter()
        .filter_map(|l| match &l.socket {
            StdListener::Tcp(t) => t.local_addr().ok().map(|a| (a, Some(l.name.clone()))),
            StdListener::Unix(_) => None,
        })
        .map(|(a, name)| (a, name, String::new()))
        .collect();
    for (i, a) in addresses.iter().enumerate() {
        let any_port = matches!(a, Endpoint::Tcp { port: 0, .. });
        if !any_port && addresses[..i].contains(a) {
            return Err(Failure::usage(format!(
                "cannot listen on {a} twice: the address was given twice; give it once"
            )));
        }
        // Resolution errors are the bind's to report.
        for addr in a.resolve().unwrap_or_default() {
            if addr.port() == 0 {
                continue;
            }
            match seen.iter().find(|(s, _, _)| *s == addr) {
                Some((_, Some(name), _)) => {
                    return Err(Failure::usage(format!(
                        "cannot listen on {a}: the inherited socket {name} listens there already; drop the address"
                    )))
                }
                Some((_, None, first)) => {
                    return Err(Failure::usage(format!(
                        "cannot listen on {a}: {first} is the same address ({addr}); give it once"
                    )))
                }
                None => seen.push((addr, None, a.to_string())),
            }
        }
    }
    Ok(())
}

/// The kernel's cap on every listen backlog, when it can be read.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// `--backlog N`: `listen(2)` again with N on every listener. On a socket
/// that listens already, Linux just sets the new backlog, which is how an
/// inherited listener with a tiny one (`systemfd` uses 1) gets a usable
/// queue. `net.core.somaxconn` caps N silently, so say so.
fn set_backlog(listeners: &[Listener], n: u32) -> Result<(), Failure> {
    if let Some(max) = somaxconn().filter(|max| n > *max) {
        crate::warn!(
            "--backlog {n}: the kernel caps it at {max} (net.core.somaxconn); raise that with sysctl -w net.core.somaxconn={n}"
        );
    }
    let backlog = i32::try_from(n).unwrap_or(i32::MAX);
    for l in listeners {
        let fd = match &l.socket {
            StdListener::Tcp(t) => t.as_raw_fd(),
            StdListener::Unix(u) => u.as_raw_fd(),
        };
        // SAFETY: `fd` belongs to a listener we hold for this call.
        if unsafe { nix::libc::listen(fd, backlog) } != 0 {
            let e = io::Error::last_os_error();
            return Err(Failure::runtime(format!(
                "cannot set the backlog of {} to {n}: {}",
                l.name,
                describe(&e)
            )));
        }
        crate::debug!("{}: backlog {n}", l.name);
    }
    Ok(())
}

/// Sockets passed with `LISTEN_FDS` for another process (`LISTEN_PID`):
/// left alone, and said so.
#[derive(Debug)]
pub struct Foreign {
    /// `LISTEN_PID` as given.
    pub pid: String,
    /// `LISTEN_FDS` as given.
    pub fds: String,
}

impl Foreign {
    /// One warning line: both PIDs, and what sockserve does instead.
    fn warn(&self, instead: &str) {
        crate::warn!(
            "not taking the sockets LISTEN_FDS={} passes: LISTEN_PID={} is another process, not this one ({}); {instead} (a wrapper script must exec sockserve to keep the PID)",
            self.fds,
            self.pid,
            std::process::id()
        );
    }
}

/// Whether a server listens on the Unix socket at `path`, without ever
/// waiting: a non-blocking connect. A server whose listen queue is full
/// (stopped, overloaded) answers `EAGAIN` at once, and is a server all
/// the same; `ECONNREFUSED` means nobody listens (a stale socket).
fn probe_unix(path: &Path) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = socket::UnixAddr::new(path).map_err(io::Error::from)?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The sockets inherited through `LISTEN_FDS`.
#[derive(Debug, Default)]
pub struct Inherited {
    pub listeners: Vec<Listener>,
    pub connections: Vec<Connection>,
    /// Sockets passed to another process, left alone.
    pub foreign: Option<Foreign>,
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
    let count = std::env::var("LISTEN_FDS").ok();
    let mut fds = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    let mut out = Inherited::default();
    if let Some(count) = count.filter(|c| c.trim() != "0") {
        if count.parse::<u32>().is_err() {
            // listenfd ignores it; we do too, but not silently.
            crate::warn!(
                "ignoring LISTEN_FDS={count}: not a number of sockets; no socket is inherited"
            );
            std::env::remove_var("LISTEN_FDS");
            std::env::remove_var("LISTEN_PID");
        } else if fds.len() == 0 {
            if let Some(pid) = pid.filter(|p| !p.is_empty() && p.parse() != Ok(std::process::id()))
            {
                out.foreign = Some(Foreign { pid, fds: count });
            }
        }
    }
    for idx in 0..fds.len() {
        let fd = 3 + idx as RawFd;
        let given = names.get(idx).filter(|n| !n.is_empty()).cloned();
        let name = given.clone().unwrap_or_else(|| format!("fd {fd}"));
        // "inherited fd 3", or "inherited fd 3 (web)" when it has a name;
        // the name escaped: whoever set LISTEN_FDNAMES cannot break a log
        // line or forge a journal priority with it.
        let label = match &given {
            Some(n) => format!("inherited fd {fd} ({})", crate::diag::escape(n)),
            None => format!("inherited fd {fd}"),
        };
        if !only.is_empty() && !only.contains(&name) {
            crate::debug!("not serving {label}: not named by --fd-name");
            continue;
        }
        let kind = classify(fd).map_err(|e| format!("{label}: {e}"))?;
        let err = |e: io::Error| format!("{label}: {}", describe(&e));
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
                    name: crate::diag::escape(&name).into_owned(),
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
    if let Some(what) = not_a_socket(fd, st.st_mode) {
        return Err(format!("is {what}, not a stream socket"));
    }
    // SAFETY: fstat succeeded, so the fd is open; it is borrowed only for
    // the calls below, while the caller still holds it.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    classify_socket(bfd)
}

/// What a file of this mode is, when it is not a socket: "a regular
/// file", "a pipe", "a terminal", ...
fn not_a_socket(fd: RawFd, mode: nix::libc::mode_t) -> Option<&'static str> {
    use nix::libc::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK};
    Some(match mode & S_IFMT {
        S_IFSOCK => return None,
        S_IFREG => "a regular file",
        S_IFDIR => "a directory",
        S_IFCHR if nix::unistd::isatty(fd).unwrap_or(false) => "a terminal",
        S_IFCHR => "a character device",
        S_IFBLK => "a block device",
        S_IFIFO => "a pipe",
        _ => "not a socket",
    })
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
    if listening {
        return Ok(Kind::Listener(family));
    }
    // Neither listening nor connected: a socket made and never used, or
    // bound but never listen(2)ed. Serving it would only fail later.
    if let Err(nix::errno::Errno::ENOTCONN) =
        socket::getpeername::<socket::SockaddrStorage>(fd.as_raw_fd())
    {
        let what = if family == AddressFamily::Unix {
            "a Unix stream socket"
        } else {
            "a TCP socket"
        };
        return Err(format!(
            "is {what} that is neither listening nor connected; pass a listening socket or an accepted connection"
        ));
    }
    Ok(Kind::Connection(family))
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
    let st = nix::sys::stat::fstat(stdin.as_raw_fd()).map_err(|e| {
        format!(
            "--inetd: cannot inspect standard input: {}",
            describe(&e.into())
        )
    })?;
    if let Some(what) = not_a_socket(stdin.as_raw_fd(), st.st_mode) {
        return Err(format!(
            "--inetd: standard input is not a socket (it is {what}); --inetd serves a connection that inetd or systemd (StandardInput=socket) passes"
        ));
    }
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
        Ok(Kind::Listener(_)) => Err(
            "--inetd: standard input is a listening socket, not a connection; pass a listener as fd 3 with LISTEN_FDS=1 instead"
                .to_string(),
        ),
        Err(e) => Err(format!("--inetd: standard input {e}")),
    }
}
