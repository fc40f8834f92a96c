"""API keys: creation, revocation and listing (every change an event), and the admin key that
`ADMIN_API_KEY` bootstraps."""
