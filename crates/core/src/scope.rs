//! API key scopes. Every authenticated endpoint declares the one it needs.

crate::wire_enum!(Scope {
    JobsCreate => "jobs:create",
    JobsRead => "jobs:read",
    JobsCancel => "jobs:cancel",
    TokensRead => "tokens:read",
    TokensWrite => "tokens:write",
    WebhooksManage => "webhooks:manage",
    CredentialsManage => "credentials:manage",
});
