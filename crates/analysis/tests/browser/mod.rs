//! Headless Chromium for tests: loads a page, dumps its DOM after the scripts ran, and checks
//! that the explorer got ready without a script error. Shared by the analysis crate's explorer
//! test and the root package's study test (`#[path]`-included there).
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Far above the 5 s of virtual time; only a hung browser gets near it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// One line past the test harness's capture, so that `cargo test` shows what it skipped.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped the explorer's browser check: {why}"
    );
}

/// The Chromium to drive, or none when the check is to be skipped: with `CNNU_SKIP_BROWSER=1`,
/// or when none is installed — unless `CNNU_REQUIRE_BROWSER=1` (CI sets it), which makes a
/// missing Chromium a failure.
pub fn browser() -> Option<PathBuf> {
    if std::env::var("CNNU_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        skipped("CNNU_SKIP_BROWSER=1");
        return None;
    }
    let found = std::env::var_os("CNNU_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()))
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| on_path(name))
        });
    let required = std::env::var("CNNU_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    match found {
        Some(path) => Some(path),
        None if required => panic!(
            "CNNU_REQUIRE_BROWSER=1 but no Chromium found: install Debian's `chromium` package \
             (apt-get install chromium) or point CNNU_CHROMIUM at a binary"
        ),
        None => {
            skipped("no Chromium (install Debian's `chromium` or point CNNU_CHROMIUM at one)");
            None
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The DOM after Chromium ran the page's scripts, and its stderr for failure messages.
pub fn dump_dom(chromium: &Path, dir: &Path, url: &str) -> (String, String) {
    let (out, err) = (dir.join("dom.html"), dir.join("stderr.txt"));
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        // A profile of its own, so parallel tests and a running browser do not collide.
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--no-first-run", "--disable-dev-shm-usage", url])
        .stdin(Stdio::null())
        // Files, not pipes: the dump is larger than a pipe's buffer.
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > BROWSER_TIMEOUT {
            child.kill().ok();
            panic!("{} ran past {BROWSER_TIMEOUT:?}", chromium.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (read(&out), read(&err))
}

/// The explorer root's start tag in the dumped DOM.
pub fn root_tag(dom: &str) -> &str {
    let start = dom
        .find("<div id=\"explorer\"")
        .expect("the explorer root in the DOM");
    let len = dom[start..].find('>').expect("the root's start tag ends");
    &dom[start..start + len + 1]
}

pub fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// A page the explorer drew: its root's start tag and the whole DOM after the script ran.
pub struct Drawn {
    /// The `<div id="explorer" ...>` start tag.
    pub tag: String,
    /// The page as Chromium left it.
    pub dom: String,
}

impl Drawn {
    /// The text the explorer shows beside its sample slider.
    pub fn sample_label(&self) -> Option<&str> {
        let open = "<span class=\"ex-sample-label\">";
        let start = self.dom.find(open)? + open.len();
        Some(&self.dom[start..start + self.dom[start..].find('<')?])
    }
}

/// Loads `page` (with `hash` appended to its URL) and returns what the explorer drew, after
/// checking that it got ready without a script error; None when skipped.
pub fn check_explorer(page: &Path, hash: &str) -> Option<Drawn> {
    let chromium = browser()?;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}{hash}", page.display());
    let (dom, stderr) = dump_dom(&chromium, dir.path(), &url);
    let tail: String = stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n");
    assert!(
        !dom.is_empty(),
        "Chromium dumped no DOM; its stderr ends:\n{tail}"
    );
    let tag = root_tag(&dom).to_string();
    assert_eq!(
        attribute(&tag, "data-error"),
        None,
        "the explorer's script failed: {tag}"
    );
    assert_eq!(
        attribute(&tag, "data-ready"),
        Some("true"),
        "not ready: {tag}"
    );
    Some(Drawn { tag, dom })
}
