//! The benchmark's ceiling: the least a server can do and still speak the
//! protocol. Tokio, one task per connection, 64 KiB reads, newlines
//! counted with memchr, that many acks written at once. No output, no
//! limits, no receipts. For `scripts/bench` only.
//!
//!     cargo run --release --example minimal -- 127.0.0.1:10010

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ACK: &[u8] = b"Information Received\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:10010".into());
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
