"""Adapters from CertPortal's ports to the outside world: CAs, vaults and directories."""
