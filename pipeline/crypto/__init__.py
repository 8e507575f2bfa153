"""Crypto helpers built in-process with ``cryptography``: passwords, keys, CSRs, PKCS#12, S/MIME self-test."""
