-- A job handed back after a passing problem on our side waits until `not_before` (ms) before
-- it can be claimed again; `retries` counts such problems, and enough of them give the job up
-- (see crates/db/src/model.rs, HandBack).
ALTER TABLE queue ADD COLUMN not_before BIGINT;
ALTER TABLE queue ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
