//! Spots request heads that carry both `Content-Length` and `Transfer-Encoding` (a request-smuggling
//! signature), which hypache rejects with 400 (docs/routing.md#security-defaults).
//!
//! hyper drops the `Content-Length` of such a request before the handler sees it, so the raw bytes are looked at
//! as they are read: only the head, only the first bytes of each line, and nothing after the blank line.

/// Longest header-name prefix that is compared (`transfer-encoding:`).
const PREFIX: usize = 18;

/// A line-by-line scanner over the bytes of one request head.
///
/// Every connection carries one, parked or not, so its counts are as small as what they must tell: a line's
/// length only as far as "empty, a lone CR, or longer", and only whether a line was seen.
#[derive(Debug, Default)]
pub struct HeadScan {
    active: bool,
    prefix: [u8; PREFIX],
    prefix_len: u8,
    /// Saturates at 255: only 0 and 1 matter (a blank line).
    line_len: u8,
    /// A non-blank line was seen in this head (blank lines before a request line are skipped).
    any_line: bool,
    content_length: bool,
    transfer_encoding: bool,
}

impl HeadScan {
    /// Start scanning a new request head.
    pub fn start(&mut self) {
        *self = HeadScan {
            active: true,
            ..HeadScan::default()
        };
    }

    /// Feed bytes as they are read. Returns `Some(conflict)` when the head ends in these bytes.
    pub fn feed(&mut self, mut buf: &[u8]) -> Option<bool> {
        while self.active && !buf.is_empty() {
            let newline = memchr::memchr(b'\n', buf);
            let segment = &buf[..newline.unwrap_or(buf.len())];
            let filled = usize::from(self.prefix_len);
            let take = (PREFIX - filled).min(segment.len());
            self.prefix[filled..filled + take].copy_from_slice(&segment[..take]);
            self.prefix_len += take as u8;
            let seen = u8::try_from(segment.len()).unwrap_or(u8::MAX);
            self.line_len = self.line_len.saturating_add(seen);
            let at = newline?;
            buf = &buf[at + 1..];
            let blank = self.line_len == 0 || (self.line_len == 1 && self.prefix[0] == b'\r');
            if blank && self.any_line {
                self.active = false;
                return Some(self.content_length && self.transfer_encoding);
            }
            if !blank {
                let line = &self.prefix[..usize::from(self.prefix_len)];
                self.content_length |= starts_with_ignore_case(line, b"content-length:");
                self.transfer_encoding |= starts_with_ignore_case(line, b"transfer-encoding:");
                self.any_line = true;
            }
            self.prefix_len = 0;
            self.line_len = 0;
        }
        None
    }
}

fn starts_with_ignore_case(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Option<bool> {
        let mut s = HeadScan::default();
        s.start();
        chunks.iter().find_map(|c| s.feed(c))
    }

    /// The whole head at once, line by line: what the streaming scanner must agree with, however the head
    /// is split into reads.
    fn whole(head: &[u8]) -> Option<bool> {
        let (mut any_line, mut cl, mut te) = (false, false, false);
        let mut rest = head;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let line = rest[..at].strip_suffix(b"\r").unwrap_or(&rest[..at]);
            rest = &rest[at + 1..];
            if line.is_empty() {
                if any_line {
                    return Some(cl && te);
                }
                continue;
            }
            any_line = true;
            cl |= starts_with_ignore_case(line, b"content-length:");
            te |= starts_with_ignore_case(line, b"transfer-encoding:");
        }
        None
    }

    /// Random heads (leading blank lines, LF or CRLF, both headers in any case, lines far longer than the
    /// scanner keeps count of) fed in random pieces: the same answer as [`whole`], for a fixed seed.
    #[test]
    fn random_heads_in_random_pieces_agree_with_the_whole_head() {
        let mut rng = fastrand::Rng::with_seed(20);
        let lines: [&[u8]; 9] = [
            b"POST /x HTTP/1.1",
            b"Host: a.test",
            b"Content-Length: 5",
            b"content-LENGTH:5",
            b"Transfer-Encoding: chunked",
            b"TRANSFER-encoding:chunked",
            b"X-Content-Length: 1",
            b"Content-Lengt: 1",
            b"\r",
        ];
        for round in 0..2_000 {
            let mut head = Vec::new();
            for _ in 0..rng.usize(0..3) {
                head.extend_from_slice(if rng.bool() { b"\r\n" } else { b"\n" });
            }
            for _ in 0..rng.usize(1..8) {
                match rng.usize(0..12) {
                    10 => head.extend(std::iter::repeat_n(b'a', rng.usize(200..400))),
                    11 => {}
                    i => head.extend_from_slice(lines[i.min(lines.len() - 1)]),
                }
                head.extend_from_slice(if rng.bool() { b"\r\n" } else { b"\n" });
            }
            if rng.bool() {
                head.extend_from_slice(b"\r\nbody: Transfer-Encoding: x\r\n");
            }
            let mut pieces = Vec::new();
            let mut rest = &head[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(
                scan(&pieces),
                whole(&head),
                "round {round}: {:?} in {} pieces",
                String::from_utf8_lossy(&head),
                pieces.len()
            );
        }
    }

    #[test]
    fn both_headers_conflict_even_split_across_reads() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nbody";
        assert_eq!(scan(&[head]), Some(true));
        for split in 1..head.len() {
            assert_eq!(
                scan(&[&head[..split], &head[split..]]),
                Some(true),
                "split at {split}"
            );
        }
    }

    #[test]
    fn one_header_is_fine_and_body_is_not_scanned() {
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: x\r\n"]),
            Some(false)
        );
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"]),
            Some(false)
        );
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\n"]), None);
        assert_eq!(scan(&[b"\r\nGET / HTTP/1.1\n\n"]), Some(false));
    }
}
