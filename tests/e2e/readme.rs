//! The README, run as a script: every fenced block after a `<!-- readme-test: SECTION -->`
//! comment is a list of commands (`$ ` lines of a `text` block, with the output shown below
//! each; every line of a `sh` block). The commands of a section run in order as one bash script,
//! with the built `meridian` on the PATH, against a fresh `meridian dev` (section `dev`) or a
//! cluster that the section itself brings up (section `cluster`). Each command must succeed (or
//! fail, when the README shows an `error:`), and each output line the README shows must appear in
//! what it printed, compared by shape: ids, numbers, times and column widths may differ, words may
//! not. So the README cannot drift from the code.
//!
//! Commands that read what others produce asynchronously (`meridian trace`, `meridian sql`,
//! `curl`) are retried until they succeed (up to 30 s), as a person would run them again; a
//! command ending in `&` runs in the background until the script ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::{DevNode, meridian_bin};

/// One command of the README and the output it shows.
#[derive(Debug)]
struct Step {
    command: String,
    shown: Vec<String>,
}

impl Step {
    fn expects_failure(&self) -> bool {
        self.shown.first().is_some_and(|line| line.starts_with("error:"))
    }

    fn retried(&self) -> bool {
        ["meridian trace", "meridian sql", "curl "]
            .iter()
            .any(|prefix| self.command.starts_with(prefix))
    }

    /// `(command, redirect target)` when it runs in the background (`cmd &  # comment`).
    fn background(&self) -> Option<&str> {
        let without_comment = match self.command.find(" #") {
            Some(at) => &self.command[..at],
            None => &self.command,
        };
        without_comment.trim_end().strip_suffix('&').map(str::trim_end)
    }
}

fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

/// The steps of every block marked `<!-- readme-test: SECTION -->`, in README order.
fn section_steps(readme: &str, section: &str) -> Vec<Step> {
    let marker = format!("<!-- readme-test: {section} -->");
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != marker {
            continue;
        }
        let fence = lines
            .by_ref()
            .find(|line| line.starts_with("```"))
            .expect("a block after the marker");
        let is_shell = fence.trim_start_matches('`').trim() == "sh";
        for line in lines.by_ref().take_while(|line| !line.starts_with("```")) {
            if is_shell {
                if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                    steps.push(Step {
                        command: line.trim().to_owned(),
                        shown: Vec::new(),
                    });
                }
            } else if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.trim().to_owned(),
                    shown: Vec::new(),
                });
            } else if let Some(step) = steps.last_mut()
                && !line.trim().is_empty()
                && line.trim() != "..."
            {
                step.shown.push(line.to_owned());
            }
        }
    }
    assert!(!steps.is_empty(), "README.md has no block marked {marker}");
    steps
}

/// The bash script of `steps`: each command between markers the test splits the output by. A
/// retried step's expected lines go to `work/expect-INDEX.txt` as regexes ([`shape_regex`]), and
/// it runs again until it succeeds and prints every one of them: what it reads may arrive a
/// moment later (a trace's replication step).
fn script(steps: &[Step], substitutions: &BTreeMap<String, String>, work: &Path) -> String {
    let mut script =
        String::from("set -u\ntrap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\nexec </dev/null\n");
    for (index, step) in steps.iter().enumerate() {
        let mut command = step.command.clone();
        for (from, to) in substitutions {
            command = command.replace(from, to);
        }
        script.push_str(&format!("echo '@@step {index}'\n"));
        if let Some(background) = step.background() {
            let mut background = background.to_owned();
            for (from, to) in substitutions {
                background = background.replace(from, to);
            }
            script.push_str(&format!(
                "( {background}\n) > background-{index}.log 2>&1 &\necho '@@exit 0'\n"
            ));
        } else if step.retried() && !step.expects_failure() {
            let expect = work.join(format!("expect-{index}.txt"));
            let regexes: String = step
                .shown
                .iter()
                .map(|shown| {
                    let shown = substitutions
                        .iter()
                        .fold(shown.clone(), |shown, (from, to)| shown.replace(from, to));
                    shape_regex(&shown) + "\n"
                })
                .collect();
            std::fs::write(&expect, regexes).unwrap();
            let expect = expect.display();
            script.push_str(&format!(
                "__tries=0\nwhile :; do __out=$( {{ {command}\n}} 2>&1 ); __code=$?\n  __shown=1; while IFS= read -r __re; do printf '%s\\n' \"$__out\" | grep -Eq -- \"$__re\" || __shown=0; done < '{expect}'\n  if {{ [ $__code -eq 0 ] && [ $__shown -eq 1 ]; }} || [ $__tries -ge 100 ]; then break; fi\n  __tries=$((__tries+1)); sleep 0.3\ndone\nprintf '%s\\n' \"$__out\"\necho \"@@exit $__code\"\n"
            ));
        } else {
            // The newline ends output that has none (curl's JSON) before the marker.
            script.push_str(&format!(
                "{{ {command}\n}} 2>&1\n__code=$?\necho\necho \"@@exit $__code\"\n"
            ));
        }
    }
    script
}

/// A line reduced to its shape: 16+ hex digit ids, 8+ lowercase hex digits, numbers, runs of
/// spaces and of dashes each become one token, so widths, ids, times and counts may differ.
fn shape(line: &str) -> String {
    let chars: Vec<char> = line.trim_end().chars().collect();
    let mut shaped = String::new();
    let mut at = 0;
    while at < chars.len() {
        let run = |test: &dyn Fn(char) -> bool| chars[at..].iter().take_while(|c| test(**c)).count();
        let upper_hex = run(&|c: char| c.is_ascii_digit() || ('A'..='F').contains(&c));
        let lower_hex = run(&|c: char| c.is_ascii_digit() || ('a'..='f').contains(&c));
        let digits = run(&|c: char| c.is_ascii_digit());
        let spaces = run(&|c: char| c == ' ');
        let dashes = run(&|c: char| c == '-');
        let has_letter = chars[at..at + lower_hex].iter().any(|c| c.is_ascii_alphabetic());
        let (token, len) = if upper_hex >= 16 {
            ("<ID>", upper_hex)
        } else if lower_hex >= 8 && has_letter {
            ("<hex>", lower_hex)
        } else if digits > 0 {
            ("0", digits)
        } else if spaces > 0 {
            (" ", spaces)
        } else if dashes > 1 {
            ("--", dashes)
        } else {
            shaped.push(chars[at]);
            at += 1;
            continue;
        };
        shaped.push_str(token);
        at += len;
    }
    shaped.trim().to_owned()
}

/// An extended regex (`grep -E`) for the lines whose [`shape`] is that of `line`: each token of
/// the shape stands for what it replaced.
fn shape_regex(line: &str) -> String {
    let shaped = shape(line);
    let mut regex = String::from("^ *");
    let mut rest = shaped.as_str();
    while let Some(first) = rest.chars().next() {
        let (piece, len) = if rest.starts_with("<ID>") {
            ("[0-9A-F]{16,}".to_owned(), 4)
        } else if rest.starts_with("<hex>") {
            ("[0-9a-f]{8,}".to_owned(), 5)
        } else if rest.starts_with("--") {
            ("--+".to_owned(), 2)
        } else if first == '0' {
            ("[0-9]+".to_owned(), 1)
        } else if first == ' ' {
            (" +".to_owned(), 1)
        } else if "\\.[](){}*+?|^$".contains(first) {
            (format!("\\{first}"), 1)
        } else {
            (first.to_string(), first.len_utf8())
        };
        regex.push_str(&piece);
        rest = &rest[len..];
    }
    regex + " *$"
}

/// Runs `steps` as one script in `dir` (the repository root is the working directory) with
/// `env`, and returns every problem found.
fn run_section(
    section: &str,
    steps: &[Step],
    env: &[(&str, String)],
    substitutions: &BTreeMap<String, String>,
    work: &Path,
) -> Vec<String> {
    let script_path = work.join(format!("readme-{section}.sh"));
    std::fs::write(&script_path, script(steps, substitutions, work)).unwrap();
    let bin_dir = meridian_bin().parent().expect("binary dir").to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command
        .arg(&script_path)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("PATH", path)
        .env_remove("MERIDIAN_NAMESERVER")
        .env_remove("MERIDIAN_USER")
        .env_remove("MERIDIAN_QUERY")
        .env_remove("MERIDIAN_TRACER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let output = command.output().expect("running bash");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!(
        "readme section {section}: {} steps in {:.1} s; transcript:\n{stdout}",
        steps.len(),
        started.elapsed().as_secs_f64()
    );

    let mut outputs: Vec<(Vec<String>, Option<i32>)> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("@@step ") {
            outputs.push((Vec::new(), None));
        } else if let Some(code) = line.strip_prefix("@@exit ") {
            if let Some(last) = outputs.last_mut() {
                last.1 = code.trim().parse().ok();
            }
        } else if let Some(last) = outputs.last_mut() {
            last.0.push(line.to_owned());
        }
    }
    let mut problems = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let Some((printed, code)) = outputs.get(index) else {
            problems.push(format!(
                "[{section}] `{}` did not run (the script stopped before it)",
                step.command
            ));
            continue;
        };
        let succeeded = *code == Some(0);
        if succeeded == step.expects_failure() {
            problems.push(format!(
                "[{section}] `{}` {} (exit {code:?}):\n{}",
                step.command,
                if succeeded {
                    "succeeded, the README shows an error"
                } else {
                    "failed"
                },
                printed.join("\n")
            ));
            continue;
        }
        let printed_shapes: Vec<String> = printed.iter().map(|line| shape(line)).collect();
        for shown in &step.shown {
            let mut shown = shown.clone();
            for (from, to) in substitutions {
                shown = shown.replace(from, to);
            }
            let wanted = shape(&shown);
            if !printed_shapes.contains(&wanted) {
                problems.push(format!(
                    "[{section}] `{}`: the README shows\n  {shown}\nbut it printed:\n{}",
                    step.command,
                    printed.join("\n")
                ));
            }
        }
    }
    problems
}

#[test]
fn shapes_ignore_ids_numbers_and_widths_but_not_words() {
    assert_eq!(
        shape("01A2518F5CE60C20C653E1261C61252A orders queue=0 offset=0 born=2026-12-07T17:31:19.654Z  first"),
        shape("01A2518F5CE90C20C653E1261C61252B orders queue=3 offset=12 born=2026-12-08T07:01:09.004Z first")
    );
    assert_eq!(shape("| 0  |   x |"), shape("| 10 | x |"));
    assert_eq!(shape("+----+"), shape("+--------+"));
    assert_ne!(shape("topic orders approved"), shape("topic orders rejected"));
    let regex = shape_regex("  2026-12-07T17:37:35.570Z  Replicate  2 ok  a-0 (127.0.0.21:7911) cost 2.000 ms");
    assert_eq!(
        regex,
        "^ *[0-9]+-[0-9]+-[0-9]+T[0-9]+:[0-9]+:[0-9]+\\.[0-9]+Z +Replicate +[0-9]+ +ok +a-[0-9]+ +\\([0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+:[0-9]+\\) +cost +[0-9]+\\.[0-9]+ +ms *$"
    );
    // grep -E agrees: another time, count and address match; another step does not.
    let matches = |line: &str| {
        let mut grep = Command::new("grep")
            .args(["-Eq", "--", &regex])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut grep.stdin.take().unwrap(), line.as_bytes()).unwrap();
        grep.wait().unwrap().success()
    };
    assert!(matches(
        "2026-12-08T07:01:09.004Z  Replicate   14 ok    a-0 (127.0.0.41:40211)  cost 12.500 ms\n"
    ));
    assert!(!matches(
        "2026-12-08T07:01:09.004Z  Store   14 ok    a-0 (127.0.0.41:40211)  cost 12.500 ms\n"
    ));
    let steps = section_steps(
        "<!-- readme-test: t -->\n```text\n$ meridian x &   # later\n$ meridian sql \"x\"\nout\n...\n```\n",
        "t",
    );
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].background(), Some("meridian x"));
    assert!(steps[1].retried() && steps[1].shown == ["out"]);
}

/// The README's `meridian dev` sections against a fresh `meridian dev`, then its cluster section
/// against the cluster it brings up.
#[test]
fn the_readme_runs_as_a_script() {
    let readme = std::fs::read_to_string(readme_path()).expect("reading README.md");
    let work = tempfile::tempdir().unwrap();
    let node = DevNode::start(&work.path().join("dev"), &[]);
    let mut substitutions = BTreeMap::new();
    substitutions.insert("localhost:8080".to_owned(), node.http.to_string());
    let broker_dir = node.data_dir.join("broker");
    substitutions.insert("meridian-data/broker".to_owned(), broker_dir.display().to_string());
    let env = [("MERIDIAN_NAMESERVER", node.nameserver.to_string())];
    let mut problems = run_section("dev", &section_steps(&readme, "dev"), &env, &substitutions, work.path());
    node.stop();

    let cluster_dir = work.path().join("cluster");
    let mut substitutions = BTreeMap::new();
    substitutions.insert("/tmp/demo".to_owned(), cluster_dir.display().to_string());
    let deadline = Instant::now() + Duration::from_secs(120);
    problems.extend(run_section(
        "cluster",
        &section_steps(&readme, "cluster"),
        &[],
        &substitutions,
        work.path(),
    ));
    // Whatever happened, nothing is left running.
    if cluster_dir.join("cluster.toml").exists() || cluster_dir.exists() {
        let _ = Command::new(meridian_bin())
            .args(["cluster", "down", "--dir"])
            .arg(&cluster_dir)
            .output();
    }
    assert!(Instant::now() < deadline, "the cluster section took over 120 s");
    assert!(
        problems.is_empty(),
        "the README does not match the code:\n\n{}",
        problems.join("\n\n")
    );
}
