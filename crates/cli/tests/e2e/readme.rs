//! README's walkthrough, run as written: every command line of the code blocks under "Using
//! it" runs in order against `userimport dev` (the real binary, in a folder of its own), and
//! must succeed. `cargo run -p cli -- dev …` lines (re)start dev with their arguments, as an
//! administrator stopping it with Ctrl-C and starting it again would. Placeholders are filled
//! with what the commands before made: `<job-id>` the newest job, `<run-id>` the newest round
//! (for approve/reject: the newest one waiting for approval), `<rule-id>` the newest rule.
//! Commands quoted in README's prose must at least parse. So README cannot drift again.
//!
//! The only changes to what README says: dev gets free ports (`--port-base`, with the CLI told
//! through USERIMPORT_*_URL) and no scheduled rounds (`--delta-interval 0`), so that each
//! round in README is the one its command starts.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const README: &str = include_str!("../../../../README.md");
const BIN: &str = env!("CARGO_BIN_EXE_userimport");
const DEV_PREFIX: &str = "cargo run -p cli -- dev";

/// The command lines of the `sh` blocks between two headings, in order.
fn block_lines(from: &str, to: &str) -> Vec<String> {
    let start = README.find(from).expect("README has the section");
    let end = start + README[start..].find(to).expect("and the one after it");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in README[start..end].lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = trimmed == "```sh";
            continue;
        }
        if in_block && !trimmed.is_empty() {
            lines.push(strip_comment(trimmed).to_owned());
        }
    }
    lines
}

/// The line without its trailing `# comment` (a `#` after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return line[..at].trim_end(),
            _ => {}
        }
        previous = c;
    }
    line.trim_end()
}

/// Splits a command line into words as a shell would for these lines: spaces separate,
/// quotes group.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in README line {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// Three consecutive free loopback ports.
fn free_port_base() -> u16 {
    for _ in 0..200 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = probe.local_addr().unwrap().port();
        drop(probe);
        if base > 65_000 {
            continue;
        }
        let free =
            (base..base + 3).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no three consecutive free ports")
}

/// A running `userimport dev`, in the walkthrough's folder.
struct Dev {
    child: Child,
}

impl Dev {
    fn start(folder: &Path, profile: &Path, args: &[String], port_base: u16) -> Self {
        let mut child = Command::new(BIN)
            .arg("dev")
            .args(args)
            .args([
                "--port-base",
                &port_base.to_string(),
                "--delta-interval",
                "0",
            ])
            .current_dir(folder)
            .env("USERIMPORT_PROFILE", profile)
            .env_remove("USERIMPORT_COMPANY")
            .env_remove("USERIMPORT_TOKEN")
            .env_remove("USERIMPORT_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready once it says how to stop it (after its first full round).
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut printed = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("Ctrl-C stops everything") {
                    let _ = ready_tx.send(Ok(()));
                }
            }
            let _ = ready_tx.send(Err(printed));
        });
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => Self { child },
            Ok(Err(printed)) => panic!("dev stopped before it was ready:\n{printed}"),
            Err(_) => panic!("dev was not ready within 120 s"),
        }
    }

    /// Stops it as Ctrl-C does, and waits for it to end.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        for _ in 0..300 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("dev did not stop within 30 s of Ctrl-C");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The walkthrough's CLI: the folder dev runs in, its profile and ports.
struct Cli {
    folder: PathBuf,
    profile: PathBuf,
    port_base: u16,
}

impl Cli {
    fn run(&self, args: &[String]) -> Output {
        let url = |offset: u16| format!("http://127.0.0.1:{}", self.port_base + offset);
        Command::new(BIN)
            .args(args)
            .current_dir(&self.folder)
            .env("USERIMPORT_PROFILE", &self.profile)
            .env_remove("USERIMPORT_COMPANY")
            .env_remove("USERIMPORT_TOKEN")
            .env_remove("USERIMPORT_TOKEN_FILE")
            .env("USERIMPORT_DIRECTORY_URL", url(0))
            .env("USERIMPORT_REGISTRY_URL", url(1))
            .env("USERIMPORT_IMPORTER_URL", url(2))
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The value a placeholder stands for at this point of the walkthrough.
    fn fill(&self, placeholder: &str, command: &[String]) -> String {
        let field = |rows: Vec<serde_json::Value>, name: &str| -> String {
            let first = rows
                .first()
                .unwrap_or_else(|| panic!("nothing to fill {placeholder} in {command:?} with"));
            first[name].as_str().unwrap().to_owned()
        };
        match placeholder {
            "<job-id>" => field(self.json(&["jobs", "list", "-o", "json"]), "job_id"),
            "<rule-id>" => field(self.json(&["rules", "list", "-o", "json"]), "rule_id"),
            "<run-id>" => {
                let runs = self.json(&["sync", "runs", "-o", "json"]);
                let deciding = command.iter().any(|w| w == "approve" || w == "reject");
                let wanted: Vec<serde_json::Value> = runs
                    .into_iter()
                    .filter(|run| {
                        !deciding
                            || run["summary"]
                                .as_str()
                                .unwrap()
                                .contains("awaiting approval")
                    })
                    .collect();
                field(wanted, "run_id")
            }
            other => panic!("README uses {other} in {command:?}, which this test cannot fill"),
        }
    }
}

#[test]
fn every_command_in_readme_runs_as_written_against_dev() {
    let folder = tempfile::tempdir().unwrap();
    let profile = folder.path().join("profile.json");
    let cli = Cli {
        folder: folder.path().to_owned(),
        profile: profile.clone(),
        port_base: free_port_base(),
    };
    let lines = block_lines("## Using it", "### On Postgres");
    assert!(
        lines.len() > 60,
        "README's walkthrough was found: {lines:?}"
    );
    let mut dev: Option<Dev> = None;
    let mut ran = 0;
    for line in &lines {
        if let Some(args) = line.strip_prefix(DEV_PREFIX) {
            if let Some(running) = dev.take() {
                running.stop();
            }
            dev = Some(Dev::start(
                &cli.folder,
                &profile,
                &words(args),
                cli.port_base,
            ));
            continue;
        }
        let Some(command) = line.strip_prefix("userimport ") else {
            panic!("README's walkthrough has a line this test cannot run: {line:?}");
        };
        assert!(dev.is_some(), "{line:?} comes before README starts dev");
        let args: Vec<String> = words(command)
            .into_iter()
            .map(|word| {
                if word.starts_with('<') && word.ends_with('>') {
                    cli.fill(&word, &words(command))
                } else {
                    word
                }
            })
            .collect();
        let started = std::time::Instant::now();
        let output = cli.run(&args);
        eprintln!("{:>6} ms  {line}", started.elapsed().as_millis());
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "README's `{line}` failed (ran as {args:?}):\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ran += 1;
    }
    if let Some(running) = dev.take() {
        running.stop();
    }
    assert_eq!(
        ran + lines.iter().filter(|l| l.starts_with(DEV_PREFIX)).count(),
        lines.len()
    );
}

/// `userimport …` quoted in README's prose, anywhere: each parses (run with `--help`, which
/// clap answers only for a command line it accepts up to there).
#[test]
fn every_command_quoted_in_readme_prose_parses() {
    let mut quoted = Vec::new();
    for (at, _) in README.match_indices("`userimport ") {
        let rest = &README[at + 1..];
        let Some(end) = rest.find('`') else { continue };
        quoted.push(rest[..end].to_owned());
    }
    assert!(
        quoted.len() > 10,
        "README's quoted commands were found: {quoted:?}"
    );
    for command in &quoted {
        let args: Vec<String> = words(command.strip_prefix("userimport ").unwrap())
            .into_iter()
            // Placeholders and ellipses stand for a value.
            .map(|word| {
                let placeholder = word.starts_with('<') && word.ends_with('>');
                if placeholder || word == "…" || word == "..." {
                    "x".to_owned()
                } else {
                    word
                }
            })
            .chain(["--help".to_owned()])
            .collect();
        let output = Command::new(BIN)
            .args(&args)
            .env_remove("USERIMPORT_TOKEN")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "README quotes `{command}`, which the CLI does not accept:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_readme_reader_splits_words_and_comments_as_a_shell_does() {
    assert_eq!(
        strip_comment(r#"userimport a --reason "HR # batch"   # note"#),
        r#"userimport a --reason "HR # batch""#
    );
    assert_eq!(strip_comment("userimport a#b"), "userimport a#b");
    assert_eq!(
        words(r#"sync reject x --reason "HR batch error""#),
        ["sync", "reject", "x", "--reason", "HR batch error"]
    );
}
