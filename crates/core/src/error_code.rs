//! The contract's stable, machine-readable error codes (`ErrorResponse.code`).

crate::wire_enum!(
    /// Clients branch on these; never rename one.
    ErrorCode {
        InvalidApiKey => "invalid_api_key",
        ApiKeyExpired => "api_key_expired",
        UserNotFound => "user_not_found",
        AccountBanned => "account_banned",
        MissingRequiredScope => "missing_required_scope",
        InvalidRequest => "invalid_request",
        InvalidBody => "invalid_body",
        InvalidUrl => "invalid_url",
        UrlIngestDisabled => "url_ingest_disabled",
        UrlHostBlocked => "url_host_blocked",
        SignedUrlRequired => "signed_url_required",
        HostNotResolvable => "host_not_resolvable",
        PrivateIpBlocked => "private_ip_blocked",
        MissingContentLength => "missing_content_length",
        FileTooLarge => "file_too_large",
        UnsupportedContentType => "unsupported_content_type",
        ProbeFailed => "probe_failed",
        InsufficientTokens => "insufficient_tokens",
        IdempotencyConflict => "idempotency_conflict",
        IdempotencyInProgress => "idempotency_in_progress",
        RateLimitExceeded => "rate_limit_exceeded",
        NotFound => "not_found",
        Forbidden => "forbidden",
        DeprecatedDropbox => "deprecated_dropbox",
        GoogleDriveNotConnected => "google_drive_not_connected",
        DropboxNotConnected => "dropbox_not_connected",
        NoVideoFilesFound => "no_video_files_found",
        WebhookLimitExceeded => "webhook_limit_exceeded",
        WebhookNotFound => "webhook_not_found",
        NoUpdatesProvided => "no_updates_provided",
        OutputNotAvailable => "output_not_available",
        // Our additions (not in the contract's list; documented in the README):
        InternalError => "internal_error",
        InvalidCredentials => "invalid_credentials",
        // A customer's storage (S3 endpoint, Google Drive) could not be reached or kept
        // failing; the same request may work later.
        UpstreamUnavailable => "upstream_unavailable",
        // The service's own database could not be reached in time; retry later.
        DatabaseUnavailable => "database_unavailable",
    }
);
