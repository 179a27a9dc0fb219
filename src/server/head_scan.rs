//! Spots request heads that carry both `Content-Length` and `Transfer-Encoding` (a request-smuggling
//! signature), which hypache rejects with 400 (docs/routing.md#security-defaults).
//!
//! hyper drops the `Content-Length` of such a request before the handler sees it, so the raw bytes are looked at
//! as they are read: only the head, only the first bytes of each line, and nothing after the blank line.

/// Longest header-name prefix that is compared (`transfer-encoding:`).
const PREFIX: usize = 18;

/// A line-by-line scanner over the bytes of one request head.
#[derive(Debug, Default)]
pub struct HeadScan {
    active: bool,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    line_len: usize,
    lines: usize,
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
            let take = (PREFIX - self.prefix_len).min(segment.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&segment[..take]);
            self.prefix_len += take;
            self.line_len += segment.len();
            let at = newline?;
            buf = &buf[at + 1..];
            let blank = self.line_len == 0 || (self.line_len == 1 && self.prefix[0] == b'\r');
            if blank && self.lines > 0 {
                self.active = false;
                return Some(self.content_length && self.transfer_encoding);
            }
            if !blank {
                let line = &self.prefix[..self.prefix_len];
                self.content_length |= starts_with_ignore_case(line, b"content-length:");
                self.transfer_encoding |= starts_with_ignore_case(line, b"transfer-encoding:");
                self.lines += 1;
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
