//! A minimal Chrome DevTools Protocol client for the console test: headless Chromium with
//! `--remote-debugging-port`, one page opened through `/json/new`, and `Runtime.evaluate` over a
//! WebSocket (RFC 6455, client frames masked, text only). Enough to click a link and read the
//! page a real browser rendered; no crate needed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Limit on one step (start, open, one evaluation): reaching it fails the test.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// A running headless Chromium and one page of it.
pub struct Browser {
    _child: Child,
    page: TcpStream,
    next_id: u64,
}

impl Browser {
    /// Starts `program` headless with a profile in `profile` and opens `url` in a page.
    pub async fn open(program: &Path, profile: &Path, url: &str) -> Browser {
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(STEP_LIMIT, async {
            while let Some(line) = lines.next_line().await.expect("chromium stderr") {
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    return port.parse::<u16>().expect("devtools port");
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium prints its DevTools address");
        // Keep reading stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let target: Value = http
            .put(format!("http://127.0.0.1:{port}/json/new?{url}"))
            .send()
            .await
            .expect("open a page")
            .json()
            .await
            .expect("page description");
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("page websocket url")
            .to_owned();
        let path = ws
            .split_once(&format!("127.0.0.1:{port}"))
            .map(|(_, p)| p.to_owned())
            .expect("websocket path");
        let page = connect(port, &path).await;
        Browser {
            _child: child,
            page,
            next_id: 1,
        }
    }

    /// Evaluates `expression` (promises awaited) and returns its value, or the exception text.
    pub async fn evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "awaitPromise": true, "returnByValue": true},
        });
        send_text(&mut self.page, &request.to_string()).await;
        let answer = tokio::time::timeout(STEP_LIMIT, async {
            loop {
                let message: Value =
                    serde_json::from_str(&read_text(&mut self.page).await).expect("cdp json");
                if message["id"] == id {
                    return message;
                }
            }
        })
        .await
        .expect("chromium answers an evaluation");
        if let Some(error) = answer.get("error") {
            return Err(error.to_string());
        }
        let result = &answer["result"];
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(exception.to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` until it returns `true` (errors while a page loads count as not
    /// yet); fails the test after [`STEP_LIMIT`].
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            if self.evaluate(expression).await == Ok(Value::Bool(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Opens the WebSocket at `path` on `port`.
async fn connect(port: u16, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to devtools");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The response head, byte by byte up to the blank line (frames may follow at once).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.expect("websocket handshake"));
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "websocket refused: {head}"
    );
    stream
}

/// Sends one masked text frame.
async fn send_text(stream: &mut TcpStream, text: &str) {
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    let mask = [0x5au8, 0x17, 0xc3, 0x8e];
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
}

/// Reads one text message (fragments joined; pings and other control frames skipped).
async fn read_text(stream: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let first = stream.read_u8().await.expect("websocket frame");
        let second = stream.read_u8().await.expect("websocket frame");
        let length = match second & 0x7f {
            126 => u64::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mask = if second & 0x80 != 0 {
            let mut mask = [0u8; 4];
            stream.read_exact(&mut mask).await.unwrap();
            Some(mask)
        } else {
            None
        };
        let mut payload = vec![0u8; usize::try_from(length).unwrap()];
        stream.read_exact(&mut payload).await.unwrap();
        if let Some(mask) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let opcode = first & 0x0f;
        if opcode >= 0x8 {
            assert_ne!(opcode, 0x8, "chromium closed the websocket");
            continue;
        }
        message.extend(payload);
        if first & 0x80 != 0 {
            return String::from_utf8(message).expect("utf-8 text frame");
        }
    }
}
