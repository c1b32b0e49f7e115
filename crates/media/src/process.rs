//! The one place that spawns ffmpeg and ffprobe: stdin closed, stdout streamed line by line to a
//! callback, a bounded tail of stderr kept for errors, the child killed on timeout, on cancel and
//! when the future is dropped. Every error carries the exact, shell-quoted command line.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How much of stderr an error keeps: the end, where ffmpeg says what went wrong.
const STDERR_TAIL_BYTES: usize = 4096;
/// Stdout kept in [`ProcessOutput::stdout`]; ffprobe JSON is far smaller, and ffmpeg's progress
/// stream for a long encode stays below it too.
const STDOUT_LIMIT_BYTES: usize = 8 << 20;

/// Where the media tools live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

/// Limits for one process run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kill the child when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Kill the child as soon as this token is canceled.
    pub cancel: Option<CancellationToken>,
    /// Extra environment variables for the child (the rest is inherited).
    pub env: Vec<(String, String)>,
}

/// What a successful run printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Everything the child printed on stdout (up to 8 MiB), newline-separated. Each line was also
    /// handed to the line callback; callers that consume lines there can ignore this.
    pub stdout: String,
    /// The last ~4 KiB of stderr, starting at a line boundary.
    pub stderr_tail: String,
}

/// A process run that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({}): {}", exit_text(*code), stderr_tail.trim())]
    Failed {
        command: String,
        code: Option<i32>,
        stderr_tail: String,
    },
    #[error("`{command}` timed out after {} s and was killed", after.as_secs_f64())]
    TimedOut { command: String, after: Duration },
    #[error("`{command}` was canceled and killed")]
    Canceled { command: String },
}

pub(crate) fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".to_string(),
    }
}

impl ProcessError {
    /// The full command line this error is about.
    pub(crate) fn command(&self) -> &str {
        match self {
            Self::Spawn { command, .. }
            | Self::Failed { command, .. }
            | Self::TimedOut { command, .. }
            | Self::Canceled { command } => command,
        }
    }
}

/// Spawns `program` with `args` (stdin null, kill_on_drop), streams stdout lines to `on_line`,
/// keeps the last ~4 KiB of stderr, and kills the child on timeout or cancel.
/// `command` in errors is the shell-quoted full command line.
pub async fn run(
    program: &Path,
    args: &[String],
    opts: RunOptions,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<ProcessOutput, ProcessError> {
    let command = command_line(program, args);
    if opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
        return Err(ProcessError::Canceled { command });
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in &opts.env {
        cmd.env(key, value);
    }
    die_with_parent(&mut cmd);
    // A process group of its own: a terminal's Ctrl-C or a supervisor's SIGTERM to the whole
    // group (systemd's default) is for the worker, which drains and then stops ffmpeg itself;
    // reaching ffmpeg directly would end the encode as a failure instead of a hand-back.
    #[cfg(unix)]
    cmd.process_group(0);
    let started = Instant::now();
    tracing::debug!(%command, "spawning");
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        command: command.clone(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        // Both were configured as pipes above, so this cannot happen; fail cleanly anyway.
        kill_and_reap(&mut child).await;
        return Err(ProcessError::Spawn {
            command,
            source: std::io::Error::other("child pipes were not available"),
        });
    };

    let cancel = opts.cancel.clone();
    let outcome = {
        let work = async {
            let (out, err) = tokio::join!(read_lines(stdout, on_line), read_tail(stderr));
            let status = child.wait().await;
            (status, out, err)
        };
        let timeout = async {
            match opts.timeout {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        let canceled = async {
            match &cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = work => Outcome::Done(done),
            _ = timeout => Outcome::TimedOut,
            _ = canceled => Outcome::Canceled,
        }
    };

    match outcome {
        Outcome::Done((status, stdout, stderr_tail)) => {
            let status: ExitStatus = status.map_err(|source| ProcessError::Spawn {
                command: command.clone(),
                source,
            })?;
            tracing::debug!(%command, elapsed_ms = started.elapsed().as_millis() as u64, %status, "exited");
            if status.success() {
                Ok(ProcessOutput {
                    stdout,
                    stderr_tail,
                })
            } else {
                Err(ProcessError::Failed {
                    command,
                    code: status.code(),
                    stderr_tail,
                })
            }
        }
        Outcome::TimedOut => {
            kill_and_reap(&mut child).await;
            let after = opts.timeout.unwrap_or_default();
            tracing::warn!(%command, after_s = after.as_secs_f64(), "timed out; killed");
            Err(ProcessError::TimedOut { command, after })
        }
        Outcome::Canceled => {
            kill_and_reap(&mut child).await;
            tracing::info!(%command, "stopped on request (job canceled, lease lost or worker stopping); killed");
            Err(ProcessError::Canceled { command })
        }
    }
}

enum Outcome {
    Done((std::io::Result<ExitStatus>, String, String)),
    TimedOut,
    Canceled,
}

/// SIGKILL, then wait so no zombie is left behind. Errors mean the child is already gone.
async fn kill_and_reap(child: &mut Child) {
    if let Err(e) = child.start_kill() {
        tracing::debug!(error = %e, "kill: child already exited");
    }
    // A SIGKILLed process is reaped at once; the bound only guards against a stuck kernel.
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        tracing::warn!("killed child did not exit within 5 s");
    }
}

/// Reads `stream` line by line (lossy UTF-8, `\r\n` or `\n`), hands each to `on_line` and keeps
/// up to [`STDOUT_LIMIT_BYTES`] of them.
async fn read_lines(
    stream: impl AsyncRead + Unpin,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> String {
    let mut reader = BufReader::new(stream);
    let mut kept = String::new();
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_end_matches(['\n', '\r']);
                on_line(line);
                if kept.len() + line.len() < STDOUT_LIMIT_BYTES {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "stdout read failed");
                break;
            }
        }
    }
    kept
}

/// Drains `stream` keeping only its last [`STDERR_TAIL_BYTES`], cut to start at a line.
async fn read_tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut tail: Vec<u8> = Vec::with_capacity(STDERR_TAIL_BYTES * 2);
    let mut chunk = [0u8; 4096];
    let mut truncated = false;
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > STDERR_TAIL_BYTES * 2 {
                    let cut = tail.len() - STDERR_TAIL_BYTES;
                    tail.drain(..cut);
                    truncated = true;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "stderr read failed");
                break;
            }
        }
    }
    if tail.len() > STDERR_TAIL_BYTES {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        truncated = true;
    }
    let mut text = String::from_utf8_lossy(&tail).into_owned();
    if truncated {
        // The first line was cut in the middle; drop it rather than show half a message.
        if let Some(pos) = text.find('\n') {
            text.drain(..=pos);
        }
    }
    text
}

/// The command line as a POSIX shell would need it typed: for logs and errors.
pub fn command_line(program: &Path, args: &[String]) -> String {
    let mut out = shell_quote(&program.to_string_lossy());
    for arg in args {
        out.push(' ');
        out.push_str(&shell_quote(&redact_url(arg)));
    }
    out
}

/// Command lines end up in logs: a source URL's credentials (`user:pass@`) and query string
/// (often a signed token) are replaced by `***`.
fn redact_url(arg: &str) -> std::borrow::Cow<'_, str> {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return arg.into();
    }
    let (scheme, rest) = arg.split_once("://").unwrap_or(("", arg));
    let (authority_path, query) = match rest.split_once('?') {
        Some((before, _)) => (before, "?***"),
        None => (rest, ""),
    };
    let authority_path = match authority_path.split_once('/') {
        Some((authority, path)) => match authority.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}/{path}"),
            None => authority_path.to_string(),
        },
        None => match authority_path.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => authority_path.to_string(),
        },
    };
    format!("{scheme}://{authority_path}{query}").into()
}

fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+=/:.,@%^".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Undoes [`shell_quote`] for the first word of a command line: the program.
pub(crate) fn program_name(command: &str) -> String {
    let mut word = String::new();
    let mut chars = command.chars();
    let mut in_quotes = false;
    for c in chars.by_ref() {
        match c {
            '\'' => in_quotes = !in_quotes,
            '\\' if !in_quotes => {}
            ' ' if !in_quotes => break,
            _ => word.push(c),
        }
    }
    Path::new(&word)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(word)
}

/// `kill_on_drop` cannot help when this process is killed outright (SIGKILL, OOM): ffmpeg
/// would run on as an orphan, burning CPU for a job whose lease is about to pass to another
/// worker. On Linux the kernel sends the child SIGKILL when its parent goes away.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl, getppid
    // and _exit are. The parent check covers a parent that died before prctl took effect.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_in_command_lines_lose_their_secrets() {
        let args = [
            "-i".to_string(),
            "https://u:pw@cdn.example/a/b.mp4?token=SECRET".to_string(),
            "file:/x?y".to_string(),
        ];
        let line = command_line(Path::new("ffprobe"), &args);
        assert_eq!(
            line,
            "ffprobe -i 'https://***@cdn.example/a/b.mp4?***' 'file:/x?y'"
        );
        assert!(!line.contains("SECRET") && !line.contains("pw"));
        assert_eq!(redact_url("http://host/path"), "http://host/path");
    }

    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_line_quotes_only_what_needs_it() {
        let line = command_line(
            Path::new("/usr/bin/ffmpeg"),
            &s(&[
                "-i",
                "file:/tmp/my clip.mp4",
                "-filter:v",
                "scale=640:360,setsar=1",
                "it's",
                "",
                "-metadata",
                "title=a;b",
            ]),
        );
        assert_eq!(
            line,
            r"/usr/bin/ffmpeg -i 'file:/tmp/my clip.mp4' -filter:v scale=640:360,setsar=1 'it'\''s' '' -metadata 'title=a;b'"
        );
    }

    #[test]
    fn program_name_is_the_unquoted_basename() {
        assert_eq!(program_name("/usr/bin/ffmpeg -i x"), "ffmpeg");
        assert_eq!(program_name("'/opt/my tools/ffprobe' -v error"), "ffprobe");
        assert_eq!(program_name("ffmpeg"), "ffmpeg");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn children_run_in_a_process_group_of_their_own() {
        // Field 5 of /proc/<pid>/stat is the process group; a signal to ours must not reach it.
        let pgid = |stat: &str| {
            stat.rsplit(") ")
                .next()
                .unwrap()
                .split(' ')
                .nth(2)
                .unwrap()
                .to_string()
        };
        let ours = pgid(&std::fs::read_to_string("/proc/self/stat").unwrap());
        let out = run(
            Path::new("/bin/sh"),
            &s(&["-c", "cat /proc/$$/stat"]),
            RunOptions::default(),
            &mut |_: &str| {},
        )
        .await
        .unwrap();
        let child = pgid(&out.stdout);
        assert_ne!(child, ours, "{}", out.stdout);
    }

    #[tokio::test]
    async fn streams_lines_and_keeps_stderr_tail() {
        let mut lines = Vec::new();
        let out = run(
            Path::new("/bin/sh"),
            &s(&["-c", "printf 'a=1\\r\\nb=2\\n'; echo oops >&2"]),
            RunOptions::default(),
            &mut |l: &str| lines.push(l.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(lines, ["a=1", "b=2"]);
        assert_eq!(out.stdout, "a=1\nb=2\n");
        assert_eq!(out.stderr_tail, "oops\n");
    }

    #[tokio::test]
    async fn failure_carries_code_command_and_bounded_tail() {
        let err = run(
            Path::new("/bin/sh"),
            &s(&[
                "-c",
                "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done; exit 3",
            ]),
            RunOptions::default(),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        let ProcessError::Failed {
            command,
            code,
            stderr_tail,
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(*code, Some(3));
        assert!(command.starts_with("/bin/sh -c 'i=0;"));
        assert!(stderr_tail.len() <= STDERR_TAIL_BYTES);
        assert!(stderr_tail.starts_with("line "), "{stderr_tail:?}");
        assert!(stderr_tail.ends_with("line 1999\n"));
    }

    #[tokio::test]
    async fn spawn_error_names_the_command() {
        let err = run(
            Path::new("/nonexistent/ffmpeg"),
            &s(&["-version"]),
            RunOptions::default(),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/ffmpeg -version"));
    }

    #[tokio::test]
    async fn timeout_and_cancel_kill_promptly() {
        let started = Instant::now();
        let err = run(
            Path::new("/bin/sleep"),
            &s(&["30"]),
            RunOptions {
                timeout: Some(Duration::from_millis(200)),
                ..Default::default()
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));

        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let err = run(
            Path::new("/bin/sleep"),
            &s(&["30"]),
            RunOptions {
                cancel: Some(token.clone()),
                ..Default::default()
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::Canceled { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // Already canceled: nothing is spawned.
        let err = run(
            Path::new("/bin/sleep"),
            &s(&["30"]),
            RunOptions {
                cancel: Some(token),
                ..Default::default()
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::Canceled { .. }));
    }

    #[tokio::test]
    async fn env_is_passed() {
        let out = run(
            Path::new("/bin/sh"),
            &s(&["-c", "echo $SVT_LOG"]),
            RunOptions {
                env: vec![("SVT_LOG".into(), "1".into())],
                ..Default::default()
            },
            &mut |_: &str| {},
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, "1\n");
    }
}
