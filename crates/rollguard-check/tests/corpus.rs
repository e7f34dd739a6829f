//! The rule corpus: for every rule, `bad.yaml` is reported by that rule and `good.yaml`,
//! the same manifest corrected, by no rule at all. Then the fixes: applied to every bad
//! manifest that has one, they leave the rule silent and every other byte as it was.

use std::path::{Path, PathBuf};

use rollguard_check::{Config, RULES, Source, check, fix};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load(path: &Path) -> Source {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Source::new(path.display().to_string(), Some(path.to_owned()), text)
}

fn rules_reported(source: &Source) -> Vec<&'static str> {
    let report = check(std::slice::from_ref(source), &Config::default())
        .unwrap_or_else(|e| panic!("{}: {e:?}", source.name));
    report.findings.iter().map(|f| f.rule.id).collect()
}

#[test]
fn every_rule_reports_its_bad_manifest_and_nothing_in_its_good_one() {
    for rule in RULES {
        let dir = corpus().join(rule.id);
        let bad = rules_reported(&load(&dir.join("bad.yaml")));
        assert!(
            bad.contains(&rule.id),
            "{}/bad.yaml: expected {}, got {bad:?}",
            rule.id,
            rule.id
        );
        let good = rules_reported(&load(&dir.join("good.yaml")));
        assert!(
            good.is_empty(),
            "{}/good.yaml: expected nothing, got {good:?}",
            rule.id
        );
    }
}

/// Checks that `fixed` is `original` with lines inserted and numbers (`10`, `100%`)
/// replaced within lines, and nothing else: no line removed, no other byte changed.
fn assert_only_fix_edits(original: &str, fixed: &str) {
    use similar::{DiffOp, TextDiff};
    let diff = TextDiff::from_lines(original, fixed);
    let old: Vec<&str> = original.split_inclusive('\n').collect();
    let new: Vec<&str> = fixed.split_inclusive('\n').collect();
    for op in diff.ops() {
        match *op {
            DiffOp::Equal { .. } | DiffOp::Insert { .. } => {}
            DiffOp::Delete { old_index, .. } => {
                panic!("a line was removed: {:?}\n{fixed}", old[old_index])
            }
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                // A changed line may also be followed by inserted ones.
                assert!(new_len >= old_len, "lines were removed:\n{fixed}");
                let mut n = new_index;
                for line in &old[old_index..old_index + old_len] {
                    while n < new_index + new_len && !same_but_numbers(line, new[n]) {
                        n += 1;
                    }
                    assert!(
                        n < new_index + new_len,
                        "line {line:?} changed beyond a number:\n{fixed}"
                    );
                    n += 1;
                }
            }
        }
    }
}

fn same_but_numbers(a: &str, b: &str) -> bool {
    let strip = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_ascii_digit() && *c != '%')
            .collect()
    };
    strip(a) == strip(b)
}

/// Fixes `text` and returns the fixed text and the rules still reported.
fn fixed(name: &str, text: &str) -> (String, Vec<&'static str>) {
    let source = Source::new(name, Some(PathBuf::from(name)), text.to_owned());
    let out = fix(&[source], &Config::default()).expect("valid YAML");
    let rules = out.report.findings.iter().map(|f| f.rule.id).collect();
    (out.sources[0].text.clone(), rules)
}

#[test]
fn fixes_silence_their_rule_and_keep_every_other_byte() {
    for rule in RULES.iter().filter(|r| r.fixable) {
        let bad = load(&corpus().join(rule.id).join("bad.yaml"));
        let (text, left) = fixed(&bad.name, &bad.text);
        assert!(
            !left.contains(&rule.id),
            "{}: still reported after --fix:\n{text}",
            rule.id
        );
        assert_only_fix_edits(&bad.text, &text);
    }
}

const DEPLOYMENT: &str = "\
# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # keep this comment
spec:
  replicas: 2
  minReadySeconds: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 10 # too short once a delay is added
      containers:
      - name: web
        image: web:1
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}}
";

#[test]
fn a_fix_that_needs_another_is_followed_by_it() {
    // Adding the 5 s preStop sleep makes 5 s + 10 s of drain overflow the 10 s grace period:
    // the second round raises it.
    let (text, left) = fixed("web.yaml", DEPLOYMENT);
    assert!(
        !left.contains(&"RG004") && !left.contains(&"RG005"),
        "{left:?}\n{text}"
    );
    assert!(
        text.contains("terminationGracePeriodSeconds: 15 # too short"),
        "{text}"
    );
    assert!(
        text.contains(
            "        lifecycle:\n          preStop:\n            sleep:\n              seconds: 5\n"
        ),
        "{text}"
    );
    assert_only_fix_edits(DEPLOYMENT, &text);
}

#[test]
fn short_delays_are_raised_where_they_are_written() {
    let sleep_action = DEPLOYMENT.replace(
        "        readinessProbe",
        "        lifecycle:\n          preStop:\n            sleep: {seconds: 2}\n        readinessProbe",
    );
    let (text, left) = fixed("web.yaml", &sleep_action);
    assert!(!left.contains(&"RG004"), "{left:?}");
    assert!(text.contains("sleep: {seconds: 5}"), "{text}");
    assert_only_fix_edits(&sleep_action, &text);

    let exec = DEPLOYMENT.replace(
        "        readinessProbe",
        "        lifecycle:\n          preStop:\n            exec: {command: [\"sleep\", \"2\"]}\n        readinessProbe",
    );
    let (text, left) = fixed("web.yaml", &exec);
    assert!(!left.contains(&"RG004"), "{left:?}");
    assert!(text.contains("[\"sleep\", \"5\"]"), "{text}");
}

#[test]
fn rolling_update_fixes_in_flow_and_block_style() {
    let flow = DEPLOYMENT.replace(
        "  minReadySeconds: 5\n",
        "  minReadySeconds: 5\n  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 100%}}\n",
    );
    let (text, left) = fixed("web.yaml", &flow);
    assert!(!left.contains(&"RG008"), "{left:?}\n{text}");
    assert!(
        text.contains("{rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}"),
        "{text}"
    );

    let block = DEPLOYMENT.replace(
        "  minReadySeconds: 5\n",
        "  minReadySeconds: 5\n  strategy:\n    rollingUpdate:\n      maxUnavailable: 2 # all of them\n",
    );
    let (text, left) = fixed("web.yaml", &block);
    assert!(!left.contains(&"RG008"), "{left:?}\n{text}");
    assert!(
        text.contains("      maxSurge: 1\n      maxUnavailable: 0 # all of them\n"),
        "{text}"
    );
    assert_only_fix_edits(&block, &text);
}

#[test]
fn json_manifests_get_replacements_but_no_insertions() {
    let json = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
 "spec": {"replicas": 2, "minReadySeconds": 5,
  "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "100%"}},
  "selector": {"matchLabels": {"app": "web"}},
  "template": {"metadata": {"labels": {"app": "web"}},
   "spec": {"containers": [{"name": "web", "ports": [{"containerPort": 8080}],
    "readinessProbe": {"tcpSocket": {"port": 8080}}}]}}}}"#;
    let (text, left) = fixed("web.json", json);
    assert!(
        text.contains(r#""maxSurge": 1, "maxUnavailable": 0"#),
        "{text}"
    );
    assert!(!left.contains(&"RG008"));
    // No preStop can be inserted into JSON: RG004 stays, and the text is still JSON.
    assert!(left.contains(&"RG004"));
    let source = Source::new("web.json", Some("web.json".into()), text);
    assert!(check(&[source], &Config::default()).is_ok());
}
