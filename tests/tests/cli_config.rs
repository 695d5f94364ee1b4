//! The `graylane` CLI's config file and shell completion, against real control planes:
//! contexts choose the server and token, flags beat environment variables beat the
//! context, errors name the context or the field, and the file is written 0600 and
//! atomically.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use graylane_tests::docs::LANE;
use graylane_tests::{CliOutput, ControlPlane, cli, write_file};

/// `graylane ARGS` with `home` as HOME and XDG_CONFIG_HOME, so the default config file is
/// `home/graylane/config.yaml`, none of the graylane variables but those in `env`.
fn graylane(home: &Path, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let mut cmd = Command::new(graylane_tests::bin("graylane"));
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home);
    for var in [
        "GRAYLANE_SERVER",
        "GRAYLANE_TOKEN_FILE",
        "GRAYLANE_CONTEXT",
        "GRAYLANE_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether the control plane the CLI reached holds the `gray` Lane (only `a` does).
fn sees_lane(out: &CliOutput) -> bool {
    out.assert_ok();
    out.stdout.contains("name: gray")
}

/// Two control planes, `a` with a Lane and `b` without, and contexts for both.
fn two_control_planes(dir: &Path) -> (ControlPlane, ControlPlane) {
    let [a, b] = ["a", "b"].map(|name| {
        std::fs::create_dir(dir.join(name)).unwrap();
        ControlPlane::start(&dir.join(name), &[])
    });
    let lane = write_file(dir, "lane.yaml", LANE);
    a.cli(&["rules", "apply", "-f", &lane]).assert_ok();
    for (name, cp) in [("a", &a), ("b", &b)] {
        graylane(
            dir,
            &[],
            &["config", "set-context", name, "--server", &cp.url()],
        )
        .assert_ok();
    }
    (a, b)
}

#[test]
fn contexts_switch_which_control_plane_the_cli_talks_to() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_a, _b) = two_control_planes(home);

    graylane(home, &[], &["config", "use-context", "a"]).assert_ok();
    assert!(sees_lane(&graylane(home, &[], &["rules", "get"])));
    let current = graylane(home, &[], &["config", "current-context"]);
    assert_eq!(current.assert_ok().stdout.trim(), "a");

    graylane(home, &[], &["config", "use-context", "b"]).assert_ok();
    assert!(!sees_lane(&graylane(home, &[], &["rules", "get"])));
    graylane(home, &[], &["status"]).assert_ok();

    // For one command: --context, or GRAYLANE_CONTEXT.
    assert!(sees_lane(&graylane(
        home,
        &[],
        &["--context", "a", "rules", "get"]
    )));
    let env = [("GRAYLANE_CONTEXT", "a")];
    assert!(sees_lane(&graylane(home, &env, &["rules", "get"])));
    let both = graylane(home, &env, &["--context", "b", "rules", "get"]);
    assert!(!sees_lane(&both), "the flag beats the variable");

    let listed = graylane(home, &[], &["config", "get-contexts", "-o", "json"]).json();
    assert_eq!(listed["currentContext"], "b", "{listed}");
    assert_eq!(listed["contexts"].as_array().unwrap().len(), 2, "{listed}");
}

#[test]
fn server_flag_beats_its_variable_beats_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (a, b) = two_control_planes(home);
    graylane(home, &[], &["config", "use-context", "a"]).assert_ok();

    let env = [("GRAYLANE_SERVER", b.grpc.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = graylane(home, &env, &["rules", "get"]);
    assert!(!sees_lane(&out), "the variable beats the context");
    let out = graylane(home, &env, &["--server", &a.url(), "rules", "get"]);
    assert!(sees_lane(&out), "the flag beats the variable");
    let out = graylane(
        home,
        &[],
        &["--context", "b", "--server", &a.url(), "rules", "get"],
    );
    assert!(sees_lane(&out), "the flag beats --context");
}

#[test]
fn token_file_comes_from_the_context_relative_to_the_file_unless_a_flag_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let admin = "admin-token-0123456789abcdef";
    let tokens = write_file(home, "tokens", &format!("admin:{admin}\n"));
    let cp = ControlPlane::start(home, &["--token-file", &tokens]);
    let config = home.join("graylane");
    std::fs::create_dir_all(&config).unwrap();
    write_file(&config, "admin.token", admin);
    let wrong = write_file(home, "wrong.token", "not-a-token");
    // A hand-written file, with the token path relative to the file, as kubectl reads it.
    write_file(
        &config,
        "config.yaml",
        &format!(
            "currentContext: secured\ncontexts:\n  - name: secured\n    server: {}\n    \
             tokenFile: admin.token\n    caBundle: /nowhere/ca.pem\n",
            cp.url()
        ),
    );

    graylane(home, &[], &["rules", "get"]).assert_ok();
    let out = graylane(home, &[], &["--token-file", &wrong, "rules", "get"]);
    assert_eq!(
        out.code, 1,
        "the flag's token is used, and refused: {out:?}"
    );
    assert!(out.stderr.contains("unauthenticated"), "{out:?}");
    let out = graylane(home, &[("GRAYLANE_TOKEN_FILE", &wrong)], &["rules", "get"]);
    assert_eq!(
        out.code, 1,
        "the variable's token is used, and refused: {out:?}"
    );
    // A server named on the command line does not get the current context's token
    // (here the same server, so the missing token shows).
    let url = cp.url();
    let out = graylane(home, &[], &["--server", &url, "rules", "get"]);
    assert_eq!(out.code, 1, "no token sent to a --server: {out:?}");
    assert!(out.stderr.contains("unauthenticated"), "{out:?}");
    // ... unless the context is named with it.
    graylane(
        home,
        &[],
        &["--server", &url, "--context", "secured", "rules", "get"],
    )
    .assert_ok();
}

#[test]
fn an_unknown_context_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    graylane(
        home,
        &[],
        &["config", "set-context", "a", "--server", "127.0.0.1:1"],
    )
    .assert_ok();

    let out = graylane(home, &[], &["config", "use-context", "stagign"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"stagign\""), "{out:?}");
    let out = graylane(home, &[], &["--context", "stagign", "status"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("\"stagign\""), "{out:?}");

    let out = graylane(home, &[], &["config", "current-context"]);
    assert_eq!(out.code, 1, "no context is current yet: {out:?}");
    let out = graylane(home, &[], &["config", "set-context", "new"]);
    assert_eq!(out.code, 2, "a new context needs --server: {out:?}");
}

#[test]
fn a_malformed_file_is_exit_2_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // No file at all is an empty config: commands use the default server.
    let out = graylane(home, &[], &["config", "get-contexts"]);
    assert!(out.assert_ok().stdout.starts_with("CURRENT"), "{out:?}");

    let file = write_file(
        home,
        "config.yaml",
        "contexts:\n  - name: a\n    server: 127.0.0.1:1\n    tokenfile: t\n",
    );
    let out = graylane(home, &[], &["--config", &file, "status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&file), "{out:?}");
    assert!(out.stderr.contains("contexts[0].tokenfile"), "{out:?}");

    write_file(
        home,
        "config.yaml",
        "contexts:\n  - {name: a, server: [x, y]}\n",
    );
    let out = graylane(home, &[("GRAYLANE_CONFIG", &file)], &["rules", "get"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("contexts[0].server"), "{out:?}");

    write_file(home, "config.yaml", "currentContext: gone\ncontexts: []\n");
    let out = graylane(home, &[], &["--config", &file, "status"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("currentContext"), "{out:?}");

    // Commands that need no server do not read it.
    let lane = write_file(home, "lane.yaml", LANE);
    let out = graylane(
        home,
        &[],
        &["--config", &file, "rules", "validate", "-f", &lane],
    );
    out.assert_ok();
}

#[test]
fn the_file_is_written_0600_and_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("graylane");
    let file = config.join("config.yaml");
    let token = write_file(home, "a.token", "t");
    let set = ["config", "set-context", "a", "--server", "127.0.0.1:1"];
    graylane(home, &[], &[&set[..], &["--token-file", &token]].concat()).assert_ok();
    let first = std::fs::read_to_string(&file).unwrap();
    // Held open, the first file's inode cannot be reused: if a later write went into it
    // in place, this handle would read the new text.
    let mut held = std::fs::File::open(&file).unwrap();
    assert_eq!(held.metadata().unwrap().permissions().mode() & 0o777, 0o600);

    // A file the user made world-readable is replaced by a new one, not rewritten.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    graylane(
        home,
        &[],
        &["config", "set-context", "a", "--server", "127.0.0.1:2"],
    )
    .assert_ok();
    graylane(home, &[], &["config", "use-context", "a"]).assert_ok();
    let last = std::fs::metadata(&file).unwrap();
    assert_eq!(last.permissions().mode() & 0o777, 0o600);
    let mut unchanged = String::new();
    held.read_to_string(&mut unchanged).unwrap();
    assert_eq!(unchanged, first, "renamed into place, not written in place");
    assert_eq!(
        held.metadata().unwrap().nlink(),
        0,
        "the old file was replaced"
    );

    let names: Vec<_> = std::fs::read_dir(&config)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["config.yaml"], "no temporary file left behind");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("127.0.0.1:2"), "{text}");
    assert!(
        text.contains(&token),
        "updating kept the token file: {text}"
    );
    assert!(text.contains("currentContext: a"), "{text}");
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&["completion", shell]);
        out.assert_ok();
        for command in ["rules", "release", "status", "config"] {
            assert!(out.stdout.contains(command), "{shell}: no {command}");
        }
    }
    let script = cli(&["completion", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "graylane.bash", &script);
    let check = Command::new("bash").args(["-n", &path]).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(cli(&["completion", "tcsh"]).code, 2);
}
