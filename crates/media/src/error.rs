//! The media layer's error: whose fault it is (the input's, or ours), whether it was a cancel,
//! and a short message fit for users. `Display` is for logs and includes full command lines;
//! [`MediaError::user_message`] never contains server paths.

use crate::process::{exit_text, program_name, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input's fault: never retry; the message is shown to the user as `failureMessage`.
    #[error("{0}")]
    NotAVideo(String),
    /// The request cannot be served by this toolchain (for example, an encoder is missing).
    #[error("{0}")]
    Unsupported(String),
    /// ffmpeg/ffprobe failed, timed out or was canceled.
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Lines ffmpeg prints after the real error that explain nothing on their own.
const NOISE: &[&str] = &[
    "Conversion failed",
    "Terminating thread with return code",
    "Task finished with error code",
    "Nothing was written into output file",
    "Error sending frames to consumers",
    "Could not open encoder before EOF",
    "Error while opening encoder - maybe incorrect parameters",
    "Error while filtering",
    "Exiting normally",
];

impl MediaError {
    pub fn is_canceled(&self) -> bool {
        matches!(self, Self::Process(ProcessError::Canceled { .. }))
    }

    /// True when retrying cannot help because the input itself is unusable.
    pub fn is_input_fault(&self) -> bool {
        matches!(self, Self::NotAVideo(_))
    }

    /// A short message for users: no server paths, no full command lines.
    pub fn user_message(&self) -> String {
        match self {
            Self::NotAVideo(m) | Self::Unsupported(m) => m.clone(),
            Self::Process(e) => {
                let program = program_name(e.command());
                match e {
                    ProcessError::Spawn { .. } => format!("{program} could not be started"),
                    ProcessError::Failed {
                        code, stderr_tail, ..
                    } => match key_stderr_line(stderr_tail) {
                        Some(line) => format!("{program} failed ({}): {line}", exit_text(*code)),
                        None => format!("{program} failed ({})", exit_text(*code)),
                    },
                    ProcessError::TimedOut { after, .. } => {
                        format!("{program} timed out after {} s", after.as_secs())
                    }
                    ProcessError::Canceled { .. } => "canceled".to_string(),
                }
            }
            Self::Io(e) => format!("a file operation failed on the server ({})", e.kind()),
        }
    }
}

/// The line of an ffmpeg stderr tail that best says what went wrong: the first one that is not
/// generic follow-up noise, with log prefixes and file paths removed.
pub(crate) fn key_stderr_line(stderr_tail: &str) -> Option<String> {
    let cleaned: Vec<String> = stderr_tail
        .lines()
        .map(clean_line)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = cleaned
        .iter()
        .find(|l| !NOISE.iter().any(|n| l.contains(n)))
        .or(cleaned.last())?;
    let mut line = pick.clone();
    if line.chars().count() > 300 {
        line = line.chars().take(297).collect::<String>() + "...";
    }
    Some(line)
}

/// Strips ffmpeg's `[component @ 0x…]` prefixes (possibly nested) and replaces anything that
/// looks like a local path with `<file>`.
pub(crate) fn clean_line(line: &str) -> String {
    let mut rest = line.trim();
    while rest.starts_with('[') {
        match rest.find("] ") {
            Some(end) => rest = rest[end + 2..].trim_start(),
            None => break,
        }
    }
    rest.split(' ')
        .map(|word| {
            let bare = word.trim_start_matches(['\'', '"', '(']);
            if bare.starts_with('/') || bare.starts_with("file:") || bare.starts_with("./") {
                let trailer: String = word
                    .chars()
                    .rev()
                    .take_while(|c| matches!(c, ':' | ',' | ';' | '\'' | '"' | ')'))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("<file>{trailer}")
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn failed(tail: &str) -> MediaError {
        MediaError::Process(ProcessError::Failed {
            command: "/opt/convertrilo/bin/ffmpeg -i file:/srv/scratch/w1/j1/input -f mp4 file:/srv/scratch/w1/j1/out".into(),
            code: Some(1),
            stderr_tail: tail.into(),
        })
    }

    #[test]
    fn encode_failure_message_is_short_and_path_free() {
        let e = failed(
            "[out#0/mp4 @ 0x55d0c] Error opening output /srv/scratch/w1/j1/out: No space left on device\n\
             Error opening output files: No space left on device\n",
        );
        let msg = e.user_message();
        assert_eq!(
            msg,
            "ffmpeg failed (exit 1): Error opening output <file>: No space left on device"
        );
        assert!(
            e.to_string().contains("/srv/scratch/w1/j1/out"),
            "logs keep the command"
        );
    }

    #[test]
    fn noise_lines_are_skipped() {
        let e = failed(
            "Svt[error]: Max Bitrate only supported with CRF mode\n\
             [libsvtav1 @ 0x5] Error setting encoder parameters: bad parameter (0x80001005)\n\
             [vost#0:0/libsvtav1 @ 0x5] [enc:libsvtav1 @ 0x6] Error while opening encoder - maybe incorrect parameters such as bit_rate, rate, width or height.\n\
             [vf#0:0 @ 0x5] Task finished with error code: -22 (Invalid argument)\n\
             [out#0/null @ 0x5] Nothing was written into output file, because at least one of its streams received no packets.\n",
        );
        assert_eq!(
            e.user_message(),
            "ffmpeg failed (exit 1): Svt[error]: Max Bitrate only supported with CRF mode"
        );
        assert_eq!(failed("").user_message(), "ffmpeg failed (exit 1)");
    }

    #[test]
    fn classification() {
        let canceled = MediaError::Process(ProcessError::Canceled {
            command: "ffmpeg".into(),
        });
        assert!(canceled.is_canceled() && !canceled.is_input_fault());
        let bad = MediaError::NotAVideo("the file has no video stream".into());
        assert!(bad.is_input_fault() && !bad.is_canceled());
        assert_eq!(bad.user_message(), "the file has no video stream");
        let timed_out = MediaError::Process(ProcessError::TimedOut {
            command: "'/opt/my tools/ffprobe' -v error".into(),
            after: Duration::from_secs(30),
        });
        assert_eq!(timed_out.user_message(), "ffprobe timed out after 30 s");
    }
}
