"""The operator console: `outbox console`, a browser view of the outbox for operators.

A Starlette app of its own process (never the webhook port), bound to localhost unless told
otherwise, open only to holders of CONSOLE_TOKEN. Its modules, one concept each:

app      -- the routes, sign-in, and how pages are answered (Jinja2 templates, autoescaped)
auth     -- the token check and the signed session cookie
csrf     -- the CSRF token every POST carries
headers  -- the security headers of every answer (Content-Security-Policy, …)
forms    -- the event filters and POST forms, understood as the CLI understands its options
pages    -- what each page shows, read through outbox/queries.py and the domain's reads
chart    -- the overview's per-minute chart, as SVG shapes
replay   -- the dry-run plan and the paced replay

docs/console.md describes the pages and the security model.
"""
