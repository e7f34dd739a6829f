//! `rollguard check` as a user runs it: the real binary, real files, real exit codes.
//!
//! Every run starts in a fresh, empty temporary directory (so no `.rollguard.toml` of the
//! workspace leaks in), except the one that checks `deploy/`, which runs from the workspace
//! root exactly as CI does. Nothing sleeps; inputs that could be random come from a
//! fixed-seed xorshift, so every run checks the same bytes.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// The rule corpus of `rollguard-check`.
fn corpus() -> PathBuf {
    workspace().join("crates/rollguard-check/tests/corpus")
}

/// `corpus/RULE/KIND.yaml`, e.g. `corpus_file("RG001", "bad")`.
fn corpus_file(rule: &str, kind: &str) -> PathBuf {
    corpus().join(rule).join(format!("{kind}.yaml"))
}

fn corpus_text(rule: &str, kind: &str) -> String {
    let path = corpus_file(rule, kind);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The IDs of every rule, `RG001` to `RG015`.
fn rule_ids() -> Vec<String> {
    (1..=15).map(|n| format!("RG{n:03}")).collect()
}

/// A temporary directory, removed when dropped.
struct Tmp {
    dir: PathBuf,
}

impl Tmp {
    fn new() -> Tmp {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rollguard-check-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Tmp { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` (creating its parent directories) and returns its path.
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a directory");
        }
        std::fs::write(&path, bytes).expect("write a file");
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read a file back")
    }

    /// `rollguard check ARGS` with this directory as the current directory.
    fn check(&self, args: &[&str]) -> Run {
        run_check(&self.dir, args, None)
    }

    /// The same, with `stdin` piped in.
    fn check_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        run_check(&self.dir, args, Some(stdin))
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    /// The exit code; `None` when a signal ended the process.
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the whole run when it differs.
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit status\n{self}");
        self
    }

    /// Asserts that the run ended by itself, with 0, 1 or 2, and did not panic.
    #[track_caller]
    fn expect_no_crash(&self) -> i32 {
        assert!(
            self.signal.is_none(),
            "rollguard was killed by a signal\n{self}"
        );
        assert!(
            !self.stderr.contains("panicked"),
            "rollguard panicked\n{self}"
        );
        let code = self.code.expect("an exit code");
        assert!((0..=2).contains(&code), "exit code outside 0..=2\n{self}");
        code
    }

    /// stdout as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{self}"))
    }

    /// The rule IDs of a `--format json` run's findings.
    #[track_caller]
    fn rules(&self) -> Vec<String> {
        self.json()["findings"]
            .as_array()
            .expect("findings is an array")
            .iter()
            .map(|f| f["rule"].as_str().expect("rule is a string").to_owned())
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rollguard check {:?}\nexit code: {:?}, signal: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.signal, self.stdout, self.stderr
        )
    }
}

fn run_check(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollguard"))
        .arg("check")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rollguard");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        // A thread, so that a large input cannot deadlock against a full stdout pipe; an
        // error (rollguard exited without reading) is not the test's business.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let output = child.wait_with_output().expect("wait for rollguard");
    if let Some(writer) = writer {
        writer.join().expect("the stdin writer");
    }
    Run {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code: output.status.code(),
        signal: output.status.signal(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A tiny fixed-seed xorshift64*, enough to make garbage reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Replaces the first `from` in `text` by `to`, failing when it is not there (the corpus
/// changed shape: the test must be updated, not silently pass).
#[track_caller]
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found in:\n{text}");
    text.replacen(from, to, 1)
}

/// Applies one file's unified diff (as `rollguard check --fix --dry-run` prints it) to
/// `original`, checking every context and removed line against it.
#[track_caller]
fn apply_diff(original: &str, diff: &str) -> String {
    let old: Vec<&str> = original.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut at = 0; // index in `old` of the next line not yet copied
    let mut lines = diff.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("--- ") || line.starts_with("+++ ") {
            continue;
        }
        let header = line
            .strip_prefix("@@ -")
            .unwrap_or_else(|| panic!("expected a hunk header, got {line:?}\n{diff}"));
        let start: usize = header
            .split([',', ' '])
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad hunk header {line:?}"));
        let start = start.saturating_sub(1);
        assert!(start >= at, "hunks out of order in\n{diff}");
        for l in &old[at..start] {
            out.push_str(l);
        }
        at = start;
        while let Some(&body) = lines.peek() {
            if body.starts_with("@@ ") || body.starts_with("--- ") {
                break;
            }
            lines.next();
            let (tag, text) = body.split_at(1);
            match tag {
                " " | "-" => {
                    assert_eq!(
                        old.get(at).copied(),
                        Some(text),
                        "the diff's line {body:?} is not line {} of the original",
                        at + 1
                    );
                    if tag == " " {
                        out.push_str(text);
                    }
                    at += 1;
                }
                "+" => out.push_str(text),
                "\\" => {} // "\ No newline at end of file"
                _ => panic!("unexpected diff line {body:?}"),
            }
        }
    }
    for l in &old[at..] {
        out.push_str(l);
    }
    out
}

/// Splits a multi-file diff into `(name, diff)` by its `--- a/NAME` headers.
fn split_diff(diff: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in diff.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("--- a/") {
            files.push((name.trim_end().to_owned(), String::new()));
        }
        let (_, text) = files
            .last_mut()
            .unwrap_or_else(|| panic!("the diff does not start with '--- a/':\n{diff}"));
        text.push_str(line);
    }
    files
}

/// A Deployment + PodDisruptionBudget in a `kind: List`, as JSON.
fn json_list(max_unavailable: Value, pre_stop: bool) -> Value {
    let mut container = json!({
        "name": "api",
        "image": "registry.example.com/api:2.8.0",
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "http"}, "periodSeconds": 10},
    });
    if pre_stop {
        container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 5}}});
    }
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "api", "labels": {"app": "api"}},
                "spec": {
                    "replicas": 2,
                    "minReadySeconds": 5,
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": max_unavailable},
                    },
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 30,
                            "containers": [container],
                        },
                    },
                },
            },
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "api"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "api"}}},
            },
        ],
    })
}

/// The manifests under `dir` as `rollguard check DIR` finds them: `*.yaml`, `*.yml` and
/// `*.json` at any depth, hidden entries left out.
fn count_manifests(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read a directory")
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            if name.starts_with('.') {
                0
            } else if e.path().is_dir() {
                count_manifests(&e.path())
            } else {
                usize::from([".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x)))
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// 1. deploy/ stays clean
// ---------------------------------------------------------------------------------------

/// CI's proof that the example manifests pass: `rollguard check deploy/` from the
/// workspace root (honouring a `.rollguard.toml` there, as CI would).
#[test]
fn deploy_directory_is_clean() {
    let root = workspace();
    let run = run_check(&root, &["deploy/"], None);
    run.expect_code(0);
    let summary = run.stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("0 errors, 0 warnings, 0 infos"),
        "deploy/ has findings:\n{run}"
    );
    assert!(
        !run.stdout.contains("error[") && !run.stdout.contains("warning["),
        "{run}"
    );

    // Not even an info, and every manifest was read.
    let run = run_check(
        &root,
        &["deploy/", "--format", "json", "--fail-on", "info"],
        None,
    );
    run.expect_code(0);
    let report = run.json();
    assert_eq!(report["findings"], json!([]), "{run}");
    let manifests = count_manifests(&root.join("deploy"));
    assert!(manifests > 0, "deploy/ holds no manifest");
    assert_eq!(report["summary"]["files"], json!(manifests), "{run}");
    assert!(report["summary"]["objects"].as_u64() > Some(0), "{run}");
}

// ---------------------------------------------------------------------------------------
// 2. Exit codes and the corpus through the CLI
// ---------------------------------------------------------------------------------------

#[test]
fn exit_codes_follow_fail_on() {
    let tmp = Tmp::new();
    let rg001 = corpus_file("RG001", "bad");
    let rg002 = corpus_file("RG002", "bad"); // a warning only
    let rg015 = corpus_file("RG015", "bad"); // an info only

    tmp.check(&[s(&rg001)]).expect_code(1);
    tmp.check(&[s(&rg001), "--fail-on", "error"]).expect_code(1);
    tmp.check(&[s(&rg001), "--fail-on", "never"]).expect_code(0);

    let run = tmp.check(&[s(&rg002)]);
    run.expect_code(0);
    assert!(run.stdout.contains("warning[RG002]"), "{run}");
    tmp.check(&[s(&rg002), "--fail-on", "warning"])
        .expect_code(1);
    tmp.check(&[s(&rg002), "--fail-on", "info"]).expect_code(1);
    tmp.check(&[s(&rg002), "--fail-on", "never"]).expect_code(0);

    tmp.check(&[s(&rg015)]).expect_code(0);
    tmp.check(&[s(&rg015), "--fail-on", "warning"])
        .expect_code(0);
    let run = tmp.check(&[s(&rg015), "--fail-on", "info"]);
    run.expect_code(1);
    assert!(run.stdout.contains("RG015"), "{run}");

    // Input errors stay 2 whatever --fail-on says.
    tmp.check(&["missing.yaml", "--fail-on", "never"])
        .expect_code(2);
}

/// Through the CLI, every `bad.yaml` reports its own rule and no other, and every
/// `good.yaml` reports nothing, not even an info.
#[test]
fn corpus_through_the_cli() {
    let tmp = Tmp::new();
    for id in rule_ids() {
        let bad = corpus_file(&id, "bad");
        let run = tmp.check(&[s(&bad), "--format", "json", "--fail-on", "never"]);
        run.expect_code(0);
        let rules: BTreeSet<String> = run.rules().into_iter().collect();
        assert_eq!(rules, BTreeSet::from([id.clone()]), "{run}");

        let good = corpus_file(&id, "good");
        let run = tmp.check(&[s(&good), "--fail-on", "info"]);
        run.expect_code(0);
        assert!(
            run.stdout.starts_with("0 errors, 0 warnings, 0 infos"),
            "{run}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Input errors: exit 2, the file (and line) named, never a panic
// ---------------------------------------------------------------------------------------

#[test]
fn missing_file_and_empty_directory_exit_2() {
    let tmp = Tmp::new();
    let run = tmp.check(&["no-such-file.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no-such-file.yaml"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    // A directory with no manifest: other files and hidden manifests do not count.
    tmp.write("empty/notes.txt", "kind: Deployment\n");
    tmp.write("empty/.hidden.yaml", "kind: Deployment\n");
    tmp.write("empty/.git/config.yaml", "kind: Deployment\n");
    let run = tmp.check(&["empty"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("empty") && run.stderr.contains("no manifests found"),
        "{run}"
    );

    // A good file next to a missing one: still 2.
    let good = corpus_file("RG001", "good");
    tmp.check(&[s(&good), "no-such-file.yaml"]).expect_code(2);

    for run in [
        tmp.check(&[]),
        tmp.check(&[s(&good), "--format", "xml"]),
        tmp.check(&[s(&good), "--fail-on", "sometimes"]),
        tmp.check(&[s(&good), "--no-such-flag"]),
        tmp.check(&[s(&good), "--dry-run"]), // --dry-run needs --fix
    ] {
        run.expect_code(2);
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
}

#[test]
fn invalid_yaml_names_the_file_and_line() {
    let tmp = Tmp::new();
    let cases: [(&str, &str, usize); 4] = [
        ("flow.yaml", "a: [1, 2\n", 2),
        ("tab.yaml", "a:\n\tb: 1\n", 2),
        ("quote.yaml", "kind: Service\nmetadata:\n  name: \"web\n", 3),
        ("value.yaml", "key: value: other\n", 1),
    ];
    for (name, text, line) in cases {
        tmp.write(name, text);
        let run = tmp.check(&[name]);
        run.expect_code(2);
        let at = format!("{name}:{line}:");
        assert!(run.stderr.contains(&at), "stderr does not name {at}\n{run}");
        assert!(run.stderr.contains("invalid YAML"), "{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
        assert!(run.stdout.is_empty(), "no finding with bad input\n{run}");
    }

    // Found under a directory, next to a valid manifest: named by its path there.
    tmp.write("dir/ok.yaml", corpus_text("RG001", "bad"));
    tmp.write("dir/sub/broken.yml", "spec:\n  a: [1\n");
    let run = tmp.check(&["dir"]);
    run.expect_code(2);
    assert!(run.stderr.contains("dir/sub/broken.yml:"), "{run}");
    assert!(
        !run.stdout.contains("RG001"),
        "no finding with bad input\n{run}"
    );

    // Every invalid file is reported, not just the first.
    let run = tmp.check(&["flow.yaml", "tab.yaml", "value.yaml"]);
    run.expect_code(2);
    for name in ["flow.yaml:", "tab.yaml:", "value.yaml:"] {
        assert!(run.stderr.contains(name), "{name} not reported\n{run}");
    }
}

#[test]
fn invalid_utf8_exits_2_naming_the_file() {
    let tmp = Tmp::new();
    tmp.write(
        "latin1.yaml",
        b"kind: Service\nmetadata:\n  name: caf\xe9\n",
    );
    let run = tmp.check(&["latin1.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("latin1.yaml"), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");

    tmp.write("d/x.json", b"{\"kind\": \"\xff\xfe\"}");
    let run = tmp.check(&["d"]);
    run.expect_code(2);
    assert!(run.stderr.contains("d/x.json"), "{run}");

    let run = tmp.check_stdin(&["-"], b"kind: \xc3\x28\n");
    run.expect_code(2);
    assert!(run.stderr.contains("<stdin>"), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
}

/// Truncated corpus files: whatever is left is valid YAML or not, but the binary never
/// crashes, names the file when it refuses it, and `--fix` never turns an input it
/// accepts into one it refuses.
#[test]
fn truncated_corpus_files_never_crash() {
    let tmp = Tmp::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for id in rule_ids() {
        for kind in ["bad", "good"] {
            let path = corpus_file(&id, kind);
            files.push((
                format!("{id}-{kind}"),
                std::fs::read(&path).expect("read the corpus"),
            ));
        }
    }
    // Cut points every 37 bytes over the whole corpus; every 11th of them is checked
    // (about 90 runs, spread over every file and every depth).
    let mut n = 0;
    let mut checked = 0;
    for (name, bytes) in &files {
        for cut in (37..bytes.len()).step_by(37) {
            n += 1;
            if n % 11 != 0 {
                continue;
            }
            checked += 1;
            let file = format!("{name}-cut{cut}.yaml");
            tmp.write(&file, &bytes[..cut]);
            let run = tmp.check(&[&file, "--fail-on", "info"]);
            let code = run.expect_no_crash();
            if code == 2 {
                assert!(
                    run.stderr.contains(&file),
                    "stderr does not name the file\n{run}"
                );
                continue;
            }
            // Accepted: fixing (in a diff) must not make it unacceptable.
            let run = tmp.check(&[&file, "--fix", "--dry-run"]);
            let code = run.expect_no_crash();
            assert_ne!(code, 2, "--fix refused what check accepted\n{run}");
        }
    }
    assert!(checked >= 30, "only {checked} truncations checked");
}

#[test]
fn garbage_input_never_crashes() {
    let tmp = Tmp::new();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    const TOKENS: [&str; 36] = [
        "[",
        "]",
        "{",
        "}",
        ":",
        ": ",
        "- ",
        "\n",
        "  ",
        "\"",
        "'",
        "&a ",
        "*a",
        "!!str ",
        "|",
        ">",
        "#",
        "---\n",
        "...\n",
        "%YAML 1.2\n",
        "? ",
        ",",
        "\t",
        "x",
        "1",
        "\\",
        "\r",
        "é",
        "~",
        "<<: ",
        "kind: Deployment\n",
        "spec:\n",
        "  template:\n",
        "    spec:\n",
        "      containers:\n",
        "        - name: w\n",
    ];
    for i in 0..24 {
        // Half raw bytes (mostly not UTF-8), half YAML-ish token soup.
        let bytes: Vec<u8> = if i % 2 == 0 {
            (0..1 + rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            (0..1 + rng.below(40))
                .flat_map(|_| TOKENS[rng.below(TOKENS.len())].bytes())
                .collect()
        };
        let file = format!("garbage{i}.yaml");
        tmp.write(&file, &bytes);
        for args in [&[&file[..]][..], &[&file[..], "--fix", "--dry-run"][..]] {
            let run = tmp.check(args);
            if run.expect_no_crash() == 2 {
                assert!(
                    run.stderr.contains(&file),
                    "stderr does not name the file (input {bytes:?})\n{run}"
                );
            }
        }
        let run = tmp.check_stdin(&["-", "--format", "json"], &bytes);
        if run.expect_no_crash() == 2 {
            assert!(run.stderr.contains("<stdin>"), "{run}");
        } else {
            run.json();
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. stdin
// ---------------------------------------------------------------------------------------

#[test]
fn stdin_is_named_stdin() {
    let tmp = Tmp::new();
    let bad = corpus_text("RG001", "bad");
    let run = tmp.check_stdin(&["-", "--format", "json"], bad.as_bytes());
    run.expect_code(1);
    let report = run.json();
    let finding = &report["findings"][0];
    assert_eq!(finding["rule"], "RG001", "{run}");
    assert_eq!(finding["file"], "<stdin>", "{run}");
    assert_eq!(report["summary"]["files"], 1, "{run}");

    // The human report points at the same place.
    let run = tmp.check_stdin(&["-"], bad.as_bytes());
    run.expect_code(1);
    let at = format!("<stdin>:{}:{}", finding["line"], finding["column"]);
    assert!(run.stdout.contains(&format!("--> {at}")), "{at}\n{run}");
    assert!(run.stdout.contains("error[RG001]"), "{run}");
}

#[test]
fn fix_on_stdin_needs_dry_run() {
    let tmp = Tmp::new();
    let bad = corpus_text("RG004", "bad");
    let run = tmp.check_stdin(&["--fix", "-"], bad.as_bytes());
    run.expect_code(2);
    assert!(
        run.stderr.contains("stdin") && run.stderr.contains("--dry-run"),
        "the message should say to add --dry-run\n{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");

    // With --dry-run: the diff on stdout, what would be left on stderr.
    let run = tmp.check_stdin(&["--fix", "--dry-run", "-"], bad.as_bytes());
    run.expect_code(0);
    assert!(
        run.stdout.starts_with("--- a/<stdin>\n+++ b/<stdin>\n"),
        "{run}"
    );
    let fixed = apply_diff(&bad, &run.stdout);
    assert!(fixed.contains("preStop"), "{fixed}");
    assert!(run.stderr.contains("0 errors"), "{run}");
    // And the fixed text passes.
    tmp.check_stdin(&["-"], fixed.as_bytes()).expect_code(0);
}

// ---------------------------------------------------------------------------------------
// 5-7. Machine formats
// ---------------------------------------------------------------------------------------

#[test]
fn json_format() {
    let tmp = Tmp::new();
    let files = [
        corpus_file("RG003", "bad"),
        corpus_file("RG013", "bad"),
        corpus_file("RG010", "bad"),
        corpus_file("RG015", "bad"),
    ];
    for file in &files {
        let run = tmp.check(&[s(file), "--format", "json"]);
        let report = run.json();
        assert_eq!(report["version"], 1, "{run}");
        let findings = report["findings"].as_array().expect("findings");
        assert!(!findings.is_empty(), "{run}");
        let text = std::fs::read_to_string(file).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        for f in findings {
            for key in [
                "rule",
                "severity",
                "file",
                "line",
                "column",
                "object",
                "container",
                "message",
                "fix",
                "fixable",
            ] {
                assert!(f.get(key).is_some(), "finding without '{key}': {f}");
            }
            let rule = f["rule"].as_str().expect("rule");
            assert!(rule_ids().iter().any(|id| id == rule), "{f}");
            assert!(
                ["error", "warning", "info"].contains(&f["severity"].as_str().unwrap_or("")),
                "{f}"
            );
            assert_eq!(f["file"], s(file), "{f}");
            let object: Vec<&str> = f["object"].as_str().expect("object").split('/').collect();
            assert_eq!(object.len(), 3, "object is not Kind/namespace/name: {f}");
            assert!(object.iter().all(|p| !p.is_empty()), "{f}");
            assert!(
                object[0].starts_with(|c: char| c.is_ascii_uppercase()),
                "{f}"
            );
            assert_eq!(object[1], "default", "the corpus has no namespace: {f}");
            assert!(
                f["container"].is_null() || f["container"].is_string(),
                "{f}"
            );
            assert!(!f["message"].as_str().expect("message").is_empty(), "{f}");
            assert!(!f["fix"].as_str().expect("fix").is_empty(), "{f}");
            assert!(f["fixable"].is_boolean(), "{f}");
            // line and column point into the file.
            let line = f["line"].as_u64().expect("line") as usize;
            let column = f["column"].as_u64().expect("column") as usize;
            assert!(line >= 1 && line <= lines.len(), "{f}");
            let chars = lines[line - 1].chars().count();
            assert!(
                column >= 1 && column <= chars,
                "column beyond its line: {f}"
            );
            assert!(
                !lines[line - 1]
                    .chars()
                    .nth(column - 1)
                    .unwrap_or(' ')
                    .is_whitespace(),
                "the position points at a blank: {f}\n{}",
                lines[line - 1]
            );
        }
        let summary = &report["summary"];
        for key in [
            "files",
            "documents",
            "objects",
            "skipped",
            "errors",
            "warnings",
            "infos",
        ] {
            assert!(summary[key].is_u64(), "summary.{key} missing: {summary}");
        }
        assert_eq!(summary["files"], 1);
        let count = |sev: &str| findings.iter().filter(|f| f["severity"] == sev).count();
        assert_eq!(summary["errors"], json!(count("error")), "{run}");
        assert_eq!(summary["warnings"], json!(count("warning")), "{run}");
        assert_eq!(summary["infos"], json!(count("info")), "{run}");
    }

    // A clean file: an empty list, not a missing one.
    let run = tmp.check(&[s(&corpus_file("RG003", "good")), "--format", "json"]);
    run.expect_code(0);
    assert_eq!(run.json()["findings"], json!([]));

    // Skipped kinds are counted.
    tmp.write(
        "mixed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\nfoo: bar\n",
    );
    let run = tmp.check(&["mixed.yaml", "--format", "json"]);
    run.expect_code(0);
    let summary = &run.json()["summary"];
    assert_eq!(summary["documents"], 2, "{run}");
    assert_eq!(summary["objects"], 0, "{run}");
    assert_eq!(summary["skipped"], 2, "{run}");
}

#[test]
fn sarif_format() {
    let tmp = Tmp::new();
    std::fs::copy(corpus_file("RG003", "bad"), tmp.path("rg003.yaml")).expect("copy");
    let run = tmp.check(&["rg003.yaml", "--format", "sarif"]);
    run.expect_code(1);
    let log = run.json();
    assert_eq!(log["version"], "2.1.0", "{run}");
    let driver = &log["runs"][0]["tool"]["driver"];
    assert_eq!(driver["name"], "rollguard");
    let rules = driver["rules"].as_array().expect("rules");
    let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, rule_ids(), "{run}");

    let json = tmp.check(&["rg003.yaml", "--format", "json"]).json();
    let findings = json["findings"].as_array().expect("findings");
    let results = log["runs"][0]["results"].as_array().expect("results");
    assert_eq!(results.len(), findings.len(), "{run}");
    assert!(!results.is_empty());
    for (result, finding) in results.iter().zip(findings) {
        let id = result["ruleId"].as_str().expect("ruleId");
        assert_eq!(id, finding["rule"], "{result}");
        if let Some(index) = result["ruleIndex"].as_u64() {
            assert_eq!(rules[index as usize]["id"], id, "{result}");
        }
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(location["region"]["startLine"], finding["line"], "{result}");
        assert!(location["region"]["startLine"].as_u64() >= Some(1));
        assert_eq!(
            location["artifactLocation"]["uri"], "rg003.yaml",
            "{result}"
        );
        let level = result["level"].as_str().expect("level");
        let expected = match finding["severity"].as_str() {
            Some("error") => "error",
            Some("warning") => "warning",
            _ => "note",
        };
        assert_eq!(level, expected, "{result}");
    }

    // A clean run is still a full log.
    let run = tmp.check(&[s(&corpus_file("RG003", "good")), "--format", "sarif"]);
    run.expect_code(0);
    let log = run.json();
    assert_eq!(log["runs"][0]["results"], json!([]));
    assert_eq!(
        log["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .map(Vec::len),
        Some(15)
    );
}

#[test]
fn github_format() {
    let tmp = Tmp::new();
    for (rule, command) in [
        ("RG001", "::error file="),
        ("RG002", "::warning file="),
        ("RG015", "::notice file="),
    ] {
        let name = format!("{rule}-bad.yaml");
        std::fs::copy(corpus_file(rule, "bad"), tmp.path(&name)).expect("copy");
        let run = tmp.check(&[&name, "--format", "github"]);
        let lines: Vec<&str> = run.stdout.lines().collect();
        let (summary, commands) = lines.split_last().expect("some output");
        assert!(
            summary.contains(" errors, ") || summary.contains(" error, "),
            "{run}"
        );
        assert!(!commands.is_empty(), "{run}");
        for line in commands {
            assert!(
                ["::error file=", "::warning file=", "::notice file="]
                    .iter()
                    .any(|p| line.starts_with(p)),
                "not a workflow command: {line}"
            );
            for part in [
                format!("file={name},"),
                ",line=".into(),
                ",col=".into(),
                ",title=RG0".into(),
            ] {
                assert!(line.contains(&part), "{part} missing: {line}");
            }
        }
        assert!(
            commands
                .iter()
                .any(|l| l.starts_with(command) && l.contains(&format!("title={rule}::"))),
            "no {command} for {rule}\n{run}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. --explain
// ---------------------------------------------------------------------------------------

#[test]
fn explain() {
    let tmp = Tmp::new();
    let run = tmp.check(&["--explain", "RG004"]);
    run.expect_code(0);
    assert!(run.stdout.contains("RG004"), "{run}");
    assert!(run.stdout.contains("Fix:"), "{run}");
    let lower = tmp.check(&["--explain", "rg004"]);
    lower.expect_code(0);
    assert_eq!(lower.stdout, run.stdout);

    for id in rule_ids() {
        let run = tmp.check(&["--explain", &id]);
        run.expect_code(0);
        assert!(run.stdout.starts_with(&format!("{id}: ")), "{run}");
        assert!(run.stdout.contains("Fix:"), "{run}");
    }

    let run = tmp.check(&["--explain", "RG999"]);
    run.expect_code(2);
    assert!(run.stderr.contains("RG999"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    // --explain checks nothing: no path with it.
    tmp.check(&["--explain", "RG004", "x.yaml"]).expect_code(2);
}

// ---------------------------------------------------------------------------------------
// 9. .rollguard.toml
// ---------------------------------------------------------------------------------------

#[test]
fn config_file_in_the_current_directory_and_its_parents() {
    let tmp = Tmp::new();
    std::fs::copy(corpus_file("RG001", "bad"), tmp.path("bad.yaml")).expect("copy");
    tmp.check(&["bad.yaml"]).expect_code(1);

    tmp.write(".rollguard.toml", "[rules]\nRG001 = \"off\"\n");
    let run = tmp.check(&["bad.yaml", "--format", "json", "--fail-on", "info"]);
    run.expect_code(0);
    assert!(!run.rules().contains(&"RG001".to_owned()), "{run}");

    // Found from a subdirectory too.
    std::fs::create_dir_all(tmp.path("sub/dir")).expect("mkdir");
    run_check(&tmp.path("sub/dir"), &["../../bad.yaml"], None).expect_code(0);

    // A severity changed.
    tmp.write(".rollguard.toml", "[rules]\nRG001 = \"warning\"\n");
    let run = tmp.check(&["bad.yaml", "--format", "json"]);
    run.expect_code(0);
    assert_eq!(run.json()["findings"][0]["severity"], "warning", "{run}");
    tmp.check(&["bad.yaml", "--fail-on", "warning"])
        .expect_code(1);

    // --config replaces the discovered file.
    tmp.write("plain.toml", "[rules]\n");
    tmp.check(&["bad.yaml", "--config", "plain.toml"])
        .expect_code(1);

    // Timing: a longer propagation budget makes RG004/good's 5 s preStop too short.
    std::fs::copy(corpus_file("RG004", "good"), tmp.path("rg004.yaml")).expect("copy");
    tmp.check(&["rg004.yaml", "--config", "plain.toml"])
        .expect_code(0);
    tmp.write("slow.toml", "[timing]\npropagation = \"20s\"\n");
    let run = tmp.check(&["rg004.yaml", "--config", "slow.toml", "--format", "json"]);
    run.expect_code(1);
    assert!(run.rules().contains(&"RG004".to_owned()), "{run}");
}

#[test]
fn bad_config_file_exits_2_with_file_and_line() {
    let tmp = Tmp::new();
    std::fs::copy(corpus_file("RG001", "good"), tmp.path("good.yaml")).expect("copy");
    tmp.write(
        "unknown.toml",
        "[rules]\nRG001 = \"warning\"\n\nRG099 = \"off\"\n",
    );
    let run = tmp.check(&["good.yaml", "--config", "unknown.toml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("unknown.toml:4"), "{run}");
    assert!(run.stderr.contains("RG099"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    for (name, text, line) in [
        ("severity.toml", "[rules]\nRG001 = \"loud\"\n", 2),
        ("duration.toml", "[timing]\n\ndrain = \"soon\"\n", 3),
        ("syntax.toml", "[rules\n", 1),
        ("section.toml", "[other]\nx = 1\n", 1),
    ] {
        tmp.write(name, text);
        let run = tmp.check(&["good.yaml", "--config", name]);
        run.expect_code(2);
        let at = format!("{name}:{line}");
        assert!(run.stderr.contains(&at), "{at} not in stderr\n{run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }

    // A missing --config file.
    let run = tmp.check(&["good.yaml", "--config", "nowhere.toml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("nowhere.toml"), "{run}");

    // A discovered bad file is an error too, not silently ignored.
    tmp.write(".rollguard.toml", "[rules]\nRG099 = \"off\"\n");
    let run = tmp.check(&["good.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.contains(".rollguard.toml:2"), "{run}");
}

// ---------------------------------------------------------------------------------------
// 10. rollguard/ignore
// ---------------------------------------------------------------------------------------

#[test]
fn ignore_annotation() {
    let tmp = Tmp::new();
    let bad = corpus_text("RG001", "bad");
    let on_object = |value: &str| {
        replace_once(
            &bad,
            "\nmetadata:\n",
            &format!("\nmetadata:\n  annotations:\n    rollguard/ignore: \"{value}\"\n"),
        )
    };

    tmp.write("ignored.yaml", on_object("RG001"));
    let run = tmp.check(&["ignored.yaml", "--format", "json", "--fail-on", "info"]);
    run.expect_code(0);
    assert!(run.rules().is_empty(), "{run}");

    tmp.write("list.yaml", on_object("RG004, RG001"));
    let run = tmp.check(&["list.yaml", "--format", "json"]);
    run.expect_code(0);
    assert!(!run.rules().contains(&"RG001".to_owned()), "{run}");

    tmp.write("all.yaml", on_object("all"));
    let run = tmp.check(&["all.yaml", "--format", "json", "--fail-on", "info"]);
    run.expect_code(0);
    assert!(run.rules().is_empty(), "{run}");

    // Another rule ignored: RG001 still reported.
    tmp.write("other.yaml", on_object("RG004"));
    let run = tmp.check(&["other.yaml", "--format", "json"]);
    run.expect_code(1);
    assert_eq!(run.rules(), ["RG001"], "{run}");

    // On the pod template.
    let on_template = replace_once(
        &bad,
        "\n    metadata:\n",
        "\n    metadata:\n      annotations:\n        rollguard/ignore: RG001\n",
    );
    tmp.write("template.yaml", on_template);
    let run = tmp.check(&["template.yaml", "--format", "json"]);
    run.expect_code(0);
    assert!(!run.rules().contains(&"RG001".to_owned()), "{run}");
}

// ---------------------------------------------------------------------------------------
// 11. --fix
// ---------------------------------------------------------------------------------------

#[test]
fn fix_round_trip() {
    let tmp = Tmp::new();
    let rules = ["RG004", "RG005", "RG008"];
    let mut originals = Vec::new();
    for rule in rules {
        let name = format!("{rule}.yaml");
        let text = corpus_text(rule, "bad");
        tmp.write(&name, &text);
        originals.push((name, text));
    }
    let names: Vec<&str> = originals.iter().map(|(n, _)| n.as_str()).collect();

    // Each file has its finding, and it is fixable.
    let run = tmp.check(&[&names[..], &["--format", "json"]].concat());
    run.expect_code(1);
    let report = run.json();
    for f in report["findings"].as_array().expect("findings") {
        assert_eq!(f["fixable"], true, "{f}");
    }
    let mut found = run.rules();
    found.sort();
    assert_eq!(found, rules, "{run}");

    // --dry-run: a diff, and no file touched.
    let dry = tmp.check(&[&names[..], &["--fix", "--dry-run"]].concat());
    dry.expect_code(0);
    assert!(
        dry.stdout.contains("--- a/") && dry.stdout.contains("+++ b/"),
        "{dry}"
    );
    assert!(dry.stderr.contains("would make"), "{dry}");
    assert!(
        dry.stderr.contains("0 errors"),
        "the report of what is left goes to stderr\n{dry}"
    );
    for (name, text) in &originals {
        assert_eq!(&tmp.read(name), text, "--dry-run changed {name}");
    }
    let diffs = split_diff(&dry.stdout);
    let diffed: Vec<&str> = diffs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(diffed, names, "{dry}");

    // --fix: the files are rewritten, exactly as the diff said.
    let run = tmp.check(&[&names[..], &["--fix"]].concat());
    run.expect_code(0);
    assert!(
        run.stderr.contains("made ") && run.stderr.contains("in 3 files"),
        "{run}"
    );
    for ((name, original), (_, diff)) in originals.iter().zip(&diffs) {
        let fixed = tmp.read(name);
        assert_ne!(&fixed, original, "{name} not fixed");
        assert_eq!(
            fixed,
            apply_diff(original, diff),
            "{name}: --fix and --dry-run disagree"
        );

        // Every original line the diff does not remove is still there, in order.
        let mut removed: Vec<&str> = diff
            .lines()
            .filter(|l| l.starts_with('-') && !l.starts_with("--- "))
            .map(|l| &l[1..])
            .collect();
        let mut fixed_lines = fixed.lines();
        for line in original.lines() {
            if let Some(i) = removed.iter().position(|r| *r == line) {
                removed.remove(i);
                continue;
            }
            assert!(
                fixed_lines.any(|l| l == line),
                "{name}: line {line:?} lost or moved\n{fixed}"
            );
        }
        // Comments are untouched.
        assert_eq!(fixed.lines().next(), original.lines().next());
    }

    // Nothing of RG004/RG005/RG008 is left; nothing at all, as the corpus has one mistake
    // per file.
    let run = tmp.check(&[&names[..], &["--format", "json", "--fail-on", "info"]].concat());
    run.expect_code(0);
    assert!(run.rules().is_empty(), "{run}");

    // A second --fix has nothing to do.
    let before: Vec<String> = names.iter().map(|n| tmp.read(n)).collect();
    let run = tmp.check(&[&names[..], &["--fix"]].concat());
    run.expect_code(0);
    assert!(run.stderr.contains("made 0 edits"), "{run}");
    let after: Vec<String> = names.iter().map(|n| tmp.read(n)).collect();
    assert_eq!(before, after);
}

#[test]
fn fix_on_json_keeps_it_json() {
    let tmp = Tmp::new();
    // RG008 in JSON: a scalar replacement, which JSON gets.
    let original = serde_json::to_string_pretty(&json_list(json!("100%"), true)).expect("json");
    tmp.write("rg008.json", &original);
    let run = tmp.check(&["rg008.json", "--format", "json"]);
    run.expect_code(1);
    assert_eq!(run.rules(), ["RG008"], "{run}");

    let run = tmp.check(&["rg008.json", "--fix"]);
    run.expect_code(0);
    let fixed = tmp.read("rg008.json");
    let value: Value = serde_json::from_str(&fixed)
        .unwrap_or_else(|e| panic!("--fix corrupted the JSON: {e}\n{fixed}"));
    let rolling = &value["items"][0]["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(rolling["maxUnavailable"], 0, "{fixed}");
    assert_eq!(rolling["maxSurge"], 1, "{fixed}");
    // Only that value changed.
    let mut expected = json_list(json!("100%"), true);
    expected["items"][0]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!(0);
    assert_eq!(value, expected);
    tmp.check(&["rg008.json", "--fail-on", "info"])
        .expect_code(0);

    // The same, compact on one line.
    let compact = serde_json::to_string(&json_list(json!("100%"), true)).expect("json");
    tmp.write("compact.json", &compact);
    tmp.check(&["compact.json", "--fix"]).expect_code(0);
    let fixed = tmp.read("compact.json");
    let value: Value = serde_json::from_str(&fixed)
        .unwrap_or_else(|e| panic!("--fix corrupted the JSON: {e}\n{fixed}"));
    assert_eq!(value, expected);

    // RG004 in JSON needs new keys, which JSON does not get: reported, not fixable, and
    // the file is left byte for byte.
    let original = serde_json::to_string_pretty(&json_list(json!(0), false)).expect("json");
    tmp.write("rg004.json", &original);
    let run = tmp.check(&["rg004.json", "--format", "json"]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["findings"][0]["rule"], "RG004", "{run}");
    assert_eq!(report["findings"][0]["fixable"], false, "{run}");
    let run = tmp.check(&["rg004.json", "--fix"]);
    run.expect_code(1);
    assert_eq!(tmp.read("rg004.json"), original);
}

// ---------------------------------------------------------------------------------------
// Bugs found while writing these tests (ignored until fixed; see the reasons)
// ---------------------------------------------------------------------------------------

#[test]

fn huge_probe_period_does_not_panic() {
    let tmp = Tmp::new();
    let text = replace_once(
        &corpus_text("RG006", "good"),
        "periodSeconds: 1\n",
        "periodSeconds: 9223372036854775807\n",
    );
    tmp.write("huge.yaml", text);
    let run = tmp.check(&["huge.yaml"]);
    let code = run.expect_no_crash();
    assert_ne!(code, 2, "{run}");
}

#[test]

fn fix_with_null_grace_period_does_not_duplicate_the_key() {
    let tmp = Tmp::new();
    // What `terminationGracePeriodSeconds: {{ .Values.grace }}` renders to when the value
    // is unset; Kubernetes reads it as absent (30 s).
    let text = replace_once(
        &corpus_text("RG005", "good"),
        "terminationGracePeriodSeconds: 35\n",
        "terminationGracePeriodSeconds:\n",
    );
    tmp.write("null-grace.yaml", &text);
    let run = tmp.check(&["null-grace.yaml", "--format", "json"]);
    run.expect_code(1); // RG005: 30 s (the default) is too short: fine.
    let run = tmp.check(&["null-grace.yaml", "--fix", "--dry-run"]);
    assert_ne!(
        run.expect_no_crash(),
        2,
        "--fix refused what check accepted\n{run}"
    );
    let run = tmp.check(&["null-grace.yaml", "--fix"]);
    assert_ne!(
        run.expect_no_crash(),
        2,
        "--fix refused what check accepted\n{run}"
    );
    // The fixed file is still YAML, with one grace period that fits.
    let run = tmp.check(&["null-grace.yaml", "--format", "json"]);
    run.expect_code(0);
    let fixed = tmp.read("null-grace.yaml");
    assert_eq!(
        fixed
            .lines()
            .filter(|l| l.trim_start().starts_with("terminationGracePeriodSeconds:"))
            .count(),
        1,
        "{fixed}"
    );
}

#[test]

fn fix_on_json_with_a_byte_order_mark() {
    let tmp = Tmp::new();
    let compact = serde_json::to_string(&json_list(json!("100%"), true)).expect("json");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(compact.as_bytes());
    tmp.write("bom.json", &bytes);
    let run = tmp.check(&["bom.json", "--format", "json"]);
    run.expect_code(1);
    assert_eq!(run.rules(), ["RG008"], "{run}");

    let run = tmp.check(&["bom.json", "--fix"]);
    run.expect_code(0);
    let fixed = tmp.read("bom.json");
    let value: Value = serde_json::from_str(fixed.trim_start_matches('\u{feff}'))
        .unwrap_or_else(|e| panic!("--fix corrupted the JSON: {e}\n{fixed}"));
    let mut expected = json_list(json!("100%"), true);
    expected["items"][0]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!(0);
    assert_eq!(value, expected);
}

#[test]

fn fix_keeps_crlf_line_endings() {
    let tmp = Tmp::new();
    let crlf = corpus_text("RG004", "bad").replace('\n', "\r\n");
    tmp.write("crlf.yaml", &crlf);
    tmp.check(&["crlf.yaml", "--fix"]).expect_code(0);
    let fixed = tmp.read("crlf.yaml");
    assert_ne!(fixed, crlf, "not fixed");
    for (i, line) in fixed.split_inclusive('\n').enumerate() {
        assert!(
            line.ends_with("\r\n"),
            "line {} lost its CR: {line:?}",
            i + 1
        );
    }
}

#[test]

fn symlink_loop_reads_each_file_once() {
    let tmp = Tmp::new();
    std::fs::create_dir_all(tmp.path("d")).expect("mkdir");
    std::fs::copy(corpus_file("RG001", "bad"), tmp.path("d/bad.yaml")).expect("copy");
    std::os::unix::fs::symlink(".", tmp.path("d/self")).expect("symlink");
    let run = tmp.check(&["d", "--format", "json"]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["summary"]["files"], 1, "{run}");
    assert_eq!(run.rules(), ["RG001"], "{run}");
}

#[test]

fn dry_run_with_json_format_is_not_a_mix() {
    let tmp = Tmp::new();
    std::fs::copy(corpus_file("RG008", "bad"), tmp.path("rg008.yaml")).expect("copy");
    for format in ["json", "sarif"] {
        let run = tmp.check(&["rg008.yaml", "--fix", "--dry-run", "--format", format]);
        run.expect_code(0);
        let is_json = serde_json::from_str::<Value>(&run.stdout).is_ok();
        let is_diff = run.stdout.lines().all(|l| {
            ["--- ", "+++ ", "@@ ", " ", "+", "-", "\\"]
                .iter()
                .any(|p| l.starts_with(p))
                || l.is_empty()
        });
        assert!(
            is_json || is_diff,
            "stdout is neither JSON nor a diff\n{run}"
        );
    }
}

#[test]

fn sarif_uris_are_uri_references() {
    let tmp = Tmp::new();
    std::fs::copy(corpus_file("RG001", "bad"), tmp.path("web#1.yaml")).expect("copy");
    let bad = corpus_text("RG001", "bad");
    let runs = [
        tmp.check_stdin(&["-", "--format", "sarif"], bad.as_bytes()),
        tmp.check(&["web#1.yaml", "--format", "sarif"]),
    ];
    for run in runs {
        let log = run.json();
        let uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
            ["artifactLocation"]["uri"]
            .as_str()
            .expect("a uri")
            .to_owned();
        // RFC 3986 path characters (no '?' or '#', which would start a query or fragment).
        let ok = uri
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%".contains(c));
        assert!(ok, "not a URI path: {uri:?}\n{run}");
    }
}
