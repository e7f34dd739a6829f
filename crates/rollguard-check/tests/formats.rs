//! Snapshots of the report formats on one small manifest, and the SARIF 2.1.0 structure
//! code-scanning tools need.

use rollguard_check::{Config, Report, Source, check, output};

const MANIFEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: store
spec:
  replicas: 1
  strategy:
    type: Recreate
  selector: {matchLabels: {app: shop}}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
        - name: shop
          image: registry.example.com/shop:2.0.1
          command: [\"/bin/sh\", \"-c\", \"./migrate && ./shop\"]
          ports:
            - {name: http, containerPort: 8080}
          livenessProbe:
            httpGet: {path: /healthz, port: web}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config}
";

fn report() -> (Report, Vec<Source>) {
    let sources = vec![Source::new("shop.yaml", None, MANIFEST.to_owned())];
    let report = check(&sources, &Config::default()).expect("valid YAML");
    (report, sources)
}

#[test]
fn human_output() {
    let (report, sources) = report();
    insta::assert_snapshot!(output::human(&report, &sources, false));
}

#[test]
fn json_output() {
    let (report, sources) = report();
    let json = output::json(&report, &sources).expect("JSON");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["version"], 1);
    insta::assert_snapshot!(json);
}

#[test]
fn sarif_output() {
    let (report, sources) = report();
    let sarif = output::sarif(&report, &sources);
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 15);
    for result in run["results"].as_array().expect("results") {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        let region = &result["locations"][0]["physicalLocation"]["region"];
        assert!(region["startLine"].as_u64().is_some_and(|l| l >= 1));
        assert!(region["startColumn"].as_u64().is_some_and(|c| c >= 1));
        assert_eq!(
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "shop.yaml"
        );
    }
    let mut text = serde_json::to_string_pretty(&sarif).expect("JSON");
    // The version is the crate's: keep the snapshot stable across releases.
    text = text.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    insta::assert_snapshot!(text);
}

#[test]
fn github_output() {
    let (report, sources) = report();
    insta::assert_snapshot!(output::github(&report, &sources));
}
