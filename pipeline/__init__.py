"""The CertPortal domain: requests, certificates, the provisioning state machine, store and queue."""
