//! `rollguard lab --manifest`: reading a Deployment manifest with file:line errors.

use std::path::Path;
use std::time::Duration;

use rollguard_core::probe::{PortRef, ProbeAction, Scheme};
use rollguard_core::rollout::{IntOrPercent, RollingUpdate};
use rollguard_lab::manifest::{
    ManifestDeployment, ManifestError, ManifestStrategy, parse_deployment,
    parse_deployment_container,
};
use rollguard_lab::pod::PreStop;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

fn parse(name: &str) -> Result<ManifestDeployment, ManifestError> {
    parse_deployment(&fixture(name), Path::new(name))
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn inline(yaml: &str) -> Result<ManifestDeployment, ManifestError> {
    parse_deployment(yaml, Path::new("inline.yaml"))
}

/// A minimal Deployment with `spec_extra` under `spec:` and `container_extra` under its
/// only container (both indented by the caller).
fn minimal(spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n{spec_extra}  \
         template:\n    spec:\n      containers:\n      - name: app\n{container_extra}"
    )
}

#[test]
fn realistic_deployment_maps_every_field() {
    let text = fixture("realistic.yaml");
    let d = parse("realistic.yaml").unwrap();
    assert_eq!(d.name, "web");
    assert_eq!(d.replicas, 4);
    assert_eq!(d.min_ready, Duration::from_secs(5));
    assert_eq!(
        d.strategy,
        ManifestStrategy::RollingUpdate(RollingUpdate {
            max_surge: IntOrPercent::Int(1),
            max_unavailable: IntOrPercent::Int(0),
        })
    );
    assert_eq!(d.container_port, Some(9090));

    let readiness = d.probes.readiness.unwrap();
    assert_eq!(
        readiness.action,
        ProbeAction::HttpGet {
            path: "/ready".into(),
            port: PortRef::Name("http".into()),
            scheme: Scheme::Http,
            headers: vec![("X-Probe".into(), "kubelet".into())],
        }
    );
    assert_eq!(readiness.period, Duration::from_secs(2));
    assert_eq!(readiness.failure_threshold, 1);
    assert_eq!(readiness.timeout, Duration::from_secs(1));
    assert_eq!(readiness.success_threshold, 1);

    let liveness = d.probes.liveness.unwrap();
    assert_eq!(
        liveness.action,
        ProbeAction::TcpSocket {
            port: PortRef::Number(8080)
        }
    );
    assert_eq!(liveness.initial_delay, Duration::from_secs(10));
    assert_eq!(liveness.timeout, Duration::from_secs(3));
    assert_eq!(liveness.period, Duration::from_secs(10));
    assert_eq!(liveness.failure_threshold, 3);

    let startup = d.probes.startup.unwrap();
    assert_eq!(
        startup.action,
        ProbeAction::Exec {
            command: vec!["cat".into(), "/tmp/started".into()]
        }
    );
    assert_eq!(startup.period, Duration::from_secs(1));
    assert_eq!(startup.failure_threshold, 30);

    assert_eq!(
        d.termination.pre_stop,
        Some(PreStop::Exec(vec![
            "sh".into(),
            "-c".into(),
            "sleep 10".into()
        ]))
    );
    assert_eq!(d.termination.grace_period, Duration::from_secs(45));

    let c0 = "spec.template.spec.containers[0]";
    let expected = [
        (format!("{c0}.image"), line_of(&text, "image: registry")),
        (format!("{c0}.env"), line_of(&text, "env:")),
        (format!("{c0}.resources"), line_of(&text, "resources:")),
        (
            format!("{c0}.volumeMounts"),
            line_of(&text, "volumeMounts:"),
        ),
        (
            "spec.template.spec.volumes".to_owned(),
            line_of(&text, "volumes:"),
        ),
        (
            "spec.template.spec.nodeSelector".to_owned(),
            line_of(&text, "nodeSelector:"),
        ),
        (
            "spec.template.spec.containers[1]".to_owned(),
            line_of(&text, "- name: log-shipper"),
        ),
    ];
    for (path, line) in expected {
        let entry = format!("{path} (line {line})");
        assert!(d.ignored.contains(&entry), "{entry} not in {:?}", d.ignored);
    }
    // Honored and harmless fields are not listed.
    for honored in [
        "replicas",
        "selector",
        "Probe",
        "lifecycle",
        "ports",
        ".name",
    ] {
        assert!(
            d.ignored.iter().all(|i| !i.contains(honored)),
            "{honored} listed in {:?}",
            d.ignored
        );
    }
}

#[test]
fn a_named_container_can_be_chosen() {
    let text = fixture("realistic.yaml");
    let d = parse_deployment_container(&text, Path::new("x.yaml"), Some("log-shipper")).unwrap();
    assert!(d.probes.readiness.is_none());
    assert_eq!(d.termination.pre_stop, None);
    assert_eq!(d.container_port, None);
    assert!(
        d.ignored
            .iter()
            .any(|i| i.starts_with("spec.template.spec.containers[0] (line "))
    );
    let err = parse_deployment_container(&text, Path::new("x.yaml"), Some("nope")).unwrap_err();
    assert!(
        err.to_string().contains("no container named 'nope'"),
        "{err}"
    );
}

#[test]
fn recreate_strategy_and_prestop_sleep_with_defaults() {
    let d = parse("recreate.yaml").unwrap();
    assert_eq!(d.name, "worker");
    assert_eq!(d.replicas, 1);
    assert_eq!(d.strategy, ManifestStrategy::Recreate);
    assert_eq!(d.min_ready, Duration::ZERO);
    assert_eq!(
        d.termination.pre_stop,
        Some(PreStop::Sleep(Duration::from_secs(7)))
    );
    assert_eq!(d.termination.grace_period, Duration::from_secs(30));
    assert!(d.probes.readiness.is_none() && d.probes.liveness.is_none());
    assert!(d.ignored.is_empty(), "{:?}", d.ignored);
}

#[test]
fn default_strategy_is_rolling_25_percent() {
    let d = inline(&minimal("", "")).unwrap();
    assert_eq!(
        d.strategy,
        ManifestStrategy::RollingUpdate(RollingUpdate::default())
    );
}

#[test]
fn prestop_http_get_resolves_a_named_port() {
    let container = "        ports:\n        - name: web\n          containerPort: 8081\n        \
                     lifecycle:\n          preStop:\n            httpGet:\n              \
                     path: /drain\n              port: web\n";
    let d = inline(&minimal("", container)).unwrap();
    assert_eq!(
        d.termination.pre_stop,
        Some(PreStop::HttpGet {
            path: "/drain".into(),
            port: 8081
        })
    );
    let unknown = container.replace("port: web", "port: admin");
    let err = inline(&minimal("", &unknown)).unwrap_err();
    assert_eq!(err.line, 17);
    assert!(
        err.to_string().starts_with(
            "inline.yaml:17: spec.template.spec.containers[0].lifecycle.preStop.httpGet.port: "
        ),
        "{err}"
    );
}

#[test]
fn unsupported_prestop_and_grpc_probe_are_listed() {
    let container = "        readinessProbe:\n          grpc:\n            port: 9000\n        \
                     lifecycle:\n          preStop:\n            tcpSocket:\n              \
                     port: 80\n";
    let d = inline(&minimal("", container)).unwrap();
    assert!(d.probes.readiness.is_none());
    assert_eq!(d.termination.pre_stop, None);
    assert_eq!(
        d.ignored,
        [
            "spec.template.spec.containers[0].readinessProbe.grpc (line 11)",
            "spec.template.spec.containers[0].lifecycle.preStop.tcpSocket (line 15)",
        ]
    );
}

#[test]
fn missing_deployment_is_an_error() {
    let err = parse("service-only.yaml").unwrap_err();
    assert_eq!(err.file, Path::new("service-only.yaml"));
    assert!(
        err.to_string().starts_with("service-only.yaml:1: "),
        "{err}"
    );
    assert!(err.message.contains("kind: Deployment"), "{err}");
    assert!(inline("").is_err());
}

#[test]
fn bad_max_surge_names_file_line_and_field() {
    let err = parse("bad-max-surge.yaml").unwrap_err();
    assert_eq!(err.line, 10);
    assert_eq!(err.field, "spec.strategy.rollingUpdate.maxSurge");
    let shown = err.to_string();
    assert!(
        shown.starts_with(
            "bad-max-surge.yaml:10: spec.strategy.rollingUpdate.maxSurge: invalid value 'abc': "
        ),
        "{shown}"
    );
    assert!(!shown.contains('\n'));
    // A quoted number is rejected as Kubernetes does; a percent string is fine.
    let quoted = minimal(
        "  strategy:\n    rollingUpdate:\n      maxSurge: \"1\"\n",
        "",
    );
    assert!(
        inline(&quoted)
            .unwrap_err()
            .to_string()
            .contains("maxSurge")
    );
    let percent = quoted.replace("\"1\"", "\"50%\"");
    assert_eq!(
        inline(&percent).unwrap().strategy,
        ManifestStrategy::RollingUpdate(RollingUpdate {
            max_surge: IntOrPercent::Percent(50),
            max_unavailable: IntOrPercent::Percent(25),
        })
    );
}

#[test]
fn both_zero_is_rejected() {
    let err = parse("both-zero.yaml").unwrap_err();
    assert_eq!(err.line, 9);
    assert_eq!(err.field, "spec.strategy.rollingUpdate.maxUnavailable");
    assert!(err.message.contains("maxSurge is 0"), "{err}");
}

#[test]
fn replicas_of_the_wrong_type_names_the_field() {
    let err = parse("replicas-string.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "replicas-string.yaml:6: spec.replicas: expected an integer, found 'three'"
    );
    let negative = inline(&minimal("  replicas: -2\n", "")).unwrap_err();
    assert_eq!(negative.field, "spec.replicas");
    assert_eq!(negative.line, 6);
    let grace = inline(&minimal("", "").replace(
        "    spec:\n",
        "    spec:\n      terminationGracePeriodSeconds: -1\n",
    ))
    .unwrap_err();
    assert_eq!(
        grace.field,
        "spec.template.spec.terminationGracePeriodSeconds"
    );
}

#[test]
fn invalid_probe_names_the_probe_field_and_line() {
    let container = "        livenessProbe:\n          tcpSocket:\n            port: 8080\n          \
                     successThreshold: 2\n";
    let err = inline(&minimal("", container)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inline.yaml:13: spec.template.spec.containers[0].livenessProbe.successThreshold: \
         must be 1 for liveness and startup probes"
    );
    let empty = "        readinessProbe:\n          exec:\n            command: []\n";
    let err = inline(&minimal("", empty)).unwrap_err();
    assert_eq!(
        err.field,
        "spec.template.spec.containers[0].readinessProbe.exec.command"
    );
    assert_eq!(err.line, 12);
    let two = "        readinessProbe:\n          exec:\n            command: [true]\n          \
               tcpSocket:\n            port: 1\n";
    assert!(inline(&minimal("", two)).is_err());
}

#[test]
fn garbage_and_truncated_yaml_are_errors_not_panics() {
    let garbage = [
        "{{{{",
        "key: [unclosed",
        "\t- : :",
        "kind: Deployment\napiVersion: apps/v1\nspec: 3\nmetadata: {name: x}",
        "kind: Deployment\napiVersion: apps/v1\nmetadata: [1]\n",
        "kind: Deployment\napiVersion: extensions/v1beta1\nmetadata: {name: x}\n",
        "kind: Deployment\n",
        "- just\n- a list\n",
        "a: &x [*x]\n",
        "kind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: {containers: []}}}\n",
        "kind: Deployment\nmetadata: {name: x}\nspec: {template: {spec: {containers: [7]}}}\n",
        "kind: Deployment\nmetadata: {name: x}\nspec: {replicas: 99999999999, template: {}}\n",
        "\u{0}\u{1}\u{feff}",
    ];
    for text in garbage {
        let err = inline(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("inline.yaml:"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
    }
    // Every prefix of a real manifest parses or fails cleanly.
    let text = fixture("realistic.yaml");
    for (end, _) in text.char_indices() {
        let _ = parse_deployment(&text[..end], Path::new("cut.yaml"));
    }
}
