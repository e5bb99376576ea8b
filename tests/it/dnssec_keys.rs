//! DNSSEC keys (issue 23, "Keys and configuration") with BIND's own
//! tools: keys made by `dnssec-keygen` load and give the DS records
//! `dnssec-dsfromkey` gives; keys made by `switchyard dnssec keygen` are
//! read by `dnssec-dsfromkey`, `dnssec-settime` and `dnssec-signzone`;
//! `serve` makes a CSK at first start, reloads the key directory when a
//! key is added, and refuses a broken key file, as `check` reports it.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "error")
        .output()
        .expect("runs switchyard")
}

/// Runs a BIND tool (bind9-utils; installed by .ci/run): fails on CI
/// when missing, skips elsewhere.
fn bind(tool: &str, args: &[&str]) -> Option<Output> {
    match Command::new(tool).args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{tool} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(out)
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: {tool} is not available ({e})");
            None
        }
        Err(e) => panic!("{tool} is needed (package bind9-utils): {e}"),
    }
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ds_of_keys_made_by_dnssec_keygen_equals_dnssec_dsfromkey() {
    for alg in ["ECDSAP256SHA256", "ED25519"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(made) = bind(
            "dnssec-keygen",
            &["-a", alg, "-f", "KSK", "-K", s(dir.path()), "example.test"],
        ) else {
            return;
        };
        let base = String::from_utf8_lossy(&made.stdout).trim().to_string();
        // A ZSK beside it: not in the DS set.
        bind(
            "dnssec-keygen",
            &["-a", alg, "-K", s(dir.path()), "example.test"],
        );
        let theirs = bind(
            "dnssec-dsfromkey",
            &["-2", s(&dir.path().join(format!("{base}.key")))],
        )
        .unwrap();
        let ours = switchyard(&["dnssec", "ds", "example.test", "--dir", s(dir.path())]);
        assert_eq!(text(&ours), text(&theirs), "{alg}");
        let status = text(&switchyard(&[
            "dnssec",
            "status",
            "example.test.",
            "--dir",
            s(dir.path()),
            "--json",
        ]));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let mut roles: Vec<&str> = status["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["role"].as_str().unwrap())
            .collect();
        roles.sort();
        assert_eq!(roles, ["KSK", "ZSK"], "{status}");
    }
}

#[test]
fn bind_tools_read_the_keys_we_make() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    for alg in ["ecdsap256sha256", "ed25519"] {
        let zone = format!("{alg}.test");
        let ksk = text(&switchyard(&[
            "dnssec",
            "keygen",
            &zone,
            "--algorithm",
            alg,
            "--ksk",
            "--dir",
            d,
        ]))
        .trim()
        .to_string();
        assert!(ksk.starts_with(&format!("K{zone}.+0")), "{ksk}");
        let Some(theirs) = bind(
            "dnssec-dsfromkey",
            &["-2", s(&dir.path().join(format!("{ksk}.key")))],
        ) else {
            return;
        };
        let ours = switchyard(&["dnssec", "ds", &zone, "--dir", d]);
        assert_eq!(text(&ours), text(&theirs), "{alg}");
    }
    let mode = std::fs::metadata(
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "private"))
            .unwrap(),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A ZSK with a whole pre-publication schedule: dnssec-settime reads it.
    let zsk = text(&switchyard(&[
        "dnssec",
        "keygen",
        "rollover.test",
        "--dir",
        d,
        "--publish",
        "20300101000000",
        "--activate",
        "20300102000000",
        "--inactive",
        "20300201000000",
        "--delete",
        "20300202120000",
    ]))
    .trim()
    .to_string();
    let shown = text(&bind("dnssec-settime", &["-p", "all", "-K", d, &zsk]).unwrap());
    for line in [
        "Publish: Tue Jan  1 00:00:00 2030",
        "Activate: Wed Jan  2 00:00:00 2030",
        "Inactive: Fri Feb  1 00:00:00 2030",
        "Delete: Sat Feb  2 12:00:00 2030",
    ] {
        assert!(shown.contains(line), "{line} not in {shown}");
    }
    // ...and what dnssec-settime writes, we read.
    bind("dnssec-settime", &["-I", "20300115000000", "-K", d, &zsk]);
    let status: serde_json::Value = serde_json::from_str(&text(&switchyard(&[
        "dnssec",
        "status",
        "rollover.test",
        "--dir",
        d,
        "--json",
    ])))
    .unwrap();
    let key = &status["keys"][0];
    assert_eq!(key["state"], "created", "{status}");
    assert_eq!(key["timing"]["inactive"], 1_894_665_600, "{status}");
    assert_eq!(status["next_event"]["event"], "publish", "{status}");

    // dnssec-signzone signs a zone with a KSK and a ZSK of ours.
    let zone_dir = tempfile::tempdir().unwrap();
    let z = s(zone_dir.path());
    text(&switchyard(&[
        "dnssec",
        "keygen",
        "signed.test",
        "--ksk",
        "--dir",
        z,
    ]));
    text(&switchyard(&[
        "dnssec",
        "keygen",
        "signed.test",
        "--dir",
        z,
    ]));
    let zone_file = zone_dir.path().join("zone");
    std::fs::write(
        &zone_file,
        "signed.test. 300 IN SOA ns1.signed.test. h.signed.test. 1 3600 600 604800 60\n\
         signed.test. 300 IN NS ns1.signed.test.\nns1.signed.test. 300 IN A 192.0.2.1\n",
    )
    .unwrap();
    let signed = zone_dir.path().join("signed");
    let out = bind(
        "dnssec-signzone",
        &[
            "-K",
            z,
            // Its dsset file goes with the keys, not into the checkout.
            "-d",
            z,
            "-S",
            "-o",
            "signed.test",
            "-f",
            s(&signed),
            s(&zone_file),
        ],
    )
    .unwrap();
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Zone fully signed"), "{report}");
}

fn signed_zone() -> Vec<(String, String)> {
    vec![(
        "name = \"switchyard.test.\"\n".into(),
        "name = \"switchyard.test.\"\ndnssec = true\n".into(),
    )]
}

#[test]
fn serve_makes_a_csk_at_first_start_and_watches_the_key_directory() {
    let server = common::Server::start_with(common::Options {
        config_edits: signed_zone(),
        ..Default::default()
    });
    assert!(
        server.logged("generated a combined signing key (CSK)"),
        "{:?}",
        server.log.lock().unwrap()
    );
    let data = server.dir.path().join("data");
    let keys = data.join("keys/switchyard.test");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let private = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "private"))
        .unwrap();
    assert_eq!(mode(private), 0o600);

    // The key directory from the configuration, as serve found it.
    let config = server.dir.path().join("switchyard.toml");
    let status: serde_json::Value = serde_json::from_str(&text(&switchyard(&[
        "dnssec",
        "status",
        "switchyard.test",
        "--config",
        s(&config),
        "--data-dir",
        s(&data),
        "--json",
    ])))
    .unwrap();
    let key = &status["keys"][0];
    assert_eq!(
        (
            key["role"].as_str(),
            key["state"].as_str(),
            key["flags"].as_u64()
        ),
        (Some("CSK"), Some("active"), Some(257)),
        "{status}"
    );

    // A ZSK dropped in is loaded without a restart.
    text(&switchyard(&[
        "dnssec",
        "keygen",
        "switchyard.test",
        "--dir",
        s(&keys),
        "--publish",
        "now+1d",
    ]));
    assert!(
        server.wait_log("keys=2", Duration::from_secs(10)),
        "{:?}",
        server.log.lock().unwrap()
    );
    assert!(server.logged("keys reloaded"));

    // A key file broken in place: the keys in use stay, with a warning,
    // and a SIGHUP reload is refused with the file named.
    let private = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "private"))
        .unwrap();
    std::fs::write(&private, "Private-key-format: v1.3\n").unwrap();
    assert!(
        server.wait_log("keeping the keys in use", Duration::from_secs(10)),
        "{:?}",
        server.log.lock().unwrap()
    );
    server.signal("HUP");
    assert!(
        server.wait_log("config reload failed", Duration::from_secs(10)),
        "{:?}",
        server.log.lock().unwrap()
    );
    let named = format!("{}: no Algorithm line", private.display());
    let log = server.log.lock().unwrap();
    assert!(
        log.iter()
            .any(|l| l.contains("config reload failed") && l.contains(&named)),
        "{log:?}"
    );
}

#[test]
fn a_broken_key_file_refuses_serve_and_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut config_text = std::fs::read_to_string(root().join("examples/switchyard.toml")).unwrap();
    for (from, to) in signed_zone() {
        config_text = config_text.replacen(&from, &to, 1);
    }
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, config_text).unwrap();
    let data = dir.path().join("data");
    let keys = data.join("keys/switchyard.test");

    // No key yet: a note, not an error.
    let check = |data: &Path| {
        switchyard(&[
            "check",
            "--offline",
            "--config",
            s(&config),
            "--data-dir",
            s(data),
        ])
    };
    let fresh = check(&data);
    let said = String::from_utf8_lossy(&fresh.stdout);
    assert!(
        said.contains("note:") && said.contains("generates a combined signing key"),
        "{said}"
    );

    let base = text(&switchyard(&[
        "dnssec",
        "keygen",
        "switchyard.test",
        "--csk",
        "--dir",
        s(&keys),
    ]))
    .trim()
    .to_string();
    let private = keys.join(format!("{base}.private"));
    std::fs::write(
        &private,
        "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\n",
    )
    .unwrap();

    let checked = check(&data);
    assert!(!checked.status.success());
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        said.contains(&format!("{}: no PrivateKey line", private.display())),
        "{said}"
    );

    let mut serve = common::server::serve_command(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        &config,
        "127.0.0.1:0",
        &data,
    );
    let out = serve
        .stdout(std::process::Stdio::null())
        .output()
        .expect("serve runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&private.display().to_string()), "{err}");
}
