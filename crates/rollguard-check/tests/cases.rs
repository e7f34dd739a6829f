//! Real-world shapes of manifests: what must not be reported, and fixes on layouts the
//! corpus does not show (empty values, comments, 4-space indentation).

use std::path::PathBuf;

use rollguard_check::{Config, Source, check, fix};

fn rules(text: &str) -> Vec<&'static str> {
    let source = Source::new("t.yaml", None, text.to_owned());
    let report = check(&[source], &Config::default()).expect("valid YAML");
    report.findings.iter().map(|f| f.rule.id).collect()
}

fn fixed(text: &str) -> (String, Vec<&'static str>) {
    let source = Source::new("t.yaml", Some(PathBuf::from("t.yaml")), text.to_owned());
    let out = fix(&[source], &Config::default()).expect("valid YAML");
    let left = out.report.findings.iter().map(|f| f.rule.id).collect();
    (out.sources[0].text.clone(), left)
}

/// A Deployment of `web` that passes every rule, with `{container}` spliced into its
/// container list and `{spec}` into its pod spec.
fn deployment(container: &str, spec: &str) -> String {
    format!(
        "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  minReadySeconds: 5
  strategy:
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
{spec}      containers:
        - name: web
          image: web:1
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /ready, port: http}}}}
          lifecycle: {{preStop: {{sleep: {{seconds: 5}}}}}}
{container}---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: web}}}}
"
    )
}

#[test]
fn the_base_deployment_is_clean() {
    assert_eq!(rules(&deployment("", "")), Vec::<&str>::new());
}

#[test]
fn a_native_sidecar_with_a_health_port_is_not_a_serving_container() {
    let spec = "      initContainers:
        - name: cloud-sql-proxy
          image: gcr.io/cloud-sql-connectors/cloud-sql-proxy:2
          restartPolicy: Always
          ports: [{containerPort: 9090}]
";
    assert_eq!(rules(&deployment("", spec)), Vec::<&str>::new());
}

#[test]
fn a_metrics_exporter_beside_a_service_backed_app_is_not_serving() {
    let exporter = "        - name: exporter
          image: prom/statsd-exporter:v0.26
          ports: [{name: metrics, containerPort: 9102}]
";
    let service = "---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
";
    let text = deployment(exporter, "") + service;
    assert_eq!(rules(&text), Vec::<&str>::new());
}

#[test]
fn objects_without_a_namespace_match_those_with_one() {
    let text = deployment("", "").replacen(
        "metadata: {name: web}\nspec:\n  maxUnavailable",
        "metadata: {name: web, namespace: shop}\nspec:\n  maxUnavailable",
        1,
    );
    assert_eq!(rules(&text), Vec::<&str>::new());
    let other = text.replacen(
        "  name: web\nspec:",
        "  name: web\n  namespace: pay\nspec:",
        1,
    );
    assert!(rules(&other).contains(&"RG010"), "{other}");
}

#[test]
fn shell_scripts_that_exec_their_app_pass() {
    for script in [
        "./migrate && exec ./server 2>&1",
        "./migrate; exec ./server >/var/log/app 2>&1",
        "./migrate && exec ./server || true",
        "./migrate\nexec\t./server",
        "./migrate && exec ./server &>/dev/null",
        "echo 'a; b && c' && exec ./server",
    ] {
        let command = format!(
            "          command: [\"/bin/sh\", \"-c\", {}]\n",
            serde_json::to_string(script).expect("a JSON string")
        );
        assert_eq!(
            rules(&deployment(&command, "")),
            Vec::<&str>::new(),
            "{script:?}"
        );
    }
    for script in ["./migrate && ./server 2>&1", "exec 3>/tmp/x; ./server"] {
        let command = format!(
            "          command: [\"/bin/sh\", \"-c\", {}]\n",
            serde_json::to_string(script).expect("a JSON string")
        );
        assert_eq!(rules(&deployment(&command, "")), ["RG012"], "{script:?}");
    }
}

#[test]
fn a_shim_command_without_double_dash_is_the_entrypoint_form() {
    let text = deployment("", "").replacen(
        "          image: web:1\n",
        "          image: web:1\n          command: [/rollguard, shim, --no-proxy, /app/server]\n",
        1,
    );
    let text = text.replacen(
        "          lifecycle: {preStop: {sleep: {seconds: 5}}}\n",
        "",
        1,
    );
    assert_eq!(rules(&text), Vec::<&str>::new());
}

#[test]
fn huge_values_do_not_overflow() {
    let text = deployment("", "").replacen(
        "          image: web:1\n",
        "          image: web:1\n          command: [/rollguard, shim, --drain-timeout, 18446744073709551615s, --stop-timeout, 18446744073709551615s, --, /app]\n",
        1,
    );
    assert!(rules(&text).contains(&"RG005"));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = "- ".repeat(10_000) + "x\n";
    let source = Source::new("deep.yaml", None, text);
    let errors = check(&[source], &Config::default()).expect_err("too deep");
    assert!(
        errors[0].error.message.contains("nesting"),
        "{:?}",
        errors[0]
    );
    let flow = "[".repeat(10_000);
    assert!(check(&[Source::new("flow.yaml", None, flow)], &Config::default()).is_err());
}

#[test]
fn empty_values_are_filled_in_not_corrupted() {
    let text = deployment("", "").replacen(
        "          lifecycle: {preStop: {sleep: {seconds: 5}}}\n",
        "          lifecycle:\n            preStop:\n              sleep:\n                seconds:   # TODO\n",
        1,
    );
    assert_eq!(rules(&text), ["RG004"]);
    let (out, left) = fixed(&text);
    assert!(left.is_empty(), "{left:?}\n{out}");
    assert!(
        out.contains("                seconds: 5   # TODO\n"),
        "{out}"
    );

    let block = deployment("", "").replacen(
        "      maxSurge: 1\n      maxUnavailable: 0\n",
        "      maxSurge:\n      maxUnavailable: 100%\n",
        1,
    );
    let (out, left) = fixed(&block);
    assert!(!left.contains(&"RG008"), "{left:?}\n{out}");
    assert!(
        out.contains("      maxSurge: 1\n      maxUnavailable: 0\n"),
        "{out}"
    );

    // In a flow mapping an empty value has no place to write to: no edit at all.
    let flow = deployment("", "").replacen(
        "    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n",
        "    rollingUpdate: {maxSurge: , maxUnavailable: 100%}\n",
        1,
    );
    let (out, left) = fixed(&flow);
    assert_eq!(out, flow);
    assert!(left.contains(&"RG008"));
}

#[test]
fn insertions_keep_comments_with_their_key_and_follow_the_indentation() {
    let text = "\
apiVersion: v1
kind: Pod
metadata:
    name: web
spec:
    # The app.
    containers:
        -   name: web
            image: web:1
            ports: [{containerPort: 8080}]
            readinessProbe: {tcpSocket: {port: 8080}}
";
    let (out, left) = fixed(text);
    assert!(left.is_empty(), "{left:?}\n{out}");
    assert!(
        out.contains("            lifecycle:\n                preStop:\n                    sleep:\n                        seconds: 5\n            image: web:1\n"),
        "{out}"
    );
    let with_grace = text.replace(
        "    # The app.\n",
        "    terminationGracePeriodSeconds: 1\n    # The app.\n",
    );
    let (out, _) = fixed(&with_grace);
    assert!(
        out.contains("    terminationGracePeriodSeconds: 15\n    # The app.\n    containers:"),
        "{out}"
    );
}
