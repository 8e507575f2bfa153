"""Lifecycle after issuance: reminders, renewal, revocation, offboarding, bulk rollout."""
