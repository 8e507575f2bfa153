"""HTTP routes served next to the Slack endpoint: one-time link pages, /healthz and the CA's CRL and certificate."""
