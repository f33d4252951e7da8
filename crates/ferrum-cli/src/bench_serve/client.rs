//! A minimal HTTP/1.1 client over plain TCP, enough to benchmark an
//! OpenAI-compatible server on a trusted address: one connection per request
//! (`Connection: close`), bodies framed by Content-Length, chunked encoding or
//! connection close, and a Server-Sent-Events line splitter on top.
//!
//! Built on tokio's `net` feature alone (readiness + try_read/try_write), so the
//! benchmark adds no dependency and no feature to the workspace.

use std::io;

use anyhow::{anyhow, bail, Context, Result};
use tokio::net::TcpStream;

/// Largest response head accepted; a server sending more is broken.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest error body kept for the error message.
const MAX_ERROR_BODY: usize = 4096;

/// Where requests go: `http://host:port[/prefix]`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL as the user gave it, without a trailing slash (for messages).
    pub url: String,
    host: String,
    port: u16,
    prefix: String,
}

impl Endpoint {
    pub fn parse(base: &str) -> Result<Self> {
        let url = base.trim_end_matches('/').to_string();
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--base-url `{base}`: only plain http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| anyhow!("--base-url `{base}`: bad port `{p}`"))?;
                (h.to_string(), port)
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            bail!("--base-url `{base}`: no host");
        }
        // A base URL ending in /v1 is common; the paths below add /v1 themselves.
        let prefix = path.strip_suffix("/v1").unwrap_or(path).to_string();
        Ok(Endpoint { url, host, port, prefix })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn connect(&self) -> Result<Conn> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let s = TcpStream::connect((host, self.port))
            .await
            .with_context(|| format!("cannot connect to {} ({})", self.url, self.authority()))?;
        let _ = s.set_nodelay(true);
        Ok(Conn { s, buf: Vec::new() })
    }

    /// Sends one request and reads the response head; the body is read from
    /// the returned [`Response`].
    pub async fn request(&self, method: &str, path: &str, body: Option<&[u8]>, api_key: Option<&str>) -> Result<Response> {
        let mut conn = self.connect().await?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrum-bench\r\nAccept: */*\r\nConnection: close\r\n",
            self.prefix,
            self.authority()
        );
        if let Some(k) = api_key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or(&[]));
        conn.write_all(&out).await.with_context(|| format!("sending {method} {path} to {}", self.url))?;
        let (status, framing) = conn.read_head().await.with_context(|| format!("reading the response to {method} {path} from {}", self.url))?;
        Ok(Response { status, conn, framing })
    }
}

struct Conn {
    s: TcpStream,
    /// Bytes read from the socket and not yet consumed.
    buf: Vec<u8>,
}

impl Conn {
    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut off = 0;
        while off < data.len() {
            self.s.writable().await?;
            match self.s.try_write(&data[off..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed while sending")),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads more bytes into `buf`; 0 means the peer closed.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            self.s.readable().await?;
            match self.s.try_read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn read_head(&mut self) -> Result<(u16, Framing)> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head longer than {MAX_HEAD} bytes");
            }
            if self.fill().await? == 0 {
                bail!("connection closed before a response head ({} bytes received)", self.buf.len());
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| anyhow!("malformed status line `{status_line}`"))?;
        let mut framing = Framing::Close;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
                framing = Framing::Chunked { left: 0, need_crlf: false };
            } else if name == "content-length" && !matches!(framing, Framing::Chunked { .. }) {
                let n = value.parse::<usize>().map_err(|_| anyhow!("bad Content-Length `{value}`"))?;
                framing = Framing::Length(n);
            }
        }
        Ok((status, framing))
    }
}

enum Framing {
    /// Bytes of body still to come.
    Length(usize),
    /// `left`: bytes still to come of the current chunk; `need_crlf`: the
    /// CRLF after a finished chunk is still to be consumed.
    Chunked { left: usize, need_crlf: bool },
    /// Body runs until the server closes.
    Close,
}

/// A response whose head has been read.
pub struct Response {
    pub status: u16,
    conn: Conn,
    framing: Framing,
}

impl Response {
    /// The next piece of the decoded body, `None` at its end.
    pub async fn next_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        let c = &mut self.conn;
        loop {
            match &mut self.framing {
                Framing::Length(0) => return Ok(None),
                Framing::Length(n) => {
                    if c.buf.is_empty() && c.fill().await? == 0 {
                        bail!("connection closed with {n} body bytes missing");
                    }
                    let k = (*n).min(c.buf.len());
                    *n -= k;
                    return Ok(Some(c.buf.drain(..k).collect()));
                }
                Framing::Close => {
                    if c.buf.is_empty() && c.fill().await? == 0 {
                        return Ok(None);
                    }
                    return Ok(Some(std::mem::take(&mut c.buf)));
                }
                Framing::Chunked { left, need_crlf } => {
                    if *left > 0 {
                        if c.buf.is_empty() && c.fill().await? == 0 {
                            bail!("connection closed inside a chunk ({left} bytes missing)");
                        }
                        let k = (*left).min(c.buf.len());
                        *left -= k;
                        return Ok(Some(c.buf.drain(..k).collect()));
                    }
                    if *need_crlf {
                        while c.buf.len() < 2 {
                            if c.fill().await? == 0 {
                                bail!("connection closed after a chunk");
                            }
                        }
                        c.buf.drain(..2);
                        *need_crlf = false;
                        continue;
                    }
                    let line_end = loop {
                        if let Some(i) = find(&c.buf, b"\r\n") {
                            break i;
                        }
                        if c.buf.len() > MAX_CHUNK_LINE {
                            bail!("chunk-size line longer than {MAX_CHUNK_LINE} bytes");
                        }
                        if c.fill().await? == 0 {
                            bail!("connection closed before a chunk size");
                        }
                    };
                    let line = String::from_utf8_lossy(&c.buf[..line_end]).into_owned();
                    c.buf.drain(..line_end + 2);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).map_err(|_| anyhow!("bad chunk size `{hex}`"))?;
                    if size == 0 {
                        self.framing = Framing::Length(0);
                        return Ok(None);
                    }
                    *left = size;
                    *need_crlf = true;
                }
            }
        }
    }

    /// The whole body (for small answers and error messages), at most `cap` bytes kept.
    pub async fn read_body(&mut self, cap: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = self.next_bytes().await? {
            let room = cap.saturating_sub(out.len());
            out.extend_from_slice(&b[..b.len().min(room)]);
        }
        Ok(out)
    }

    /// The error body shortened for a message.
    pub async fn error_text(&mut self) -> String {
        match self.read_body(MAX_ERROR_BODY).await {
            Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
            Err(e) => format!("(body unreadable: {e})"),
        }
    }
}

/// Splits a byte stream into SSE lines (without the line ending).
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("127.0.0.1", 8080, ""));
        let e = Endpoint::parse("http://localhost/api").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.prefix.as_str()), ("localhost", 80, "/api"));
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http://x:99999").is_err());
    }

    #[test]
    fn splits_lines_across_pushes() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"data: a\r\n\r\nda"), vec!["data: a".to_string(), String::new()]);
        assert_eq!(s.push(b"ta: b\n"), vec!["data: b".to_string()]);
    }
}
