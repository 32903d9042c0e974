//! The benchmark's ceiling: the least a server can do and still speak the
//! protocol. Tokio, one task per connection, 64 KiB reads, newlines
//! counted with memchr, that many acks written at once. No limits, no
//! framing, no receipts. For `scripts/bench` only.
//!
//!     cargo run --release --example minimal -- 127.0.0.1:10010
//!     cargo run --release --example minimal -- 127.0.0.1:10010 FILE
//!
//! With a second argument (a file, or `-` for standard output) it writes
//! every read to it, with one plain `write`, before the acks: the least a
//! server that acks only what it wrote must do, so that the cost of the
//! output itself (a system call, a pipe's reader woken) can be told apart
//! from sockserve's own.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ACK: &[u8] = b"Information Received\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:10010".into());
    let out: Option<Arc<Mutex<std::fs::File>>> = match std::env::args().nth(2).as_deref() {
        None => None,
        // SAFETY: fd 1 is open for the process's life and used only here.
        Some("-") => Some(unsafe { std::fs::File::from_raw_fd(1) }),
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    }
    .map(|f| Arc::new(Mutex::new(f)));
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("minimal: listening on {}", listener.local_addr()?);
    loop {
        let (mut s, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let out = out.clone();
        tokio::spawn(async move {
            if s.write_all(b"connect\n").await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let mut acks = Vec::new();
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Some(out) = &out {
                    let mut f = out.lock().unwrap_or_else(|e| e.into_inner());
                    if f.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let lines = memchr::memchr_iter(b'\n', &buf[..n]).count();
                acks.clear();
                for _ in 0..lines {
                    acks.extend_from_slice(ACK);
                }
                if s.write_all(&acks).await.is_err() {
                    return;
                }
            }
        });
    }
}
