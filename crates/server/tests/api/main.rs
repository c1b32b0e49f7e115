//! Integration tests of the API server: real HTTP against a server on a random port, real
//! ffmpeg on real and generated media, outputs checked with ffprobe.

mod auth;
mod billing;
mod bulk;
mod cancel;
mod encode;
mod errors;
mod files;
mod helpers;
mod idempotency;
mod ondemand;
mod openapi;
mod public;
mod sdk;
mod ssrf;
mod stream;
mod webhooks;
