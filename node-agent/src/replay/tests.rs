use super::*;

fn cli(args: &[&str]) -> ReplayCli {
    let mut argv = vec!["tokenguard-agent replay", "--cloudtrail", "trail.json"];
    argv.extend_from_slice(args);
    ReplayCli::parse_from(argv)
}

#[test]
fn cluster_forms_accepted() {
    let settings = cli(&[
        "--cluster",
        "prod=https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123",
        "--cluster",
        "pods-only",
    ])
    .settings()
    .unwrap();
    assert_eq!(settings.clusters, vec!["prod", "pods-only"]);
    assert_eq!(settings.issuers.len(), 1);
    assert_eq!(settings.delay, chrono::Duration::minutes(5));
}

#[test]
fn bad_settings_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--window", "0s"],
            "invalid --window \"0s\": expected more than 0s",
        ),
        (&["--window", "soon"], "invalid --window \"soon\""),
        (&["--egress", "nat"], "invalid --egress \"nat\""),
        (&["--cluster", "=x"], "invalid --cluster \"=x\""),
        (
            &["--learning-period", "30d"],
            "invalid --forget-after \"28d\": invalid forget-after",
        ),
    ];
    for (args, start) in cases {
        let error = match cli(args).settings() {
            Ok(_) => panic!("{args:?} accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with(start), "{args:?}: {error}");
    }
}

#[test]
fn gzip_detected_by_content() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.json.gz");
    std::fs::write(&plain, "{\"Records\": []}").unwrap();
    assert_eq!(read_text(&plain).unwrap(), "{\"Records\": []}");

    let packed = dir.path().join("packed.json");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(b"{\"Records\": [1]}").unwrap();
    std::fs::write(&packed, encoder.finish().unwrap()).unwrap();
    assert_eq!(read_text(&packed).unwrap(), "{\"Records\": [1]}");
}
