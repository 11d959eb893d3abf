//! The sluice binary's subcommands as a test runs them: exit code, stdout and stderr, with the test
//! credentials and none of the environment's sluice settings.

/// Runs the sluice binary with `args`: (exit code, stdout, stderr).
pub async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("SLUICE_CHECKPOINT_DIR")
        .env_remove("SLUICE_CONFIG")
        .output()
        .await
        .expect("running sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`], which must succeed; its stdout.
pub async fn ok(args: &[&str]) -> String {
    let (code, out, err) = cli(args).await;
    assert_eq!(code, 0, "sluice {args:?} failed:\n{out}\n{err}");
    out
}
