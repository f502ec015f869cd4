//! A request body, fed as it arrives: Content-Length or chunked transfer coding, bounded. The
//! framing is a protocol-layer state machine apart from any route: the upload handler feeds it
//! what the connection reads.
//!
//! Pure (no I/O), so that the event loop can feed it whatever each read returned and the fuzzer
//! can feed it any split of any bytes. Chunk sizes are parsed by httparse; the rest of the
//! chunked grammar (CRLF after each chunk, trailer lines up to the empty one) is checked here,
//! strictly: anything else is `Malformed`. A body over the limit is refused as soon as that is
//! known: at once for a Content-Length, at the chunk that would pass it otherwise.

/// Longest chunk-size or trailer line kept while waiting for its end.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit: 413.
    TooLarge,
    /// Not valid chunked coding: 400.
    Malformed,
}

#[derive(Debug)]
pub struct Body {
    limit: u64,
    state: State,
    bytes: Vec<u8>,
    /// A chunk-size or trailer line still missing its end.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length bytes still to come.
    Remaining(u64),
    /// Chunked: waiting for a chunk-size line.
    Size,
    /// Chunked: this many bytes of the current chunk still to come, then its CRLF.
    Data(u64),
    /// Chunked: the CRLF after a chunk's data, `0` bytes of it seen so far (0 or 1).
    DataEnd(u8),
    /// Chunked: trailer lines, until an empty one.
    Trailers,
    Done,
}

impl Body {
    pub fn new(framing: Framing, limit: u64) -> Result<Body, BodyError> {
        let state = match framing {
            Framing::Length(n) if n > limit => return Err(BodyError::TooLarge),
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Remaining(n),
            Framing::Chunked => State::Size,
        };
        let reserve = match framing {
            Framing::Length(n) => n as usize,
            Framing::Chunked => 0,
        };
        Ok(Body { limit, state, bytes: Vec::with_capacity(reserve), line: Vec::new() })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes what it needs of `input`; returns how many bytes it took (the rest, once the body is
    /// done, belongs to whatever follows it).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            let rest = &input[at..];
            match self.state {
                State::Remaining(n) | State::Data(n) => {
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    self.bytes.extend_from_slice(&rest[..take]);
                    at += take;
                    let left = n - take as u64;
                    self.state = match self.state {
                        State::Remaining(_) if left == 0 => State::Done,
                        State::Remaining(_) => State::Remaining(left),
                        _ if left == 0 => State::DataEnd(0),
                        _ => State::Data(left),
                    };
                }
                State::DataEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if rest[0] != want {
                        return Err(BodyError::Malformed);
                    }
                    at += 1;
                    self.state = if seen == 0 { State::DataEnd(1) } else { State::Size };
                }
                State::Size | State::Trailers => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        self.keep_line(rest)?;
                        at = input.len();
                        continue;
                    };
                    self.keep_line(&rest[..=end])?;
                    at += end + 1;
                    let line = std::mem::take(&mut self.line);
                    self.state = self.after_line(&line)?;
                }
                State::Done => unreachable!("the loop stops when done"),
            }
        }
        Ok(at)
    }

    /// The whole body, once [`Body::is_done`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn keep_line(&mut self, part: &[u8]) -> Result<(), BodyError> {
        if self.line.len() + part.len() > MAX_LINE {
            return Err(BodyError::Malformed);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    /// The state after a whole line (ending in LF) in the Size or Trailers state.
    fn after_line(&self, line: &[u8]) -> Result<State, BodyError> {
        let Some(content) = line.strip_suffix(b"\r\n") else { return Err(BodyError::Malformed) };
        if self.state == State::Trailers {
            return Ok(if content.is_empty() { State::Done } else { State::Trailers });
        }
        let size = match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(BodyError::Malformed),
        };
        if size == 0 {
            return Ok(State::Trailers);
        }
        if (self.bytes.len() as u64).saturating_add(size) > self.limit {
            return Err(BodyError::TooLarge);
        }
        Ok(State::Data(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; the body and the bytes left over.
    fn read(framing: Framing, limit: u64, input: &[u8], step: usize) -> Result<(Vec<u8>, usize), BodyError> {
        let mut body = Body::new(framing, limit)?;
        let mut at = 0;
        while at < input.len() && !body.is_done() {
            let end = (at + step).min(input.len());
            at += body.feed(&input[at..end])?;
        }
        assert!(body.is_done(), "incomplete after {at} of {} bytes", input.len());
        Ok((body.into_bytes(), input.len() - at))
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        for step in [1, 3, 100] {
            assert_eq!(read(Framing::Length(5), 10, b"helloGET", step), Ok((b"hello".to_vec(), 3)));
        }
        assert_eq!(Body::new(Framing::Length(11), 10).unwrap_err(), BodyError::TooLarge);
        assert!(Body::new(Framing::Length(0), 10).unwrap().is_done());
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_split() {
        let wire =
            b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            assert_eq!(
                read(Framing::Chunked, 100, wire, step),
                Ok((b"Wikipedia in\r\n\r\nchunks.".to_vec(), 4)),
                "step {step}"
            );
        }
    }

    #[test]
    fn bad_chunking_and_oversize_chunks_are_refused() {
        for bad in
            [&b"4\r\nWikiX\r\n"[..], b"z\r\n", b"4\nWiki\r\n", b"-1\r\n", b"4\r\nWiki\r\n0\r\nbad trailer\n"]
        {
            assert_eq!(read(Framing::Chunked, 100, bad, 1).unwrap_err(), BodyError::Malformed, "{bad:?}");
        }
        assert_eq!(
            read(Framing::Chunked, 6, b"4\r\nWiki\r\n4\r\nWiki\r\n0\r\n\r\n", 64),
            Err(BodyError::TooLarge)
        );
        let endless_size = vec![b'1'; MAX_LINE + 1];
        assert_eq!(read(Framing::Chunked, 100, &endless_size, 7), Err(BodyError::Malformed));
    }
}
