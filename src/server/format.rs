//! Records: what the sink is handed for the lines a read brought in.
//!
//! The connection's task turns its lines into records before the commit,
//! so the sink (group commit, `--fsync`, SIGHUP reopen, failure stops
//! acks) stays what it is for every format, and the encoding runs on the
//! runtime's workers in parallel rather than in the sink's one thread.
//!
//! - **plain**: the bare line (with `--prefix-peer`, after `PEER<TAB>`),
//!   as the framer hands it out: no copy.
//! - **json**: one object per line, `{"time":…,"peer":…,"connection":…,
//!   "line":…,"text":…}`, serialised by `serde_json`; a line that is not
//!   UTF-8 carries `text_base64` instead of `text`.
//! - **journal**: one native-protocol entry per line
//!   ([`super::journal::frame`]), each framed for the sink with its length.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use memchr::memchr_iter;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::journal;
use crate::protocol::Lines;

/// What each received line becomes in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The bare line.
    Plain,
    /// One JSON object per line.
    Json,
    /// One journal entry per line, over the native protocol.
    Journal,
}

/// A number for each connection, unique within the process.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The next connection's number: 1, 2, 3, ...
pub fn next_connection() -> u64 {
    CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1
}

/// One connection's record maker: what every record of it shares.
#[derive(Debug)]
pub struct Records {
    format: Format,
    /// The peer, as records name it (not escaped: JSON and the journal's
    /// binary fields carry any text).
    peer: String,
    connection: u64,
    /// The journal fields every entry of this connection starts with.
    journal_head: Vec<u8>,
}

impl Records {
    pub fn new(format: Format, peer: &str, connection: u64) -> Records {
        let journal_head = if format == Format::Journal {
            journal::head(peer, connection)
        } else {
            Vec::new()
        };
        Records {
            format,
            peer: peer.to_string(),
            connection,
            journal_head,
        }
    }

    /// Whether records carry the time their line was read: if not, the
    /// connection need not read the clock.
    pub fn timed(&self) -> bool {
        self.format == Format::Json
    }

    /// The records of `lines` (each ended by `\n`, a CR before it already
    /// dropped), the first of which is the connection's line number
    /// `first`, read at `read_at`.
    pub fn encode(&self, lines: Lines, first: u64, read_at: SystemTime) -> io::Result<Vec<u8>> {
        Ok(match self.format {
            Format::Plain => lines.data,
            Format::Json => self.json(&lines, first, read_at)?,
            Format::Journal => self.journal(&lines, first),
        })
    }

    /// One JSON object per line. The parts every record of this read
    /// shares (time, peer, connection) are serialised once, and only the
    /// line number and the text per line; `serde_json` does every escape.
    /// The unit tests check the result against `serde_json` serialising
    /// whole records.
    fn json(&self, lines: &Lines, first: u64, read_at: SystemTime) -> io::Result<Vec<u8>> {
        let time = humantime::format_rfc3339_micros(read_at).to_string();
        let mut head = serde_json::to_vec(&Head {
            time: &time,
            peer: &self.peer,
            connection: self.connection,
        })
        .map_err(io::Error::other)?;
        // `{"time":…,"peer":…,"connection":N` and then the line number.
        head.pop();
        head.extend_from_slice(b",\"line\":");
        let mut out =
            Vec::with_capacity(lines.data.len() * 4 / 3 + (head.len() + 32) * lines.count as usize);
        // Most reads are UTF-8 throughout: one check for all their lines
        // (each is then a slice of it, cut at a '\n'), not one per line.
        let all_text = std::str::from_utf8(&lines.data).ok();
        let mut start = 0;
        for (i, text) in each_line(&lines.data).enumerate() {
            let as_text = match all_text {
                Some(all) => all.get(start..start + text.len()).ok_or(()),
                None => std::str::from_utf8(text).map_err(|_| ()),
            };
            start += text.len() + 1;
            out.extend_from_slice(&head);
            serde_json::to_writer(&mut out, &(first + i as u64)).map_err(io::Error::other)?;
            match as_text {
                Ok(text) => {
                    out.extend_from_slice(b",\"text\":");
                    serde_json::to_writer(&mut out, text).map_err(io::Error::other)?;
                }
                Err(_) => {
                    out.extend_from_slice(b",\"text_base64\":");
                    serde_json::to_writer(&mut out, &BASE64.encode(text))
                        .map_err(io::Error::other)?;
                }
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(out)
    }

    fn journal(&self, lines: &Lines, first: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            lines.data.len() + (self.journal_head.len() + 64) * lines.count as usize,
        );
        for (i, text) in each_line(&lines.data).enumerate() {
            journal::frame(&mut out, &self.journal_head, first + i as u64, text);
        }
        out
    }
}

/// The lines of `data`, each without its `\n`.
fn each_line(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr_iter(b'\n', data).map(move |nl| {
        let line = &data[start..nl];
        start = nl + 1;
        line
    })
}

/// What every JSON record of one read starts with.
struct Head<'a> {
    time: &'a str,
    peer: &'a str,
    connection: u64,
}

impl Serialize for Head<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("Head", 3)?;
        r.serialize_field("time", self.time)?;
        r.serialize_field("peer", self.peer)?;
        r.serialize_field("connection", &self.connection)?;
        r.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn lines(data: &[u8]) -> Lines {
        Lines {
            data: data.to_vec(),
            count: data.iter().filter(|&&b| b == b'\n').count() as u64,
        }
    }

    #[test]
    fn json_records_carry_who_when_and_what() {
        let r = Records::new(Format::Json, "127.0.0.1:5123", 7);
        let at = UNIX_EPOCH + Duration::from_micros(1_764_140_400_123_456);
        let out = r
            .encode(lines(b"hello \"you\"\n\xff\xfe\n"), 41, at)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut it = text.lines();
        assert_eq!(
            it.next().unwrap(),
            r#"{"time":"2025-11-26T07:00:00.123456Z","peer":"127.0.0.1:5123","connection":7,"line":41,"text":"hello \"you\""}"#
        );
        assert_eq!(
            it.next().unwrap(),
            r#"{"time":"2025-11-26T07:00:00.123456Z","peer":"127.0.0.1:5123","connection":7,"line":42,"text_base64":"//4="}"#
        );
        assert_eq!(it.next(), None);
        assert!(text.ends_with('\n'));
    }

    /// The reference: a whole record built as a `serde_json` value.
    fn reference(
        time: &str,
        peer: &str,
        connection: u64,
        line: u64,
        text: &[u8],
    ) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("time".into(), time.into());
        m.insert("peer".into(), peer.into());
        m.insert("connection".into(), connection.into());
        m.insert("line".into(), line.into());
        match std::str::from_utf8(text) {
            Ok(t) => m.insert("text".into(), t.into()),
            Err(_) => m.insert("text_base64".into(), BASE64.encode(text).into()),
        };
        serde_json::Value::Object(m)
    }

    #[test]
    fn json_records_are_what_serde_json_makes_of_whole_records() {
        let peers = ["[::1]:7", "unix:uid=0,pid=1", "odd \"peer\"\u{7}\\"];
        let texts: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            (0u8..=255).filter(|&b| b != b'\n').collect(),
            (0u8..0x80).filter(|&b| b != b'\n').collect(),
            "\u{2028}\u{1F600}\u{fffd}".into(),
            b"\xed\xa0\x80".to_vec(),
        ];
        let at = UNIX_EPOCH + Duration::from_micros(1_000_000_000_000_001);
        for (c, peer) in peers.iter().enumerate() {
            let r = Records::new(Format::Json, peer, c as u64);
            let mut data = Vec::new();
            for t in &texts {
                data.extend_from_slice(t);
                data.push(b'\n');
            }
            let out = r.encode(lines(&data), 5, at).unwrap();
            let got: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
            assert_eq!(got.len(), texts.len());
            for (i, t) in texts.iter().enumerate() {
                let want = reference(
                    "2001-09-09T01:46:40.000001Z",
                    peer,
                    c as u64,
                    5 + i as u64,
                    t,
                );
                let parsed: serde_json::Value = serde_json::from_str(got[i]).unwrap();
                assert_eq!(parsed, want, "{}", got[i]);
            }
        }
    }

    #[test]
    fn plain_is_the_framer_output_itself() {
        let r = Records::new(Format::Plain, "x", 1);
        assert_eq!(
            r.encode(lines(b"a\nb\n"), 1, UNIX_EPOCH).unwrap(),
            b"a\nb\n"
        );
        assert!(!r.timed());
    }

    #[test]
    fn connections_are_numbered_uniquely() {
        let a = next_connection();
        let b = next_connection();
        assert!(b > a && a > 0);
    }
}
