-- A job handed back after a passing problem on our side waits until `not_before` (ms) before
-- it can be claimed again, and the problem is kept for the message should the job finally be
-- given up (see crates/db/src/model.rs, HandBack).
ALTER TABLE queue ADD COLUMN not_before BIGINT;
ALTER TABLE queue ADD COLUMN last_error TEXT;
