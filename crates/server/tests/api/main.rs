//! Integration tests of the API server: real HTTP against a server on a random port, real
//! ffmpeg on real and generated media, outputs checked with ffprobe. Customers' storage is a
//! real S3 protocol server (`s3server`) and a stand-in for Google Drive (`drivefake`).

mod auth;
mod billing;
mod bulk;
mod cancel;
mod drive;
mod drivefake;
mod encode;
mod errors;
mod files;
mod folder;
mod helpers;
mod idempotency;
mod ondemand;
mod openapi;
mod ops;
mod ownstore;
mod public;
mod s3;
mod s3server;
mod sdk;
mod ssrf;
mod stream;
mod vmaf;
mod webhooks;
