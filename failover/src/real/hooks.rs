//! Running a configured hook: the argv without a shell, `DRLAB_*` variables in its environment
//! (`DRLAB_PRIMARY`, `DRLAB_STANDBY`, `DRLAB_PLATFORM_DOMAIN` always, plus the call's own),
//! killed at its timeout. Its stdout is its answer (bounded); on a failure the error names the
//! hook, its exit status and the last line of its stderr — a hook must not print secrets there.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::ports::PortError;

/// A hook's answer is at most this large.
const STDOUT_BYTES_MAX: u64 = 1 << 20;
/// Of a failing hook's stderr, this much is kept for the error.
const STDERR_BYTES_MAX: u64 = 16 << 10;
/// The part of a stderr line an error quotes.
const STDERR_LINE_CHARS_MAX: usize = 300;

/// What a hook said: its exit code and stdout.
#[derive(Debug)]
pub struct Answer {
    pub code: i32,
    pub stdout: String,
    /// `: <its stderr's last line>`, or empty.
    pub why: String,
}

impl Answer {
    /// Its non-empty stdout lines, trimmed.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
}

/// Runs `argv` as hook `name` with `env`; `Ok` for any exit code, so a query hook can answer
/// yes (0) or no (1). Spawn failures, signals and timeouts are errors.
pub async fn run(
    name: &'static str,
    argv: &[String],
    env: &[(String, String)],
    within: Duration,
) -> Result<Answer, PortError> {
    let fail = |what: String| PortError::new("hook", format!("{name} ({}): {what}", argv[0]));
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let mut out = child.stdout.take().expect("piped").take(STDOUT_BYTES_MAX);
    let mut err = child.stderr.take().expect("piped").take(STDERR_BYTES_MAX);
    let exchange = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let (ro, re) = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
        ro?;
        re?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, o, e))
    };
    let (status, stdout, stderr) = match tokio::time::timeout(within, exchange).await {
        Err(_) => return Err(fail(format!("did not finish within {} s (killed)", within.as_secs()))),
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Ok(Ok(x)) => x,
    };
    let Some(code) = status.code() else {
        return Err(fail(format!("ended by a signal ({status}){}", last_line(&stderr))));
    };
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if code != 0 && code != 1 {
        return Err(fail(format!("exit {code}{}", last_line(&stderr))));
    }
    Ok(Answer { code, stdout, why: last_line(&stderr) })
}

/// Runs an action hook: exit 0 is done, anything else an error.
pub async fn act(
    name: &'static str,
    argv: &[String],
    env: &[(String, String)],
    within: Duration,
) -> Result<Answer, PortError> {
    let a = run(name, argv, env, within).await?;
    if a.code != 0 {
        return Err(PortError::new("hook", format!("{name} ({}): exit {}{}", argv[0], a.code, a.why)));
    }
    Ok(a)
}

fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    match text.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        None => String::new(),
        Some(l) => format!(": {}", l.chars().take(STDERR_LINE_CHARS_MAX).collect::<String>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn a_query_hook_answers_yes_or_no_and_anything_else_is_an_error() {
        rt().block_on(async {
            let within = Duration::from_secs(10);
            let env = [("DRLAB_DNS_TARGET".to_string(), "vip-b".to_string())];
            let a = run("q", &sh("echo \"$DRLAB_DNS_TARGET\"; exit 0"), &env, within).await.expect("yes");
            assert_eq!((a.code, a.lines()), (0, vec!["vip-b".to_string()]));
            assert_eq!(run("q", &sh("exit 1"), &[], within).await.expect("no").code, 1);
            let e = run("q", &sh("echo 'no such VIP' >&2; exit 3"), &[], within).await.expect_err("3").to_string();
            assert!(e.contains("q (/bin/sh): exit 3: no such VIP"), "{e}");
            let e = act("a", &sh("echo refused >&2; exit 1"), &[], within).await.expect_err("1").to_string();
            assert!(e.contains("exit 1: refused"), "{e}");
            let e = run("q", &["/nonexistent/hook".to_string()], &[], within).await.expect_err("spawn").to_string();
            assert!(e.contains("cannot start"), "{e}");
        });
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        rt().block_on(async {
            let e = run("slow", &sh("sleep 30"), &[], Duration::from_millis(200)).await.expect_err("timeout");
            assert!(e.to_string().contains("did not finish within"), "{e}");
        });
    }
}
