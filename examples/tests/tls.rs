//! hello-server and hello-client over TLS (`tls://`, `wss://`), with a private CA and client
//! certificates, run as separate processes on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use support::{Killed, free_port};

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate (each PEM, with
/// its key) into `dir`.
fn make_certificates(dir: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "hello CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, san, usage) in [
        ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        (
            "client",
            "hello-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ] {
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

fn start_server(listen: &[String], flags: &[String]) -> Killed {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hello-server"));
    for endpoint in listen {
        command.args(["--listen", endpoint]);
    }
    let mut child = command
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("serving hello.Greeter"), "{line}");
    Killed(child)
}

fn hello_client(endpoint: &str, flags: &[String]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hello-client"))
        .args(["--endpoint", endpoint, "--name", "tls"])
        .args(flags)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hello_over_tls_and_wss_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls = format!("tls://127.0.0.1:{}", free_port());
    let wss = format!("wss://127.0.0.1:{}/rpc", free_port());
    let _server = start_server(
        &[tls.clone(), wss.clone()],
        &[
            "--tls-cert".into(),
            path(dir.path(), "server.pem"),
            "--tls-key".into(),
            path(dir.path(), "server.key"),
        ],
    );
    let trust = ["--tls-ca".to_owned(), path(dir.path(), "ca.pem")];
    for endpoint in [&tls, &wss] {
        let (ok, stdout, stderr) = hello_client(endpoint, &trust);
        assert!(ok, "{endpoint}: {stdout}{stderr}");
        assert!(stdout.contains("countdown(3) -> 3 2 1"), "{stdout}");
    }
    // Without the CA, the Mozilla roots do not know it.
    let (ok, _, stderr) = hello_client(&tls, &[]);
    assert!(!ok);
    assert!(stderr.contains("give the CA that signed it"), "{stderr}");
}

#[test]
fn a_server_that_asks_for_client_certificates_lets_in_only_holders() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let tls = format!("tls://127.0.0.1:{}", free_port());
    let _server = start_server(
        std::slice::from_ref(&tls),
        &[
            "--tls-cert".into(),
            path(dir.path(), "server.pem"),
            "--tls-key".into(),
            path(dir.path(), "server.key"),
            "--tls-client-ca".into(),
            path(dir.path(), "ca.pem"),
        ],
    );
    let trust = vec!["--tls-ca".to_owned(), path(dir.path(), "ca.pem")];
    let (ok, stdout, stderr) = hello_client(&tls, &trust);
    assert!(!ok, "a client without a certificate got in: {stdout}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let mut holder = trust.clone();
    holder.extend([
        "--tls-cert".to_owned(),
        path(dir.path(), "client.pem"),
        "--tls-key".to_owned(),
        path(dir.path(), "client.key"),
    ]);
    let (ok, stdout, stderr) = hello_client(&tls, &holder);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("add(2, 40) -> 42"), "{stdout}");
}

#[test]
fn tls_flags_that_do_not_fit_are_refused() {
    // A key without a certificate: clap refuses it before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_hello-server"))
        .args(["--tls-key", "/nonexistent.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Files that are not there: the error names the flag and the file.
    let missing = PathBuf::from("/nonexistent/cert.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_hello-server"))
        .args(["--listen", &format!("tls://127.0.0.1:{}", free_port())])
        .arg("--tls-cert")
        .arg(&missing)
        .args(["--tls-key", "/nonexistent/key.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert/--tls-key") && stderr.contains("/nonexistent/cert.pem"),
        "{stderr}"
    );
    // A tls:// endpoint without a certificate.
    let out = Command::new(env!("CARGO_BIN_EXE_hello-server"))
        .args(["--listen", &format!("tls://127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a certificate and key"), "{stderr}");
}
