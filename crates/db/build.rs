// `sqlx::migrate!` embeds the migration files at compile time but cannot tell cargo to watch
// the directories; without this a new migration would be missing from an incremental build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
