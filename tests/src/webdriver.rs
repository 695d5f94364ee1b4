//! A minimal W3C WebDriver client (<https://www.w3.org/TR/webdriver2/>): Debian's
//! `chromium`, headless, driven through `chromedriver`, for the console's browser tests.
//!
//! WebDriver is JSON over HTTP/1.1, so this is a few commands on [`rawhttp::Client`]
//! rather than a crate with its own async stack (compile time on 2 cores matters).
//!
//! - `chromedriver --port=0` binds a port the OS picks and logs it ("started
//!   successfully on port N"): no free-port race;
//! - chromedriver runs in a process group of its own; dropping the [`Browser`] ends
//!   the session (chromium quits), then kills that group (chromium's helpers too, if a
//!   crash left any), then removes the profile directory (`--user-data-dir`);
//! - elements are found by XPath on what a person reads; the console re-renders while
//!   it polls, so commands on elements retry a stale element within a bounded wait.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::rawhttp::{Client, Wire};
use crate::{Proc, eventually, unique};

/// The browser window: fixed, so screenshots are comparable run to run.
pub const WINDOW: (u32, u32) = (1440, 900);

/// How long a wait for something on the page may take at most.
pub const WAIT: Duration = Duration::from_secs(20);

/// A WebDriver error answer: its HTTP status, error code (`no such element`, `stale
/// element reference`, ...) and message.
#[derive(Clone, Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// A web element reference (valid until the page replaces the node).
#[derive(Clone, Debug)]
pub struct Element(String);

/// A headless chromium session. Fields drop in order after [`Drop::drop`] ended the
/// session: the driver process, then the profile directory.
pub struct Browser {
    session: String,
    driver: SocketAddr,
    proc: Proc,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and waits for the port it logs; `Err`: it exited first, with
/// its log.
fn launch(dir: &Path) -> Result<(Proc, u16), String> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("chromedriver");
    cmd.arg("--port=0").process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: prctl(2) is async-signal-safe, the one call between fork and exec.
    // The driver dies with the test even when no Drop runs (an abort, a SIGINT
    // that its own process group would not receive).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut proc = Proc::spawn("chromedriver", cmd, unique(dir, "chromedriver", "log"));
    let port = eventually(WAIT, "chromedriver to log its port or exit", || {
        if proc.has_exited() {
            return Some(Err(proc.log_text()));
        }
        let text = proc.log_text();
        let rest = &text[text.find("started successfully on port ")? + 29..];
        let port = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some(Ok(port))
    })?;
    Ok((proc, port))
}

/// The W3C key for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a port of the OS's choosing and a new chromium session
    /// with a fresh profile; `dir` holds the driver's log.
    pub fn start(dir: &Path) -> Browser {
        // With `--port=0` chromedriver takes an ephemeral port for IPv6, then asks for
        // the same number on IPv4, which another process may hold ("IPv4 port not
        // available"): its own race, so a fresh start is tried.
        let mut attempt = 0;
        let (proc, port) = loop {
            attempt += 1;
            match launch(dir) {
                Ok(started) => break started,
                Err(log) if attempt < 3 && log.contains("port not available") => {}
                Err(log) => {
                    panic!("chromedriver exited early (scripts/deps.sh test installs it):\n{log}")
                }
            }
        };
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = capabilities(&profile.path().display().to_string());
        let value = request(driver, "POST", "/session", Some(&caps)).unwrap_or_else(|e| {
            kill_group(&proc);
            panic!("new session: {e:?}\n{}", proc.log_text())
        });
        let session = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"))
            .to_string();
        Browser {
            session,
            driver,
            proc,
            _profile: profile,
        }
    }

    /// Sends one command of this session (`path` after `/session/{id}`).
    pub fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, WdError> {
        let path = format!("/session/{}{path}", self.session);
        request(self.driver, method, &path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.command(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    /// Navigates to `url` and waits for the load to finish.
    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(&json!({"url": url})));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.ok("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every element matching `xpath`, in document order.
    pub fn find_all(&self, xpath: &str) -> Vec<Element> {
        let body = json!({"using": "xpath", "value": xpath});
        let found = self.ok("POST", "/elements", Some(&body));
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| Some(Element(e[ELEMENT_KEY].as_str()?.to_string())))
            .collect()
    }

    /// Waits until `xpath` matches and returns the first match.
    pub fn wait_for(&self, xpath: &str) -> Element {
        eventually(WAIT, &format!("{xpath} on the page"), || {
            self.find_all(xpath).into_iter().next()
        })
    }

    /// Waits until `xpath` matches nothing.
    pub fn wait_gone(&self, xpath: &str) {
        eventually(WAIT, &format!("{xpath} to leave the page"), || {
            self.find_all(xpath).is_empty().then_some(())
        });
    }

    /// Clicks the first element matching `xpath`, waiting for one that can be clicked
    /// (the page may replace it between the find and the click).
    pub fn click(&self, xpath: &str) {
        self.retry(xpath, |e| {
            self.command("POST", &format!("/element/{}/click", e.0), Some(&json!({})))
        });
    }

    /// Types `text` into the first element matching `xpath`.
    pub fn type_into(&self, xpath: &str, text: &str) {
        self.retry(xpath, |e| {
            let body = json!({"text": text});
            self.command("POST", &format!("/element/{}/value", e.0), Some(&body))
        });
    }

    /// The rendered text of the first element matching `xpath`.
    pub fn text(&self, xpath: &str) -> String {
        let value = self.retry(xpath, |e| {
            self.command("GET", &format!("/element/{}/text", e.0), None)
        });
        value.as_str().unwrap_or_default().to_string()
    }

    /// Runs `f` on the first match of `xpath` until it succeeds; errors that mean
    /// "the page moved under us" are retried, any other fails the test.
    fn retry(&self, xpath: &str, f: impl Fn(&Element) -> Result<Value, WdError>) -> Value {
        eventually(WAIT, &format!("{xpath} to be usable"), || {
            let element = self.find_all(xpath).into_iter().next()?;
            match f(&element) {
                Ok(v) => Some(v),
                Err(e) if is_transient(&e) => None,
                Err(e) => panic!("{xpath}: {e:?}"),
            }
        })
    }

    /// The page's visible text (`document.body.innerText`).
    pub fn page_text(&self) -> String {
        let v = self.execute("return document.body ? document.body.innerText : ''", &[]);
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the page's visible text contains `text`; returns that text.
    pub fn wait_text(&self, text: &str) -> String {
        eventually(WAIT, &format!("{text:?} on the page"), || {
            let page = self.page_text();
            page.contains(text).then_some(page)
        })
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        let body = json!({"script": script, "args": args});
        self.ok("POST", "/execute/sync", Some(&body))
    }

    /// The text of an open `alert`/`confirm`/`prompt` dialog, if one is open (the
    /// session leaves dialogs open: `unhandledPromptBehavior: ignore`).
    pub fn dialog(&self) -> Option<String> {
        match self.command("GET", "/alert/text", None) {
            Ok(v) => Some(v.as_str().unwrap_or_default().to_string()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("GET /alert/text: {e:?}"),
        }
    }

    /// The browser console's messages since the last call (chromedriver's log
    /// endpoint): `[{"level", "message", "source"}]`. CSP violations land here.
    pub fn console_messages(&self) -> Vec<Value> {
        let v = self.ok("POST", "/se/log", Some(&json!({"type": "browser"})));
        v.as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the whole page to `path`: the window grows to the page's
    /// height (at most 3,000 px) for the shot, then returns to [`WINDOW`].
    pub fn screenshot_page(&self, path: &Path) {
        let sizes = self.execute(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]",
            &[],
        );
        let page = sizes[0].as_u64().unwrap_or(0);
        let chrome = sizes[1].as_u64().unwrap_or(0);
        let (w, h) = WINDOW;
        let height = (page + chrome).clamp(u64::from(h), 3_000);
        self.ok(
            "POST",
            "/window/rect",
            Some(&json!({"width": w, "height": height})),
        );
        self.screenshot(path);
        self.ok(
            "POST",
            "/window/rect",
            Some(&json!({"width": w, "height": h})),
        );
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.ok("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Browser {
    /// What a failing test needs to see: the address, the page's text and what the
    /// browser logged. Never panics (it runs while a test is already failing).
    fn print_state(&self) {
        let url = self.command("GET", "/url", None).unwrap_or_default();
        let script =
            json!({"script": "return document.body ? document.body.innerText : ''", "args": []});
        let text = self
            .command("POST", "/execute/sync", Some(&script))
            .unwrap_or_default();
        let log = json!({"type": "browser"});
        let log = self
            .command("POST", "/se/log", Some(&log))
            .unwrap_or_default();
        eprintln!(
            "----- browser at {url} -----\n{}\n----- browser console -----\n{log:#}",
            text.as_str().unwrap_or_default()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_state();
        }
        // Ends the session: chromedriver quits chromium and waits for it.
        let _ = self.command("DELETE", "", None);
        // Then the whole group the driver leads (a crashed chromium's helpers).
        kill_group(&self.proc);
    }
}

/// SIGKILL to the process group the driver `proc` leads, by the pid of the child
/// this module started.
fn kill_group(proc: &Proc) {
    #[allow(unsafe_code)]
    // SAFETY: kill(2) on the process group of our own child (process_group(0) made
    // its pid the group id); a group already gone is ESRCH, ignored.
    unsafe {
        libc::kill(-proc.pid(), libc::SIGKILL);
    }
}

/// `xpath` string literal for `s`, whatever quotes it holds (XPath 1.0 has no escapes).
pub fn literal(s: &str) -> String {
    if !s.contains('"') {
        format!("\"{s}\"")
    } else if !s.contains('\'') {
        format!("'{s}'")
    } else {
        let parts: Vec<String> = s.split('"').map(|p| format!("\"{p}\"")).collect();
        format!("concat({})", parts.join(", '\"', "))
    }
}

/// A button whose visible text is exactly `label`.
pub fn button(label: &str) -> String {
    format!("//button[normalize-space(.)={}]", literal(label))
}

/// The innermost elements whose visible text contains `text`.
pub fn containing(text: &str) -> String {
    let lit = literal(text);
    format!("//*[contains(., {lit}) and not(.//*[contains(., {lit})])]")
}

fn capabilities(profile: &str) -> Value {
    let (w, h) = WINDOW;
    json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        // An alert that ran must stay visible to `dialog()`, not be dismissed.
        "unhandledPromptBehavior": "ignore",
        "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 10_000},
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                // Tests run as root, where chromium's sandbox refuses to start.
                "--no-sandbox",
                "--disable-gpu",
                // Containers often have a 64 MiB /dev/shm; chromium crashes in it.
                "--disable-dev-shm-usage",
                // Nothing but the page talks to the network: no updates, no sync.
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--window-size={w},{h}"),
                format!("--user-data-dir={profile}"),
            ],
        },
    }}})
}

/// One WebDriver call on a fresh connection: the `value` of a success, else the error.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, WdError> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let transport = |message: String| WdError {
        status: 0,
        error: "transport".into(),
        message,
    };
    // Not `Client::connect`, which panics: `Drop` calls this after a failure too.
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| transport(format!("connect {addr}: {e}")))?;
    let mut client = Client {
        wire: Wire::new(stream),
        connected: Instant::now(),
    };
    client
        .send([head.as_bytes(), body.as_bytes()].concat().as_slice())
        .map_err(|e| transport(format!("send: {e}")))?;
    // Bounded above chromium's own page-load timeout (30 s), so that one answers first.
    let response = client
        .response(Duration::from_secs(60))
        .map_err(|e| transport(format!("read: {e:?}")))?;
    let json: Value = serde_json::from_slice(&response.body)
        .map_err(|e| transport(format!("not JSON ({e}): {}", response.body_text())))?;
    let value = json["value"].clone();
    if response.status() == 200 {
        return Ok(value);
    }
    Err(WdError {
        status: response.status(),
        error: value["error"].as_str().unwrap_or_default().to_string(),
        message: value["message"].as_str().unwrap_or_default().to_string(),
    })
}

/// Errors that mean the element moved or is not usable yet, not a broken test.
fn is_transient(e: &WdError) -> bool {
    matches!(
        e.error.as_str(),
        "stale element reference"
            | "element not interactable"
            | "element click intercepted"
            | "no such element"
    )
}
