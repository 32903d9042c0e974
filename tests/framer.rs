//! Property tests of the line framer (proptest, inside `cargo test`):
//! for any bytes, any maximum and any way of cutting them into reads,
//! the lines out plus the bytes rejected account for every input byte,
//! and every way of cutting gives the same lines as a plain model.

use proptest::prelude::*;
use sockserve::protocol::Framer;

/// What a connection's framing produces: the lines written, and whether
/// the stream was cut off for a line too long.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    out: Vec<u8>,
    rejected: bool,
}

/// Feeds the chunks as reads, as the server does, then ends the stream.
fn frame(chunks: &[&[u8]], max: usize) -> Outcome {
    let mut f = Framer::new(max);
    let mut out = Vec::new();
    let last = chunks.len();
    for (i, c) in chunks.iter().chain([&&b""[..]]).enumerate() {
        f.buffer().extend_from_slice(c);
        let t = f.take(i == last);
        out.extend(t.lines.map(|l| l.data).unwrap_or_default());
        if t.too_long {
            return Outcome {
                out,
                rejected: true,
            };
        }
        f.shrink_if_empty();
    }
    Outcome {
        out,
        rejected: false,
    }
}

/// The plain model: split on newlines, drop one CR before each, a last
/// line without newline is a line, and the first line longer than `max`
/// ends everything. Also returns how many input bytes the lines took.
fn model(input: &[u8], max: usize) -> (Outcome, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let (raw, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..=i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let body = raw.strip_suffix(b"\n").unwrap_or(raw);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.len() > max {
            return (
                Outcome {
                    out,
                    rejected: true,
                },
                used,
            );
        }
        out.extend_from_slice(body);
        out.push(b'\n');
        used += raw.len();
        rest = next;
    }
    (
        Outcome {
            out,
            rejected: false,
        },
        used,
    )
}

/// Bytes rich in the ones that matter: newlines, CRs, and others.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![3 => Just(b'\n'), 2 => Just(b'\r'), 5 => any::<u8>(), 5 => Just(b'a')],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_cutting_gives_the_models_lines(input in bytes(), max in 0usize..40, cuts in prop::collection::vec(0usize..400, 0..20)) {
        let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= input.len()).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        cuts.dedup();
        let chunks: Vec<&[u8]> = cuts.windows(2).map(|w| &input[w[0]..w[1]]).collect();
        let (want, used) = model(&input, max);
        let got = frame(&chunks, max);
        prop_assert_eq!(&got, &want);
        // One read of everything agrees too.
        prop_assert_eq!(&frame(&[&input], max), &want);
        // Accounting: the lines out came from the first `used` bytes (CRs
        // before newlines dropped, a newline added to a last bare line),
        // and the rest of the input is what was rejected.
        let rejected = input.len() - used;
        prop_assert_eq!(want.rejected, rejected > 0);
        let taken = &input[..used];
        let bare_last = usize::from(!taken.is_empty() && !taken.ends_with(b"\n"));
        let crs_dropped = taken
            .split_inclusive(|&b| b == b'\n')
            .filter(|raw| raw.strip_suffix(b"\n").unwrap_or(raw).ends_with(b"\r"))
            .count();
        // Every byte used is out, but the CR before each newline; a bare
        // last line got a newline.
        prop_assert_eq!(got.out.len() + crs_dropped, taken.len() + bare_last);
        prop_assert_eq!(used + rejected, input.len());
    }

    #[test]
    fn memory_is_bounded_by_the_maximum(input in prop::collection::vec(Just(b'x'), 0..2000), max in 1usize..100) {
        let mut f = Framer::new(max);
        for c in input.chunks(7) {
            f.buffer().extend_from_slice(c);
            if f.take(false).too_long {
                break;
            }
            prop_assert!(f.pending() <= max + 1);
        }
    }
}
