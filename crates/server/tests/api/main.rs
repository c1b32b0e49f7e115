//! Integration tests of the API server: real HTTP against a server on a random port, real
//! ffmpeg on real and generated media, outputs checked with ffprobe.

mod auth;
mod billing;
mod cancel;
mod encode;
mod errors;
mod files;
mod helpers;
mod openapi;
mod sdk;
