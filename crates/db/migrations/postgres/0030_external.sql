-- Customers' own storage: S3-compatible sources and destinations, Google Drive.

-- Where the source is when it is neither uploaded nor a URL (ingest 's3' or 'google-drive'):
-- JSON of the bucket, key and endpoint, or the Drive file. Never credentials.
ALTER TABLE jobs ADD COLUMN source_ref TEXT;
-- Where the output goes, as JSON; NULL keeps it here behind a signed link (the contract's cdn).
ALTER TABLE jobs ADD COLUMN destination TEXT;

-- Credentials a job needs (S3 keys, OAuth tokens), sealed with the server's key (nonce and
-- ciphertext in one blob, the job id bound in as associated data). Kept apart from `jobs`
-- so nothing that reads jobs can show them, and deleted in the same transaction that ends
-- the job (finish, cancel, give-up); a deleted job takes its row with it.
CREATE TABLE job_secrets (
    job_id     TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    sealed     BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);
