//! `POST /jobs/bulk` and `POST /jobs/bulk/confirm`. A bad batch (no `jobs`, too many, bad
//! `settings`) is refused whole; a bad item is reported by its index while the others go on.

use super::*;

pub const MAX_BULK_JOBS: usize = 500;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BulkSettings {
    pub fail_fast: bool,
    pub dry_run: bool,
    pub confirm: bool,
    pub overrides: SpecOverrides,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkCreate {
    pub settings: BulkSettings,
    /// One entry per item, in order: the parsed job (settings applied) or its issues.
    pub items: Vec<Result<JobCreate, Vec<Issue>>>,
}

fn jobs_array<'a>(f: &mut Fields<'a>, name: &str, what: &str) -> Option<&'a Vec<Value>> {
    match f.get(name) {
        None => {
            f.missing(name, what);
            None
        }
        Some(Value::Array(a)) if a.is_empty() => {
            f.issue(name, format!("is empty; give 1 to {MAX_BULK_JOBS} items"));
            None
        }
        Some(Value::Array(a)) if a.len() > MAX_BULK_JOBS => {
            f.issue(
                name,
                format!(
                    "has {} items; the limit is {MAX_BULK_JOBS} per request, so split the batch",
                    a.len()
                ),
            );
            None
        }
        Some(Value::Array(a)) => Some(a),
        Some(other) => {
            f.issue(name, format!("must be an array; got {}", kind(other)));
            None
        }
    }
}

/// Reads a nested `settings` object with its own field paths prefixed.
fn settings_fields<'a>(f: &mut Fields<'a>) -> Option<Fields<'a>> {
    match f.get("settings") {
        None => None,
        Some(Value::Object(m)) => Some(Fields {
            obj: m,
            issues: Vec::new(),
        }),
        Some(other) => {
            f.issue(
                "settings",
                format!("must be a JSON object; got {}", kind(other)),
            );
            None
        }
    }
}

pub fn parse_bulk(body: &Value) -> Result<BulkCreate, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let jobs = jobs_array(
        &mut f,
        "jobs",
        "an array of job requests, as for POST /jobs",
    );
    let mut settings = BulkSettings::default();
    if let Some(mut s) = settings_fields(&mut f) {
        settings.fail_fast = s.boolean("failFast").unwrap_or(false);
        settings.dry_run = s.boolean("dryRun").unwrap_or(false);
        settings.confirm = s.boolean("confirm").unwrap_or(false);
        settings.overrides = s.read_overrides((50.0, 99.0));
        merge_prefixed(&mut f.issues, "settings", s.issues);
    }
    let items = jobs
        .map(|jobs| {
            jobs.iter()
                .map(|item| {
                    if !item.is_object() {
                        return Err(vec![Issue {
                            path: String::new(),
                            message: format!(
                                "must be a job object as for POST /jobs; got {}",
                                kind(item)
                            ),
                        }]);
                    }
                    parse_job_create(item).map(|mut job| {
                        settings.overrides.apply(&mut job.spec);
                        job.confirm |= settings.confirm;
                        job
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    f.finish(BulkCreate { settings, items })
}

#[derive(Debug, Clone, PartialEq)]
pub struct BulkConfirm {
    /// As sent; the caller reports ids that are malformed or unknown as missing.
    pub job_ids: Vec<String>,
    pub overrides: SpecOverrides,
}

pub fn parse_bulk_confirm(body: &Value) -> Result<BulkConfirm, Vec<Issue>> {
    let obj = as_object(body)?;
    let mut f = Fields {
        obj,
        issues: Vec::new(),
    };
    let mut job_ids = Vec::new();
    if let Some(ids) = jobs_array(&mut f, "jobIds", "an array of job ids to queue") {
        for (i, id) in ids.iter().enumerate() {
            match id {
                Value::String(s) => job_ids.push(s.clone()),
                other => f.issue(
                    &format!("jobIds[{i}]"),
                    format!("must be a job id string; got {}", kind(other)),
                ),
            }
        }
    }
    let mut overrides = SpecOverrides::default();
    if let Some(mut s) = settings_fields(&mut f) {
        // The contract lists container and quality; optimize and vmafTarget are read too,
        // as the single-job confirm reads them, rather than dropped without a word.
        overrides = s.read_overrides((1.0, 100.0));
        merge_prefixed(&mut f.issues, "settings", s.issues);
    }
    f.finish(BulkConfirm { job_ids, overrides })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_override_every_item_and_bad_items_are_kept_apart() {
        let b = parse_bulk(&json!({
            "jobs": [
                {"codec":"h264","resolution":"720p","fps":30,"container":"mov"},
                {"codec":"h264","resolution":"9000p","fps":30},
                {"codec":"h265","resolution":"480p","fps":24,"sourceUrl":"https://e.com/a.mp4"}
            ],
            "settings": {"container":"mkv","quality":"best","confirm":true,"failFast":true}
        }))
        .unwrap();
        assert!(b.settings.fail_fast && b.settings.confirm && !b.settings.dry_run);
        let first = b.items[0].as_ref().unwrap();
        assert_eq!(first.spec.container, Container::Mkv);
        assert_eq!(first.spec.quality, Some(Quality::Best));
        assert!(first.confirm);
        assert_eq!(b.items[1].as_ref().unwrap_err()[0].path, "resolution");
        assert!(b.items[2].is_ok());
    }

    #[test]
    fn refuses_a_bad_batch_whole() {
        let too_many: Vec<Value> = (0..501)
            .map(|_| json!({"codec":"h264","resolution":"720p","fps":30}))
            .collect();
        let issues = parse_bulk(&json!({"jobs": too_many})).unwrap_err();
        assert_eq!(issues[0].path, "jobs");
        assert!(issues[0].message.contains("500"));
        let issues =
            parse_bulk(&json!({"jobs": [], "settings": {"container": "avi", "dryRun": 1}}))
                .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["jobs", "settings.dryRun", "settings.container"]);
    }

    #[test]
    fn confirm_reads_ids_and_settings() {
        let c = parse_bulk_confirm(&json!({"jobIds": ["a", "b"], "settings": {"quality": "good"}}))
            .unwrap();
        assert_eq!(c.job_ids, ["a", "b"]);
        assert_eq!(c.overrides.quality, Some(Quality::Good));
        let issues = parse_bulk_confirm(&json!({"jobIds": [1]})).unwrap_err();
        assert_eq!(issues[0].path, "jobIds[0]");
    }
}
