//! Everything that touches ffmpeg and ffprobe: one process wrapper (spawn, timeout, kill on
//! cancel, bounded stderr tail, exact command line in every error), ffprobe JSON parsing, pure
//! argv planning for an encode, the `-progress` parser, capability detection at start-up, and
//! per-process scratch directories that a crashed process's successor can sweep, and the
//! VMAF-targeted encode (`vmaf`: sample reel, CRF search, libvmaf scoring).
//! Only this crate spawns processes.

pub mod caps;
pub mod encode;
pub mod error;
pub mod plan;
pub mod probe;
pub mod process;
pub mod progress;
mod rate;
pub mod scratch;
pub mod vmaf;

pub use caps::{choose_encoder, Capabilities};
pub use encode::{run_encode, EncodeReport};
pub use error::MediaError;
pub use plan::{default_crf, output_dimensions, plan_encode, EncodePlan, PlanInput, VideoEncoder};
pub use probe::{parse_ffprobe_json, probe, AudioStream, MediaInfo, VideoStream};
pub use process::{command_line, run, ProcessError, ProcessOutput, RunOptions, Tools};
pub use progress::{Progress, ProgressParser};
pub use scratch::{JobDir, ScratchRoot};
